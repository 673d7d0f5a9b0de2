"""The NSE clock on one symbol's time-sorted bars: bar size, bar-start or bar-end labels, the regular session
09:15 <= bar start < 15:30 IST, and resampling to N-minute bars anchored at 09:15 (the last partial bin kept).

Pure numpy on arrays of UTC instants (int64 ns, shape (n,)); `data_tools.symbol` turns what these find into
errors and the summary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

IST = "Asia/Kolkata"
NS_PER_S = 1_000_000_000
NS_PER_MIN = 60 * NS_PER_S
NS_PER_DAY = 86_400 * NS_PER_S
IST_OFFSET_NS = 19_800 * NS_PER_S         # +05:30, no daylight saving
SESSION_OPEN_MIN = 9 * 60 + 15            # 09:15
SESSION_CLOSE_MIN = 15 * 60 + 30          # 15:30 (exclusive for bar starts)
DROP_REASONS = ("exact_duplicates", "pre_open", "post_close", "special_sessions")


def fmt_ist(utc_ns: int) -> str:
    """UTC ns -> 'YYYY-MM-DD HH:MM' (seconds shown when not zero) in IST."""
    local = np.datetime64(int(utc_ns) + IST_OFFSET_NS, "ns")
    s = str(local.astype("datetime64[s]")).replace("T", " ")
    return s[:-3] if s.endswith(":00") else s


def ist_day_and_minute(ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """UTC ns (n,) -> (IST day number since the epoch (n,) int64, IST minute of the day (n,) float64)."""
    local = ts + IST_OFFSET_NS
    day = local // NS_PER_DAY
    return day, (local - day * NS_PER_DAY) / NS_PER_MIN


def modal_spacing_ns(ts: np.ndarray) -> Optional[int]:
    """The most common spacing between consecutive bars of the same IST day (sorted, unique `ts`), or None when
    no two bars fall on the same day."""
    local = ts + IST_OFFSET_NS
    day = local // NS_PER_DAY
    gaps = (local[1:] - local[:-1])[day[1:] == day[:-1]]
    if len(gaps) == 0:
        return None
    vals, counts = np.unique(gaps, return_counts=True)
    return int(vals[np.argmax(counts)])


def detect_label(ts: np.ndarray, base: int) -> str:
    """'end' when most days look labelled by bar end, else 'start'. A day votes 'end' when it has no 09:15 bar
    and either a 15:30 bar or a first bar at 09:15 + `base` minutes (the first bar after the open of a day
    labelled by bar end); it votes 'start' when it has a 09:15 bar and no 15:30 bar."""
    day, sod_min = ist_day_and_minute(ts)
    days_u, day_inv = np.unique(day, return_inverse=True)
    has_open = np.zeros(len(days_u), bool)
    has_close = np.zeros(len(days_u), bool)
    has_open[day_inv[sod_min == SESSION_OPEN_MIN]] = True
    has_close[day_inv[sod_min == SESSION_CLOSE_MIN]] = True
    after_open = sod_min >= SESSION_OPEN_MIN
    first_day, first_pos = np.unique(day_inv[after_open], return_index=True)
    first_after = np.full(len(days_u), -1.0)
    first_after[first_day] = sod_min[after_open][first_pos]
    end_votes = int((~has_open & (has_close | (first_after == SESSION_OPEN_MIN + base))).sum())
    start_votes = int((has_open & ~has_close).sum())
    return "end" if end_votes > start_votes else "start"


@dataclass
class SessionSplit:
    regular: np.ndarray           # (n,) bool: the bar starts inside 09:15-15:30 IST
    pre_open: int                 # bars before 09:15 on a day with regular bars
    post_close: int               # bars at or after 15:30 on a day with regular bars
    special_sessions: int         # bars of days with no regular bar at all (Muhurat trading and the like)
    special_days: int


def split_session(ts: np.ndarray) -> SessionSplit:
    """Which bars (bar-start UTC ns, (n,)) are regular-session bars, and how many of the others fall where."""
    day, sod_min = ist_day_and_minute(ts)
    regular = (sod_min >= SESSION_OPEN_MIN) & (sod_min < SESSION_CLOSE_MIN)
    days_u, day_inv = np.unique(day, return_inverse=True)
    reg_day = np.zeros(len(days_u), bool)
    reg_day[day_inv[regular]] = True
    special = ~reg_day[day_inv]
    pre = ~special & (sod_min < SESSION_OPEN_MIN)
    post = ~special & (sod_min >= SESSION_CLOSE_MIN)
    return SessionSplit(regular=regular, pre_open=int(pre.sum()), post_close=int(post.sum()),
                        special_sessions=int(special.sum()), special_days=int((~reg_day).sum()))


def resample(ts: np.ndarray, o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray, v: np.ndarray,
             minutes: int) -> tuple[np.ndarray, ...]:
    """Regular-session bars (sorted, all (n,)) -> `minutes`-minute bars anchored at 09:15 IST: first open, max
    high, min low, last close, summed volume; a bin holding no bar is not made. Returns (ts, o, h, lo, c, v),
    each (m,), ts the bins' start instants."""
    day, sod_min = ist_day_and_minute(ts)
    b = np.floor((sod_min - SESSION_OPEN_MIN) / minutes).astype(np.int64)
    key = day * 10_000 + b
    starts = np.concatenate([[0], np.flatnonzero(key[1:] != key[:-1]) + 1])
    ends = np.concatenate([starts[1:], [len(key)]]) - 1
    day = day[starts]
    out_ts = day * NS_PER_DAY + (SESSION_OPEN_MIN + b[starts] * minutes) * NS_PER_MIN - IST_OFFSET_NS
    return (out_ts, o[starts], np.maximum.reduceat(h, starts), np.minimum.reduceat(lo, starts), c[ends],
            np.add.reduceat(v, starts))


def session_index(ts: np.ndarray) -> np.ndarray:
    """Trading-day index from 0 (n,) int32 of sorted bar-start instants (n,)."""
    day, _ = ist_day_and_minute(ts)
    return np.unique(day, return_inverse=True)[1].astype(np.int32)
