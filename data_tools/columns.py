"""A table read from a raw file (CSV or Parquet) -> `RawChunk`: columns matched by name case-insensitively, prices
and volumes made numbers, timestamps made UTC instants (`data_tools.timestamps`), each row keeping its 1-based row
number so that errors can name it.

`RawChunk.ts_info` says how the timestamps were read, for the summary: `naive_tz` (the zone that timestamps
without one were read in, when there were such), `date_layout` (`DD/MM/YYYY` and the like, for day/month dates
that are not ISO) and `date_ambiguous` (every day and month <= 12: the other order would read the file too).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from data_tools.errors import FileError
from data_tools.timestamps import arrow_fails, column_to_utc_ns, first_failure, parse_time_strings

PRICE_COLS = ("open", "high", "low", "close")


@dataclass
class RawChunk:
    path: Path
    display: str                      # how messages name the file
    ts_utc: np.ndarray                # int64 ns since epoch, UTC instants
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    oi: np.ndarray
    rows: np.ndarray                  # int64, 1-based row (line) number of each row in the file
    symbols: Optional[np.ndarray]     # per-row symbol strings, or None (the symbol is the file stem)
    synthetic: bool = False
    meta: dict = field(default_factory=dict)
    ts_info: dict = field(default_factory=dict)   # how the timestamps were read (see the module docstring)

    def __len__(self) -> int:
        return len(self.ts_utc)


def _to_float(col: pa.ChunkedArray | pa.Array, name: str, path, rows: np.ndarray) -> np.ndarray:
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        col = pc.utf8_trim_whitespace(col)
        col = pc.if_else(pc.equal(col, ""), pa.scalar(None, col.type), col)
        try:
            col = pc.cast(col, pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            text = col
            i = first_failure(len(text), lambda a, b: arrow_fails(lambda: pc.cast(text.slice(a, b - a),
                                                                                   pa.float64())))
            raise FileError(path, f"unparseable number {text[i].as_py()!r} in column {name!r}",
                            row=int(rows[i])) from None
    elif pa.types.is_null(col.type):
        col = pa.array(np.full(len(col), np.nan))
    else:
        try:
            col = pc.cast(col, pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise FileError(path, f"column {name!r} has type {col.type}, not a number")
    return np.asarray(pc.fill_null(col, np.nan).to_numpy(zero_copy_only=False), dtype=np.float64)


def _as_str(col) -> pa.Array:
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    if pa.types.is_date(col.type):
        return pc.strftime(pc.cast(pc.cast(col, pa.date32()), pa.timestamp("s")), "%Y-%m-%d")
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        return col
    return pc.cast(col, pa.string())           # times, integers and the rest


def _column_index(table: pa.Table) -> dict[str, int]:
    """Lower-cased, stripped column name -> its first index."""
    cols: dict[str, int] = {}
    for i, n in enumerate(table.column_names):
        key = str(n).strip().lower()
        if key and key not in cols:
            cols[key] = i
    return cols


def symbols_of(table: pa.Table) -> Optional[list]:
    """Error path only: the distinct symbols of a table's `symbol` column (None without one, or when it cannot
    be read), so that a broken file fails every symbol it held."""
    i = _column_index(table).get("symbol")
    if i is None:
        return None
    try:
        return sorted(set(str(x) for x in pc.unique(pc.drop_null(table.column(i))).to_pylist()) - {""})
    except Exception:  # noqa: BLE001 - the file already failed; its symbols are a courtesy
        return None


def table_to_chunk(table: pa.Table, path: Path, display: str, rows: np.ndarray, tz: str,
                   synthetic: bool, meta: dict, date_order: str = "dmy") -> RawChunk:
    """Map columns (case-insensitively) and convert. `table` columns are named as in the file."""
    cols = _column_index(table)
    if table.num_rows == 0:
        raise FileError(display, "empty file (no data rows)")

    def col(name):
        return table.column(cols[name])

    missing = [c for c in PRICE_COLS if c not in cols]
    info: dict = {}
    if "datetime" in cols:
        ts = column_to_utc_ns(col("datetime"), "datetime", tz, display, rows, date_order, info)
    elif "timestamp" in cols:
        ts = column_to_utc_ns(col("timestamp"), "timestamp", tz, display, rows, date_order, info)
    elif "date" in cols and "time" in cols:
        d, t = _as_str(col("date")), _as_str(col("time"))
        joined = pc.binary_join_element_wise(pc.utf8_trim_whitespace(d), pc.utf8_trim_whitespace(t), " ")
        ts = parse_time_strings(joined, tz, display, rows, "date+time", date_order, info)
    elif "date" in cols:
        ts = column_to_utc_ns(col("date"), "date", tz, display, rows, date_order, info)
    else:
        missing.insert(0, "datetime (or timestamp, or date+time)")
        ts = None
    if missing:
        have = ", ".join(repr(str(n)) for n in table.column_names)
        raise FileError(display, f"missing column {missing[0]} (columns: {have})")
    prices = {c: _to_float(col(c), c, display, rows) for c in PRICE_COLS}

    def optional(name):            # volume and open interest: 0 where the column or the value is missing
        if name not in cols:
            return np.zeros(table.num_rows)
        x = _to_float(col(name), name, display, rows)
        return np.where(np.isnan(x), 0.0, x)

    volume, oi = optional("volume"), optional("oi")
    symbols = None
    if "symbol" in cols:
        s = pc.utf8_trim_whitespace(_as_str(col("symbol")))
        s_np = np.asarray(pc.fill_null(s, "").to_numpy(zero_copy_only=False), dtype=object)
        if (s_np != "").all():
            symbols = s_np
        elif (s_np != "").any():
            i = int(np.flatnonzero(s_np == "")[0])
            raise FileError(display, "missing symbol", row=int(rows[i]),
                            symbols=sorted(set(s_np[s_np != ""].tolist())))
    return RawChunk(path=path, display=display, ts_utc=ts, volume=volume, oi=oi, rows=rows,
                    symbols=symbols, synthetic=synthetic, meta=meta, ts_info=info, **prices)
