"""Observation features, computed causally: the row for bar t uses bars <= t only (host-side, float64).

Every rolling statistic is a trailing window built from cumulative sums, so changing any bar after t cannot
change rows <= t (tests/test_data.py proves it). Clock features (time of day, day of week, bars left in the
session) come from the bar's timestamp and the exchange's timetable, never from how many bars the data has
later in the day, so a short day (an outage) does not leak its length.

Scaling: `fit_scaler` on the training split's rows only; `apply_scaler` z-scores the market features and
clips to +-CLIP. Clock features are already bounded and are left as they are.

`FeatureStream` computes the same rows one bar at a time (live inference, `jaxtrade.live`): the same formulas
over the same running sums in the same order, so its row t equals `compute_features`' row t for a stream that
starts at the same first bar (tests/test_live.py checks every bar). Its state is bounded (the longest window).
"""

from __future__ import annotations

import collections
import dataclasses
import math

import numpy as np

SESSION_OPEN_MIN = 9 * 60 + 15  # 09:15 IST
SESSION_CLOSE_MIN = 15 * 60 + 30  # 15:30 IST
SESSION_MINUTES = SESSION_CLOSE_MIN - SESSION_OPEN_MIN
CLIP = 10.0
ATR_SPAN = 14
VOLUME_WINDOW = 100
_RVOL_WINDOWS = (20, 100)

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
    cols += [np.sqrt(_trailing_mean(r1 ** 2, w)) for w in _RVOL_WINDOWS]
    cols.append(np.log(h / l))
    true_range = np.maximum(h, prev_close) / np.minimum(l, prev_close)
    cols.append(_ewma(np.log(true_range), ATR_SPAN))
    rng = h - l
    cols.append(np.where(rng > 0, (c - l) / np.where(rng > 0, rng, 1.0) - 0.5, 0.0))
    if np.any(v != 0):
        mu = _trailing_mean(v, VOLUME_WINDOW)
        var = np.maximum(_trailing_mean(v ** 2, VOLUME_WINDOW) - mu ** 2, 0.0)
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


class FeatureStream:
    """`compute_features`, one bar at a time. `update(...)` takes bar t and returns its `[F]` float64 row.

    Every trailing mean is (c[t+1] - c[lo]) / n over a running cumulative sum c, exactly as the batch
    `_trailing_mean` does, so the arithmetic (and its rounding) is the batch's; memory is the longest window."""

    def __init__(self, bar_minutes: int):
        self.bar_minutes = int(bar_minutes)
        self.count = 0
        self.log_closes = collections.deque(maxlen=max(RETURN_HORIZONS) + 1)  # logc[t-60 .. t]
        self.prev_close = math.nan
        self.session_log_open = math.nan
        self.atr = math.nan
        width = max(max(_RVOL_WINDOWS), VOLUME_WINDOW) + 1
        self.sums = {name: (0.0, collections.deque([0.0], maxlen=width)) for name in ("r2", "v", "v2")}

    def _push(self, name: str, x: float) -> None:
        total, history = self.sums[name]
        total = total + x
        history.append(total)
        self.sums[name] = (total, history)

    def _mean(self, name: str, window: int) -> float:
        _, history = self.sums[name]  # history[-1] = c[t+1]; history[-1 - k] = c[t+1-k]
        n = min(self.count, window)
        return (history[-1] - history[-1 - n]) / n

    def update(self, open_: float, high: float, low: float, close: float, volume: float, minute_of_day: int,
               weekday: int, new_session: bool) -> np.ndarray:
        """The feature row of the next bar. minute_of_day: bar START minute since midnight, IST; weekday:
        0 = Monday; new_session: this bar is its trading day's first."""
        o, h, lo, c, v = (np.float64(x) for x in (open_, high, low, close, volume))
        first = self.count == 0
        logc = np.log(c)
        prev_logc = logc if first else self.log_closes[-1]
        prev_close = c if first else self.prev_close
        self.log_closes.append(logc)
        self.count += 1
        cols = [logc - self.log_closes[max(len(self.log_closes) - 1 - k, 0)] for k in RETURN_HORIZONS]
        if new_session or first:
            self.session_log_open = np.log(o)
        cols.append(logc - self.session_log_open)
        cols.append(np.float64(0.0) if first else np.log(o / prev_close))
        r1 = logc - prev_logc
        self._push("r2", np.square(r1))  # what `x ** 2` does on an array
        cols += [np.sqrt(self._mean("r2", w)) for w in _RVOL_WINDOWS]
        cols.append(np.log(h / lo))
        x = np.log(np.maximum(h, prev_close) / np.minimum(lo, prev_close))
        alpha = 2.0 / (ATR_SPAN + 1.0)
        self.atr = alpha * x + (1.0 - alpha) * (x if first else self.atr)
        cols.append(self.atr)
        rng = h - lo
        cols.append((c - lo) / rng - 0.5 if rng > 0 else np.float64(0.0))
        self._push("v", v)
        self._push("v2", np.square(v))
        mu = self._mean("v", VOLUME_WINDOW)
        sd = np.sqrt(max(self._mean("v2", VOLUME_WINDOW) - np.square(mu), 0.0))
        cols.append((v - mu) / sd if sd > 0 else np.float64(0.0))  # 0 while the volume is all zero (an index)
        self.prev_close = c
        minute = np.float64(minute_of_day)
        phase = 2 * np.pi * (minute - SESSION_OPEN_MIN) / SESSION_MINUTES
        day_phase = 2 * np.pi * np.float64(weekday) / 5.0
        cols += [np.sin(phase), np.cos(phase), np.sin(day_phase), np.cos(day_phase)]
        cols.append(min(max((SESSION_CLOSE_MIN - (minute + self.bar_minutes)) / SESSION_MINUTES, 0.0), 1.0))
        return np.array(cols, np.float64)


@dataclasses.dataclass(frozen=True)
class Scaler:
    """z-score statistics of the market features, from the training split only."""

    mean: np.ndarray  # [F]
    std: np.ndarray  # [F]

    @classmethod
    def from_dict(cls, d) -> "Scaler":
        """Inverse of `to_dict` (a model file's "scaler" entry); ValueError when its features are not ours."""
        names = d.get("feature_names")
        if names is not None and list(names) != list(FEATURE_NAMES):
            raise ValueError(f"feature scaling for {len(names)} features {list(names)[:2]}..., not this version's "
                             f"{len(FEATURE_NAMES)}")
        return cls(mean=np.asarray(d["mean"], np.float64), std=np.asarray(d["std"], np.float64))

    def apply(self, row: np.ndarray) -> np.ndarray:
        return apply_scaler(row, self)

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
