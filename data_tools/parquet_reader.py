"""Raw Parquet files -> `RawChunk`: columns as `data_tools.columns` maps them, rows numbered from 1, and the
file's metadata kept (`synthetic=true` marks the embedded synthetic data, `data_tools.synth`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from data_tools.columns import RawChunk, symbols_of, table_to_chunk
from data_tools.errors import FileError


def read_parquet(path: Path, display: str, tz: str, date_order: str = "dmy") -> RawChunk:
    try:
        table = pq.ParquetFile(path).read()
    except Exception as e:  # noqa: BLE001 - corrupt or not Parquet at all
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise FileError(display, f"unreadable Parquet file ({msg})")
    meta = {}
    for k, v in (table.schema.metadata or {}).items():
        try:
            meta[k.decode()] = v.decode()
        except UnicodeDecodeError:
            continue
    meta.pop("pandas", None)
    meta.pop("ARROW:schema", None)
    rows = np.arange(1, table.num_rows + 1, dtype=np.int64)
    try:
        return table_to_chunk(table, path, display, rows, tz, _truthy(meta.get("synthetic")), meta, date_order)
    except FileError as e:
        if e.symbols is None:   # a broken file with a symbol column fails every symbol it held
            e.symbols = symbols_of(table)
        raise


def _truthy(v) -> bool:
    if v is None:
        return False
    try:
        v = json.loads(v)
    except (TypeError, ValueError):
        pass
    if isinstance(v, str):
        return v.strip().lower() in ("true", "1", "yes")
    return bool(v)
