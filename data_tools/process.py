"""Raw bar files -> processed Parquet (DESIGN section 2, "Data").

    python -m data_tools.process --raw-data-dir D --processed-data-dir P [--symbols S ...]
        [--bar-minutes N] [--bar-label auto|start|end] [--source-tz TZ] [--date-order dmy|mdy]

Per symbol: parse, sort by time, drop exact duplicates, reject conflicting duplicates, detect the bar size and
bar-END labels (shifted to bar START), keep the regular session 09:15 <= start < 15:30 IST (pre-open,
post-close/after-hours and special sessions are dropped and counted), optionally resample to N-minute bars
anchored at 09:15 (the last partial bin is kept), check OHLC sanity, and write `{P}/{symbol}.parquet`
atomically.

The summary warns when more than half of a symbol's rows fall outside the session (naive timestamps that are
not IST: `--source-tz`), says how day/month dates were read (`--date-order`, default dmy: DD/MM/YYYY), and
warns when every day and month is <= 12, so that the other order would read them too.

Naming: the processed symbol is the raw symbol. With `--bar-minutes N` different from the raw bar size the
bars are resampled and the name gets `_{N}`; a raw name that already ends in `_{raw bar size}` has that suffix
replaced (`Nifty_2` at 10 minutes -> `Nifty_10`, never `Nifty_2_10`). `--bar-minutes` equal to the raw bar
size keeps the name and the bars as they are (`Nifty_2 --bar-minutes 2` -> `Nifty_2`). A smaller N, or one
that is not a multiple of the raw bar size, fails that symbol.

A symbol that fails leaves no processed file behind (a stale one from an earlier run is deleted); the other
symbols are still written; the command exits 2.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from jaxtrade.errors import InputError
from data_tools.readers import (DATE_ORDERS, FileError, RawChunk, check_date_order, check_tz, list_raw_files,
                                peek_symbol_column, read_file)

IST = "Asia/Kolkata"
NS_PER_S = 1_000_000_000
NS_PER_MIN = 60 * NS_PER_S
NS_PER_DAY = 86_400 * NS_PER_S
IST_OFFSET_NS = 19_800 * NS_PER_S         # +05:30, no daylight saving
SESSION_OPEN_MIN = 9 * 60 + 15            # 09:15
SESSION_CLOSE_MIN = 15 * 60 + 30          # 15:30 (exclusive for bar starts)
DROP_REASONS = ("exact_duplicates", "pre_open", "post_close", "special_sessions")
DROP_LABELS = {"exact_duplicates": "exact duplicates", "pre_open": "pre-open",
               "post_close": "post-close/after-hours", "special_sessions": "special sessions"}
OUTPUT_SCHEMA = pa.schema([
    ("timestamp", pa.timestamp("ns", tz=IST)),
    ("open", pa.float64()), ("high", pa.float64()), ("low", pa.float64()), ("close", pa.float64()),
    ("volume", pa.float64()), ("session", pa.int32()),
])


@dataclass
class SymbolSummary:
    symbol: str                    # processed symbol (file stem of the output)
    raw_symbol: str
    sources: list                  # raw file names
    rows_in: int
    rows_out: int
    dropped: dict                  # reason -> rows (DROP_REASONS)
    special_days: int
    sessions: int
    first: str                     # first bar start, IST
    last: str                      # last bar start, IST
    source_bar_minutes: int
    bar_minutes: int
    label: str                     # "start" or "end"
    label_detected: bool
    label_shift_minutes: int
    synthetic: bool
    output: Path
    resampled: bool = False
    dates: str = ""                # how day/month dates were read, e.g. "day-first (DD/MM/YYYY)"
    warnings: list = field(default_factory=list)

    def metadata(self) -> dict:
        return {
            "symbol": self.symbol, "raw_symbol": self.raw_symbol, "bar_minutes": self.bar_minutes,
            "source_bar_minutes": self.source_bar_minutes, "source": _short_sources(self.sources),
            "source_files": len(self.sources), "rows_in": self.rows_in, "rows_out": self.rows_out,
            "dropped": self.dropped, "sessions": self.sessions, "first": self.first, "last": self.last,
            "timezone": IST, "bar_label": self.label, "label_shift_minutes": self.label_shift_minutes,
            "synthetic": "true" if self.synthetic else "false", "created_by": "data_tools.process",
        }

    def render(self) -> str:
        tag = "  [SYNTHETIC DATA]" if self.synthetic else ""
        how = "detected" if self.label_detected else "--bar-label"
        if self.label == "end":
            labels = f"bar end ({how}), shifted {self.label_shift_minutes:+d} min to bar start"
        else:
            labels = f"bar start ({how}), no shift"
        bars = f"{self.bar_minutes}-minute bars"
        if self.resampled:
            bars += f", resampled from {self.source_bar_minutes}-minute"
        drops = ", ".join(f"{DROP_LABELS[k]} {self.dropped[k]:,}" for k in DROP_REASONS)
        if self.special_days:
            drops += f" ({self.special_days} day{'s' if self.special_days != 1 else ''})"
        lines = [
            f"{self.symbol}{tag}",
            f"  rows in {self.rows_in:,} -> rows out {self.rows_out:,} ({bars})",
            f"  dropped: {drops}",
            f"  labels: {labels}",
            f"  range: {self.first} .. {self.last} IST, {self.sessions:,} sessions",
            f"  source: {_short_sources(self.sources)}",
            f"  output: {self.output}",
        ]
        if self.dates:
            lines.insert(4, f"  dates: read {self.dates}")
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


@dataclass
class ProcessResult:
    summaries: list = field(default_factory=list)     # SymbolSummary, one per symbol written
    failures: list = field(default_factory=list)      # (symbol or file, one-line message)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures


class SymbolError(Exception):
    """One symbol cannot be processed; the message is one line naming the file (and row)."""


def _short_sources(names: Sequence[str]) -> str:
    names = list(names)
    if len(names) <= 4:
        return ", ".join(names)
    return f"{len(names)} files ({names[0]}, {names[1]}, ..., {names[-1]})"


def _fmt_ts(utc_ns: int) -> str:
    """UTC ns -> 'YYYY-MM-DD HH:MM' (seconds shown when not zero) in IST."""
    local = np.datetime64(int(utc_ns) + IST_OFFSET_NS, "ns")
    s = str(local.astype("datetime64[s]")).replace("T", " ")
    return s[:-3] if s.endswith(":00") else s


def _safe_name(symbol: str) -> str:
    return re.sub(r"[\\/\x00-\x1f]|\s", "_", symbol.strip()) or "_"


def output_symbol(raw_symbol: str, source_bar_minutes: int, bar_minutes: Optional[int]) -> str:
    if not bar_minutes or bar_minutes == source_bar_minutes:
        return raw_symbol
    suffix = f"_{source_bar_minutes}"
    stem = raw_symbol[: -len(suffix)] if raw_symbol.endswith(suffix) else raw_symbol
    return f"{stem}_{bar_minutes}"


def _stale_candidates(raw_symbol: str, bar_minutes: Optional[int]) -> list[str]:
    if not bar_minutes:
        return [raw_symbol]
    names = [f"{raw_symbol}_{bar_minutes}"]
    m = re.match(r"^(.*)_(\d+)$", raw_symbol)
    if m:
        if int(m.group(2)) == bar_minutes:
            names.append(raw_symbol)
        else:
            names.append(f"{m.group(1)}_{bar_minutes}")
    return names


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError:
        pass


# --------------------------------------------------------------------------------------------- per symbol

def _read_notes(parts: list[RawChunk], rows_in: int, outside: int) -> tuple[str, list]:
    """The summary's `dates` text and warnings from how the timestamps were read (`RawChunk.ts_info`)."""
    infos = [p.ts_info for p in parts]
    warnings = []
    if outside * 2 > rows_in:
        head = f"{outside / rows_in:.0%} of rows fall outside 09:15-15:30 IST"
        tzs = sorted({i["naive_tz"] for i in infos if "naive_tz" in i})
        if tzs == [IST]:
            warnings.append(f"{head}; if the timestamps are not IST, pass --source-tz UTC (or their time zone)")
        elif tzs:
            warnings.append(f"{head}; timestamps without a zone were read as {', '.join(tzs)} "
                            f"(--source-tz): check that zone")
        else:
            warnings.append(f"{head} (the timestamps carry their zone)")
    layouts = sorted({i["date_layout"] for i in infos if i.get("date_layout")})
    dates = ""
    if layouts:
        order = "dmy" if layouts[0].startswith("DD") else "mdy"
        other = "mdy" if order == "dmy" else "dmy"
        dates = f"{DATE_ORDERS[order]} ({', '.join(layouts)})"
        if all(i.get("date_ambiguous") for i in infos if i.get("date_layout")):
            swapped = ", ".join(x.replace("DD", "@").replace("MM", "DD").replace("@", "MM") for x in layouts)
            warnings.append(f"dates read {dates}, but every day and month is <= 12, so they could be "
                            f"{DATE_ORDERS[other]} ({swapped}): if consecutive sessions show up a month "
                            f"apart (few sessions over a long range), pass --date-order {other}")
    return dates, warnings


def _row_error(parts: list[RawChunk], file_idx: np.ndarray, rows: np.ndarray, i: int, msg: str) -> SymbolError:
    return SymbolError(f"{parts[int(file_idx[i])].display} row {int(rows[i])}: {msg}")


def _fmt_price(x: float) -> str:
    return repr(float(x)) if np.isfinite(x) else "NaN"


def process_symbol(raw_symbol: str, parts: list[RawChunk], processed_dir: Path,
                   bar_minutes: Optional[int] = None, bar_label: str = "auto"):
    """Process the rows of one symbol (from one or more files). Returns (pyarrow.Table, SymbolSummary)."""
    ts = np.concatenate([p.ts_utc for p in parts]).astype(np.int64)
    o = np.concatenate([p.open for p in parts])
    h = np.concatenate([p.high for p in parts])
    lo = np.concatenate([p.low for p in parts])
    c = np.concatenate([p.close for p in parts])
    v = np.concatenate([p.volume for p in parts])
    oi = np.concatenate([p.oi for p in parts])
    rows = np.concatenate([p.rows for p in parts])
    fidx = np.concatenate([np.full(len(p), k, np.int32) for k, p in enumerate(parts)])
    rows_in = len(ts)
    if rows_in == 0:
        raise SymbolError(f"{parts[0].display}: empty file (no data rows)")

    # -- sanity, reported at the first bad row in file order
    names = ("open", "high", "low", "close")
    prices = (o, h, lo, c)
    nan = np.zeros(rows_in, bool)
    for a in prices:
        nan |= np.isnan(a)
    if nan.any():
        i = int(np.flatnonzero(nan)[0])
        which = [n for n, a in zip(names, prices) if np.isnan(a[i])]
        raise _row_error(parts, fidx, rows, i, f"NaN or missing {'/'.join(which)} price")
    infinite = np.zeros(rows_in, bool)
    for a in prices:
        infinite |= np.isinf(a)
    if infinite.any():
        i = int(np.flatnonzero(infinite)[0])
        which = ", ".join(f"{n} {float(a[i])!r}" for n, a in zip(names, prices) if np.isinf(a[i]))
        raise _row_error(parts, fidx, rows, i, f"infinite price ({which})")
    nonpos = np.zeros(rows_in, bool)
    for a in prices:
        nonpos |= ~(a > 0)
    if nonpos.any():
        i = int(np.flatnonzero(nonpos)[0])
        which = ", ".join(f"{n} {_fmt_price(a[i])}" for n, a in zip(names, prices) if not a[i] > 0)
        raise _row_error(parts, fidx, rows, i, f"non-positive price ({which})")
    bad_low = lo > np.minimum(o, c)
    bad_high = h < np.maximum(o, c)
    bad = bad_low | bad_high
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        if bad_high[i]:
            other, val = ("open", o[i]) if o[i] > c[i] else ("close", c[i])
            msg = f"high {_fmt_price(h[i])} < {other} {_fmt_price(val)} (OHLC inconsistency)"
        else:
            other, val = ("open", o[i]) if o[i] < c[i] else ("close", c[i])
            msg = f"low {_fmt_price(lo[i])} > {other} {_fmt_price(val)} (OHLC inconsistency)"
        raise _row_error(parts, fidx, rows, i, msg)

    bad_volume = ~(np.isfinite(v) & (v >= 0))
    if bad_volume.any():
        i = int(np.flatnonzero(bad_volume)[0])
        raise _row_error(parts, fidx, rows, i, f"volume {float(v[i])!r} is not a finite number >= 0")

    # -- sort by time (file and row break ties, so the first occurrence is kept)
    order = np.lexsort((rows, fidx, ts))
    ts, o, h, lo, c, v, oi, rows, fidx = (a[order] for a in (ts, o, h, lo, c, v, oi, rows, fidx))
    same = ts[1:] == ts[:-1]
    if same.any():
        equal = same & (o[1:] == o[:-1]) & (h[1:] == h[:-1]) & (lo[1:] == lo[:-1]) & (c[1:] == c[:-1]) \
            & (v[1:] == v[:-1]) & (oi[1:] == oi[:-1])
        conflict = same & ~equal
        if conflict.any():
            j = int(np.flatnonzero(conflict)[0]) + 1
            first = j - 1
            raise _row_error(parts, fidx, rows, j,
                             f"conflicting duplicate timestamp {_fmt_ts(ts[j])} IST (differs from "
                             f"{parts[int(fidx[first])].display} row {int(rows[first])})")
        keep = np.concatenate([[True], ~equal])
        n_dup = int((~keep).sum())
        ts, o, h, lo, c, v, rows, fidx = (a[keep] for a in (ts, o, h, lo, c, v, rows, fidx))
    else:
        n_dup = 0

    # -- bar size: modal spacing between consecutive bars of the same day
    local = ts + IST_OFFSET_NS
    day = local // NS_PER_DAY
    same_day = day[1:] == day[:-1]
    gaps = (local[1:] - local[:-1])[same_day]
    if len(gaps) == 0:
        where = f"{parts[int(fidx[0])].display} row {int(rows[0])}" if len(ts) == 1 else parts[0].display
        raise SymbolError(f"{where}: cannot tell the bar size of {raw_symbol}: "
                          f"{'its only bar' if len(ts) == 1 else 'no two bars fall on the same day'} "
                          f"(intraday bars expected)")
    vals, counts = np.unique(gaps, return_counts=True)
    mode_ns = int(vals[np.argmax(counts)])
    if mode_ns % NS_PER_MIN:
        raise SymbolError(f"{parts[0].display}: {raw_symbol}: bar spacing {mode_ns / NS_PER_S:g} s is not a "
                          f"whole number of minutes")
    base = mode_ns // NS_PER_MIN

    # -- bar labels
    sod_min = (local - day * NS_PER_DAY) / NS_PER_MIN
    detected = bar_label == "auto"
    if detected:
        days_u, day_inv = np.unique(day, return_inverse=True)
        has_open = np.zeros(len(days_u), bool)
        has_close = np.zeros(len(days_u), bool)
        has_open[day_inv[sod_min == SESSION_OPEN_MIN]] = True
        has_close[day_inv[sod_min == SESSION_CLOSE_MIN]] = True
        # the first bar at/after 09:15 of a day labelled by bar end sits at 09:15 + bar size
        after_open = sod_min >= SESSION_OPEN_MIN
        first_day, first_pos = np.unique(day_inv[after_open], return_index=True)
        first_after = np.full(len(days_u), -1.0)
        first_after[first_day] = sod_min[after_open][first_pos]
        end_like = ~has_open & (has_close | (first_after == SESSION_OPEN_MIN + base))
        end_votes = int(end_like.sum())
        start_votes = int((has_open & ~has_close).sum())
        label = "end" if end_votes > start_votes else "start"
    else:
        label = bar_label
    shift_min = -base if label == "end" else 0
    if shift_min:
        ts = ts + shift_min * NS_PER_MIN
        local = ts + IST_OFFSET_NS
        day = local // NS_PER_DAY
        sod_min = (local - day * NS_PER_DAY) / NS_PER_MIN

    # -- regular session
    regular = (sod_min >= SESSION_OPEN_MIN) & (sod_min < SESSION_CLOSE_MIN)
    if not regular.any():
        raise SymbolError(
            f"{parts[0].display}: {raw_symbol}: no bars inside the regular session 09:15-15:30 IST "
            f"(bars run {_fmt_ts(ts[0])} .. {_fmt_ts(ts[-1])} IST; check --source-tz)")
    days_u, day_inv = np.unique(day, return_inverse=True)
    reg_day = np.zeros(len(days_u), bool)
    reg_day[day_inv[regular]] = True
    special = ~reg_day[day_inv]
    pre = ~special & (sod_min < SESSION_OPEN_MIN)
    post = ~special & (sod_min >= SESSION_CLOSE_MIN)
    dropped = {"exact_duplicates": n_dup, "pre_open": int(pre.sum()), "post_close": int(post.sum()),
               "special_sessions": int(special.sum())}
    special_days = int((~reg_day).sum())
    ts, o, h, lo, c, v, day, sod_min = (a[regular] for a in (ts, o, h, lo, c, v, day, sod_min))

    # -- resample
    out_minutes = base
    resampled = False
    if bar_minutes and bar_minutes != base:
        if bar_minutes < base or bar_minutes % base:
            raise SymbolError(f"{parts[0].display}: {raw_symbol} has {base}-minute bars: cannot resample to "
                              f"{bar_minutes} minutes (--bar-minutes must be a multiple of {base})")
        b = np.floor((sod_min - SESSION_OPEN_MIN) / bar_minutes).astype(np.int64)
        key = day * 10_000 + b
        starts = np.concatenate([[0], np.flatnonzero(key[1:] != key[:-1]) + 1])
        ends = np.concatenate([starts[1:], [len(key)]]) - 1
        o, c = o[starts], c[ends]
        h = np.maximum.reduceat(h, starts)
        lo = np.minimum.reduceat(lo, starts)
        v = np.add.reduceat(v, starts)
        day = day[starts]
        ts = day * NS_PER_DAY + (SESSION_OPEN_MIN + b[starts] * bar_minutes) * NS_PER_MIN - IST_OFFSET_NS
        out_minutes = bar_minutes
        resampled = True

    _, session = np.unique(day, return_inverse=True)
    table = pa.table([
        pa.array(ts, pa.timestamp("ns", tz=IST)),
        pa.array(o, pa.float64()), pa.array(h, pa.float64()), pa.array(lo, pa.float64()),
        pa.array(c, pa.float64()), pa.array(v, pa.float64()),
        pa.array(session.astype(np.int32), pa.int32()),
    ], schema=OUTPUT_SCHEMA)
    symbol = output_symbol(raw_symbol, base, bar_minutes)
    dates, warnings = _read_notes(parts, rows_in, dropped["pre_open"] + dropped["post_close"]
                                  + dropped["special_sessions"])
    named = re.match(r"^.*_(\d+)$", symbol)
    # only the usual bar lengths: NIFTY_50 or NIFTY_100 name an index, not 50-minute bars
    if named and int(named.group(1)) != out_minutes and int(named.group(1)) in (1, 2, 3, 5, 10, 15, 30, 60):
        n = int(named.group(1))
        right = f"{symbol[: named.start(1) - 1]}_{out_minutes}"
        fix = f"name the raw file {right} instead"
        if n > out_minutes and n % out_minutes == 0:
            fix += f" (with --bar-minutes {n} that writes {symbol} with {n}-minute bars)"
        warnings.append(f"the name {symbol} reads as {n}-minute bars (as Nifty_2, Bank_Nifty_5), but the data "
                        f"has {out_minutes}-minute bars; {fix}")
    summary = SymbolSummary(
        symbol=symbol, raw_symbol=raw_symbol, rows_in=rows_in,
        sources=[p.path.name for p in sorted(parts, key=lambda p: int(p.ts_utc.min()))],
        rows_out=table.num_rows, dropped=dropped, special_days=special_days,
        sessions=int(session.max()) + 1, first=_fmt_ts(ts[0]), last=_fmt_ts(ts[-1]),
        source_bar_minutes=int(base), bar_minutes=int(out_minutes), label=label, label_detected=detected,
        label_shift_minutes=int(shift_min), synthetic=any(p.synthetic for p in parts),
        output=processed_dir / f"{_safe_name(symbol)}.parquet", resampled=resampled, dates=dates,
        warnings=warnings)
    return table, summary


def write_processed(table: pa.Table, summary: SymbolSummary) -> None:
    """Write atomically: a temp file in the same directory, then os.replace."""
    meta = {k: (v if isinstance(v, str) else json.dumps(v)) for k, v in summary.metadata().items()}
    table = table.replace_schema_metadata({k.encode(): v.encode() for k, v in meta.items()})
    out = Path(summary.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, out)
    finally:
        _remove_quietly(tmp)


def read_processed_metadata(path) -> dict:
    """The file metadata of a processed Parquet file, JSON values decoded."""
    raw = pq.read_schema(path).metadata or {}
    out = {}
    for k, v in raw.items():
        key, val = k.decode(), v.decode()
        if key == "ARROW:schema":
            continue
        try:
            out[key] = json.loads(val)
        except ValueError:
            out[key] = val
    return out


# ------------------------------------------------------------------------------------------- whole run

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


class _Std:
    """Default for `out`/`err`: the current sys.stdout / sys.stderr at call time (so capture works)."""

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"sys.{self.name}"


def process_directory(raw_dir, processed_dir, symbols=None, bar_minutes=None, bar_label="auto",
                      source_tz=IST, out=_Std("stdout"), err=_Std("stderr"), date_order="dmy") -> ProcessResult:
    """Process every symbol found in `raw_dir` (or only `symbols`) into `processed_dir`.

    Prints a summary block per symbol on `out` (default: sys.stdout) and one `error: ...` line per failure on
    `err` (default: sys.stderr); either may be None for silence. Raises `InputError` when the run cannot start at all (missing raw directory, no input
    files, bad options); a bad file or symbol is a failure in the result, and the other symbols are still
    written.
    `date_order` (dmy or mdy) says how day/month dates such as 1/8/2024 are read.
    """
    t0 = time.perf_counter()
    if isinstance(out, _Std):
        out = sys.stdout
    if isinstance(err, _Std):
        err = sys.stderr
    raw_dir = Path(raw_dir)
    processed_dir = Path(processed_dir)
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
    files = list_raw_files(raw_dir)
    if not files:
        raise InputError(f"{raw_dir}: no input files found (.csv, .txt or .parquet)")
    wanted = _normalize_symbols(symbols)
    wanted_set = set(wanted) if wanted else None
    wanted_lower = {s.lower(): s for s in wanted} if wanted else {}

    def is_wanted(sym: str) -> bool:
        return wanted_set is None or sym in wanted_set or sym.lower() in wanted_lower

    result = ProcessResult()
    by_symbol: dict[str, list[RawChunk]] = {}
    failed: dict[str, str] = {}          # symbol -> first message
    file_failures: list[tuple[str, str]] = []
    seen: set[str] = set()  # every symbol met, wanted or not, to name them when a wanted one is missing

    for path in files:
        display = str(path)
        multi = peek_symbol_column(path)
        if multi is False:
            seen.add(path.stem)
            if not is_wanted(path.stem):
                continue
        try:
            chunk = read_file(path, display, source_tz, date_order)
        except FileError as e:
            syms = e.symbols if e.symbols else ([path.stem] if multi is not True else None)
            seen.update(syms or ())
            if syms:
                for s in syms:
                    if is_wanted(s):
                        failed.setdefault(s, str(e))
            elif wanted_set is None or multi is not True:
                file_failures.append((path.name, str(e)))
            continue
        if chunk.symbols is None:
            seen.add(path.stem)
            by_symbol.setdefault(path.stem, []).append(chunk)
            continue
        uniq, inv = np.unique(chunk.symbols.astype(str), return_inverse=True)
        seen.update(str(s) for s in uniq)
        for k, s in enumerate(uniq):
            if not is_wanted(s):
                continue
            if len(uniq) == 1:
                by_symbol.setdefault(s, []).append(chunk)
                continue
            m = inv == k
            by_symbol.setdefault(s, []).append(RawChunk(
                path=chunk.path, display=chunk.display, ts_utc=chunk.ts_utc[m], open=chunk.open[m],
                high=chunk.high[m], low=chunk.low[m], close=chunk.close[m], volume=chunk.volume[m],
                oi=chunk.oi[m], rows=chunk.rows[m], symbols=None, synthetic=chunk.synthetic, meta=chunk.meta,
                ts_info=chunk.ts_info))

    # requested symbols that nowhere appear
    if wanted:
        found = set(by_symbol) | set(failed)
        found_lower = {s.lower() for s in found}
        for s in wanted:
            if s not in found and s.lower() not in found_lower:
                have = ", ".join(sorted(seen | found)) or "none"
                failed.setdefault(s, f"--symbols: symbol {s!r} not found in {raw_dir} (found: {have})")

    for sym in sorted(set(by_symbol) | set(failed)):
        if sym in failed:
            continue
        try:
            table, summary = process_symbol(sym, by_symbol[sym], processed_dir, bar_minutes, bar_label)
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
        for name in _stale_candidates(sym, bar_minutes):
            _remove_quietly(processed_dir / f"{_safe_name(name)}.parquet")
        result.failures.append((sym, failed[sym]))
    result.failures.extend(file_failures)
    result.seconds = time.perf_counter() - t0
    if err is not None:
        seen = set()
        for _, msg in result.failures:
            if msg not in seen:            # a bad vendor file fails several symbols with one message
                seen.add(msg)
                err.write(f"error: {msg}\n")
        err.flush()
    if out is not None:
        n_ok, n_bad = len(result.summaries), len(result.failures)
        out.write(f"processed {n_ok} symbol{'s' if n_ok != 1 else ''} in {result.seconds:.2f} s"
                  + (f", {n_bad} failed" if n_bad else "") + f" -> {processed_dir}\n")
        out.flush()
    return result


# ------------------------------------------------------------------------------------------------- CLI

def define_flags(flag_values=None) -> None:
    """This command's flags, on `flag_values` (default: absl's global FLAGS)."""
    from absl import flags
    fv = flags.FLAGS if flag_values is None else flag_values
    flags.DEFINE_string("raw_data_dir", "data/raw", "Directory of raw bar files (CSV, TXT, Parquet).", flag_values=fv)
    flags.DEFINE_string("processed_data_dir", "data/processed", "Where {symbol}.parquet files are written.",
                        flag_values=fv)
    flags.DEFINE_list("symbols", None, "Symbols to process (default: all found).", flag_values=fv)
    flags.DEFINE_integer("bar_minutes", None, "Resample to N-minute bars anchored at 09:15 (default: as is).",
                         flag_values=fv)
    flags.DEFINE_enum("bar_label", "auto", ["auto", "start", "end"],
                      "Whether raw timestamps label bar starts or ends (auto: detect).", flag_values=fv)
    flags.DEFINE_string("source_tz", IST, "Time zone of timestamps that carry none.", flag_values=fv)
    flags.DEFINE_enum("date_order", "dmy", ["dmy", "mdy"],
                      "How to read day/month dates such as 1/8/2024: dmy (DD/MM/YYYY) or mdy (MM/DD/YYYY).",
                      flag_values=fv)


LIST_FLAGS = ["symbols"]


def main(argv, flag_values=None) -> int:
    """The command: exit code 0 when every symbol was written, 2 when any failed (DESIGN section 9)."""
    from absl import flags
    F = flags.FLAGS if flag_values is None else flag_values
    result = process_directory(F.raw_data_dir, F.processed_data_dir, symbols=F.symbols,
                               bar_minutes=F.bar_minutes, bar_label=F.bar_label, source_tz=F.source_tz,
                               date_order=F.date_order)
    return 0 if result.ok else 2


if __name__ == "__main__":
    from jaxtrade.cli import run
    define_flags()
    run(main, list_flags=LIST_FLAGS)
