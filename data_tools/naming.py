"""Processed symbol names: the raw symbol, with `_{N}` when resampled to N minutes (a raw `_{raw bar size}` suffix
replaced: `Nifty_2` at 10 minutes -> `Nifty_10`), the file name it is written under, the names an earlier run
may have written for a raw symbol, and the warning for a name that says another bar size than its data has.
"""

from __future__ import annotations

import re
from typing import Optional

COMMON_BAR_MINUTES = (1, 2, 3, 5, 10, 15, 30, 60)


def output_symbol(raw_symbol: str, source_bar_minutes: int, bar_minutes: Optional[int]) -> str:
    if not bar_minutes or bar_minutes == source_bar_minutes:
        return raw_symbol
    suffix = f"_{source_bar_minutes}"
    stem = raw_symbol[: -len(suffix)] if raw_symbol.endswith(suffix) else raw_symbol
    return f"{stem}_{bar_minutes}"


def safe_name(symbol: str) -> str:
    """The file stem of a processed symbol: path separators, control characters and white space made `_`."""
    return re.sub(r"[\\/\x00-\x1f]|\s", "_", symbol.strip()) or "_"


def stale_candidates(raw_symbol: str, bar_minutes: Optional[int]) -> list[str]:
    """The processed symbols a run with `bar_minutes` could write for `raw_symbol` (its raw bar size unknown)."""
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


def name_warning(symbol: str, bar_minutes: int) -> Optional[str]:
    """A warning when `symbol` ends in `_{N}`, N a usual bar length other than the data's `bar_minutes`
    (NIFTY_50 or NIFTY_100 name an index, not 50-minute bars)."""
    named = re.match(r"^.*_(\d+)$", symbol)
    if not named or int(named.group(1)) == bar_minutes or int(named.group(1)) not in COMMON_BAR_MINUTES:
        return None
    n = int(named.group(1))
    right = f"{symbol[: named.start(1) - 1]}_{bar_minutes}"
    fix = f"name the raw file {right} instead"
    if n > bar_minutes and n % bar_minutes == 0:
        fix += f" (with --bar-minutes {n} that writes {symbol} with {n}-minute bars)"
    return (f"the name {symbol} reads as {n}-minute bars (as Nifty_2, Bank_Nifty_5), but the data "
            f"has {bar_minutes}-minute bars; {fix}")
