"""DESIGN section 7's metrics: hand-worked curves, nulls, an independent numpy check, the on-device path."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtrade import metrics as M
from jaxtrade import sharpe_ci as CI

SQ = math.sqrt(252)


def test_hand_worked_curve():
    # 3 sessions of 2 bars; E0 = 100; session closes 110, 99, 108.9 -> daily +10%, -10%, +10%.
    equity = np.array([100.0, 110.0, 104.0, 99.0, 100.0, 108.9])
    session = np.array([0, 0, 1, 1, 2, 2])
    position = np.array([0, 1, 1, 0, 0, -1])
    costs = np.array([0.0, 1.0, 0.0, 2.0, 0.0, 0.5])
    pnl = np.array([10.0, -5.0, 20.0, -5.0])
    m = M.host_metrics(M.compute_metrics(equity, session, position, costs, pnl, 100.0))
    d = np.array([0.1, -0.1, 0.1])
    assert np.allclose(M.daily_returns(equity, session, 100.0), d)
    assert m["total_return"] == pytest.approx(0.089)
    assert m["cagr"] == pytest.approx(1.089 ** (252 / 3) - 1)
    mean, sd = 0.1 / 3, math.sqrt(((0.1 - 0.1 / 3) ** 2 * 2 + (-0.1 - 0.1 / 3) ** 2) / 2)
    assert m["sharpe"] == pytest.approx(mean / sd * SQ)
    assert m["sortino"] == pytest.approx(mean / math.sqrt(0.01 / 3) * SQ)
    assert m["max_drawdown"] == pytest.approx(1 - 99 / 110)
    assert m["calmar"] == pytest.approx(m["cagr"] / (1 - 99 / 110))
    assert m["num_trades"] == 4
    assert m["win_rate"] == 0.5
    assert m["profit_factor"] == pytest.approx(3.0)
    assert m["avg_trade_pnl"] == pytest.approx(5.0)
    assert m["total_costs"] == pytest.approx(3.5)
    assert m["exposure"] == pytest.approx(3 / 6)


def test_drawdown_counts_initial_capital_as_a_peak():
    # Never above E0: drawdown measured from E0, not from the first bar.
    assert M.max_drawdown(np.array([95.0, 90.0, 99.0]), 100.0) == pytest.approx(0.10)
    assert M.max_drawdown(np.array([100.0, 101.0, 102.0]), 100.0) == 0.0


def test_nulls():
    flat = M.host_metrics(M.compute_metrics(np.full(6, 100.0), [0, 0, 1, 1, 2, 2], np.zeros(6), np.zeros(6),
                                            [], 100.0))
    assert flat["sharpe"] is None  # zero deviation
    assert flat["sortino"] is None  # no negative day
    assert flat["calmar"] is None  # zero drawdown
    assert flat["win_rate"] is None and flat["profit_factor"] is None and flat["avg_trade_pnl"] is None
    assert flat["num_trades"] == 0 and flat["total_return"] == 0.0 and flat["cagr"] == 0.0
    one_day = M.host_metrics(M.compute_metrics([100.0, 104.0], [0, 0], [0, 1], [0, 0], [4.0], 100.0))
    assert one_day["sharpe"] is None  # fewer than 2 sessions
    assert one_day["profit_factor"] is None  # no losing trade
    assert one_day["win_rate"] == 1.0
    ruined = M.host_metrics(M.compute_metrics([100.0, -5.0], [0, 0], [0, 1], [0, 0], [-105.0], 100.0))
    assert ruined["cagr"] is None and ruined["calmar"] is None
    assert ruined["profit_factor"] == 0.0
    # Constant non-zero daily returns: zero deviation up to rounding -> null, not a huge number.
    assert np.isnan(M.sharpe(np.full(10, 0.001)))


def _independent(equity, session, pnl, cap):
    """A plain-loop float64 implementation of section 7 (no shared code with jaxtrade.metrics)."""
    closes = [equity[i] for i in range(len(equity)) if i == len(equity) - 1 or session[i + 1] != session[i]]
    d, prev = [], cap
    for c in closes:
        d.append(c / prev - 1)
        prev = c
    n = len(d)
    mu = sum(d) / n
    sd = math.sqrt(sum((x - mu) ** 2 for x in d) / (n - 1))
    down = math.sqrt(sum(min(x, 0) ** 2 for x in d) / n)
    peak, mdd = cap, 0.0
    for e in equity:
        peak = max(peak, e)
        mdd = max(mdd, 1 - e / peak)
    wins = sum(1 for p in pnl if p > 0)
    gp = sum(p for p in pnl if p > 0)
    gl = -sum(p for p in pnl if p < 0)
    cagr = (equity[-1] / cap) ** (252 / n) - 1
    return {"sharpe": mu / sd * SQ, "sortino": mu / down * SQ, "max_drawdown": mdd, "cagr": cagr,
            "calmar": cagr / mdd, "win_rate": wins / len(pnl), "profit_factor": gp / gl,
            "total_return": equity[-1] / cap - 1}


@pytest.mark.parametrize("seed", range(5))
def test_against_independent_numpy_on_random_curves(seed):
    rng = np.random.default_rng(seed)
    sessions, per = 30, 7
    cap = 1e5
    equity = cap * np.exp(np.cumsum(rng.normal(0.0, 0.01, sessions * per)))
    session = np.repeat(np.arange(sessions), per)
    pnl = rng.normal(0.0, 100.0, 40)
    got = M.host_metrics(M.compute_metrics(equity, session, rng.integers(-1, 2, len(equity)), np.zeros(len(equity)),
                                           pnl, cap))
    want = _independent(list(equity), list(session), list(pnl), cap)
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=1e-10), k


def test_same_formulas_on_device_with_nan_for_null():
    stats = {"num_trades": jnp.array([4, 0, 3]), "wins": jnp.array([2, 0, 3]),
             "gross_profit": jnp.array([30.0, 0.0, 12.0]), "gross_loss": jnp.array([10.0, 0.0, 0.0]),
             "max_drawdown": jnp.array([0.1, 0.0, 0.05]), "final_equity": jnp.array([110.0, 100.0, 90.0])}
    out = jax.jit(lambda s: M.episode_metrics(s, 100.0))(stats)
    np.testing.assert_allclose(out["win_rate"], [0.5, np.nan, 1.0])
    np.testing.assert_allclose(out["profit_factor"], [3.0, np.nan, np.nan])
    np.testing.assert_allclose(out["total_return"], [0.1, 0.0, -0.1], atol=1e-6)
    assert M.to_python(out["profit_factor"][1]) is None
    # Masked Sharpe / drawdown on device agree with numpy on the unmasked part.
    rng = np.random.default_rng(0)
    d = rng.normal(0.001, 0.01, 20)
    padded = np.r_[d, np.zeros(5)]
    mask = np.r_[np.ones(20, bool), np.zeros(5, bool)]
    s_dev = jax.jit(lambda x, m: M.sharpe(x, m, xp=jnp))(padded, mask)
    assert float(s_dev) == pytest.approx(float(M.sharpe(d)), rel=1e-5)
    e = 100 * np.exp(np.cumsum(d))
    e_dev = jax.jit(lambda x, m: M.max_drawdown(x, 100.0, m, xp=jnp))(np.r_[e, np.full(5, 1.0)], mask)
    assert float(e_dev) == pytest.approx(float(M.max_drawdown(e, 100.0)), rel=1e-5)
    assert np.isnan(float(jax.jit(lambda x: M.sharpe(x, xp=jnp))(jnp.zeros(5))))


def test_stationary_bootstrap_is_seeded_and_blocky():
    rng = np.random.default_rng(0)
    idx = CI.stationary_bootstrap_indices(50, 200, 7.0, rng)
    assert idx.shape == (200, 50) and idx.min() >= 0 and idx.max() < 50
    runs = np.mean(idx[:, 1:] == (idx[:, :-1] + 1) % 50)
    assert 0.8 < runs < 0.9  # continue the block with probability 1 - 1/7
    d = np.random.default_rng(1).normal(0.002, 0.01, 60)
    ci1 = CI.sharpe_bootstrap_ci(d, seed=0)
    ci2 = CI.sharpe_bootstrap_ci(d, seed=0)
    assert ci1 == ci2
    lo, hi = ci1
    assert lo < float(M.sharpe(d)) < hi
    assert CI.sharpe_bootstrap_ci(np.zeros(30)) is None
    assert "too short" in CI.judge_sample(10, ci1)
    assert CI.judge_sample(60, (0.5, 2.0)) is None
    assert "spans 0" in CI.judge_sample(60, (-0.5, 2.0))
