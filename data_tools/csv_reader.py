"""Raw CSV/TXT files -> `RawChunk`: with a header line (yfinance's three header lines too), or headerless in the
vendor layout `SYMBOL,YYYYMMDD,HH:MM,OPEN,HIGH,LOW,CLOSE,VOLUME,OI` (or without its symbol field).

The whole file is parsed by pyarrow as text columns, then converted by `data_tools.columns`; each row keeps its
line number in the file. A file that fails raises `FileError`; its `symbols` say which symbols it held where that
can be told (a `symbol` column, or the vendor layout), so that every one of them fails.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from data_tools.columns import RawChunk, symbols_of, table_to_chunk
from data_tools.encoding import as_utf8, nonempty_line_numbers, ragged_line
from data_tools.errors import FileError
from data_tools.layout import (HEAD_BYTES, VENDOR_LAYOUT, delimiter_of, first_line, headerless, is_header,
                               split_line, vendor_symbols, yfinance_header)

_HEADERLESS_NAMES = {"vendor": ["symbol", "date", "time"], "vendor_nosym": ["date", "time"]}
_VALUE_NAMES = ["open", "high", "low", "close", "volume", "oi"]


def read_text(path: Path, display: str, tz: str, date_order: str = "dmy") -> RawChunk:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise FileError(display, f"cannot read file ({e.strerror or e})")
    try:
        return _read_text(data, path, display, tz, date_order)
    except FileError as e:
        if e.symbols is None:   # a broken vendor file fails every symbol it held
            e.symbols = vendor_symbols(data)
        raise


def _column_names(text_head: str, display: str) -> tuple[list[str], int, str, bool]:
    """(column names, header lines, delimiter, whether the file has a header) from a file's first lines."""
    line = first_line(text_head)
    if line is None:
        raise FileError(display, "empty file (no data rows)")
    delim = delimiter_of(line)
    fields = split_line(line, delim)
    header = is_header(fields)
    yf = yfinance_header(text_head, delim) if header else None
    if yf is not None:                 # yfinance >= 0.2.51: Price/Ticker/Datetime header lines
        names, tickers = yf
        if len(tickers) > 1:
            raise FileError(display, f"yfinance export holds {len(tickers)} tickers ({', '.join(tickers)}): "
                                     f"save one ticker per file")
        return names, 3, delim, header
    if header:
        return [f.strip() for f in fields], 1, delim, header
    layout, fields = headerless(text_head, delim)
    if layout is None:
        raise FileError(display, f"no header line, and the first lines are not the vendor layout "
                                 f"{VENDOR_LAYOUT}")
    base = _HEADERLESS_NAMES[layout]
    n = len(fields)
    names = (base + _VALUE_NAMES)[:n] + [f"extra{i}" for i in range(max(0, n - len(base) - len(_VALUE_NAMES)))]
    return names, 0, delim, header


def _read_text(data: bytes, path: Path, display: str, tz: str, date_order: str) -> RawChunk:
    data = as_utf8(data, display)
    names, header_lines, delim, header = _column_names(data[:HEAD_BYTES].decode("utf-8", "replace"), display)
    line_nos = nonempty_line_numbers(data)
    if len(line_nos) <= header_lines:
        raise FileError(display, "empty file (no data rows)")
    col_names = [f"c{i}" for i in range(len(names))]
    skip = int(line_nos[header_lines - 1]) if header_lines else 0   # pyarrow counts blank lines here
    rows = line_nos[header_lines:]
    try:
        table = pacsv.read_csv(
            io.BytesIO(data),
            read_options=pacsv.ReadOptions(column_names=col_names, skip_rows=skip, block_size=1 << 24,
                                             use_threads=False),
            parse_options=pacsv.ParseOptions(delimiter=delim),
            convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in col_names},
                                                 strings_can_be_null=True, quoted_strings_can_be_null=True),
        )
    except pa.ArrowInvalid as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        row = None
        m = re.search(r"Expected (\d+) columns, got (\d+)", msg)
        if m:  # error path: find the line with the wrong number of fields
            row = ragged_line(data, delim, len(col_names), skip)
            msg = f"expected {m.group(1)} fields, got {m.group(2)}"
        raise FileError(display, f"malformed CSV: {msg}", row=row) from None
    table = table.rename_columns(names)
    if len(rows) != table.num_rows:  # quoted newlines or similar: fall back to row indices
        rows = np.arange(1 + skip, table.num_rows + 1 + skip, dtype=np.int64)
    try:
        return table_to_chunk(table, path, display, rows, tz, False, {}, date_order)
    except FileError as e:
        if e.symbols is None and header:   # (a headerless vendor file's symbols come from its lines)
            e.symbols = symbols_of(table)
        raise
