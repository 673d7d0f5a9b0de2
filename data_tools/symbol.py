"""One symbol, raw rows -> processed bars and their summary: sanity checks, time order and duplicates
(`data_tools.bars`), bar size, bar-END labels shifted to bar START, the regular session and resampling
(`data_tools.session`), the processed name (`data_tools.naming`). Every way a symbol can fail is a `SymbolError`
with one line naming the file (and the row).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import pyarrow as pa

from data_tools.bars import Bars, check_values, sort_and_dedupe
from data_tools.columns import RawChunk
from data_tools.errors import SymbolError
from data_tools.naming import name_warning, output_symbol, safe_name
from data_tools.output import processed_table
from data_tools.session import (NS_PER_MIN, NS_PER_S, detect_label, fmt_ist, modal_spacing_ns, resample,
                                session_index, split_session)
from data_tools.summary import SymbolSummary, read_notes


def _bar_minutes(raw_symbol: str, parts: list[RawChunk], bars: Bars) -> int:
    """The raw bar size in minutes: the modal spacing of bars on the same day."""
    mode_ns = modal_spacing_ns(bars.ts)
    if mode_ns is None:
        one = len(bars) == 1
        where = bars.where(parts, 0) if one else parts[0].display
        raise SymbolError(f"{where}: cannot tell the bar size of {raw_symbol}: "
                          f"{'its only bar' if one else 'no two bars fall on the same day'} "
                          f"(intraday bars expected)")
    if mode_ns % NS_PER_MIN:
        raise SymbolError(f"{parts[0].display}: {raw_symbol}: bar spacing {mode_ns / NS_PER_S:g} s is not a "
                          f"whole number of minutes")
    return mode_ns // NS_PER_MIN


def process_symbol(raw_symbol: str, parts: list[RawChunk], processed_dir: Path,
                   bar_minutes: Optional[int] = None, bar_label: str = "auto") -> tuple[pa.Table, SymbolSummary]:
    """Process the rows of one symbol (from one or more files). Returns (pyarrow.Table, SymbolSummary)."""
    bars = Bars.gather(parts)
    rows_in = len(bars)
    if rows_in == 0:
        raise SymbolError(f"{parts[0].display}: empty file (no data rows)")
    check_values(parts, bars)
    bars, n_dup = sort_and_dedupe(parts, bars)
    base = _bar_minutes(raw_symbol, parts, bars)

    detected = bar_label == "auto"
    label = detect_label(bars.ts, base) if detected else bar_label
    shift_min = -base if label == "end" else 0
    ts = bars.ts + shift_min * NS_PER_MIN

    split = split_session(ts)
    if not split.regular.any():
        raise SymbolError(
            f"{parts[0].display}: {raw_symbol}: no bars inside the regular session 09:15-15:30 IST "
            f"(bars run {fmt_ist(ts[0])} .. {fmt_ist(ts[-1])} IST; check --source-tz)")
    dropped = {"exact_duplicates": n_dup, "pre_open": split.pre_open, "post_close": split.post_close,
               "special_sessions": split.special_sessions}
    regular = bars.take(split.regular)
    ts = ts[split.regular]
    (o, h, lo, c), v = regular.prices(), regular.volume

    out_minutes = base
    resampled = bool(bar_minutes) and bar_minutes != base
    if resampled:
        if bar_minutes < base or bar_minutes % base:
            raise SymbolError(f"{parts[0].display}: {raw_symbol} has {base}-minute bars: cannot resample to "
                              f"{bar_minutes} minutes (--bar-minutes must be a multiple of {base})")
        ts, o, h, lo, c, v = resample(ts, o, h, lo, c, v, bar_minutes)
        out_minutes = bar_minutes

    session = session_index(ts)
    table = processed_table(ts, o, h, lo, c, v, session)
    symbol = output_symbol(raw_symbol, base, bar_minutes)
    dates, warnings = read_notes(parts, rows_in, split.pre_open + split.post_close + split.special_sessions)
    warning = name_warning(symbol, out_minutes)
    if warning:
        warnings.append(warning)
    summary = SymbolSummary(
        symbol=symbol, raw_symbol=raw_symbol, rows_in=rows_in,
        sources=[p.path.name for p in sorted(parts, key=lambda p: int(p.ts_utc.min()))],
        rows_out=table.num_rows, dropped=dropped, special_days=split.special_days,
        sessions=int(session.max()) + 1, first=fmt_ist(ts[0]), last=fmt_ist(ts[-1]),
        source_bar_minutes=int(base), bar_minutes=int(out_minutes), label=label, label_detected=detected,
        label_shift_minutes=int(shift_min), synthetic=any(p.synthetic for p in parts),
        output=processed_dir / f"{safe_name(symbol)}.parquet", resampled=resampled, dates=dates,
        warnings=warnings)
    return table, summary
