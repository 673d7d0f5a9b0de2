"""Readers for raw bar files: CSV/TXT (with a header, or the headerless vendor layout) and Parquet.

Each reader returns a `RawChunk`: the rows of one file as numpy arrays, timestamps as UTC instants (int64
nanoseconds), with the 1-based row number of every row (the line number in a text file, the row index in a
Parquet file) so that errors can name the row. Everything is vectorised (pyarrow.compute / numpy); Python
loops over rows happen only while building an error message.

Errors raise `FileError(path, message, row=None)`; `symbols` on the error says which symbols the file held
where that could be told (a bad vendor file fails every symbol in it).

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

TEXT_SUFFIXES = {".csv", ".txt"}
PARQUET_SUFFIXES = {".parquet", ".pq"}
RAW_SUFFIXES = TEXT_SUFFIXES | PARQUET_SUFFIXES

PRICE_COLS = ("open", "high", "low", "close")
KNOWN_COLS = {"datetime", "timestamp", "date", "time", "open", "high", "low", "close", "volume", "oi",
              "symbol"}
VENDOR_LAYOUT = "SYMBOL,YYYYMMDD,HH:MM,OPEN,HIGH,LOW,CLOSE,VOLUME,OI"
NS_PER_S = 1_000_000_000

_ISO_RE = (r"^(?P<dt>\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)\s*"
           r"(?P<tz>Z|UTC|[+-]\d{2}:?\d{2})?$")
_FALLBACK_FORMATS = (
    "%Y%m%d %H:%M:%S", "%Y%m%d %H:%M",
    "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M",
    "%d-%m-%Y %H:%M:%S", "%d-%m-%Y %H:%M",
    "%d/%m/%Y %H:%M:%S", "%d/%m/%Y %H:%M",
    "%Y/%m/%d %H:%M:%S", "%Y/%m/%d %H:%M",
    "%d-%b-%Y %H:%M:%S", "%d-%b-%Y %H:%M",
)
DATE_ORDERS = {"dmy": "day-first", "mdy": "month-first"}


class FileError(Exception):
    """A raw file (or one row of it) is bad. `str()` is one line naming the file and the row."""

    def __init__(self, path, message: str, row: Optional[int] = None, symbols: Optional[list] = None):
        self.path = str(path)
        self.row = row
        self.symbols = symbols
        where = self.path if row is None else f"{self.path} row {row}"
        super().__init__(f"{where}: {message}")


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
        line = _first_line(head.decode("utf-8", "replace").lstrip("\ufeff"))
        if line is None:
            return False
        fields = _split_line(line)
        if _is_header(fields):
            return "symbol" in [c.strip().lower() for c in fields]
        return _headerless_layout(fields) == "vendor"
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


def _salvage_symbols(data: bytes, delimiter: str = ",") -> Optional[list]:
    """Error path only: the distinct first fields of a headerless vendor file."""
    try:
        syms = set()
        for line in data.decode("utf-8", "replace").splitlines():
            if line.strip():
                syms.add(line.split(delimiter, 1)[0].strip())
        return sorted(s for s in syms if s)
    except Exception:  # noqa: BLE001
        return None


def _nonempty_line_numbers(data: bytes) -> np.ndarray:
    """1-based line numbers of the non-blank lines of `data` (pyarrow skips blank lines)."""
    buf = np.frombuffer(data, dtype=np.uint8)
    nl = np.flatnonzero(buf == 10)
    starts = np.concatenate([[0], nl + 1])
    ends = np.concatenate([nl, [len(buf)]])
    # a line is blank when it holds only whitespace; cheap test: length after dropping a trailing \r is 0,
    # or the line is all spaces/tabs (rare: checked only for short lines)
    lengths = ends - starts
    has_cr = np.zeros(len(starts), bool)
    nz = lengths > 0
    has_cr[nz] = buf[ends[nz] - 1] == 13
    eff = lengths - has_cr
    blank = eff == 0
    short = np.flatnonzero((eff > 0) & (eff < 8))
    for i in short:  # few lines only
        if not bytes(buf[starts[i]:starts[i] + eff[i]]).strip():
            blank[i] = True
    return np.flatnonzero(~blank).astype(np.int64) + 1


def _first_bad(values: list, ok) -> int:
    for i, v in enumerate(values):
        if not ok(v):
            return i
    return -1


def _to_float(col: pa.ChunkedArray | pa.Array, name: str, path, rows: np.ndarray) -> np.ndarray:
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        col = pc.utf8_trim_whitespace(col)
        col = pc.if_else(pc.equal(col, ""), pa.scalar(None, col.type), col)
        try:
            col = pc.cast(col, pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            vals = col.to_pylist()

            def ok(v):
                if v is None:
                    return True
                try:
                    float(v)
                    return True
                except ValueError:
                    return False
            i = _first_bad(vals, ok)
            raise FileError(path, f"unparseable number {vals[i]!r} in column {name!r}",
                            row=int(rows[i]) if i >= 0 else None)
    elif pa.types.is_null(col.type):
        col = pa.array(np.full(len(col), np.nan))
    else:
        try:
            col = pc.cast(col, pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise FileError(path, f"column {name!r} has type {col.type}, not a number")
    return np.asarray(pc.fill_null(col, np.nan).to_numpy(zero_copy_only=False), dtype=np.float64)


def _epoch_to_ns(x: np.ndarray) -> np.ndarray:
    """Numeric epoch (s, ms, us or ns, told apart by magnitude) -> int64 ns."""
    x = np.asarray(x)
    finite = x[np.isfinite(x)] if x.dtype.kind == "f" else x
    mag = np.abs(finite).max() if len(finite) else 0
    if mag < 1e11:
        scale = NS_PER_S
    elif mag < 1e14:
        scale = 1_000_000
    elif mag < 1e17:
        scale = 1_000
    else:
        scale = 1
    if x.dtype.kind == "f":
        return np.round(x * scale).astype(np.int64)
    return x.astype(np.int64) * scale


def _naive_to_utc_ns(naive: pa.Array, tz: str) -> np.ndarray:
    """Naive wall-clock timestamps in `tz` -> UTC ns (int64)."""
    naive = pc.cast(naive, pa.timestamp("ns"))
    if tz in ("UTC", "Etc/UTC"):
        out = naive
    else:
        out = pc.assume_timezone(naive, tz, ambiguous="earliest", nonexistent="earliest")
    return np.asarray(pc.cast(out, pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)


def _fallback_formats(date_order: str) -> tuple:
    if date_order == "mdy":
        return tuple(f.replace("%d-%m", "%m-%d").replace("%d/%m", "%m/%d") for f in _FALLBACK_FORMATS)
    return _FALLBACK_FORMATS


def _date_layout(fmt: str) -> str:
    """'%d/%m/%Y %H:%M' -> 'DD/MM/YYYY'."""
    return (fmt.split(" ")[0].replace("%d", "DD").replace("%m", "MM").replace("%Y", "YYYY")
            .replace("%b", "Mon"))


def _note_dates(info: Optional[dict], fmt: str, parsed: pa.Array) -> None:
    """Record a day/month layout (DD/MM/YYYY, MM-DD-YYYY, ...) and whether the other order would fit too."""
    layout = _date_layout(fmt)
    if info is None or layout[:2] not in ("DD", "MM") or layout[2] not in "/-" or "Mon" in layout:
        return
    day, month = pc.day(parsed), pc.month(parsed)
    info["date_layout"] = layout
    info["date_ambiguous"] = bool(pc.max(day).as_py() <= 12 and pc.max(month).as_py() <= 12
                                  and not pc.all(pc.equal(day, month)).as_py())


def parse_time_strings(s: pa.Array, tz: str, path, rows: np.ndarray, what: str, date_order: str = "dmy",
                       info: Optional[dict] = None) -> np.ndarray:
    """Strings -> UTC ns. ISO-8601 with an optional zone (`+05:30`, `Z`) or a few common day/month
    (`date_order`: dmy or mdy) or compact layouts; strings without a zone are wall-clock time in `tz`. Pure
    digits are epoch numbers. `info`, when given, records how they were read (`RawChunk.ts_info`)."""
    s = pc.utf8_trim_whitespace(s)
    valid = pc.and_(pc.is_valid(s), pc.not_equal(s, ""))
    valid_np = np.asarray(valid.to_numpy(zero_copy_only=False), bool) if len(s) else np.zeros(0, bool)
    if not valid_np.all():
        i = int(np.flatnonzero(~valid_np)[0])
        raise FileError(path, f"missing timestamp ({what})", row=int(rows[i]))
    if len(s) == 0:
        return np.zeros(0, np.int64)
    # epoch numbers written as text
    if pc.all(pc.match_substring_regex(s, r"^-?\d+(\.\d+)?$")).as_py():
        return _epoch_to_ns(pc.cast(s, pa.float64()).to_numpy())
    m = pc.extract_regex(s, _ISO_RE)
    if m.null_count == 0:
        dt = pc.replace_substring(m.field("dt"), "T", " ")
        naive = pc.cast(dt, pa.timestamp("ns"))
        tzs = m.field("tz")
        has_tz = np.asarray(pc.and_(pc.is_valid(tzs), pc.not_equal(pc.fill_null(tzs, ""), ""))
                            .to_numpy(zero_copy_only=False), bool)
        naive_ns = np.asarray(pc.cast(naive, pa.int64()).to_numpy(zero_copy_only=False), np.int64)
        out = np.empty(len(s), np.int64)
        if has_tz.any():
            z = pc.replace_substring(pc.fill_null(tzs, "+0000"), ":", "")
            z = pc.if_else(pc.or_(pc.equal(z, "Z"), pc.equal(z, "UTC")), "+0000", z)
            z = pc.if_else(pc.equal(z, ""), "+0000", z)
            sign = np.where(np.asarray(pc.starts_with(z, "-").to_numpy(zero_copy_only=False)), -1, 1)
            hh = pc.cast(pc.utf8_slice_codeunits(z, 1, 3), pa.int64()).to_numpy()
            mm = pc.cast(pc.utf8_slice_codeunits(z, 3, 5), pa.int64()).to_numpy()
            off_ns = sign * (hh * 60 + mm) * 60 * NS_PER_S
            out[has_tz] = (naive_ns - off_ns)[has_tz]
        if (~has_tz).any():
            out[~has_tz] = _naive_to_utc_ns(naive, tz)[~has_tz]
            if info is not None:
                info["naive_tz"] = tz
        return out
    best, best_n = None, -1
    formats = _fallback_formats(date_order)
    for fmt in formats:
        parsed = pc.strptime(s, format=fmt, unit="s", error_is_null=True)
        n = len(parsed) - parsed.null_count
        if n == len(parsed):
            _note_dates(info, fmt, parsed)
            if info is not None:
                info["naive_tz"] = tz
            return _naive_to_utc_ns(parsed, tz)
        if n > best_n:
            best, best_n = parsed, n
    # error: name the first row that the most successful layout could not read (ISO rows count as read)
    iso_ok = np.asarray(pc.is_valid(m).to_numpy(zero_copy_only=False), bool)
    ok = iso_ok if iso_ok.sum() >= best_n else np.asarray(pc.is_valid(best).to_numpy(zero_copy_only=False), bool)
    i = int(np.flatnonzero(~ok)[0])
    hint = ""
    other = "mdy" if date_order == "dmy" else "dmy"
    for fmt in _fallback_formats(other):
        if fmt not in formats and pc.strptime(s, format=fmt, unit="s", error_is_null=True).null_count == 0:
            hint = (f"; dates are read {DATE_ORDERS[date_order]}, but they all read as {_date_layout(fmt)}: "
                    f"pass --date-order {other}")
            break
    raise FileError(path, f"unparseable timestamp {s[i].as_py()!r} ({what}){hint}", row=int(rows[i]))


def _timestamp_from_column(col: pa.ChunkedArray, name: str, tz: str, path, rows, date_order: str = "dmy",
                           info: Optional[dict] = None) -> np.ndarray:
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    t = col.type
    if pa.types.is_timestamp(t):
        if col.null_count:
            i = int(np.flatnonzero(np.asarray(pc.is_null(col).to_numpy(zero_copy_only=False)))[0])
            raise FileError(path, f"missing timestamp ({name})", row=int(rows[i]))
        if t.tz is not None:
            return np.asarray(pc.cast(pc.cast(col, pa.timestamp("ns", tz="UTC")), pa.int64())
                              .to_numpy(zero_copy_only=False), np.int64)
        if info is not None:
            info["naive_tz"] = tz
        return _naive_to_utc_ns(col, tz)
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        x = col.to_numpy(zero_copy_only=False)
        bad = ~np.isfinite(x.astype(np.float64))
        if bad.any():
            raise FileError(path, f"missing timestamp ({name})", row=int(rows[int(np.flatnonzero(bad)[0])]))
        return _epoch_to_ns(x)
    if pa.types.is_date(t):
        col = pc.cast(pc.cast(col, pa.date32()), pa.timestamp("s"))
        if info is not None:
            info["naive_tz"] = tz
        return _naive_to_utc_ns(col, tz)
    if pa.types.is_dictionary(t):
        col = col.dictionary_decode()
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        col = pc.cast(col, pa.string())
    return parse_time_strings(col, tz, path, rows, name, date_order, info)


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
        ts = _timestamp_from_column(col("datetime"), "datetime", tz, display, rows, date_order, info)
    elif "timestamp" in cols:
        ts = _timestamp_from_column(col("timestamp"), "timestamp", tz, display, rows, date_order, info)
    elif "date" in cols and "time" in cols:
        d, t = _as_str(col("date")), _as_str(col("time"))
        joined = pc.binary_join_element_wise(pc.utf8_trim_whitespace(d), pc.utf8_trim_whitespace(t), " ")
        ts = parse_time_strings(joined, tz, display, rows, "date+time", date_order, info)
    elif "date" in cols:
        ts = _timestamp_from_column(col("date"), "date", tz, display, rows, date_order, info)
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
    if data.startswith(b"\xef\xbb\xbf"):
        data = b"   " + data[3:]  # keep byte offsets (and so line numbers)
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
        col_names = [f"c{i}" for i in range(len(names))]
        skip = 3
        rows = line_nos[3:]
    elif header:
        names = [f.strip() for f in fields]
        col_names = [f"c{i}" for i in range(len(names))]
        skip = 1
        rows = line_nos[1:]
    else:
        layout = _headerless_layout(fields)
        if layout is None:
            raise FileError(display, f"no header line, and the first line is not the vendor layout "
                                     f"{VENDOR_LAYOUT}")
        base = ["symbol", "date", "time"] if layout == "vendor" else ["date", "time"]
        extra = ["open", "high", "low", "close", "volume", "oi"]
        n = len(fields)
        names = (base + extra)[:n] + [f"extra{i}" for i in range(max(0, n - len(base) - len(extra)))]
        col_names = [f"c{i}" for i in range(n)]
        skip = 0
        rows = line_nos
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
        msg = str(e).splitlines()[0]
        row = None
        m = re.search(r"Expected (\d+) columns, got (\d+)", msg)
        if m:  # error path: find the line with the wrong number of fields
            want = int(m.group(1))
            for no, ln in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
                if ln.strip() and no > skip and len(_split_line(ln, delim)) != want:
                    row = no
                    break
            msg = f"expected {m.group(1)} fields, got {m.group(2)}"
        syms = _salvage_symbols(data, delim) if not header and _headerless_layout(fields) == "vendor" else None
        raise FileError(display, f"malformed CSV: {msg}", row=row, symbols=syms)
    table = table.rename_columns(names)
    if len(rows) != table.num_rows:  # quoted newlines or similar: fall back to row indices
        rows = np.arange(1 + skip, table.num_rows + 1 + skip, dtype=np.int64)
    try:
        return _table_to_chunk(table, path, display, rows, tz, False, {}, date_order)
    except FileError as e:
        if e.symbols is None and not header and _headerless_layout(fields) == "vendor":
            e.symbols = _salvage_symbols(data, delim)
        elif e.symbols is None and header and "symbol" in [n.lower() for n in names]:
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
