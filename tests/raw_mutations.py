"""Mutations of the valid raw files of `tests/raw_layouts.py` (see `tests/raw_fuzz.py`): hypothesis strategies
that draw a `Mutant`, a file's name and bytes with what the command must do with them."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pyarrow as pa
from hypothesis import strategies as st

from tests.raw_layouts import LAYOUTS, NS, ParquetFile, TextFile
from tests.raw_tokens import FIELD_TEXT, NUMBER_BAD, WRONG_TYPES, Mutator, apply_bytes, iso_bad, iso_odd, tokens


def _is_wall_clock(text: str) -> bool:
    """Whether `text` is a real `YYYY-MM-DD HH:MM:SS` time (an earlier mutation may have made it month 13)."""
    try:
        np.datetime64(text.replace(" ", "T"))
    except ValueError:
        return False
    return True


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


# ---------------------------------------------------------------------------------- text mutations


class TextMutator(Mutator):
    """Draws mutations of a `TextFile`."""

    # -- helpers
    def _data_rows(self, reaching: int = 0) -> list[int]:
        """Indices of the data rows that have a field at position `reaching` (earlier mutations may have
        deleted fields of some rows)."""
        return [i for i, r in enumerate(self.f.rows) if isinstance(r, list) and len(r) > reaching]

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
        bad, odd = tokens(role, row[k])
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
        prices = [k for k, role in enumerate(self.f.roles) if role in ("open", "high", "low", "close", "volume")]
        k = self.draw(st.sampled_from(prices))
        rows = self._data_rows(reaching=k)
        if not rows:
            return self._note("no data row to change")
        r = self.draw(st.sampled_from(rows))
        x = self.draw(st.floats(allow_nan=True, allow_infinity=True))
        self.f.rows[r][k] = repr(x)
        self._note(f"line {self.f.line_of(r)} {self.f.roles[k]} -> {x!r}")

    def shift_zone(self):
        """Rewrite the timestamps of some rows in another zone: the same instant (meaning kept) or the same
        wall clock with another offset."""
        k = self.f.roles.index("datetime") if "datetime" in self.f.roles else None
        rows = self._data_rows(reaching=k or 0)
        if k is None or not rows or self.f.rows[rows[0]][k].lstrip("-").isdigit():
            return self.mixed_epoch_units()
        chosen = self.draw(st.sets(st.sampled_from(rows), min_size=1))
        zone = self.draw(st.sampled_from(["+00:00", "Z", "-05:00", "+09:00", "naive", "+05:30"]))
        same_instant = self.draw(st.booleans())
        offsets = {"+05:30": 330, "+00:00": 0, "": 330}
        for r in chosen:
            s = self.f.rows[r][k]
            if len(s) < 19 or s[4] != "-" or s[19:] not in offsets or not _is_wall_clock(s[:19]):
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
        rows = self._data_rows(reaching=k or 0)
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


TEXT_OPS = [
    "set_field", "set_field", "set_field", "set_field", "set_field", "set_float", "shift_zone", "mixed_epoch_units",
    "drop_column", "add_column", "swap_columns", "header_case", "ragged_row", "delete_row", "duplicate_row",
    "shuffle_rows", "blank_line", "truncate_last", "repeat_header", "delete_header", "line_endings", "delimiter",
    "quote", "pad", "encoding", "bytes_op", "bytes_op", "wrong_type"]


# --------------------------------------------------------------------------------- Parquet mutations

class ParquetMutator(Mutator):
    """Draws mutations of a `ParquetFile`."""

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
            values[r] = self.draw(st.sampled_from(iso_bad(values[r]) if pick == "bad" else iso_odd(values[r])))
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
        if arr.null_count:
            return self._note("timestamp type kept")
        try:
            arr = arr.cast(pa.timestamp("ns", tz=arr.type.tz))
        except pa.ArrowInvalid:          # out of the ns range (a planted bad value)
            return self._note("timestamp type kept")
        ns = arr.cast(pa.int64()).to_numpy(zero_copy_only=False)
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
