"""Fuzzing `data_tools.process`: the command run in-process, and the check of what it must do with a mutant.

`tests/raw_layouts.py` draws small valid files of every supported layout, `tests/raw_mutations.py` breaks them.
For every mutant the command exits 0 and writes processed files that satisfy DESIGN section 2 (exactly the bars
of the valid file when every mutation kept its meaning), or exits 2 with one line on stderr naming the file
(and the row, where one mutation planted one bad row) and leaves no processed file for the symbols that
failed; never another exit code, never a traceback, nothing else on stderr.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import json
import logging
import re
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from absl import flags

from data_tools import process
from data_tools.readers import FileError, read_file
from jaxtrade import cli

NS = 10**9
IST_OFFSET_NS = 19_800 * NS
DAY_NS = 86_400 * NS
OPEN_MIN, CLOSE_MIN = 9 * 60 + 15, 15 * 60 + 30
OUTPUT_TYPES = [("timestamp", pa.timestamp("ns", tz="Asia/Kolkata"))] + [
    (c, pa.float64()) for c in ("open", "high", "low", "close", "volume")] + [("session", pa.int32())]
METADATA_KEYS = ("symbol", "bar_minutes", "source", "rows_in", "rows_out")
STALE = b"stale processed file from an earlier run"    # not Parquet: it tells nothing of where it came from
STALE_KINDS = ("bytes", "metadata")


# ------------------------------------------------------------------------------------------ the command

def run_command(raw: Path, processed: Path, *extra: str) -> tuple[int, str, str]:
    """`python -m data_tools.process --raw-data-dir RAW --processed-data-dir PROCESSED ...` inside this
    process: the command's own flag parsing, entry function and error-to-exit-code path (`jaxtrade.cli.invoke`,
    shared with `cli.run`). Returns (exit status, stdout, stderr). Python warnings and log records at WARNING
    and above go to stderr as the command line would print them (its default warning filters)."""
    fv = flags.FlagValues()
    process.define_flags(fv)
    argv = ["data_tools.process", "--raw-data-dir", str(raw), "--processed-data-dir", str(processed), *extra]
    out, err = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(err)
    handler.setLevel(logging.WARNING)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
                warnings.catch_warnings(record=True) as caught:
            warnings.resetwarnings()
            warnings.simplefilter("default")
            for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
                warnings.filterwarnings("ignore", category=category)
            status = cli.invoke(functools.partial(process.main, flag_values=fv), argv, fv, process.LIST_FLAGS)
    finally:
        root.removeHandler(handler)
    for w in caught:
        err.write(warnings.formatwarning(w.message, w.category, w.filename, w.lineno, w.line))
    return status, out.getvalue(), err.getvalue()


# ----------------------------------------------------------------------------------- processed-file check

def check_processed(path: Path) -> pa.Table:
    """Assert that `path` is a processed file as DESIGN section 2 defines it; returns its table."""
    t = pq.read_table(path)
    assert [(f.name, f.type) for f in t.schema] == OUTPUT_TYPES, t.schema
    meta = {k.decode(): v.decode() for k, v in (pq.read_schema(path).metadata or {}).items()}
    assert all(k in meta for k in METADATA_KEYS), meta
    assert re.sub(r"[\\/\x00-\x1f]|\s", "_", meta["symbol"].strip()) == path.stem, (meta["symbol"], path)
    assert int(meta["bar_minutes"]) >= 1
    assert int(meta["rows_out"]) == t.num_rows >= 1 and int(meta["rows_in"]) >= 1
    ts = t["timestamp"].cast(pa.int64()).to_numpy()
    assert (np.diff(ts) > 0).all(), "timestamps not sorted and unique"
    local = ts + IST_OFFSET_NS
    minute = (local % DAY_NS) / (60 * NS)
    assert ((minute >= OPEN_MIN) & (minute < CLOSE_MIN)).all(), "a bar outside 09:15-15:30 IST"
    o, h, lo, c, v = (t[n].to_numpy() for n in ("open", "high", "low", "close", "volume"))
    for a in (o, h, lo, c):
        assert np.isfinite(a).all() and (a > 0).all(), "non-finite or non-positive price"
    assert (lo <= np.minimum(o, c)).all() and (h >= np.maximum(o, c)).all(), "OHLC inconsistency"
    assert np.isfinite(v).all() and (v >= 0).all(), "bad volume"
    day = local // DAY_NS
    session = t["session"].to_numpy()
    assert (session == np.unique(day, return_inverse=True)[1]).all(), "session index is not the trading day"
    return t


def write_stale(path: Path, symbol: str, raw_name: str) -> None:
    """A processed file that an earlier run wrote for `symbol` from the raw file `raw_name`, as its metadata
    says (the keys data_tools.process writes), marked as this fixture."""
    table = pa.table({name: pa.array([], type) for name, type in OUTPUT_TYPES})
    meta = {"symbol": symbol, "raw_symbol": symbol, "source": raw_name, "source_names": json.dumps([raw_name]),
            "created_by": "data_tools.process", "fixture": "stale"}
    pq.write_table(table.replace_schema_metadata(meta), path)


def is_stale(path: Path) -> bool:
    data = path.read_bytes()
    return data == STALE or (pq.read_schema(io.BytesIO(data)).metadata or {}).get(b"fixture") == b"stale"


def processed_bars(t: pa.Table) -> list[tuple]:
    cols = [t["timestamp"].cast(pa.int64()).to_pylist()] + [t[n].to_pylist() for n in
                                                            ("open", "high", "low", "close", "volume")]
    return list(zip(*cols))




# ------------------------------------------------------------------------------------------ the outcome

def _holds_symbol(data: bytes, symbol: str) -> bool:
    """Whether a vendor file's bytes still read as a vendor file with rows of `symbol`: its first line has the
    vendor layout (else nothing tells which symbols it held) and a line starts with the symbol."""
    utf16 = data.startswith((b"\xff\xfe", b"\xfe\xff"))
    text = data.decode("utf-16" if utf16 else "utf-8", "replace").lstrip("\ufeff")
    lines = [line for line in re.split(r"\r\n|\r|\n", text) if line.strip()]
    if not lines:
        return False
    delim = next((d for d in ",;\t|" if d in lines[0]), ",")
    first = [f.strip() for f in next(csv.reader([lines[0]], delimiter=delim))]
    vendor = len(first) >= 7 and re.fullmatch(r"\d{8}", first[1]) and re.fullmatch(r"\d{1,2}:\d\d(:\d\d)?", first[2])
    return bool(vendor) and any(line.split(delim, 1)[0].strip(' "') == symbol for line in lines)


def run_mutant(m, tmp: Path, companion: bytes = b"", stale: str = "bytes") -> tuple[int, str, str]:
    """Write mutant `m` (and, when given, a valid `GOOD.csv` beside it) into `tmp/raw`, stale processed files
    for its symbols into `tmp/processed` (`stale`: "bytes", not Parquet, or "metadata", naming `m` as their raw
    file), run the command, and check the outcome. Returns what it printed."""
    raw, proc = tmp / "raw", tmp / "processed"
    raw.mkdir(parents=True)
    proc.mkdir()
    (raw / m.name).write_bytes(m.data)
    if companion:
        (raw / "GOOD.csv").write_bytes(companion)
    for s in m.symbols:
        if stale == "metadata":
            write_stale(proc / f"{s}.parquet", s, m.name)
        else:
            (proc / f"{s}.parquet").write_bytes(STALE)
    status, out, err = run_command(raw, proc)
    check_outcome(m, raw, proc, status, out, err, bool(companion))
    return status, out, err


def _symbols_read(path: Path) -> Optional[set]:
    """The symbols the raw file holds as the reader reads it, or None when it fails as a whole."""
    try:
        chunk = read_file(path, str(path), "Asia/Kolkata")
    except FileError:
        return None
    return {path.stem} if chunk.symbols is None else set(chunk.symbols.astype(str))


def check_outcome(m, raw: Path, proc: Path, status: int, out: str, err: str, companion: bool) -> None:
    where = f"exit {status}; stderr {err!r}; stdout {out!r}"
    assert status in (0, 2), where
    assert "Traceback" not in err and "Traceback" not in out, where
    written = {p.stem: p for p in proc.glob("*.parquet") if not is_stale(p)}
    for p in written.values():
        check_processed(p)
    assert not [p for p in proc.iterdir() if p.name.startswith(".")], "a temporary file was left behind"
    # A stale file that names the mutant as its source survives only for a symbol the mutant, read without
    # error, no longer holds (a file that fails as a whole fails every symbol earlier runs wrote from it).
    for s in m.symbols:
        stale = proc / f"{s}.parquet"
        if stale.exists() and stale.read_bytes() != STALE and is_stale(stale):
            held = _symbols_read(raw / m.name)
            assert held is not None and s not in held, f"stale {s}.parquet survived; {where}"
    if companion:
        assert "GOOD" in written and "GOOD" not in err, where
    mutant_written = {s: p for s, p in written.items() if s != "GOOD"}
    if status == 0:
        assert err == "", where
        assert mutant_written, where
        if m.expected is not None:
            assert sorted(mutant_written) == sorted(m.expected), where
            for s, bars in m.expected.items():
                assert processed_bars(pq.read_table(mutant_written[s])) == bars, (s, where)
        assert m.blame is None, f"a planted bad row (line {m.blame}) was accepted; {where}"
        return
    lines = err.splitlines()
    assert lines, where
    path = str(raw / m.name)
    for line in lines:
        assert line.startswith("error: ") and path in line, where
        # Lines as a CSV reader counts them: a lone carriage return ends a line too (old Mac files).
        rows = len(re.split(rb"\r\n|\r|\n", m.data)) if not m.name.endswith(".parquet") else 10**6
        for row in re.findall(r" row (\d+)\b", line):
            assert 1 <= int(row) <= rows, where
    assert len(set(lines)) == len(lines), where
    if m.stem_symbol:
        assert len(lines) == 1, where
        assert not (proc / f"{m.symbols[0]}.parquet").exists(), where
    elif m.layout == "vendor":
        for s in m.symbols:
            stale = proc / f"{s}.parquet"
            assert not (stale.exists() and is_stale(stale) and _holds_symbol(m.data, s)), where
    assert m.expected is None, f"a file whose meaning was kept failed; {where}"
    if m.blame is not None:
        assert len(lines) == 1 and f" row {m.blame}:" in lines[0], f"line {m.blame} should be named; {where}"
