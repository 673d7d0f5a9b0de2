"""Raw bar files: which files in a raw directory are read, and the reader for each (`read_file`).

Every reader returns a `RawChunk` (`data_tools.columns`): the rows of one file as numpy arrays, timestamps as UTC
instants (int64 nanoseconds), with the 1-based row number of every row (the line number in a text file, the row
index in a Parquet file) so that errors can name the row. Everything is vectorised (pyarrow.compute / numpy);
Python loops over rows happen only while building an error message.

- CSV/TXT (`data_tools.csv_reader`): a header line, yfinance's header lines, or the headerless vendor layout
  (`data_tools.layout`); UTF-8 or UTF-16 with its byte-order mark (`data_tools.encoding`).
- Parquet (`data_tools.parquet_reader`).
Timestamps are read by `data_tools.timestamps`.

Errors raise `FileError(path, message, row=None)` (`data_tools.errors`); `symbols` on the error says which
symbols the file held where that could be told (a bad vendor file fails every symbol in it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pyarrow.parquet as pq

from data_tools.columns import RawChunk
from data_tools.csv_reader import read_text
from data_tools.errors import FileError
from data_tools.layout import HEAD_BYTES, holds_symbol_column
from data_tools.parquet_reader import read_parquet
from data_tools.timestamps import DATE_ORDERS
from jaxtrade.errors import InputError

TEXT_SUFFIXES = {".csv", ".txt"}
PARQUET_SUFFIXES = {".parquet", ".pq"}
RAW_SUFFIXES = TEXT_SUFFIXES | PARQUET_SUFFIXES

__all__ = ["DATE_ORDERS", "FileError", "RAW_SUFFIXES", "RawChunk", "check_date_order", "check_tz",
           "list_raw_files", "peek_symbol_column", "read_file"]


def check_tz(tz: str) -> str:
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise InputError(f"--source-tz: unknown time zone {tz!r}")
    return tz


def check_date_order(order: str) -> str:
    if order not in DATE_ORDERS:
        raise InputError(f"--date-order must be dmy or mdy, not {order!r}")
    return order


def list_raw_files(raw_dir: Path) -> list[Path]:
    """Data files directly inside `raw_dir` (not recursive); hidden files and README/LICENSE are skipped."""
    files = []
    for p in sorted(raw_dir.iterdir()):
        if not p.is_file() or p.name.startswith("."):
            continue
        if p.suffix.lower() not in RAW_SUFFIXES:
            continue
        if p.stem.lower().startswith(("readme", "license", "licence")):
            continue
        files.append(p)
    return files


def peek_symbol_column(path: Path) -> Optional[bool]:
    """True when the file's rows carry their symbol (vendor layout or a `symbol` column), False when the
    file holds one symbol (its stem), None when that cannot be told cheaply."""
    try:
        if path.suffix.lower() in PARQUET_SUFFIXES:
            return "symbol" in [n.strip().lower() for n in pq.read_schema(path).names]
        with open(path, "rb") as f:
            return holds_symbol_column(f.read(HEAD_BYTES))
    except Exception:  # noqa: BLE001 - reading it properly will report the problem
        return None


def read_file(path: Path, display: str, tz: str, date_order: str = "dmy") -> RawChunk:
    if path.suffix.lower() in PARQUET_SUFFIXES:
        return read_parquet(path, display, tz, date_order)
    return read_text(path, display, tz, date_order)
