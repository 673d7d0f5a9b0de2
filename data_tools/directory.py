"""A whole raw directory -> processed files: check the options, read every raw file (`data_tools.readers`), group
its rows by symbol, process each wanted symbol (`data_tools.symbol`), write it (`data_tools.output`), and report:
a summary block per symbol written, one `error: ...` line per failure, and a closing count.

A symbol that fails leaves no processed file behind (a stale one from an earlier run is deleted); the other
symbols are still written. A raw file that fails as a whole fails the symbols it held, including those that
earlier runs wrote from it (`output.EarlierOutputs`), so that none of them is left stale or written without it.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from data_tools.errors import SymbolError
from data_tools.output import EarlierOutputs, remove_stale, write_processed
from data_tools.readers import (FileError, RawChunk, check_date_order, check_tz, list_raw_files,
                                peek_symbol_column, read_file)
from data_tools.session import IST
from data_tools.symbol import process_symbol
from jaxtrade.errors import InputError


@dataclass
class ProcessResult:
    summaries: list = field(default_factory=list)     # SymbolSummary, one per symbol written
    failures: list = field(default_factory=list)      # (symbol or file, one-line message)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures


class _Std:
    """Default for `out`/`err`: the current sys.stdout / sys.stderr at call time (so capture works)."""

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"sys.{self.name}"


def _normalize_symbols(symbols) -> Optional[list[str]]:
    if symbols is None:
        return None
    if isinstance(symbols, str):
        symbols = [symbols]
    out = []
    for s in symbols:
        out.extend(x.strip() for x in str(s).split(",") if x.strip())
    if not out or [s.lower() for s in out] == ["all"]:
        return None
    return out


def _check_options(raw_dir: Path, processed_dir: Path, bar_minutes, bar_label: str, source_tz: str,
                   date_order: str) -> Optional[int]:
    """Raise `InputError` for options the run cannot start with; returns `bar_minutes` as an int (or None)."""
    if bar_label not in ("auto", "start", "end"):
        raise InputError(f"--bar-label must be auto, start or end, not {bar_label!r}")
    if bar_minutes is not None:
        bar_minutes = int(bar_minutes)
        if bar_minutes <= 0 or bar_minutes > 375:
            raise InputError(f"--bar-minutes must be between 1 and 375, not {bar_minutes}")
    check_tz(source_tz)
    check_date_order(date_order)
    if raw_dir.exists() and processed_dir.exists() and raw_dir.resolve() == processed_dir.resolve():
        # Processed Parquet files would be read back as raw input on the next run.
        raise InputError(f"--processed-data-dir {processed_dir} is the raw data directory; use a separate folder")
    if not raw_dir.exists():
        raise InputError(f"{raw_dir}: raw data directory not found")
    if not raw_dir.is_dir():
        raise InputError(f"{raw_dir}: not a directory")
    return bar_minutes


class _Wanted:
    """Which symbols `--symbols` asks for (all when None); matched exactly, else case-insensitively."""

    def __init__(self, symbols):
        self.names = _normalize_symbols(symbols)
        self.exact = set(self.names) if self.names else None
        self.lower = {s.lower(): s for s in self.names} if self.names else {}

    def __call__(self, sym: str) -> bool:
        return self.exact is None or sym in self.exact or sym.lower() in self.lower


@dataclass
class _Collected:
    by_symbol: dict = field(default_factory=dict)      # symbol -> [RawChunk] of its rows
    failed: dict = field(default_factory=dict)         # symbol -> first message
    file_failures: list = field(default_factory=list)  # (file name, message): a file whose symbols are unknown
    seen: set = field(default_factory=set)  # every symbol met, wanted or not, to name them when one is missing


def _collect(files: list[Path], wanted: _Wanted, source_tz: str, date_order: str,
             earlier: EarlierOutputs) -> _Collected:
    """Read every raw file and group its rows by symbol. A file that fails as a whole fails every symbol it held,
    as far as can be told: those its rows name, and those earlier runs wrote from it (`earlier`: a file whose
    first lines no longer show its layout names none); with neither, a file that seems to hold one symbol
    fails its stem."""
    got = _Collected()
    for path in files:
        multi = peek_symbol_column(path)
        if multi is False:
            got.seen.add(path.stem)
            if not wanted(path.stem) and not any(wanted(s) for s in earlier.raw_symbols_from(path.name)):
                continue
        try:
            chunk = read_file(path, str(path), source_tz, date_order)
        except FileError as e:
            held = set(e.symbols or ()) | earlier.raw_symbols_from(path.name)
            syms = sorted(held) if held else ([path.stem] if multi is not True else None)
            got.seen.update(syms or ())
            if syms:
                for s in syms:
                    if wanted(s):
                        got.failed.setdefault(s, str(e))
            elif wanted.exact is None or multi is not True:
                got.file_failures.append((path.name, str(e)))
            continue
        if chunk.symbols is None:
            got.seen.add(path.stem)
            if wanted(path.stem):
                got.by_symbol.setdefault(path.stem, []).append(chunk)
            continue
        uniq, inv = np.unique(chunk.symbols.astype(str), return_inverse=True)
        got.seen.update(str(s) for s in uniq)
        for k, s in enumerate(uniq):
            if wanted(s):
                got.by_symbol.setdefault(s, []).append(chunk if len(uniq) == 1 else _rows_of(chunk, inv == k))
    return got


def _rows_of(chunk: RawChunk, mask: np.ndarray) -> RawChunk:
    """The rows of a multi-symbol chunk where `mask` holds, as a chunk of one symbol."""
    return RawChunk(path=chunk.path, display=chunk.display, ts_utc=chunk.ts_utc[mask], open=chunk.open[mask],
                    high=chunk.high[mask], low=chunk.low[mask], close=chunk.close[mask],
                    volume=chunk.volume[mask], oi=chunk.oi[mask], rows=chunk.rows[mask], symbols=None,
                    synthetic=chunk.synthetic, meta=chunk.meta, ts_info=chunk.ts_info)


def process_directory(raw_dir, processed_dir, symbols=None, bar_minutes=None, bar_label="auto",
                      source_tz=IST, out=_Std("stdout"), err=_Std("stderr"), date_order="dmy") -> ProcessResult:
    """Process every symbol found in `raw_dir` (or only `symbols`) into `processed_dir`.

    Prints a summary block per symbol on `out` (default: sys.stdout) and one `error: ...` line per failure on
    `err` (default: sys.stderr); either may be None for silence. Raises `InputError` when the run cannot start
    at all (missing raw directory, no input files, bad options); a bad file or symbol is a failure in the
    result, and the other symbols are still written.
    `date_order` (dmy or mdy) says how day/month dates such as 1/8/2024 are read.
    """
    t0 = time.perf_counter()
    if isinstance(out, _Std):
        out = sys.stdout
    if isinstance(err, _Std):
        err = sys.stderr
    raw_dir = Path(raw_dir)
    processed_dir = Path(processed_dir)
    bar_minutes = _check_options(raw_dir, processed_dir, bar_minutes, bar_label, source_tz, date_order)
    files = list_raw_files(raw_dir)
    if not files:
        raise InputError(f"{raw_dir}: no input files found (.csv, .txt or .parquet)")
    wanted = _Wanted(symbols)
    got = _collect(files, wanted, source_tz, date_order, EarlierOutputs(processed_dir))
    failed = got.failed

    # requested symbols that nowhere appear
    if wanted.names:
        found = set(got.by_symbol) | set(failed)
        found_lower = {s.lower() for s in found}
        for s in wanted.names:
            if s not in found and s.lower() not in found_lower:
                have = ", ".join(sorted(got.seen | found)) or "none"
                failed.setdefault(s, f"--symbols: symbol {s!r} not found in {raw_dir} (found: {have})")

    result = ProcessResult()
    for sym in sorted(set(got.by_symbol) | set(failed)):
        if sym in failed:
            continue
        try:
            table, summary = process_symbol(sym, got.by_symbol[sym], processed_dir, bar_minutes, bar_label)
            write_processed(table, summary)
        except SymbolError as e:
            failed[sym] = str(e)
            continue
        except OSError as e:
            failed[sym] = f"{processed_dir}: cannot write {sym} ({e.strerror or e})"
            continue
        result.summaries.append(summary)
        if out is not None:
            out.write(summary.render() + "\n")
            out.flush()

    for sym in sorted(failed):
        remove_stale(processed_dir, sym, bar_minutes)
        result.failures.append((sym, failed[sym]))
    result.failures.extend(got.file_failures)
    result.seconds = time.perf_counter() - t0
    _report(result, processed_dir, out, err)
    return result


def _report(result: ProcessResult, processed_dir: Path, out, err) -> None:
    """One `error:` line per distinct failure message on `err`, then the closing count on `out`."""
    if err is not None:
        said = set()
        for _, msg in result.failures:
            if msg not in said:            # a bad vendor file fails several symbols with one message
                said.add(msg)
                err.write(f"error: {msg}\n")
        err.flush()
    if out is not None:
        n_ok, n_bad = len(result.summaries), len(result.failures)
        out.write(f"processed {n_ok} symbol{'s' if n_ok != 1 else ''} in {result.seconds:.2f} s"
                  + (f", {n_bad} failed" if n_bad else "") + f" -> {processed_dir}\n")
        out.flush()
