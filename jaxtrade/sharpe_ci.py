"""How sure a backtest's Sharpe ratio is: a seeded stationary block bootstrap (Politis & Romano 1994) of its
daily returns, and a plain sentence when the sample is too short or too noisy to judge. Host-side numpy; the
Sharpe ratio itself is `metrics.sharpe` (one definition)."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from jaxtrade.metrics import TRADING_DAYS, sharpe

def stationary_bootstrap_indices(n: int, num_resamples: int, mean_block: float,
                                 rng: np.random.Generator) -> np.ndarray:
    """[num_resamples, n] indices of Politis & Romano's (1994) stationary bootstrap: blocks start at uniform
    positions, have geometric lengths with mean `mean_block`, and wrap around the end of the series."""
    p = 1.0 / max(float(mean_block), 1.0)
    new_block = rng.random((num_resamples, n)) < p
    new_block[:, 0] = True
    starts = rng.integers(0, n, (num_resamples, n))
    pos = np.arange(n)
    block_pos = np.maximum.accumulate(np.where(new_block, pos, 0), axis=1)
    first = np.take_along_axis(starts, block_pos, axis=1)
    return (first + (pos - block_pos)) % n


def default_block_length(n: int) -> float:
    """Mean block length: sqrt(n), at least 5 (and at most n)."""
    return float(min(max(5.0, math.sqrt(n)), max(n, 1)))


def sharpe_bootstrap_ci(daily, num_resamples: int = 2000, mean_block: float | None = None,
                        level: float = 0.95, seed: int = 0, risk_free: float = 0.0) -> tuple[float, float] | None:
    """Percentile CI of the annualised Sharpe (in excess of the per-session rate `risk_free`) from a seeded
    stationary block bootstrap of daily returns. None with fewer than 3 days or when the Sharpe itself is null."""
    d = np.asarray(daily, np.float64) - risk_free
    n = len(d)
    if n < 3 or math.isnan(float(sharpe(d))):
        return None
    rng = np.random.default_rng(seed)
    idx = stationary_bootstrap_indices(n, num_resamples, mean_block or default_block_length(n), rng)
    x = d[idx]
    mean = x.mean(axis=1)
    std = x.std(axis=1, ddof=1)
    ok = std > 1e-12 * np.maximum(np.abs(mean), 1e-300)
    s = np.where(ok, mean / np.where(ok, std, 1.0), np.nan) * math.sqrt(TRADING_DAYS)
    s = s[~np.isnan(s)]
    if len(s) < num_resamples // 2:
        return None
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(s, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def judge_sample(sessions: int, ci: Sequence[float] | None, min_sessions: int = 20) -> str | None:
    """A plain sentence when the sample is too short or too noisy to judge the Sharpe; None when it is not."""
    if sessions < min_sessions:
        return (f"{sessions} sessions: too short to judge (fewer than {min_sessions}); treat every metric as "
                f"anecdotal")
    if ci is None:
        return "Sharpe undefined or its interval could not be estimated: no evidence either way"
    lo, hi = ci
    if lo <= 0.0 <= hi:
        return f"Sharpe 95% CI [{lo:.2f}, {hi:.2f}] spans 0: not distinguishable from no edge"
    return None
