"""Trading metrics: one implementation for the backtester, the tear sheet and training gates (docs/metrics.md).

Every formula is written once. The DESIGN section 7 core is written over an array namespace `xp` (numpy by
default; pass `jax.numpy` to run it on device, inside `jit`/`vmap`): the backtester calls it with numpy in
float64, training gates with `jnp` on the environment's per-episode statistics (`episode_metrics`). The risk
metrics added for the tear sheet (volatility, drawdown duration, skew, kurtosis, VaR, CVaR, turnover, holding
time, cost share) are host-side numpy.

Nulls. Some metrics are undefined for some samples (Sharpe with fewer than 2 sessions or zero deviation,
Sortino with no day below the risk-free rate, Calmar with zero drawdown, win rate with no trades, profit factor
with no losing trade, ...). The formulas return NaN for null, on host and on device alike (a fixed-shape array
cannot hold None); `to_python` / `host_metrics` turn NaN into None for reports and JSON. A NaN therefore always
means "not defined for this sample", never a numerical failure: inputs are guarded so that no formula divides
by zero. `cagr` is null when final equity is <= 0 or there are no sessions, `avg_trade_pnl` with no trades.

Definitions (E_t equity after bar t, E_0 the initial capital, d_k daily returns from the equity at each
session's last bar, the first against E_0; r the per-session risk-free rate, (1 + R) ** (1 / 252) - 1 for an
annual rate R, default 0; 252 sessions a year):
    total_return = E_T / E_0 - 1            cagr = (E_T / E_0) ** (252 / sessions) - 1
    sharpe  = mean(d - r) / std(d, ddof=1) * sqrt(252)
    sortino = mean(d - r) / sqrt(mean(min(d - r, 0)^2)) * sqrt(252)
    max_drawdown = max_t 1 - E_t / max(E_0, E_1..E_t)        calmar = cagr / max_drawdown
    win_rate = #(net_pnl > 0) / num_trades   profit_factor = sum(net_pnl > 0) / |sum(net_pnl < 0)|
    avg_trade_pnl = sum(net_pnl) / num_trades, total_costs, exposure = fraction of bars with a position.
    annual_volatility = std(d, ddof=1) * sqrt(252)
    max_drawdown_duration = longest run of consecutive sessions closing below the highest earlier close (E_0
        counts as the close before the first session)
    skew = m3 / m2^1.5, kurtosis = m4 / m2^2 - 3 (moments of d about its mean, divided by n: scipy's defaults)
    var_95 = 5th percentile of d (linear interpolation), cvar_95 = mean of the floor((n - 1) * 0.05) + 1
        worst d (both returns: negative is a loss; empyrical's definitions)
    turnover = traded value (|units| x price of every fill) / E_0 / sessions
    avg_holding_bars = bars with a position held from an open fill / num_trades
    cost_to_gross_pnl = sum(trade costs) / sum(trade gross_pnl), null unless the gross PnL is positive
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

TRADING_DAYS = 252
METRIC_KEYS = ("total_return", "cagr", "sharpe", "sortino", "max_drawdown", "calmar", "num_trades",
               "win_rate", "profit_factor", "avg_trade_pnl", "total_costs", "exposure",
               # risk and trading-activity metrics of the tear sheet (docs/metrics.md)
               "annual_volatility", "max_drawdown_duration", "skew", "kurtosis", "var_95", "cvar_95", "turnover",
               "avg_holding_bars", "cost_to_gross_pnl")
GATE_KEYS = ("win_rate", "profit_factor", "max_drawdown", "total_return", "num_trades")


# ------------------------------------------------------------------------------------------ primitives

def _safe_div(num, den, ok, xp):
    """num / den where `ok`, else NaN; never evaluates a division by zero."""
    den_safe = xp.where(ok, den, xp.ones_like(den))
    return xp.where(ok, num / den_safe, xp.nan)


def _cummax(x, xp):
    if xp is np:
        return np.maximum.accumulate(x)
    import jax
    return jax.lax.cummax(x, axis=0)


def _mask_of(x, mask, xp):
    return xp.ones(x.shape, bool) if mask is None else xp.asarray(mask, bool)


def total_return(final_equity, initial_capital, xp=np):
    return xp.asarray(final_equity) / initial_capital - 1.0


def cagr(final_equity, initial_capital, sessions, xp=np):
    """(E_T / E_0) ** (252 / sessions) - 1; NaN when E_T <= 0 or sessions == 0."""
    ratio = xp.asarray(final_equity) / initial_capital
    sessions = xp.asarray(sessions)
    ok = (ratio > 0) & (sessions > 0)
    expo = TRADING_DAYS / xp.where(sessions > 0, sessions, 1)
    return xp.where(ok, xp.where(ok, ratio, 1.0) ** expo - 1.0, xp.nan)


def daily_risk_free(annual_rate) -> float:
    """The per-session rate that compounds to the annual `annual_rate` over 252 sessions."""
    return float((1.0 + float(annual_rate)) ** (1.0 / TRADING_DAYS) - 1.0)


def sharpe(daily, mask=None, xp=np, risk_free=0.0):
    """Annualised Sharpe of daily returns `daily` [K] in excess of the per-session rate `risk_free` (entries where
    `mask` is False are ignored). NaN with fewer than 2 sessions or zero standard deviation."""
    d = xp.asarray(daily) - risk_free
    m = _mask_of(d, mask, xp)
    n = m.sum()
    mean = _safe_div(xp.where(m, d, 0.0).sum(), n, n > 0, xp)
    dev = xp.where(m, d - xp.where(n > 0, mean, 0.0), 0.0)
    var = _safe_div((dev ** 2).sum(), n - 1, n > 1, xp)
    std = xp.sqrt(xp.where(n > 1, var, 0.0))
    # A series of identical returns has a rounding-level deviation, not a meaningful one.
    scale = xp.maximum(xp.abs(xp.where(n > 0, mean, 0.0)), 1e-300)
    ok = (n > 1) & (std > 1e-12 * scale) & (std > 0)
    return _safe_div(xp.where(n > 0, mean, 0.0), std, ok, xp) * math.sqrt(TRADING_DAYS)


def sortino(daily, mask=None, xp=np, risk_free=0.0):
    """mean(d - r) / sqrt(mean(min(d - r, 0)^2)) * sqrt(252), r = `risk_free` per session; NaN when no day is
    below r."""
    d = xp.asarray(daily) - risk_free
    m = _mask_of(d, mask, xp)
    n = m.sum()
    mean = _safe_div(xp.where(m, d, 0.0).sum(), n, n > 0, xp)
    downside = xp.where(m, xp.minimum(d, 0.0), 0.0)
    dd = xp.sqrt(_safe_div((downside ** 2).sum(), n, n > 0, xp))
    ok = (n > 0) & xp.any(m & (d < 0))
    return _safe_div(xp.where(n > 0, mean, 0.0), xp.where(ok, dd, 1.0), ok, xp) * math.sqrt(TRADING_DAYS)


def max_drawdown(equity, initial_capital, mask=None, xp=np):
    """max over bars of 1 - E_t / max(E_0, E_1..E_t), a positive fraction (0 for a curve that never falls).
    Masked-out bars (padding) count as neither peaks nor drawdowns."""
    e = xp.asarray(equity)
    m = _mask_of(e, mask, xp)
    peak = xp.maximum(_cummax(xp.where(m, e, -xp.inf), xp), initial_capital)
    dd = xp.where(m, 1.0 - e / peak, 0.0)
    return xp.maximum(dd.max(), 0.0) if dd.shape[0] else xp.asarray(0.0)


def calmar(cagr_value, max_drawdown_value, xp=np):
    """cagr / max_drawdown; NaN when max_drawdown is 0 (or cagr is null)."""
    mdd = xp.asarray(max_drawdown_value)
    return _safe_div(xp.asarray(cagr_value), mdd, mdd > 0, xp)


def win_rate(wins, num_trades, xp=np):
    """wins / num_trades; NaN with no trades."""
    n = xp.asarray(num_trades)
    return _safe_div(xp.asarray(wins) * 1.0, n * 1.0, n > 0, xp)


def profit_factor(gross_profit, gross_loss, xp=np):
    """gross profit / gross loss (both >= 0); NaN when there is no losing trade."""
    gl = xp.asarray(gross_loss)
    return _safe_div(xp.asarray(gross_profit), gl, gl > 0, xp)


def avg_trade_pnl(total_net_pnl, num_trades, xp=np):
    n = xp.asarray(num_trades)
    return _safe_div(xp.asarray(total_net_pnl) * 1.0, n * 1.0, n > 0, xp)


def exposure(position, mask=None, xp=np):
    """Fraction of bars holding a non-zero position."""
    p = xp.asarray(position)
    m = _mask_of(p, mask, xp)
    n = m.sum()
    return _safe_div(xp.where(m & (p != 0), 1.0, 0.0).sum(), n, n > 0, xp)


def trade_stats(net_pnl, xp=np):
    """(num_trades, wins, gross_profit, gross_loss) of a list of round-trip net PnLs: the same four numbers
    the environment accumulates on device."""
    p = xp.asarray(net_pnl)
    return (p.shape[0], (p > 0).sum(), xp.where(p > 0, p, 0.0).sum(), xp.where(p < 0, -p, 0.0).sum())


# ------------------------------------------------------------------------- risk and activity (host)

def annual_volatility(daily) -> float:
    """std(d, ddof=1) * sqrt(252); NaN with fewer than 2 sessions."""
    d = np.asarray(daily, np.float64)
    return float(d.std(ddof=1) * math.sqrt(TRADING_DAYS)) if len(d) > 1 else math.nan


def max_drawdown_duration(session_closes, initial_capital) -> int:
    """Longest run of consecutive sessions whose closing equity is below the highest earlier close (E_0 is the
    close before the first session); a run still open at the end counts up to the last session. 0 for a curve
    that never closes below an earlier peak."""
    s = np.asarray(session_closes, np.float64)
    if not len(s):
        return 0
    peak_before = np.maximum.accumulate(np.r_[float(initial_capital), s[:-1]])
    under = s < peak_before
    longest = run = 0
    for u in under:
        run = run + 1 if u else 0
        longest = max(longest, run)
    return int(longest)


def _central_moments(daily):
    d = np.asarray(daily, np.float64)
    dev = d - d.mean()
    return len(d), (dev ** 2).mean(), (dev ** 3).mean(), (dev ** 4).mean(), d


def _identical(m2: float, d: np.ndarray) -> bool:
    return not m2 > (1e-12 * max(np.abs(d).max(), 1e-300)) ** 2


def skew(daily) -> float:
    """m3 / m2^1.5 of daily returns (biased, scipy.stats.skew's default); NaN with fewer than 3 sessions or
    identical returns."""
    if len(np.asarray(daily)) < 3:
        return math.nan
    n, m2, m3, _, d = _central_moments(daily)
    return math.nan if _identical(m2, d) else float(m3 / m2 ** 1.5)


def kurtosis(daily) -> float:
    """Excess kurtosis m4 / m2^2 - 3 of daily returns (biased, scipy.stats.kurtosis's default); NaN with fewer
    than 4 sessions or identical returns."""
    if len(np.asarray(daily)) < 4:
        return math.nan
    n, m2, _, m4, d = _central_moments(daily)
    return math.nan if _identical(m2, d) else float(m4 / m2 ** 2 - 3.0)


def value_at_risk(daily, level: float = 0.95) -> float:
    """Historical daily VaR: the (1 - level) quantile of d with linear interpolation (a return; negative is a
    loss). NaN with no sessions."""
    d = np.asarray(daily, np.float64)
    return float(np.percentile(d, 100.0 * (1.0 - level))) if len(d) else math.nan


def conditional_value_at_risk(daily, level: float = 0.95) -> float:
    """Historical daily CVaR (expected shortfall): the mean of the floor((n - 1) * (1 - level)) + 1 worst daily
    returns (a return; negative is a loss). NaN with no sessions."""
    d = np.sort(np.asarray(daily, np.float64))
    if not len(d):
        return math.nan
    k = int((len(d) - 1) * (1.0 - level)) + 1
    return float(d[:k].mean())


def traded_value(target, position, lot_size, open_, close) -> np.ndarray:
    """Per bar [T]: rupees traded, |lots| x lot size x price of the order filled at the bar's open (`target` -
    the previous bar's `position`) and of the square-off at its close (`position` - `target`). target: lots
    held from the bar's open fill; position: lots held after the bar (both [T], row 0 the starting bar)."""
    tgt = np.asarray(target, np.float64)
    pos = np.asarray(position, np.float64)
    prev = np.r_[0.0, pos[:-1]]
    lot = np.broadcast_to(np.asarray(lot_size, np.float64), tgt.shape)
    return (np.abs(tgt - prev) * np.asarray(open_, np.float64) + np.abs(pos - tgt) * np.asarray(close, np.float64)
            ) * lot


def turnover(traded, initial_capital, sessions) -> float:
    """Traded value per session as a multiple of the initial capital; NaN with no sessions."""
    return float(np.sum(traded, dtype=np.float64) / initial_capital / sessions) if sessions else math.nan


def avg_holding_bars(target, num_trades) -> float:
    """Bars held per round trip: bars that hold a position from their open fill (a trip opened at bar b's open
    and closed at bar e's open holds e - b bars; squared off at e's close, e - b + 1) / trades; NaN with none."""
    held = int(np.count_nonzero(np.asarray(target)))
    return held / num_trades if num_trades else math.nan


def cost_to_gross_pnl(trade_costs, trade_gross_pnl) -> float:
    """Share of the gross trading PnL paid in costs: sum(costs) / sum(gross_pnl) over round trips; NaN unless
    the gross PnL is positive (costs are not a share of a loss)."""
    gross = float(np.sum(trade_gross_pnl, dtype=np.float64))
    return float(np.sum(trade_costs, dtype=np.float64)) / gross if gross > 0 else math.nan


# ------------------------------------------------------------------------------------ daily returns

def session_last_rows(session) -> np.ndarray:
    """Indices of the last row of each session in a per-bar session-id array (host)."""
    s = np.asarray(session)
    if s.size == 0:
        return np.zeros(0, np.int64)
    return np.flatnonzero(np.r_[s[1:] != s[:-1], True])


def daily_returns(equity, session, initial_capital) -> np.ndarray:
    """d_k from the equity at each session's last bar, the first against E_0 (host, float64)."""
    e = np.asarray(equity, np.float64)
    closes = e[session_last_rows(session)]
    prev = np.r_[float(initial_capital), closes[:-1]]
    return closes / prev - 1.0


# ------------------------------------------------------------------------------------------ bundles

def episode_metrics(stats: Mapping[str, Any], initial_capital, xp=None) -> dict:
    """Gate metrics from the environment's per-episode statistics (on device by default).

    `stats` holds `num_trades`, `wins`, `gross_profit`, `gross_loss` and optionally `max_drawdown` and
    `final_equity`: an env `info` dict or `EnvState` fields (any leading batch shape). Returns arrays with NaN
    for null (no trades -> win_rate NaN; no losing trade -> profit_factor NaN)."""
    if xp is None:
        import jax.numpy as xp  # noqa: N812
    get = stats.get if hasattr(stats, "get") else (lambda k, d=None: getattr(stats, k, d))
    out = {"num_trades": xp.asarray(get("num_trades")),
           "win_rate": win_rate(get("wins"), get("num_trades"), xp),
           "profit_factor": profit_factor(get("gross_profit"), get("gross_loss"), xp)}
    if get("max_drawdown") is not None:
        out["max_drawdown"] = xp.asarray(get("max_drawdown"))
    final = get("final_equity", None)
    if final is None:
        final = get("equity", None)
    if final is not None:
        out["total_return"] = total_return(final, initial_capital, xp)
    return out


def compute_metrics(equity, session, position, costs, trade_net_pnl, initial_capital, *, risk_free_rate=0.0,
                    trade_gross_pnl=None, trade_costs=None, target=None, traded=None) -> dict:
    """The metrics of one backtest (host, float64, NaN for null; see `host_metrics`), keys METRIC_KEYS.

    equity, session, position, costs: per bar of the evaluated split (the first row is the starting bar);
    trade_net_pnl, trade_gross_pnl, trade_costs: per round trip; risk_free_rate: annual (Sharpe and Sortino
    use its per-session equivalent); target: lots held from each bar's open fill (for `avg_holding_bars`);
    traded: per-bar traded value (`traded_value`, for `turnover`). Metrics whose input is not given are NaN."""
    e = np.asarray(equity, np.float64)
    d = daily_returns(e, session, initial_capital)
    sessions = len(d)
    final = e[-1] if len(e) else float(initial_capital)
    n, w, gp, gl = trade_stats(np.asarray(trade_net_pnl, np.float64))
    c = cagr(final, initial_capital, sessions)
    mdd = max_drawdown(e, initial_capital)
    rf = daily_risk_free(risk_free_rate)
    closes = e[session_last_rows(session)] if len(e) else e
    nan = math.nan
    return {
        "total_return": float(total_return(final, initial_capital)),
        "cagr": float(c),
        "sharpe": float(sharpe(d, risk_free=rf)),
        "sortino": float(sortino(d, risk_free=rf)),
        "max_drawdown": float(mdd),
        "calmar": float(calmar(c, mdd)),
        "num_trades": int(n),
        "win_rate": float(win_rate(w, n)),
        "profit_factor": float(profit_factor(gp, gl)),
        "avg_trade_pnl": float(avg_trade_pnl(np.sum(trade_net_pnl, dtype=np.float64), n)),
        "total_costs": float(np.sum(np.asarray(costs, np.float64))),
        "exposure": float(exposure(np.asarray(position))),
        "annual_volatility": annual_volatility(d),
        "max_drawdown_duration": max_drawdown_duration(closes, initial_capital),
        "skew": skew(d),
        "kurtosis": kurtosis(d),
        "var_95": value_at_risk(d),
        "cvar_95": conditional_value_at_risk(d),
        "turnover": nan if traded is None else turnover(traded, initial_capital, sessions),
        "avg_holding_bars": nan if target is None else avg_holding_bars(target, n),
        "cost_to_gross_pnl": (nan if trade_gross_pnl is None or trade_costs is None
                              else cost_to_gross_pnl(trade_costs, trade_gross_pnl)),
    }


def to_python(value):
    """A metric value for JSON and reports: NaN -> None, numpy/jax scalars -> int/float."""
    if value is None:
        return None
    v = np.asarray(value)
    if v.ndim:
        return [to_python(x) for x in v.tolist()]
    if np.issubdtype(v.dtype, np.integer) or np.issubdtype(v.dtype, np.bool_):
        return int(v)
    f = float(v)
    return None if math.isnan(f) else f


def host_metrics(metrics: Mapping[str, Any]) -> dict:
    """`to_python` over a metrics dict (NaN -> None)."""
    return {k: to_python(v) for k, v in metrics.items()}


# ------------------------------------------------------------------------------------------ bootstrap

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
