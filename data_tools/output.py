"""Processed files (DESIGN section 2): `{symbol}.parquet` with the columns of `OUTPUT_SCHEMA` and the summary's
metadata, written atomically; reading that metadata back; which raw symbols earlier runs wrote from a raw file
(`EarlierOutputs`); and removing a failed symbol's file from an earlier run.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from data_tools.naming import safe_name, stale_candidates
from data_tools.session import IST
from data_tools.summary import SymbolSummary
from jaxtrade import atomic

OUTPUT_SCHEMA = pa.schema([
    ("timestamp", pa.timestamp("ns", tz=IST)),
    ("open", pa.float64()), ("high", pa.float64()), ("low", pa.float64()), ("close", pa.float64()),
    ("volume", pa.float64()), ("session", pa.int32()),
])


def processed_table(ts: np.ndarray, o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray,
                    v: np.ndarray, session: np.ndarray) -> pa.Table:
    """Bar-start UTC ns, prices, volume and trading-day index (all (n,)) -> a table of `OUTPUT_SCHEMA`."""
    return pa.table([
        pa.array(ts, pa.timestamp("ns", tz=IST)),
        pa.array(o, pa.float64()), pa.array(h, pa.float64()), pa.array(lo, pa.float64()),
        pa.array(c, pa.float64()), pa.array(v, pa.float64()),
        pa.array(session, pa.int32()),
    ], schema=OUTPUT_SCHEMA)


def remove_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def write_processed(table: pa.Table, summary: SymbolSummary) -> None:
    """Write atomically: a hidden temporary file in the same directory, flushed to disk, then renamed over the
    output (`jaxtrade.atomic`), so that a crash leaves the earlier file or none, never a partial one under the name."""
    meta = {k: (v if isinstance(v, str) else json.dumps(v)) for k, v in summary.metadata().items()}
    table = table.replace_schema_metadata({k.encode(): v.encode() for k, v in meta.items()})
    atomic.write_parquet(table, summary.output)


def read_processed_metadata(path) -> dict:
    """The file metadata of a processed Parquet file, JSON values decoded."""
    raw = pq.read_schema(path).metadata or {}
    out = {}
    for k, v in raw.items():
        key, val = k.decode(), v.decode()
        if key == "ARROW:schema":
            continue
        try:
            out[key] = json.loads(val)
        except ValueError:
            out[key] = val
    return out


def remove_stale(processed_dir: Path, raw_symbol: str, bar_minutes: Optional[int]) -> None:
    """Remove what an earlier run wrote for `raw_symbol` under the names this run would have written."""
    for name in stale_candidates(raw_symbol, bar_minutes):
        remove_quietly(processed_dir / f"{safe_name(name)}.parquet")


def source_names(meta: dict) -> list[str]:
    """The raw file names a processed file was made from, from its metadata (raw strings, as written):
    `source_names`, or for files written before that key, the names `source` spells out."""
    try:
        names = json.loads(meta["source_names"])
        if isinstance(names, list):
            return [str(n) for n in names]
    except (KeyError, TypeError, ValueError):
        pass
    source = meta.get("source", "")
    many = re.fullmatch(r"\d+ files \((.*), \.\.\., (.*)\)", source)
    return many.group(1).split(", ") + [many.group(2)] if many else source.split(", ")


class EarlierOutputs:
    """The raw symbols that earlier runs of the processor wrote into `processed_dir`, by the raw file they came
    from (the metadata of every `*.parquet` file whose `created_by` is data_tools.process). Read once, and only
    when asked: for a raw file that failed as a whole or that `--symbols` would skip."""

    def __init__(self, processed_dir: Path):
        self.processed_dir = Path(processed_dir)
        self._by_source: Optional[dict[str, set]] = None

    def raw_symbols_from(self, raw_name: str) -> set:
        if self._by_source is None:
            self._by_source = self._read()
        return self._by_source.get(raw_name, set())

    def _read(self) -> dict[str, set]:
        by_source: dict[str, set] = {}
        if not self.processed_dir.is_dir():
            return by_source
        for path in sorted(self.processed_dir.glob("*.parquet")):
            try:
                meta = {k.decode(): v.decode() for k, v in (pq.read_schema(path).metadata or {}).items()}
            except Exception:  # noqa: BLE001 - not a processed file (or unreadable): it tells nothing
                continue
            symbol = meta.get("raw_symbol") or meta.get("symbol")
            if meta.get("created_by") != "data_tools.process" or not symbol:
                continue
            for name in source_names(meta):
                by_source.setdefault(name, set()).add(symbol)
        return by_source
