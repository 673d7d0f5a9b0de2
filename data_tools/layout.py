"""What layout a raw text file has, told from its first lines: the delimiter, whether the first line is a header
(and whether it is yfinance's three header lines), or which headerless vendor layout the rows have.

Used by the CSV reader and by `readers.peek_symbol_column`; nothing here reads a whole file except
`vendor_symbols`, which runs only when a file has already failed.
"""

from __future__ import annotations

import csv
import re
from typing import Optional

KNOWN_COLS = {"datetime", "timestamp", "date", "time", "open", "high", "low", "close", "volume", "oi",
              "symbol"}
VENDOR_LAYOUT = "SYMBOL,YYYYMMDD,HH:MM,OPEN,HIGH,LOW,CLOSE,VOLUME,OI"
HEAD_BYTES = 65536                    # how much of a file the layout is told from

_DATE8 = re.compile(r"^\d{8}$")
_HHMM = re.compile(r"^\d{1,2}:\d{2}(:\d{2})?$")


def head_text(head: bytes) -> str:
    """The first bytes of a text file as text (UTF-16 when it starts with its byte-order mark), for a peek."""
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return head.decode("utf-16", "replace")
    return head.decode("utf-8", "replace").lstrip("\ufeff")


def first_line(text: str) -> Optional[str]:
    for line in text.splitlines():
        if line.strip():
            return line
    return None


def split_line(line: str, delimiter: str = ",") -> list[str]:
    return next(csv.reader([line], delimiter=delimiter))


def delimiter_of(line: str) -> str:
    if "," in line:
        return ","
    for d in (";", "\t", "|"):
        if d in line:
            return d
    return ","


def is_header(fields: list[str]) -> bool:
    names = {f.strip().lower() for f in fields}
    return bool(names & (KNOWN_COLS - {"symbol"}))


def yfinance_header(text: str, delimiter: str):
    """yfinance >= 0.2.51 writes three header lines: `Price,Close,High,Low,Open,Volume`, `Ticker,^NSEI,...` and
    `Datetime,,,,,`. Returns (column names, the first being the datetime column; tickers), or None."""
    lines = []
    for line in text.splitlines():
        if line.strip():
            lines.append(split_line(line, delimiter))
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


def _headerless_layout(fields: list[str]) -> Optional[str]:
    f = [x.strip() for x in fields]
    if len(f) >= 7 and _DATE8.match(f[1]) and _HHMM.match(f[2]):
        return "vendor"            # SYMBOL,YYYYMMDD,HH:MM,O,H,L,C[,V[,OI]]
    if len(f) >= 6 and _DATE8.match(f[0]) and _HHMM.match(f[1]):
        return "vendor_nosym"      # YYYYMMDD,HH:MM,O,H,L,C[,V[,OI]]
    return None


def headerless(text: str, delimiter: str, lines: int = 10) -> tuple[Optional[str], list[str]]:
    """The headerless layout most of the first `lines` non-blank lines have (one bad first line must not hide
    the layout: the row then fails by itself), and the fields of the first line that has it."""
    votes: dict = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            fields = split_line(line, delimiter)
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


def holds_symbol_column(head: bytes) -> bool:
    """Whether the rows of a text file whose first bytes are `head` carry their symbol: a `symbol` column in
    its header, or the headerless vendor layout."""
    text = head_text(head)
    line = first_line(text)
    if line is None:
        return False
    delim = delimiter_of(line)
    fields = split_line(line, delim)
    if is_header(fields):
        return "symbol" in [c.strip().lower() for c in fields]
    return headerless(text, delim)[0] == "vendor"


def vendor_symbols(data: bytes) -> Optional[list]:
    """Error path only: the distinct first fields of a file in the headerless vendor layout (None when its first
    lines are not that layout, or it names none)."""
    text = head_text(data)
    line = first_line(text[:HEAD_BYTES])
    if line is None:
        return None
    delim = delimiter_of(line)
    if headerless(text[:HEAD_BYTES], delim)[0] != "vendor":
        return None
    try:
        syms = set()
        for line in text.splitlines():
            if line.strip():
                fields = split_line(line, delim)
                syms.add(fields[0].strip() if fields else "")
    except Exception:  # noqa: BLE001 - the file already failed; its symbols are a courtesy
        return None
    return sorted(s for s in syms if s) or None
