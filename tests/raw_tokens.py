"""What the raw-file fuzz test (`tests/test_raw_fuzz.py`) writes into files: field values that are surely bad
or merely odd for each column role, byte-level edits, and whole files of other types under a raw file's name;
and `Mutator`, the bookkeeping every mutation does (`tests/raw_mutations.py`)."""

from __future__ import annotations

import gzip
import io
from typing import Optional

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import strategies as st

from tests.raw_layouts import NS

# --------------------------------------------------------------------------------------- field tokens

NUMBER_BAD = ["", "abc", "nan", "NaN", "inf", "-inf", "Infinity", "1e400", "-1e400", "-5", "-0.01", "100.5.5",
              "0x1A", "1_000", "\u0661\u0662\u0663", "--1", "1e", "N/A", "null", "#N/A", "1 2"]
PRICE_BAD = NUMBER_BAD + ["0", "0.0", "-0"]
VOLUME_BAD = ["abc", "inf", "-inf", "1e400", "-1", "-0.5", "100.5.5", "1_000", "\u0661\u0662\u0663"]
NUMBER_ODD = ["1e308", "1e-300", "+100", "100.", ".5", "1E2", " 100 ", "0.0001", "99999999999", "1e18"]
FIELD_TEXT = st.text(alphabet="0123456789:-/. +eEnaTZ\"',;\t\u00e9", max_size=12)


def iso_bad(s: str) -> list[str]:
    """Impossible date/time variants of an ISO `YYYY-MM-DD HH:MM:SS[zone]` string."""
    return [s[:5] + "13" + s[7:], "2024-02-30" + s[10:], "2023-02-29" + s[10:], s[:5] + "00" + s[7:],
            s[:8] + "32" + s[10:], "0000" + s[4:], s[:11] + "99" + s[13:], s[:11] + "24" + s[13:],
            s[:14] + "61" + s[16:], s[:17] + "60" + s[19:], s[:19] + "+99:99", s[:19] + "+25:00", "", "NaT",
            s[:19] + " IST", "1/8/24 09:15"]


def iso_odd(s: str) -> list[str]:
    return [s[:10], s[:16], s[:19] + "Z", s[:19] + "+0530", s[:19] + ".5" + s[19:], s.replace(" ", "T"),
            "9999-12-31 23:59:59", "1969-12-31 23:59:59", "2262-04-12 00:00:00"]


def _epoch_bad(s: str) -> list[str]:
    return ["", "abc", "nan", "inf", "1e30", "99999999999999999999", "-1e30", str(int(s) * 1000), "-1",
            "-1736480700", str(int(s) * 10**9) + "0"]


def _epoch_odd(s: str) -> list[str]:
    return ["0", s + ".5", str(int(s) + 30), s + ".0", str(int(s) * 1000) + ".0", " " + s, "1e9"]


DATE8_BAD = ["20241302", "20240230", "20230229", "20240100", "20240132", "00000102", "", "2024010", "2024022",
             "202401021", "99999999", "2024 01 02"]
HHMM_BAD = ["99:16", "24:00", "09:60", "", "-1:00", "09:16:99", "9", "0916x"]
TIME_BAD = ["25:00:00", "09:61:00", "09:15:60", "", "24:00:00"]


def tokens(role: str, orig: str) -> tuple[list, list]:
    """(surely bad tokens, odd but maybe valid ones) for a field of `role` holding `orig`."""
    if role in ("open", "high", "low", "close"):
        return PRICE_BAD, NUMBER_ODD + [orig + "0", "-" + orig]
    if role == "volume":
        return VOLUME_BAD, NUMBER_ODD + ["", "nan", "0"]
    if role == "datetime" and orig.lstrip("-").isdigit():
        return _epoch_bad(orig), _epoch_odd(orig)
    if role == "datetime":
        return iso_bad(orig), iso_odd(orig)
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


INSERTS = [b"\x00", b"\r", b'"', b",", b"\n", b"\xff", b"\xe9", b"\x00\x00", b"'", b"\\"]


class Mutator:
    """Each mutation records its description, whether it keeps the file's meaning (`preserving`) and the line
    a single planted error must be reported at (`blames`, one entry per mutation, None where none). Byte edits
    wait in `byte_ops` until the file is written; `replacement` names a whole file of another type."""

    def __init__(self, draw, f):
        self.draw, self.f = draw, f
        self.ops: list[str] = []
        self.preserving = True
        self.blames: list = []
        self.byte_ops: list = []
        self.replacement: Optional[str] = None
        self.symbol_column = False       # a symbol column was added: the stem no longer names the symbol

    def _note(self, desc: str, preserving: bool = False, blame: Optional[int] = None) -> None:
        self.ops.append(desc)
        self.preserving &= preserving
        self.blames.append(blame)

    def bytes_op(self):
        kind = self.draw(st.sampled_from(["flip", "set", "delete", "insert", "cut", "append"]))
        pos = self.draw(st.floats(0, 1, exclude_max=True))
        arg = {"flip": lambda: self.draw(st.integers(0, 7)), "set": lambda: self.draw(st.integers(0, 255)),
               "delete": lambda: self.draw(st.integers(1, 8)),
               "insert": lambda: self.draw(st.sampled_from(INSERTS) | st.binary(min_size=1, max_size=4)),
               "cut": lambda: None, "append": lambda: self.draw(st.binary(min_size=1, max_size=8))}[kind]()
        self.byte_ops.append((kind, pos, arg))
        self._note(f"bytes: {kind} at {pos:.3f} ({arg!r})")

    def wrong_type(self):
        self.replacement = self.draw(st.sampled_from(list(WRONG_TYPES)))
        self._note(f"replaced by {self.replacement}")
