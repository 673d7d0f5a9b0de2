"""NSE index contract facts: lot sizes per underlying with their effective dates and sources.

Lot sizes changed four times in two years. `lot_size(symbol)` is the current contract (DESIGN section 3's
default); `lot_schedule(symbol)` is the dated history so that a 2021 backtest can trade 2021's lots.
Sources: NSE circulars and news collected Nov 2026, cited per entry below (docs/environment.md); dates before
Nov 2024 are the months the facts give (approximate to the series boundary, marked so).
"""

from __future__ import annotations

import datetime as _dt
import re

import numpy as np

TICK_SIZE = 0.05  # index futures and options, NSE

# underlying -> ((effective_from, units per lot, source), ...) in time order
LOT_SCHEDULES = {
    "NIFTY": (
        (_dt.date(2000, 1, 1), 75, "75 before the July 2021 series (approximate date)"),
        (_dt.date(2021, 7, 1), 50, "50 from the July 2021 series (approximate date)"),
        (_dt.date(2024, 4, 26), 25, "25 from April 2024 (approximate date)"),
        (_dt.date(2024, 11, 20), 75, "75 from 20 Nov 2024"),
        (_dt.date(2026, 1, 1), 65, "65 from the Jan 2026 expiries, NSE/FAOP/70616 (3 Oct 2025)"),
    ),
    "BANKNIFTY": (
        (_dt.date(2000, 1, 1), 25, "25 until mid-2023 (approximate date)"),
        (_dt.date(2023, 7, 1), 15, "15 from July 2023 (approximate date)"),
        (_dt.date(2024, 11, 20), 30, "30 from 20 Nov 2024"),
        (_dt.date(2025, 7, 1), 35, "35 from the Jul 2025 monthly expiry (approximate date)"),
        (_dt.date(2026, 1, 1), 30, "30 from the Jan 2026 expiries, NSE/FAOP/70616 (3 Oct 2025)"),
    ),
    "FINNIFTY": (
        (_dt.date(2000, 1, 1), 40, "40 before Nov 2024 (approximate)"),
        (_dt.date(2024, 11, 20), 65, "65 from 20 Nov 2024"),
        (_dt.date(2026, 1, 1), 60, "60 from the Jan 2026 expiries, NSE/FAOP/70616 (3 Oct 2025)"),
    ),
}

_ALIASES = {"NIFTY": "NIFTY", "NIFTY50": "NIFTY", "NF": "NIFTY", "BANKNIFTY": "BANKNIFTY",
            "NIFTYBANK": "BANKNIFTY", "BNF": "BANKNIFTY", "FINNIFTY": "FINNIFTY", "NIFTYFIN": "FINNIFTY"}


def underlying(symbol: str) -> str | None:
    """`Nifty_2` -> NIFTY, `Bank_Nifty_5` -> BANKNIFTY, `NIFTY_5` -> NIFTY; None when unknown."""
    base = re.sub(r"_\d+$", "", symbol.strip())
    key = re.sub(r"[^A-Z0-9]", "", base.upper())
    return _ALIASES.get(key)


def lot_schedule(symbol: str):
    name = underlying(symbol)
    return LOT_SCHEDULES.get(name) if name else None


def lot_size(symbol: str, on: _dt.date | None = None) -> int | None:
    """Units per lot of `symbol`'s underlying, current by default or in force on date `on`."""
    schedule = lot_schedule(symbol)
    if schedule is None:
        return None
    on = on or _dt.date.today()
    size = schedule[0][1]
    for start, units, _ in schedule:
        if start <= on:
            size = units
    return size


def lot_sizes_for_dates(symbol: str, dates) -> np.ndarray | None:
    """Lot size in force on each date (array of datetime.date or numpy datetime64[D])."""
    schedule = lot_schedule(symbol)
    if schedule is None:
        return None
    days = np.asarray(dates, dtype="datetime64[D]")
    starts = np.array([np.datetime64(s, "D") for s, _, _ in schedule])
    sizes = np.array([u for _, u, _ in schedule], dtype=np.float64)
    idx = np.searchsorted(starts, days, side="right") - 1
    return sizes[np.clip(idx, 0, len(sizes) - 1)]
