"""The tear sheet's metrics (docs/metrics.md) against hand-worked numbers; the backtester's turnover and holding
time against its own trades table; empyrical reading `daily_returns.csv` agrees with metrics.json."""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtrade import backtest as B, metrics as M, policies as P, report as R
from jaxtrade.data import load_market
from tests.test_backtest import write_fixture

SQ = math.sqrt(252)
# E0 = 100; three sessions of two bars closing 110, 99, 108.9: daily returns +10%, -10%, +10%.
EQUITY = np.array([100.0, 110.0, 104.0, 99.0, 100.0, 108.9])
SESSION = np.array([0, 0, 1, 1, 2, 2])


def test_volatility_skew_var_cvar_by_hand():
    d = np.array([0.1, -0.1, 0.1])
    # mean 1/30; deviations 1/15, -2/15, 1/15: sample variance (1 + 4 + 1) / 225 / 2
    assert M.annual_volatility(d) == pytest.approx(math.sqrt(6 / 225 / 2) * SQ)
    # m2 = 6 / 675, m3 = -6 / 10125: skew = m3 / m2^1.5 = -1 / sqrt(2)
    assert M.skew(d) == pytest.approx(-1 / math.sqrt(2))
    # sorted -0.1, 0.1, 0.1: the 5% point sits 0.1 of the way from -0.1 to 0.1
    assert M.value_at_risk(d) == pytest.approx(-0.08)
    assert M.conditional_value_at_risk(d) == pytest.approx(-0.1)  # floor(2 * 0.05) + 1 = 1 worst day
    # +-1% alternating: m2 = 1e-4, m4 = 1e-8 -> excess kurtosis 1 - 3; symmetric -> skew 0
    alt = np.array([0.01, -0.01, 0.01, -0.01])
    assert M.kurtosis(alt) == pytest.approx(-2.0)
    assert M.skew(alt) == pytest.approx(0.0, abs=1e-12)
    # -10% .. +10% in steps of 1% (21 days): VaR at index 0.05 * 20 = 1 -> -9%; CVaR over the 2 worst -> -9.5%
    ladder = np.round(np.arange(-10, 11) / 100.0, 10)
    assert M.value_at_risk(ladder) == pytest.approx(-0.09)
    assert M.conditional_value_at_risk(ladder) == pytest.approx(-0.095)


def test_risk_metric_nulls():
    assert math.isnan(M.annual_volatility([0.01]))
    assert math.isnan(M.skew([0.01, 0.02])) and math.isnan(M.kurtosis([0.01, 0.02, 0.03]))
    assert math.isnan(M.skew([0.01] * 5)) and math.isnan(M.kurtosis([0.01] * 5))  # identical days
    assert math.isnan(M.value_at_risk([])) and math.isnan(M.conditional_value_at_risk([]))
    assert math.isnan(M.cost_to_gross_pnl([1.0, 2.0], [-1.0, -2.0]))  # a gross loss: no share
    assert math.isnan(M.avg_holding_bars([0, 0], 0))
    assert math.isnan(M.turnover([1.0], 100.0, 0))


def test_drawdown_duration_by_hand():
    # closes 110, 99, 108.9 after E0 = 100: below the 110 peak for the last 2 sessions (still open at the end)
    assert M.max_drawdown_duration([110.0, 99.0, 108.9], 100.0) == 2
    # below E0 from the first session counts; recovery (equal to the peak) ends a run
    assert M.max_drawdown_duration([99.0, 98.0, 100.0, 101.0, 100.5, 102.0], 100.0) == 2
    assert M.max_drawdown_duration([101.0, 102.0, 103.0], 100.0) == 0
    assert M.max_drawdown_duration([], 100.0) == 0


def test_turnover_holding_and_cost_share_by_hand():
    # bar 1: buy 1 lot at the open (11); bar 3: flip to short at the open (13, 2 lots traded), squared off at
    # its close (13.5). Lot size 2: traded value 2 * (11 + 2 * 13 + 13.5) = 101.
    target = np.array([0, 1, 1, -1, 0])
    position = np.array([0, 1, 1, 0, 0])
    open_ = np.array([10.0, 11.0, 12.0, 13.0, 14.0])
    close = open_ + 0.5
    traded = M.traded_value(target, position, 2.0, open_, close)
    assert traded.tolist() == [0.0, 22.0, 0.0, 79.0, 0.0]
    assert M.turnover(traded, 100.0, 1) == pytest.approx(1.01)
    assert M.turnover(traded, 100.0, 2) == pytest.approx(0.505)
    # the long trip held bars 1, 2 (closed at bar 3's open); the short held bar 3 (open to close)
    assert M.avg_holding_bars(target, 2) == pytest.approx(1.5)
    assert M.cost_to_gross_pnl([1.0, 2.0], [10.0, -4.0]) == pytest.approx(0.5)


def test_risk_free_rate_in_sharpe_and_sortino():
    d = np.array([0.01, -0.004, 0.006, 0.002, -0.001])
    r = 1.05 ** (1 / 252) - 1
    assert M.daily_risk_free(0.05) == pytest.approx(r, rel=1e-15)
    x = [v - r for v in d]
    mean = sum(x) / 5
    sd = math.sqrt(sum((v - mean) ** 2 for v in x) / 4)
    down = math.sqrt(sum(min(v, 0.0) ** 2 for v in x) / 5)
    m = M.host_metrics(M.compute_metrics(np.r_[100.0, 100.0 * np.cumprod(1 + d)], np.r_[0, np.arange(5)],
                                         np.zeros(6), np.zeros(6), [], 100.0, risk_free_rate=0.05))
    assert m["sharpe"] == pytest.approx(mean / sd * SQ, rel=1e-9)
    assert m["sortino"] == pytest.approx(mean / down * SQ, rel=1e-9)
    # a day above zero but below the risk-free rate counts as downside
    assert math.isnan(M.sortino(np.array([0.001, 0.002])))
    assert not math.isnan(M.sortino(np.array([0.001, 0.002]), risk_free=0.0015))


def test_compute_metrics_carries_every_key():
    m = M.host_metrics(M.compute_metrics(EQUITY, SESSION, [0, 1, 1, 0, 0, -1], np.zeros(6), [10.0, -5.0], 100.0,
                                         trade_gross_pnl=[11.0, -4.0], trade_costs=[1.0, 1.0],
                                         target=[0, 1, 1, 0, -1, -1], traded=np.ones(6)))
    assert set(m) == set(M.METRIC_KEYS)
    assert m["max_drawdown_duration"] == 2 and m["skew"] == pytest.approx(-1 / math.sqrt(2))
    assert m["avg_holding_bars"] == pytest.approx(2.0) and m["turnover"] == pytest.approx(6 / 100 / 3)
    assert m["cost_to_gross_pnl"] == pytest.approx(2 / 7) and m["kurtosis"] is None


@pytest.fixture(scope="module")
def backtested(tmp_path_factory):
    d = tmp_path_factory.mktemp("rm")
    write_fixture(d, "NIFTY_15", sessions=40, seed=3)
    with jax.enable_x64(True):
        market = load_market(d, "NIFTY_15", price_dtype=jnp.float64)
        result, hold = B.backtest_many(market, [P.momentum(market.scaler, horizon=1), P.buy_and_hold()],
                                       B.BacktestConfig(split="all", risk_free_rate=0.065, lot_size=1.0,
                                                        initial_capital=1e6, cost_model="zero"))
    return market, result, hold, d


def test_backtest_turnover_and_holding_agree_with_its_trades(backtested):
    market, result, _, _ = backtested
    tr, m = result.trades, result.metrics
    assert m["num_trades"] == len(tr["net_pnl"]) > 10
    # max_lots 1, no slippage: each trip trades lots x (entry + exit) rupees
    traded = float(np.sum(tr["lots"] * (tr["entry_price"] + tr["exit_price"])))
    assert m["turnover"] == pytest.approx(traded / 1e6 / result.num_sessions, rel=1e-12)
    # holding: bars from the entry fill (an open) to the exit fill, one more when the exit is at a close
    ts = result.equity["timestamp"]
    lo, hi = market.split_bars("all")
    opens, closes = np.asarray(market.data.open)[lo:hi], np.asarray(market.data.close)[lo:hi]
    held = 0
    for entry, exit_, price in zip(tr["entry_time"], tr["exit_time"], tr["exit_price"]):
        i, j = int(np.searchsorted(ts, entry)), int(np.searchsorted(ts, exit_))
        at_close = price == closes[j]
        assert at_close or price == opens[j]
        held += j - i + int(at_close)
    assert m["avg_holding_bars"] == pytest.approx(held / len(tr["net_pnl"]))
    assert m["cost_to_gross_pnl"] is None or m["cost_to_gross_pnl"] == 0.0  # zero cost model


def test_daily_returns_csv_matches_empyrical(backtested, tmp_path):
    empyrical = pytest.importorskip("empyrical")
    pd = pytest.importorskip("pandas")
    market, result, hold, _ = backtested
    R.write_symbol_outputs(result, [hold], tmp_path, plot=False)
    rec = json.loads((tmp_path / "metrics.json").read_text())
    returns = pd.read_csv(tmp_path / "daily_returns.csv", index_col="date", parse_dates=True)["returns"]
    assert len(returns) == result.num_sessions and returns.index.is_monotonic_increasing
    rf = M.daily_risk_free(rec["risk_free_rate"])
    assert rec["risk_free_rate"] == 0.065
    assert empyrical.sharpe_ratio(returns, risk_free=rf) == pytest.approx(rec["sharpe"], rel=1e-9)
    assert empyrical.sortino_ratio(returns, required_return=rf) == pytest.approx(rec["sortino"], rel=1e-9)
    assert empyrical.annual_volatility(returns) == pytest.approx(rec["annual_volatility"], rel=1e-9)
    assert empyrical.value_at_risk(returns) == pytest.approx(rec["var_95"], rel=1e-9)
    assert empyrical.conditional_value_at_risk(returns) == pytest.approx(rec["cvar_95"], rel=1e-9)
    # empyrical's drawdown is over session closes (E0 a peak); jaxtrade's max_drawdown is bar level, so >= it
    closes = result.equity["equity"][M.session_last_rows(result.equity["timestamp"].astype("datetime64[D]"))]
    daily_dd = float(M.max_drawdown(closes, result.initial_capital))
    assert -empyrical.max_drawdown(returns) == pytest.approx(daily_dd, rel=1e-9)
    assert rec["max_drawdown"] >= daily_dd - 1e-12
