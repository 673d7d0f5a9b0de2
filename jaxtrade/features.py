"""Observation features, computed causally: the row for bar t uses bars <= t only (host-side, float64).

Every rolling statistic is a trailing window built from cumulative sums, so changing any bar after t cannot
change rows <= t (tests/test_data.py proves it). Clock features (time of day, day of week, bars left in the
session) come from the bar's timestamp and the exchange's timetable, never from how many bars the data has
later in the day, so a short day (an outage) does not leak its length.

Scaling: `fit_scaler` on the training split's rows only; `apply_scaler` z-scores the market features and
clips to +-CLIP. Clock features are already bounded and are left as they are.
"""

from __future__ import annotations

import dataclasses

import numpy as np

SESSION_OPEN_MIN = 9 * 60 + 15  # 09:15 IST
SESSION_CLOSE_MIN = 15 * 60 + 30  # 15:30 IST
SESSION_MINUTES = SESSION_CLOSE_MIN - SESSION_OPEN_MIN
CLIP = 10.0

RETURN_HORIZONS = (1, 5, 15, 60)
MARKET_FEATURES = (
    *(f"logret_{h}" for h in RETURN_HORIZONS),
    "logret_session",  # close vs the session's first open
    "gap",  # open vs previous close (overnight gap at a session's first bar)
    "rvol_20",  # trailing RMS of 1-bar log returns
    "rvol_100",
    "range",  # log(high / low)
    "atr_14",  # EWMA of the true range, relative to close
    "close_in_range",  # where the close sits in the bar's range, -0.5 .. 0.5
    "volume_z",  # trailing z-score of volume; 0 where the symbol has no volume (an index)
)
CLOCK_FEATURES = ("tod_sin", "tod_cos", "dow_sin", "dow_cos", "session_left")
FEATURE_NAMES = MARKET_FEATURES + CLOCK_FEATURES
NUM_SCALED = len(MARKET_FEATURES)


def _trailing_mean(x: np.ndarray, window: int) -> np.ndarray:
    """Mean of x[max(0, t-window+1) .. t] for each t."""
    c = np.concatenate([[0.0], np.cumsum(x)])
    t = np.arange(len(x))
    lo = np.maximum(0, t - window + 1)
    return (c[t + 1] - c[lo]) / (t + 1 - lo)


def _lagged(x: np.ndarray, k: int) -> np.ndarray:
    """x[t - k], clamped at the first bar."""
    idx = np.maximum(np.arange(len(x)) - k, 0)
    return x[idx]


def _ewma(x: np.ndarray, span: int) -> np.ndarray:
    alpha = 2.0 / (span + 1.0)
    out = np.empty_like(x)
    acc = x[0] if len(x) else 0.0
    # A short Python loop is fine here: it runs once per symbol on the host. Vectorised via lfilter-free
    # recursion would need scipy, which we do not depend on.
    for i, v in enumerate(x):
        acc = alpha * v + (1.0 - alpha) * acc
        out[i] = acc
    return out


def compute_features(open_, high, low, close, volume, minute_of_day, weekday, session, bar_minutes):
    """Market and clock features, `[T, F]` float64, in the order of FEATURE_NAMES.

    minute_of_day: bar START minute since midnight, IST; weekday: 0 = Monday; session: [T] ids, ascending.
    """
    o, h, l, c = (np.asarray(a, np.float64) for a in (open_, high, low, close))
    v = np.asarray(volume, np.float64)
    n = len(c)
    logc = np.log(c)
    r1 = np.diff(logc, prepend=logc[:1])
    cols = [logc - _lagged(logc, k) for k in RETURN_HORIZONS]

    session = np.asarray(session)
    first_of_session = np.r_[True, session[1:] != session[:-1]]
    first_idx = np.maximum.accumulate(np.where(first_of_session, np.arange(n), 0))
    cols.append(logc - np.log(o[first_idx]))
    prev_close = _lagged(c, 1)
    cols.append(np.where(np.arange(n) == 0, 0.0, np.log(o / prev_close)))
    cols.append(np.sqrt(_trailing_mean(r1 ** 2, 20)))
    cols.append(np.sqrt(_trailing_mean(r1 ** 2, 100)))
    cols.append(np.log(h / l))
    true_range = np.maximum(h, prev_close) / np.minimum(l, prev_close)
    cols.append(_ewma(np.log(true_range), 14))
    rng = h - l
    cols.append(np.where(rng > 0, (c - l) / np.where(rng > 0, rng, 1.0) - 0.5, 0.0))
    if np.any(v != 0):
        mu = _trailing_mean(v, 100)
        var = np.maximum(_trailing_mean(v ** 2, 100) - mu ** 2, 0.0)
        sd = np.sqrt(var)
        cols.append(np.where(sd > 0, (v - mu) / np.where(sd > 0, sd, 1.0), 0.0))
    else:
        cols.append(np.zeros(n))

    minute = np.asarray(minute_of_day, np.float64)
    phase = 2 * np.pi * (minute - SESSION_OPEN_MIN) / SESSION_MINUTES
    cols += [np.sin(phase), np.cos(phase)]
    day_phase = 2 * np.pi * np.asarray(weekday, np.float64) / 5.0
    cols += [np.sin(day_phase), np.cos(day_phase)]
    bar_end = minute + bar_minutes
    cols.append(np.clip((SESSION_CLOSE_MIN - bar_end) / SESSION_MINUTES, 0.0, 1.0))
    out = np.stack(cols, axis=1)
    assert out.shape == (n, len(FEATURE_NAMES))
    return out


@dataclasses.dataclass(frozen=True)
class Scaler:
    """z-score statistics of the market features, from the training split only."""

    mean: np.ndarray  # [F]
    std: np.ndarray  # [F]

    def to_dict(self):
        return {"mean": self.mean.tolist(), "std": self.std.tolist(), "clip": CLIP,
                "feature_names": list(FEATURE_NAMES)}


def fit_scaler(features: np.ndarray) -> Scaler:
    """Statistics over the given rows (pass the training split's rows only)."""
    mean = np.zeros(features.shape[1])
    std = np.ones(features.shape[1])
    mean[:NUM_SCALED] = features[:, :NUM_SCALED].mean(axis=0)
    sd = features[:, :NUM_SCALED].std(axis=0)
    std[:NUM_SCALED] = np.where(sd > 1e-12, sd, 1.0)
    return Scaler(mean=mean, std=std)


def apply_scaler(features: np.ndarray, scaler: Scaler) -> np.ndarray:
    return np.clip((features - scaler.mean) / scaler.std, -CLIP, CLIP)
