"""Processed files (DESIGN section 2): `{symbol}.parquet` with the columns of `OUTPUT_SCHEMA` and the summary's
metadata, written atomically; reading that metadata back; and removing a failed symbol's file from an earlier run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from data_tools.naming import safe_name, stale_candidates
from data_tools.session import IST
from data_tools.summary import SymbolSummary

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
    """Write atomically: a temp file in the same directory, then os.replace."""
    meta = {k: (v if isinstance(v, str) else json.dumps(v)) for k, v in summary.metadata().items()}
    table = table.replace_schema_metadata({k.encode(): v.encode() for k, v in meta.items()})
    out = Path(summary.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, out)
    finally:
        remove_quietly(tmp)


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
