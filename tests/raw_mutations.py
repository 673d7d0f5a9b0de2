"""Mutations of the valid raw files of `raw_fuzz` (see its docstring): hypothesis strategies that draw a
`Mutant`, a file's name and bytes with what the command must do with them."""

from __future__ import annotations

import copy
import gzip
import io
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from hypothesis import strategies as st

from tests.raw_layouts import LAYOUTS, NS, ParquetFile, TextFile


@dataclass
class Mutant:
    name: str                    # file name in the raw directory
    layout: str
    data: bytes
    symbols: list                # the symbols of the valid file
    ops: list                    # what was done, in words
    expected: Optional[dict]     # symbol -> bars, when every mutation kept the file's meaning
    blame: Optional[int]         # the line (row) an error must name, when one mutation planted one bad row
    stem_symbol: bool            # the file's stem is its symbol (no vendor layout, no symbol column)

    def __repr__(self) -> str:
        return (f"Mutant(name={self.name!r}, layout={self.layout!r}, ops={self.ops!r}, blame={self.blame!r}, "
                f"data={self.data!r})")


# --------------------------------------------------------------------------------------- field tokens

NUMBER_BAD = ["", "abc", "nan", "NaN", "inf", "-inf", "Infinity", "1e400", "-1e400", "-5", "-0.01", "100.5.5",
              "0x1A", "1_000", "\u0661\u0662\u0663", "--1", "1e", "N/A", "null", "#N/A", "1 2"]
PRICE_BAD = NUMBER_BAD + ["0", "0.0", "-0"]
VOLUME_BAD = ["abc", "inf", "-inf", "1e400", "-1", "-0.5", "100.5.5", "1_000", "\u0661\u0662\u0663"]
NUMBER_ODD = ["1e308", "1e-300", "+100", "100.", ".5", "1E2", " 100 ", "0.0001", "99999999999", "1e18"]
FIELD_TEXT = st.text(alphabet="0123456789:-/. +eEnaTZ\"',;\t\u00e9", max_size=12)


def _iso_bad(s: str) -> list[str]:
    """Impossible date/time variants of an ISO `YYYY-MM-DD HH:MM:SS[zone]` string."""
    return [s[:5] + "13" + s[7:], "2024-02-30" + s[10:], "2023-02-29" + s[10:], s[:5] + "00" + s[7:],
            s[:8] + "32" + s[10:], "0000" + s[4:], s[:11] + "99" + s[13:], s[:11] + "24" + s[13:],
            s[:14] + "61" + s[16:], s[:17] + "60" + s[19:], s[:19] + "+99:99", s[:19] + "+25:00", "", "NaT",
            s[:19] + " IST", "1/8/24 09:15"]


def _iso_odd(s: str) -> list[str]:
    return [s[:10], s[:16], s[:19] + "Z", s[:19] + "+0530", s[:19] + ".5" + s[19:], s.replace(" ", "T"),
            "9999-12-31 23:59:59", "1969-12-31 23:59:59", "2262-04-12 00:00:00"]


def _epoch_bad(s: str) -> list[str]:
    return ["", "abc", "nan", "inf", "1e30", "99999999999999999999", "-1e30", str(int(s) * 1000), "-1",
            "-1736480700", str(int(s) * 10**9) + "0"]


def _epoch_odd(s: str) -> list[str]:
    return ["0", s + ".5", str(int(s) + 30), s + ".0", str(int(s) * 1000) + ".0", " " + s, "1e9"]


DATE8_BAD = ["20241302", "20240230", "20230229", "20240100", "20240132", "00000102", "", "2024010", "202401021",
             "99999999", "2024 01 02"]
HHMM_BAD = ["99:16", "24:00", "09:60", "", "-1:00", "09:16:99", "9", "0916x"]
TIME_BAD = ["25:00:00", "09:61:00", "09:15:60", "", "24:00:00"]


def _tokens(role: str, orig: str) -> tuple[list, list]:
    """(surely bad tokens, odd but maybe valid ones) for a field of `role` holding `orig`."""
    if role in ("open", "high", "low", "close"):
        return PRICE_BAD, NUMBER_ODD + [orig + "0", "-" + orig]
    if role == "volume":
        return VOLUME_BAD, NUMBER_ODD + ["", "nan", "0"]
    if role == "datetime" and orig.lstrip("-").isdigit():
        return _epoch_bad(orig), _epoch_odd(orig)
    if role == "datetime":
        return _iso_bad(orig), _iso_odd(orig)
    if role == "date" and len(orig) == 8:
        return DATE8_BAD, ["2024-01-02", "02/01/2024", "20240102 "]
    if role == "date":
        return [orig[:5] + "13" + orig[7:], orig[:8] + "31" if orig[5:7] in ("02", "04") else "2024-02-30", ""], \
            [orig.replace("-", "/"), orig[8:] + "-" + orig[5:7] + "-" + orig[:4]]
    if role == "time" and len(orig) == 5:
        return HHMM_BAD, ["9:16", "09:16:00", "0916"]
    if role == "time":
        return TIME_BAD, [orig[:5], "9" + orig[2:]]
    if role == "symbol":
        return ["", "  "], ["nifty", "NIFTY ", "BANKNIFTY", "NIFTY\u00e9", "X"]
    return [], ["", "abc", "1e400", "\u00e9"]


# ---------------------------------------------------------------------------------- text mutations

class TextMutator:
    """Draws mutations of a `TextFile`; each records its description, whether it keeps the file's meaning and
    the line a single planted error must be reported at."""

    def __init__(self, draw, f: TextFile):
        self.draw, self.f = draw, f
        self.ops: list[str] = []
        self.preserving = True
        self.blames: list = []          # one entry per mutation: a line number or None
        self.byte_ops: list = []
        self.replacement: Optional[bytes] = None
        self.symbol_column = False

    # -- helpers
    def _data_rows(self) -> list[int]:
        return [i for i, r in enumerate(self.f.rows) if isinstance(r, list)]

    def _note(self, desc: str, preserving: bool = False, blame: Optional[int] = None) -> None:
        self.ops.append(desc)
        self.preserving &= preserving
        self.blames.append(blame)

    @property
    def has_header(self) -> bool:
        return bool(self.f.header)

    # -- field values
    def set_field(self):
        rows = self._data_rows()
        if not rows:
            return self._note("no data row to change")
        r = self.draw(st.sampled_from(rows))
        row = self.f.rows[r]
        k = self.draw(st.integers(0, len(row) - 1))
        role = self.f.roles[k] if k < len(self.f.roles) else "extra"
        bad, odd = _tokens(role, row[k])
        which = self.draw(st.sampled_from(["bad", "bad", "odd", "text"] if bad else ["odd", "text"]))
        if which == "text":
            tok = self.draw(FIELD_TEXT)
        else:
            tok = self.draw(st.sampled_from(bad if which == "bad" else odd))
        if self.f.delimiter in tok or '"' in tok or "\n" in tok:
            which = "text"       # changes the row's fields, not only this one
        line = self.f.line_of(r)
        row[k] = tok
        self._note(f"line {line} {role} field -> {tok!r}", blame=line if which == "bad" else None)

    def set_float(self):
        rows = self._data_rows()
        if not rows:
            return self._note("no data row to change")
        r = self.draw(st.sampled_from(rows))
        prices = [k for k, role in enumerate(self.f.roles) if role in ("open", "high", "low", "close", "volume")]
        k = self.draw(st.sampled_from(prices))
        x = self.draw(st.floats(allow_nan=True, allow_infinity=True))
        self.f.rows[r][k] = repr(x)
        self._note(f"line {self.f.line_of(r)} {self.f.roles[k]} -> {x!r}")

    def shift_zone(self):
        """Rewrite the timestamps of some rows in another zone: the same instant (meaning kept) or the same
        wall clock with another offset."""
        k = self.f.roles.index("datetime") if "datetime" in self.f.roles else None
        rows = self._data_rows()
        if k is None or not rows or self.f.rows[rows[0]][k].lstrip("-").isdigit():
            return self.mixed_epoch_units()
        chosen = self.draw(st.sets(st.sampled_from(rows), min_size=1))
        zone = self.draw(st.sampled_from(["+00:00", "Z", "-05:00", "+09:00", "naive", "+05:30"]))
        same_instant = self.draw(st.booleans())
        offsets = {"+05:30": 330, "+00:00": 0, "": 330}
        for r in chosen:
            s = self.f.rows[r][k]
            if len(s) < 19 or s[4] != "-" or s[19:] not in offsets:
                return self._note("timestamps changed before: zone left alone")
        for r in chosen:
            s = self.f.rows[r][k]
            wall = np.datetime64(s[:19].replace(" ", "T"))
            off = offsets[s[19:]]
            to = {"+00:00": 0, "Z": 0, "-05:00": -300, "+09:00": 540, "naive": 330, "+05:30": 330}[zone]
            new_wall = wall + np.timedelta64(to - off, "m") if same_instant else wall
            self.f.rows[r][k] = str(new_wall).replace("T", " ") + ("" if zone == "naive" else zone)
        self._note(f"{len(chosen)} row(s) to zone {zone} ({'same instant' if same_instant else 'same wall clock'})",
                   preserving=same_instant)

    def mixed_epoch_units(self):
        k = self.f.roles.index("datetime") if "datetime" in self.f.roles else None
        rows = self._data_rows()
        if k is None or not rows or not self.f.rows[rows[0]][k].isdigit():
            return self.set_field()
        everything = self.draw(st.booleans())
        chosen = rows if everything else [self.draw(st.sampled_from(rows))]
        unit = self.draw(st.sampled_from([1000, 10**6, 10**9]))
        for r in chosen:
            if not self.f.rows[r][k].isdigit() or int(self.f.rows[r][k]) >= 10**11:
                return self._note("timestamp already changed")
            self.f.rows[r][k] = str(int(self.f.rows[r][k]) * unit)
        if everything:
            self._note(f"all epoch timestamps x{unit}", preserving=True)
        else:
            line = self.f.line_of(chosen[0])
            self._note(f"line {line} epoch timestamp x{unit}", blame=line if len(rows) > 2 else None)

    # -- columns
    def _all_lines(self):
        return [h for h in self.f.header] + [r for r in self.f.rows if isinstance(r, list)]

    def drop_column(self):
        n = len(self.f.roles)
        k = self.draw(st.integers(0, n - 1))
        for line in self._all_lines():
            if k < len(line):
                del line[k]
        role = self.f.roles.pop(k)
        self._note(f"column {k} ({role}) dropped", preserving=role in ("extra", "index", "oi") and self.has_header
                   and not (self.f.layout == "yfinance" and k == 0))

    def add_column(self):
        k = self.draw(st.integers(0, len(self.f.roles)))
        if self.f.layout == "yfinance" and k == 0:
            k = 1
        name = self.draw(st.sampled_from(["Extra", "Adj Close", "Open", "", "OI", "Symbol", "Time", "Date", "é"]))
        value = self.draw(st.sampled_from(["x", "1", "", "NIFTY", "09:15"]))
        for i, h in enumerate(self.f.header):
            h.insert(k, name if i == 0 else ("^NSEI" if i == 1 else ""))
        for r in self._data_rows():
            self.f.rows[r].insert(k, value)
        self.f.roles.insert(k, "extra")
        self.symbol_column |= name == "Symbol" and self.has_header
        keeps = self.has_header and (name in ("Extra", "Adj Close") or (name == "OI" and value in ("1", "")))
        self._note(f"column {name!r} = {value!r} added at {k}", preserving=keeps)

    def swap_columns(self):
        n = len(self.f.roles)
        i, j = self.draw(st.integers(0, n - 1)), self.draw(st.integers(0, n - 1))
        header_only = self.has_header and self.draw(st.booleans())
        for line in (self.f.header if header_only else self._all_lines()):
            if max(i, j) < len(line):
                line[i], line[j] = line[j], line[i]
        if not header_only:
            self.f.roles[i], self.f.roles[j] = self.f.roles[j], self.f.roles[i]
        same = i == j or (header_only and self.f.roles[i] == self.f.roles[j])
        keeps = same or (not header_only and self.has_header and not (self.f.layout == "yfinance" and 0 in (i, j)))
        self._note(f"columns {i} and {j} swapped{' in the header' if header_only else ''}", preserving=keeps)

    def header_case(self):
        if not self.has_header:
            return self.add_column()
        how = self.draw(st.sampled_from([str.upper, str.lower, str.title]))
        self.f.header[0] = [how(x) for x in self.f.header[0]]
        self._note(f"header names {how.__name__}", preserving=True)

    def ragged_row(self):
        rows = self._data_rows()
        if not rows:
            return self._note("no data row")
        r = self.draw(st.sampled_from(rows))
        row = self.f.rows[r]
        line = self.f.line_of(r)
        if self.draw(st.booleans()):
            row.append(self.draw(st.sampled_from(["", "0", "x"])))
            what = "an extra field"
        else:
            del row[self.draw(st.integers(0, len(row) - 1))]
            what = "a field fewer"
        first = r == self._data_rows()[0] and not self.has_header
        self._note(f"line {line} has {what}", blame=None if first else line)

    # -- rows
    def delete_row(self):
        rows = self._data_rows()
        if len(rows) > 1:
            r = self.draw(st.sampled_from(rows))
            del self.f.rows[r]
            self._note(f"data row {r} deleted")

    def duplicate_row(self):
        rows = self._data_rows()
        r = self.draw(st.sampled_from(rows))
        at = self.draw(st.integers(0, len(self.f.rows)))
        self.f.rows.insert(at, list(self.f.rows[r]))
        self._note(f"data row {r} repeated at {at}", preserving=True)

    def shuffle_rows(self):
        perm = self.draw(st.permutations(range(len(self.f.rows))))
        self.f.rows = [self.f.rows[i] for i in perm]
        self._note("rows shuffled", preserving=True)

    def blank_line(self):
        at = self.draw(st.integers(0, len(self.f.rows)))
        blank = self.draw(st.sampled_from(["", " ", "\t", "  "]))
        if self.draw(st.booleans()):
            self.f.leading_blank += 1
            self._note("a blank line before everything", preserving=True)
        else:
            self.f.rows.insert(at, blank)
            self._note(f"blank line {blank!r} at data row {at}", preserving=True)

    def truncate_last(self):
        r = len(self.f.rows) - 1
        last = self.f.rows[r]
        text = last if isinstance(last, str) else self.f.delimiter.join(last)
        cut = self.draw(st.integers(0, max(0, len(text) - 1)))
        self.f.rows[r] = text[:cut]
        self.f.final_newline = self.draw(st.booleans())
        self._note(f"last line cut to {text[:cut]!r}")

    def repeat_header(self):
        if not self.has_header or not self.f.rows:
            return self.delete_header()
        at = self.draw(st.integers(1, len(self.f.rows)))
        for h in reversed(self.f.header):
            self.f.rows.insert(at, list(h))
        line = self.f.line_of(at)
        self._note(f"header repeated at line {line} (concatenated exports)", blame=line)

    def delete_header(self):
        if self.has_header:
            n = self.draw(st.integers(1, len(self.f.header)))
            del self.f.header[:n]
            self._note(f"{n} header line(s) deleted")
        else:
            names = ["symbol", "date", "time", "open", "high", "low", "close", "volume", "oi"]
            self.f.header = [list(names)]
            self.symbol_column = True
            self._note("a header added", preserving=self.f.roles == names)

    # -- how it is written
    def line_endings(self):
        self.f.newline = self.draw(st.sampled_from(["\r\n", "\n", "\r\n"]))
        self.f.final_newline = self.draw(st.booleans())
        self._note(f"newline {self.f.newline!r}, final newline {self.f.final_newline}", preserving=True)

    def delimiter(self):
        d = self.draw(st.sampled_from([";", "\t", "|"]))
        if any(d in x for line in self._all_lines() for x in line):
            return self._note("delimiter kept")
        self.f.delimiter = d
        self._note(f"delimiter {d!r}", preserving=True)

    def quote(self):
        self.f.quote = True
        self._note("every field quoted", preserving=True)

    def pad(self):
        for line in self._all_lines()[len(self.f.header):]:
            for k in range(len(line)):
                line[k] = f" {line[k]} "
        self._note("spaces around every data field", preserving=True)

    def encoding(self):
        enc = self.draw(st.sampled_from(["utf-8-sig", "utf-16", "utf-16-be-bom", "utf-16-le", "latin-1"]))
        self.f.encoding = enc
        rows = self._data_rows()
        if enc == "latin-1" and rows:
            r = self.draw(st.sampled_from(rows))
            k = self.draw(st.integers(0, len(self.f.rows[r]) - 1))
            self.f.rows[r][k] += "\u00e9"
            line = self.f.line_of(r)
            self._note(f"Latin-1, an e-acute in line {line}", blame=line)
        else:
            self._note(f"encoding {enc}", preserving=enc != "utf-16-le")

    # -- bytes
    def bytes_op(self):
        kind = self.draw(st.sampled_from(["flip", "set", "delete", "insert", "cut", "append"]))
        pos = self.draw(st.floats(0, 1, exclude_max=True))
        arg = {"flip": lambda: self.draw(st.integers(0, 7)), "set": lambda: self.draw(st.integers(0, 255)),
               "delete": lambda: self.draw(st.integers(1, 8)),
               "insert": lambda: self.draw(st.sampled_from([b"\x00", b"\r", b'"', b",", b"\n", b"\xff", b"\xe9",
                                                             b"\x00\x00", b"'", b"\\"]) | st.binary(min_size=1, max_size=4)),
               "cut": lambda: None, "append": lambda: self.draw(st.binary(min_size=1, max_size=8))}[kind]()
        self.byte_ops.append((kind, pos, arg))
        self._note(f"bytes: {kind} at {pos:.3f} ({arg!r})")

    def wrong_type(self):
        self.replacement = self.draw(st.sampled_from(list(WRONG_TYPES)))
        self._note(f"replaced by {self.replacement}")


TEXT_OPS = [
    "set_field", "set_field", "set_field", "set_field", "set_field", "set_float", "shift_zone", "mixed_epoch_units", "drop_column",
    "add_column", "swap_columns", "header_case", "ragged_row", "delete_row", "duplicate_row", "shuffle_rows",
    "blank_line", "truncate_last", "repeat_header", "delete_header", "line_endings", "delimiter", "quote", "pad",
    "encoding", "bytes_op", "bytes_op", "wrong_type"]


def apply_bytes(data: bytes, ops: list) -> bytes:
    for kind, pos, arg in ops:
        i = int(pos * len(data)) if data else 0
        if kind == "flip" and data:
            data = data[:i] + bytes([data[i] ^ (1 << arg)]) + data[i + 1:]
        elif kind == "set" and data:
            data = data[:i] + bytes([arg]) + data[i + 1:]
        elif kind == "delete":
            data = data[:i] + data[i + arg:]
        elif kind == "insert":
            data = data[:i] + arg + data[i:]
        elif kind == "cut":
            data = data[:i]
        elif kind == "append":
            data = data + arg
    return data


def _parquet_bytes() -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table({"timestamp": pa.array([1736480700 * NS], pa.timestamp("ns", tz="UTC")),
                             "open": [1.0], "high": [1.0], "low": [1.0], "close": [1.0]}), buf)
    return buf.getvalue()


GOOD_TEXT = b"datetime,open,high,low,close\n2025-01-10 09:15,1,2,1,1\n2025-01-10 09:16,1,2,1,1\n"
WRONG_TYPES = {
    "parquet": _parquet_bytes(), "gzip": gzip.compress(GOOD_TEXT, mtime=0),
    "zip": b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + bytes(20) + b"[Content_Types].xml",
    "png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(13),
    "html": b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head><body>Not Found</body></html>\n",
    "json": b'{"datetime": [1736480700], "open": [1], "high": [1], "low": [1], "close": [1]}\n',
    "empty": b"", "whitespace": b"  \n\n\t\n", "nul": bytes(64), "text": GOOD_TEXT, "random": bytes(range(256)),
}


# --------------------------------------------------------------------------------- Parquet mutations

class ParquetMutator:
    def __init__(self, draw, f: ParquetFile):
        self.draw, self.f = draw, f
        self.ops: list[str] = []
        self.preserving = True
        self.blames: list = []
        self.byte_ops: list = []
        self.replacement: Optional[bytes] = None
        self.symbol_column = False

    _note = TextMutator._note
    bytes_op = TextMutator.bytes_op
    wrong_type = TextMutator.wrong_type

    def _col(self, name):
        for i, (n, _) in enumerate(self.f.columns):
            if n.lower() == name.lower():
                return i
        return None

    def set_value(self):
        i = self.draw(st.integers(0, len(self.f.columns) - 1))
        name, arr = self.f.columns[i]
        n = len(arr)
        if n == 0:
            return self._note("no rows to change")
        r = self.draw(st.integers(0, n - 1))
        t = arr.type
        values = None if pa.types.is_timestamp(t) else arr.to_pylist()
        pick = self.draw(st.sampled_from(["bad", "bad", "odd"]))
        if pa.types.is_floating(t) or name == "Volume":
            bad = [None, float("nan"), float("inf"), float("-inf"), -1.0] if name != "Volume" else [
                float("inf"), -1.0, -0.5]
            bad += [0.0] if name != "Volume" else []
            odd = [1e308, 1e-300, 0.5] + ([None, float("nan")] if name == "Volume" else [])
            v = self.draw(st.sampled_from(bad if pick == "bad" else odd) | st.floats())
            if v not in bad:
                pick = "odd"
            values[r] = v
            arr = pa.array(values, pa.float64())
        elif pa.types.is_integer(t):             # epoch timestamps
            v = self.draw(st.sampled_from([None, -values[r], -1] + [values[r] * 1000, 2**62] * (n >= 3)
                                          if pick == "bad" else [0, values[r] + 1]))
            values[r] = v
            arr = pa.array(values, pa.int64())
        elif pa.types.is_timestamp(t):
            per_s = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}[t.unit]
            secs = [None if x is None else x // per_s for x in arr.cast(pa.int64()).to_pylist()]
            if pick == "bad":
                secs[r] = self.draw(st.sampled_from([None, -62135596800, 253402300799, -1]))  # year 1, 9999, 1969
            arr = pa.array(secs, pa.timestamp("s", tz=t.tz))
            values = secs
        elif not pa.types.is_string(t):
            return self._note(f"column {name} of type {t} left alone")
        else:                                     # ISO strings
            values[r] = self.draw(st.sampled_from(_iso_bad(values[r]) if pick == "bad" else _iso_odd(values[r])))
            arr = pa.array(values, pa.string())
        self.f.columns[i] = (name, arr)
        self._note(f"row {r + 1} {name} -> {values[r]!r}", blame=r + 1 if pick == "bad" else None,
                   preserving=pa.types.is_timestamp(t) and pick == "odd")

    def retype(self):
        """A price column as text (with a bad token), or the timestamp in another type that means the same."""
        if self.draw(st.booleans()):
            cols = [self._col(c) for c in ("Open", "High", "Low", "Close") if self._col(c) is not None]
            if not cols:
                return self._note("no price column left")
            i = self.draw(st.sampled_from(cols))
            name, arr = self.f.columns[i]
            if len(arr) == 0:
                return self._note("no rows to change")
            r = self.draw(st.integers(0, len(arr) - 1))
            vals = [repr(x) for x in arr.to_pylist()]
            vals[r] = self.draw(st.sampled_from(NUMBER_BAD))
            self.f.columns[i] = (name, pa.array(vals, pa.string()))
            return self._note(f"{name} as strings, row {r + 1} {vals[r]!r}", blame=r + 1)
        i = self._col("timestamp")
        if i is None:
            return self._note("no timestamp column left")
        name, arr = self.f.columns[i]
        if not pa.types.is_timestamp(arr.type) or arr.type.tz is None:
            return self._note("timestamp type kept", preserving=True)
        ns = arr.cast(pa.int64()).to_numpy(zero_copy_only=False)
        if arr.null_count:
            return self._note("timestamp type kept")
        kind = self.draw(st.sampled_from(["ms", "s", "float", "ist", "us", "text"]))
        new = {"ms": lambda: pa.array(ns // 10**6), "s": lambda: pa.array(ns // NS),
               "float": lambda: pa.array(ns / NS), "ist": lambda: arr.cast(pa.timestamp("ns", tz="Asia/Kolkata")),
               "us": lambda: arr.cast(pa.timestamp("us", tz="UTC")),
               "text": lambda: pa.array([str(x) for x in arr.cast(pa.timestamp("s", tz="UTC")).to_pylist()])
               .dictionary_encode()}[kind]()
        self.f.columns[i] = (name, new)
        self._note(f"timestamp as {kind}", preserving=True)

    def drop_column(self):
        i = self.draw(st.integers(0, len(self.f.columns) - 1))
        name, _ = self.f.columns.pop(i)
        self._note(f"column {name} dropped")

    def rename(self):
        i = self.draw(st.integers(0, len(self.f.columns) - 1))
        name, arr = self.f.columns[i]
        new = self.draw(st.sampled_from([name.upper(), name.lower(), f" {name} ", "x", "Date", "time", "symbol"]))
        self.f.columns[i] = (new, arr)
        self.symbol_column |= new == "symbol"
        self._note(f"column {name} renamed {new!r}", preserving=new.strip().lower() == name.lower())

    def add_column(self):
        n = len(self.f.columns[0][1])
        name = self.draw(st.sampled_from(["Adj Close", "symbol", "Open", "oi", "extra"]))
        value = self.draw(st.sampled_from(["NIFTY", "", None, 1.5]))
        self.symbol_column |= name == "symbol"
        arr = pa.array([value] * n)
        self.f.columns.insert(self.draw(st.integers(0, len(self.f.columns))), (name, arr))
        keeps = name in ("Adj Close", "extra") or (name == "oi" and value != "NIFTY")
        self._note(f"column {name!r} = {value!r} added", preserving=keeps)

    def reorder(self):
        perm = self.draw(st.permutations(range(len(self.f.columns))))
        self.f.columns = [self.f.columns[i] for i in perm]
        self._note("columns reordered", preserving=True)

    def drop_rows(self):
        n = len(self.f.columns[0][1])
        if n == 0:
            return self._note("no rows to drop")
        keep = self.draw(st.integers(0, n - 1))
        self.f.columns = [(name, arr.slice(0, keep)) for name, arr in self.f.columns]
        self._note(f"only the first {keep} rows kept")


PARQUET_OPS = ["set_value", "set_value", "set_value", "retype", "drop_column", "rename", "add_column", "reorder",
               "drop_rows", "bytes_op", "wrong_type"]


# ----------------------------------------------------------------------------------------- strategies

@st.composite
def mutants(draw, layouts=tuple(LAYOUTS)) -> Mutant:
    layout = draw(st.sampled_from(layouts))
    f = draw(LAYOUTS[layout]())
    f = copy.deepcopy(f)
    text = isinstance(f, TextFile)
    m = (TextMutator if text else ParquetMutator)(draw, f)
    for _ in range(draw(st.sampled_from([0, 1, 1, 1, 1, 2, 2, 2, 3, 3]))):
        getattr(m, draw(st.sampled_from(TEXT_OPS if text else PARQUET_OPS)))()
        if m.replacement is not None:
            break
    data = WRONG_TYPES[m.replacement] if m.replacement is not None else apply_bytes(f.render(), m.byte_ops)
    expected = f.expected if m.preserving else None
    blame = m.blames[0] if len(m.blames) == 1 else None
    return Mutant(f.name, f.layout, data, sorted(f.expected), m.ops, expected, blame,
                  layout != "vendor" and not m.symbol_column)
