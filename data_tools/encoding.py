"""The bytes of a raw text file as UTF-8 lines: which encodings are read, which files are not text at all, and the
line numbers that error messages give.

Text files are UTF-8 (a byte-order mark dropped) or UTF-16 with its byte-order mark; anything else, and files of
other types under a text name (Parquet, gzip, ZIP/Excel, images), is an error naming the line or the type.
"""

from __future__ import annotations

import csv
import io
import re
from typing import Optional

import numpy as np

from data_tools.errors import FileError

# file signatures of things that are not text, with what to tell the user
_NOT_TEXT = ((b"PAR1", "a Parquet file: give it a .parquet name"),
             (b"\x1f\x8b", "gzip-compressed: decompress it first"),
             (b"PK\x03\x04", "a ZIP archive (an Excel .xlsx workbook?): export it as CSV"),
             (b"\xd0\xcf\x11\xe0", "an Excel .xls workbook: export it as CSV"),
             (b"\x89PNG", "a PNG image"), (b"%PDF", "a PDF document"))
_WHITESPACE_LINE = re.compile(rb"(?m)^[ \t\f\v]+(?=\r?$)")


def line_of(data: bytes, pos: int) -> int:
    """The 1-based line number of byte `pos`."""
    return data.count(b"\n", 0, pos) + 1


def as_utf8(data: bytes, display: str) -> bytes:
    """A text file's bytes as UTF-8 without a byte-order mark, lines of only whitespace emptied (so that they
    are skipped as blank lines are) and a lone CR made a line end (pyarrow ends a line there: line numbers must
    agree). UTF-8 and UTF-16 with a byte-order mark are read; anything else that is not UTF-8 text is an error
    naming the line."""
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
        raise FileError(display, f"binary data (a NUL byte), not CSV text{hint}", row=line_of(data, nul))
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FileError(display, f"not UTF-8 text (byte 0x{data[e.start]:02X}): save the file as UTF-8",
                        row=line_of(data, e.start)) from None
    if data[:1] in (b" ", b"\t", b"\f", b"\v") or any(b"\n" + c in data for c in (b" ", b"\t", b"\f", b"\v")):
        data = _WHITESPACE_LINE.sub(b"", data)     # (rare: the regex scans every position)
    if data.count(b"\r") != data.count(b"\r\n"):
        data = re.sub(rb"\r(?!\n)", b"\n", data)
    return data


def nonempty_line_numbers(data: bytes) -> np.ndarray:
    """1-based line numbers of the non-blank lines of `data` (pyarrow skips empty lines; lines of only
    whitespace were emptied by `as_utf8`)."""
    buf = np.frombuffer(data, dtype=np.uint8)
    nl = np.flatnonzero(buf == 10)
    starts = np.concatenate([[0], nl + 1])
    ends = np.concatenate([nl, [len(buf)]])
    lengths = ends - starts
    has_cr = np.zeros(len(starts), bool)
    nz = lengths > 0
    has_cr[nz] = buf[ends[nz] - 1] == 13
    return np.flatnonzero(lengths - has_cr > 0).astype(np.int64) + 1


def ragged_line(data: bytes, delimiter: str, want: int, skip: int) -> Optional[int]:
    """Error path: the first line after the first `skip` with another number of fields than `want`."""
    try:
        reader = csv.reader(io.StringIO(data.decode("utf-8", "replace"), newline=""), delimiter=delimiter)
        for fields in reader:
            if reader.line_num > skip and fields and len(fields) != want:
                return reader.line_num
    except csv.Error:
        pass
    return None
