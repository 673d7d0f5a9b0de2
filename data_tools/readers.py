"""Readers for raw bar files: CSV/TXT (with a header, or the headerless vendor layout) and Parquet.

Each reader returns a `RawChunk`: the rows of one file as numpy arrays, timestamps as UTC instants (int64
nanoseconds), with the 1-based row number of every row (the line number in a text file, the row index in a
Parquet file) so that errors can name the row. Everything is vectorised (pyarrow.compute / numpy); Python
loops over rows happen only while building an error message.

Text files are UTF-8 (a byte-order mark dropped) or UTF-16 with its byte-order mark; anything else, and files
of other types under a text name (Parquet, gzip, ZIP/Excel, images), is an error naming the line or the type.
Timestamps are read by `data_tools.timestamps`.

Errors raise `FileError(path, message, row=None)` (`data_tools.errors`); `symbols` on the error says which
symbols the file held where that could be told (a bad vendor file fails every symbol in it).

`RawChunk.ts_info` says how the timestamps were read, for the summary: `naive_tz` (the zone that timestamps
without one were read in, when there were such), `date_layout` (`DD/MM/YYYY` and the like, for day/month dates
that are not ISO) and `date_ambiguous` (every day and month <= 12: the other order would read the file too).
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from data_tools.errors import FileError
from data_tools.timestamps import DATE_ORDERS, column_to_utc_ns, first_failure, parse_time_strings

TEXT_SUFFIXES = {".csv", ".txt"}
PARQUET_SUFFIXES = {".parquet", ".pq"}
RAW_SUFFIXES = TEXT_SUFFIXES | PARQUET_SUFFIXES

PRICE_COLS = ("open", "high", "low", "close")
KNOWN_COLS = {"datetime", "timestamp", "date", "time", "open", "high", "low", "close", "volume", "oi",
              "symbol"}
VENDOR_LAYOUT = "SYMBOL,YYYYMMDD,HH:MM,OPEN,HIGH,LOW,CLOSE,VOLUME,OI"
# file signatures of things that are not text, with what to tell the user
_NOT_TEXT = ((b"PAR1", "a Parquet file: give it a .parquet name"),
             (b"\x1f\x8b", "gzip-compressed: decompress it first"),
             (b"PK\x03\x04", "a ZIP archive (an Excel .xlsx workbook?): export it as CSV"),
             (b"\xd0\xcf\x11\xe0", "an Excel .xls workbook: export it as CSV"),
             (b"\x89PNG", "a PNG image"), (b"%PDF", "a PDF document"))


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


def check_tz(tz: str) -> str:
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        from jaxtrade.errors import InputError
        raise InputError(f"--source-tz: unknown time zone {tz!r}")
    return tz


def check_date_order(order: str) -> str:
    if order not in DATE_ORDERS:
        from jaxtrade.errors import InputError
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
            names = [n.strip().lower() for n in pq.read_schema(path).names]
            return "symbol" in names
        with open(path, "rb") as f:
            head = f.read(65536)
        line = _first_line(_head_text(head))
        if line is None:
            return False
        delim = _delimiter(line)
        fields = _split_line(line, delim)
        if _is_header(fields):
            return "symbol" in [c.strip().lower() for c in fields]
        return _headerless(_head_text(head), delim)[0] == "vendor"
    except Exception:  # noqa: BLE001 - reading it properly will report the problem
        return None


# ----------------------------------------------------------------------------------------------- helpers

def _first_line(text: str) -> Optional[str]:
    for line in text.splitlines():
        if line.strip():
            return line
    return None


def _split_line(line: str, delimiter: str = ",") -> list[str]:
    return next(csv.reader([line], delimiter=delimiter))


def _yfinance_header(text: str, delimiter: str):
    """yfinance >= 0.2.51 writes three header lines: `Price,Close,High,Low,Open,Volume`, `Ticker,^NSEI,...` and
    `Datetime,,,,,`. Returns (column names, the first being the datetime column; tickers), or None."""
    lines = []
    for line in text.splitlines():
        if line.strip():
            lines.append(_split_line(line, delimiter))
            if len(lines) == 3:
                break
    if len(lines) < 3:
        return None
    price, ticker, when = lines
    if (price[0].strip().lower() != "price" or ticker[0].strip().lower() != "ticker"
            or when[0].strip().lower() not in ("datetime", "date")):
        return None
    tickers = sorted({t.strip() for t in ticker[1:] if t.strip()})
    return [when[0].strip()] + [f.strip() for f in price[1:]], tickers


def _delimiter(line: str) -> str:
    if "," in line:
        return ","
    for d in (";", "\t", "|"):
        if d in line:
            return d
    return ","


def _is_header(fields: list[str]) -> bool:
    names = {f.strip().lower() for f in fields}
    return bool(names & (KNOWN_COLS - {"symbol"}))


_DATE8 = re.compile(r"^\d{8}$")
_HHMM = re.compile(r"^\d{1,2}:\d{2}(:\d{2})?$")


def _headerless_layout(fields: list[str]) -> Optional[str]:
    f = [x.strip() for x in fields]
    if len(f) >= 7 and _DATE8.match(f[1]) and _HHMM.match(f[2]):
        return "vendor"            # SYMBOL,YYYYMMDD,HH:MM,O,H,L,C[,V[,OI]]
    if len(f) >= 6 and _DATE8.match(f[0]) and _HHMM.match(f[1]):
        return "vendor_nosym"      # YYYYMMDD,HH:MM,O,H,L,C[,V[,OI]]
    return None


def _headerless(text: str, delimiter: str, lines: int = 10) -> tuple[Optional[str], list[str]]:
    """The headerless layout most of the first `lines` non-blank lines have (one bad first line must not hide
    the layout: the row then fails by itself), and the fields of the first line that has it."""
    votes: dict = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            fields = _split_line(line, delimiter)
        except csv.Error:
            fields = []
        layout = _headerless_layout(fields)
        if layout is not None:
            count, first = votes.get(layout, (0, fields))
            votes[layout] = (count + 1, first)
        lines -= 1
        if lines == 0:
            break
    if not votes:
        return None, []
    layout = max(votes, key=lambda k: votes[k][0])
    return layout, votes[layout][1]


def _salvage_symbols(data: bytes, delimiter: str = ",") -> Optional[list]:
    """Error path only: the distinct first fields of a headerless vendor file."""
    try:
        syms = set()
        for line in data.decode("utf-8", "replace").splitlines():
            if line.strip():
                fields = _split_line(line, delimiter)
                syms.add(fields[0].strip() if fields else "")
        return sorted(s for s in syms if s)
    except Exception:  # noqa: BLE001
        return None


def _nonempty_line_numbers(data: bytes) -> np.ndarray:
    """1-based line numbers of the non-blank lines of `data` (pyarrow skips empty lines; lines of only
    whitespace were emptied by `_as_utf8`)."""
    buf = np.frombuffer(data, dtype=np.uint8)
    nl = np.flatnonzero(buf == 10)
    starts = np.concatenate([[0], nl + 1])
    ends = np.concatenate([nl, [len(buf)]])
    lengths = ends - starts
    has_cr = np.zeros(len(starts), bool)
    nz = lengths > 0
    has_cr[nz] = buf[ends[nz] - 1] == 13
    return np.flatnonzero(lengths - has_cr > 0).astype(np.int64) + 1


def _ragged_line(data: bytes, delimiter: str, want: int, skip: int) -> Optional[int]:
    """Error path: the first line after the header with another number of fields than `want`."""
    try:
        reader = csv.reader(io.StringIO(data.decode("utf-8", "replace"), newline=""), delimiter=delimiter)
        for fields in reader:
            if reader.line_num > skip and fields and len(fields) != want:
                return reader.line_num
    except csv.Error:
        pass
    return None


def _line_of(data: bytes, pos: int) -> int:
    return data.count(b"\n", 0, pos) + 1


def _head_text(head: bytes) -> str:
    """The first bytes of a text file as text (UTF-16 when it starts with its byte-order mark), for a peek."""
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return head.decode("utf-16", "replace")
    return head.decode("utf-8", "replace").lstrip("\ufeff")


_WHITESPACE_LINE = re.compile(rb"(?m)^[ \t\f\v]+(?=\r?$)")


def _as_utf8(data: bytes, display: str) -> bytes:
    """A text file's bytes as UTF-8 without a byte-order mark, lines of only whitespace emptied (so that they
    are skipped as blank lines are). UTF-8 and UTF-16 with a byte-order mark are read; anything else that is
    not UTF-8 text is an error naming the line."""
    for magic, what in _NOT_TEXT:
        if data.startswith(magic):
            raise FileError(display, f"not a CSV/TXT text file: {what}")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            data = data.decode("utf-16").encode("utf-8")
        except UnicodeDecodeError as e:
            line = data[:e.start].decode("utf-16", "replace").count("\n") + 1
            raise FileError(display, "not valid UTF-16 text (it starts with a UTF-16 byte-order mark)",
                            row=line) from None
    elif data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    nul = data.find(b"\x00")
    if nul >= 0:
        hint = " (UTF-16 without a byte-order mark? save it as UTF-8)" if data.count(b"\x00") * 4 > len(data) \
            else ""
        raise FileError(display, f"binary data (a NUL byte), not CSV text{hint}", row=_line_of(data, nul))
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FileError(display, f"not UTF-8 text (byte 0x{data[e.start]:02X}): save the file as UTF-8",
                        row=_line_of(data, e.start)) from None
    if data[:1] in (b" ", b"\t", b"\f", b"\v") or any(b"\n" + c in data for c in (b" ", b"\t", b"\f", b"\v")):
        data = _WHITESPACE_LINE.sub(b"", data)     # (rare: the regex scans every position)
    return data


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
            i = first_failure(len(text), lambda a, b: _cast_fails(text.slice(a, b - a)))
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


def _cast_fails(text: pa.Array) -> bool:
    try:
        pc.cast(text, pa.float64())
        return False
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return True


def _as_str(col) -> pa.Array:
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    if pa.types.is_date(col.type):
        return pc.strftime(pc.cast(pc.cast(col, pa.date32()), pa.timestamp("s")), "%Y-%m-%d")
    if pa.types.is_time(col.type):
        return pc.cast(col, pa.string())
    if pa.types.is_integer(col.type):
        return pc.cast(col, pa.string())
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        return pc.cast(col, pa.string())
    return col


def _table_to_chunk(table: pa.Table, path: Path, display: str, rows: np.ndarray, tz: str,
                    synthetic: bool, meta: dict, date_order: str = "dmy") -> RawChunk:
    """Map columns (case-insensitively) and convert. `table` columns are named as in the file."""
    cols: dict[str, int] = {}
    for i, n in enumerate(table.column_names):
        key = str(n).strip().lower()
        if key and key not in cols:
            cols[key] = i
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
    n = table.num_rows
    volume = _to_float(col("volume"), "volume", display, rows) if "volume" in cols else np.zeros(n)
    volume = np.where(np.isnan(volume), 0.0, volume)
    oi = _to_float(col("oi"), "oi", display, rows) if "oi" in cols else np.zeros(n)
    oi = np.where(np.isnan(oi), 0.0, oi)
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


def read_text(path: Path, display: str, tz: str, date_order: str = "dmy") -> RawChunk:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise FileError(display, f"cannot read file ({e.strerror or e})")
    try:
        return _read_text(data, path, display, tz, date_order)
    except FileError as e:
        if e.symbols is None:   # a broken vendor file fails every symbol it held
            e.symbols = _vendor_symbols(data)
        raise


def _vendor_symbols(data: bytes) -> Optional[list]:
    """Error path only: the symbols of a file in the headerless vendor layout."""
    text = _head_text(data)
    line = _first_line(text[:65536])
    if line is None:
        return None
    delim = _delimiter(line)
    if _headerless(text[:65536], delim)[0] != "vendor":
        return None
    return _salvage_symbols(text.encode("utf-8", "replace"), delim) or None


def _read_text(data: bytes, path: Path, display: str, tz: str, date_order: str) -> RawChunk:
    data = _as_utf8(data, display)
    if data.count(b"\r") != data.count(b"\r\n"):  # a lone CR ends a line for pyarrow: for line numbers too
        data = re.sub(rb"\r(?!\n)", b"\n", data)
    text_head = data[:65536].decode("utf-8", "replace")
    line = _first_line(text_head)
    if line is None:
        raise FileError(display, "empty file (no data rows)")
    delim = _delimiter(line)
    fields = _split_line(line, delim)
    line_nos = _nonempty_line_numbers(data)
    header = _is_header(fields)
    yf = _yfinance_header(text_head, delim) if header else None
    if yf is not None:                 # yfinance >= 0.2.51: Price/Ticker/Datetime header lines
        names, tickers = yf
        if len(tickers) > 1:
            raise FileError(display, f"yfinance export holds {len(tickers)} tickers ({', '.join(tickers)}): "
                                     f"save one ticker per file")
        header_lines = 3
    elif header:
        names = [f.strip() for f in fields]
        header_lines = 1
    else:
        layout, fields = _headerless(text_head, delim)
        if layout is None:
            raise FileError(display, f"no header line, and the first lines are not the vendor layout "
                                     f"{VENDOR_LAYOUT}")
        base = ["symbol", "date", "time"] if layout == "vendor" else ["date", "time"]
        extra = ["open", "high", "low", "close", "volume", "oi"]
        n = len(fields)
        names = (base + extra)[:n] + [f"extra{i}" for i in range(max(0, n - len(base) - len(extra)))]
        header_lines = 0
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
            row = _ragged_line(data, delim, len(col_names), skip)
            msg = f"expected {m.group(1)} fields, got {m.group(2)}"
        raise FileError(display, f"malformed CSV: {msg}", row=row) from None
    table = table.rename_columns(names)
    if len(rows) != table.num_rows:  # quoted newlines or similar: fall back to row indices
        rows = np.arange(1 + skip, table.num_rows + 1 + skip, dtype=np.int64)
    try:
        return _table_to_chunk(table, path, display, rows, tz, False, {}, date_order)
    except FileError as e:
        if e.symbols is None and header and "symbol" in [n.lower() for n in names]:
            try:
                e.symbols = sorted(set(pc.unique(pc.drop_null(table.column(
                    [n.lower() for n in names].index("symbol")))).to_pylist()) - {""})
            except Exception:  # noqa: BLE001
                pass
        raise


def read_parquet(path: Path, display: str, tz: str, date_order: str = "dmy") -> RawChunk:
    try:
        pf = pq.ParquetFile(path)
        table = pf.read()
    except Exception as e:  # noqa: BLE001 - corrupt or not Parquet at all
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise FileError(display, f"unreadable Parquet file ({msg})")
    meta = {}
    raw_meta = table.schema.metadata or {}
    for k, v in raw_meta.items():
        try:
            meta[k.decode()] = v.decode()
        except UnicodeDecodeError:
            continue
    meta.pop("pandas", None)
    meta.pop("ARROW:schema", None)
    synthetic = _truthy(meta.get("synthetic"))
    rows = np.arange(1, table.num_rows + 1, dtype=np.int64)
    try:
        return _table_to_chunk(table, path, display, rows, tz, synthetic, meta, date_order)
    except FileError as e:
        if e.symbols is None and "symbol" in [n.strip().lower() for n in table.column_names]:
            try:
                i = [n.strip().lower() for n in table.column_names].index("symbol")
                e.symbols = sorted(set(str(x) for x in pc.unique(pc.drop_null(table.column(i))).to_pylist()))
            except Exception:  # noqa: BLE001
                pass
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


def read_file(path: Path, display: str, tz: str, date_order: str = "dmy") -> RawChunk:
    if path.suffix.lower() in PARQUET_SUFFIXES:
        return read_parquet(path, display, tz, date_order)
    return read_text(path, display, tz, date_order)
