"""One symbol's raw rows, from one or more files, as arrays: the sanity checks every row must pass (prices finite
and > 0, low <= open, close <= high, volume finite and >= 0), time order, and duplicate timestamps (exact
duplicates dropped, conflicting ones rejected). Errors name the file and row to blame.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import numpy as np

from data_tools.columns import PRICE_COLS, RawChunk
from data_tools.errors import SymbolError
from data_tools.session import fmt_ist


@dataclass
class Bars:
    """Rows of one symbol; every field has shape (n,)."""
    ts: np.ndarray                # int64 UTC ns
    open: np.ndarray              # float64, as are high ... oi
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    oi: np.ndarray
    rows: np.ndarray              # int64 row (line) number in its file
    file: np.ndarray              # int32 index of its file in the list of RawChunks

    @classmethod
    def gather(cls, parts: list[RawChunk]) -> "Bars":
        return cls(ts=np.concatenate([p.ts_utc for p in parts]).astype(np.int64),
                   **{f: np.concatenate([getattr(p, f) for p in parts])
                      for f in ("open", "high", "low", "close", "volume", "oi", "rows")},
                   file=np.concatenate([np.full(len(p), k, np.int32) for k, p in enumerate(parts)]))

    def __len__(self) -> int:
        return len(self.ts)

    def take(self, index: np.ndarray) -> "Bars":
        """The rows at `index` (integer positions or a boolean mask)."""
        return Bars(**{f.name: getattr(self, f.name)[index] for f in dataclasses.fields(self)})

    def prices(self) -> tuple[np.ndarray, ...]:
        return self.open, self.high, self.low, self.close

    def where(self, parts: list[RawChunk], i: int) -> str:
        """'FILE row N' of row i."""
        return f"{parts[int(self.file[i])].display} row {int(self.rows[i])}"


def _fmt_price(x: float) -> str:
    return repr(float(x)) if np.isfinite(x) else "NaN"


def _first_bad_price(parts: list[RawChunk], bars: Bars, bad: Callable[[np.ndarray], np.ndarray],
                     message: Callable[[list], str]) -> None:
    """Raise at the first row (in file order) where `bad` holds for a price; `message` gets [(name, value)]
    of that row's bad prices."""
    prices = bars.prices()
    masks = [bad(a) for a in prices]
    any_bad = np.logical_or.reduce(masks)
    if any_bad.any():
        i = int(np.flatnonzero(any_bad)[0])
        which = [(name, a[i]) for name, a, m in zip(PRICE_COLS, prices, masks) if m[i]]
        raise SymbolError(f"{bars.where(parts, i)}: {message(which)}")


def check_values(parts: list[RawChunk], bars: Bars) -> None:
    """Every row's prices and volume are sane; else a `SymbolError` naming the first bad row in file order."""
    _first_bad_price(parts, bars, np.isnan, lambda w: f"NaN or missing {'/'.join(n for n, _ in w)} price")
    _first_bad_price(parts, bars, np.isinf,
                     lambda w: f"infinite price ({', '.join(f'{n} {float(x)!r}' for n, x in w)})")
    _first_bad_price(parts, bars, lambda a: ~(a > 0),
                     lambda w: f"non-positive price ({', '.join(f'{n} {_fmt_price(x)}' for n, x in w)})")
    o, h, lo, c = bars.prices()
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
        raise SymbolError(f"{bars.where(parts, i)}: {msg}")
    v = bars.volume
    bad_volume = ~(np.isfinite(v) & (v >= 0))
    if bad_volume.any():
        i = int(np.flatnonzero(bad_volume)[0])
        raise SymbolError(f"{bars.where(parts, i)}: volume {float(v[i])!r} is not a finite number >= 0")


def sort_and_dedupe(parts: list[RawChunk], bars: Bars) -> tuple[Bars, int]:
    """Sort by time (file and row break ties, so the first occurrence is kept) and drop exact duplicates.
    Returns (bars, number dropped); two rows at one timestamp that differ are a `SymbolError`."""
    bars = bars.take(np.lexsort((bars.rows, bars.file, bars.ts)))
    same = bars.ts[1:] == bars.ts[:-1]
    if not same.any():
        return bars, 0
    equal = same.copy()
    for a in (*bars.prices(), bars.volume, bars.oi):
        equal &= a[1:] == a[:-1]
    conflict = same & ~equal
    if conflict.any():
        j = int(np.flatnonzero(conflict)[0]) + 1
        raise SymbolError(f"{bars.where(parts, j)}: conflicting duplicate timestamp {fmt_ist(bars.ts[j])} IST "
                          f"(differs from {bars.where(parts, j - 1)})")
    keep = np.concatenate([[True], ~equal])
    return bars.take(keep), int((~keep).sum())
