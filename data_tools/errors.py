"""The errors of the raw-data processor: a bad raw file (or row), and a symbol that cannot be processed. Each
message is one line naming the file (and the row)."""

from __future__ import annotations

from typing import Optional


class FileError(Exception):
    """A raw file (or one row of it) is bad. `str()` is one line naming the file and the row."""

    def __init__(self, path, message: str, row: Optional[int] = None, symbols: Optional[list] = None):
        self.path = str(path)
        self.row = row
        self.symbols = symbols
        where = self.path if row is None else f"{self.path} row {row}"
        message = " ".join(str(message).splitlines())
        super().__init__(f"{where}: {message}")


class SymbolError(Exception):
    """One symbol cannot be processed; the message is one line naming the file (and row)."""
