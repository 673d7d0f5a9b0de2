"""Extreme markets: a 20% gap either way, limit-up and limit-down days locked at the limit (zero-range bars), flat
days, one-bar sessions. The features stay finite and the money stays exact (a float64 replay), intraday and
overnight, in the float64 backtester and (to 1e-4) in the float32 training env."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtrade import data, features as F
from jaxtrade.errors import InputError
from tests import env_harness as H
from tests.market_fixtures import timestamps_for_sessions, write_processed

BARS = 12
# (kind, bars): sessions 0-5 train, 6-7 validation, 8-9 test
DAYS = (("normal", BARS), ("gap_up", BARS), ("limit_up", BARS), ("flat", BARS), ("one_bar", 1),
        ("gap_down", BARS), ("normal", BARS), ("limit_down", BARS), ("flat", BARS), ("one_bar", 1))


def extreme_prices(seed=0, level=24_000.0):
    """OHLC and volume for DAYS, on the 0.05 tick grid. A gap day opens 20% away from the last close; a limit
    day moves 10% in its first two bars and then trades at the limit (open = high = low = close, no volume);
    a flat day never moves and has no volume."""
    rng = np.random.default_rng(seed)
    o, h, l, c, v = ([] for _ in range(5))
    prev = level
    for kind, n in DAYS:
        if kind in ("flat",):
            day_o = day_c = np.full(n, prev)
        elif kind.startswith("limit"):
            limit = prev * (1.10 if kind == "limit_up" else 0.90)
            day_c = np.r_[(prev + limit) / 2, np.full(n - 1, limit)]
            day_o = np.r_[prev, day_c[:-1]]
        else:
            start = prev * {"gap_up": 1.2, "gap_down": 0.8}.get(kind, 1.0)
            day_c = start * np.exp(np.cumsum(rng.normal(0, 2e-3, n)))
            day_o = np.r_[start, day_c[:-1]]
        day_o, day_c = (np.round(x / 0.05) * 0.05 for x in (day_o, day_c))
        wick = 0.0 if kind in ("flat", "limit_up", "limit_down") else 0.05 * rng.integers(1, 20, n)
        o.append(day_o)
        c.append(day_c)
        h.append(np.maximum(day_o, day_c) + wick)
        l.append(np.minimum(day_o, day_c) - wick)
        v.append(np.zeros(n) if kind == "flat" or kind.startswith("limit") else rng.integers(1, 5000, n) * 1.0)
        prev = day_c[-1]
    o, h, l, c, v = (np.concatenate(x) for x in (o, h, l, c, v))
    return o, h, l, c, v


def _scenario(actions, **kw) -> H.Scenario:
    o, h, l, c, v = extreme_prices()
    return H.Scenario(open=o, high=h, low=l, close=c, volume=v, lengths=tuple(n for _, n in DAYS),
                      actions=np.asarray(actions), **kw)


def _session_bars(kind, occurrence=0):
    starts = np.r_[0, np.cumsum([n for _, n in DAYS])[:-1]]
    idx = [i for i, (k, _) in enumerate(DAYS) if k == kind][occurrence]
    return np.arange(starts[idx], starts[idx] + DAYS[idx][1])


def test_features_stay_finite_and_mean_what_they_say(tmp_path):
    sc = _scenario(np.zeros(1))
    market = H.load_scenario(tmp_path, sc)
    ts = timestamps_for_sessions(sc.lengths)
    minute = (ts - ts.astype("datetime64[D]")).astype("timedelta64[m]").astype(int)
    weekday = (ts.astype("datetime64[D]").astype(int) + 3) % 7
    session = np.repeat(np.arange(len(sc.lengths)), sc.lengths)
    with np.errstate(all="raise"):  # no log(0), 0/0 or overflow on the way
        raw = F.compute_features(sc.open, sc.high, sc.low, sc.close, sc.volume, minute, weekday, session, 5)
    assert np.all(np.isfinite(raw))
    scaled = np.asarray(market.data.features)
    assert np.all(np.isfinite(scaled)) and np.all(np.abs(scaled) <= F.CLIP)
    assert np.all(np.isfinite(market.scaler.mean)) and np.all(market.scaler.std > 0)
    col = {name: raw[:, i] for i, name in enumerate(F.FEATURE_NAMES)}
    gap_up, gap_down = _session_bars("gap_up")[0], _session_bars("gap_down")[0]
    assert col["gap"][gap_up] == pytest.approx(np.log(1.2), abs=1e-5)
    assert col["gap"][gap_down] == pytest.approx(np.log(0.8), abs=1e-5)
    for kind in ("limit_up", "limit_down"):
        locked = _session_bars(kind)[2:]
        assert np.all(col["range"][locked] == 0) and np.all(col["close_in_range"][locked] == 0)
        assert np.all(col["logret_1"][locked] == 0)
    locked_up = _session_bars("limit_up")[-1]
    assert col["logret_session"][locked_up] == pytest.approx(np.log(1.10), abs=1e-5)
    flat = _session_bars("flat")
    for name in ("logret_1", "range", "gap", "logret_session", "close_in_range"):
        assert np.all(col[name][flat] == 0), name
    one_bar = _session_bars("one_bar")[0]
    assert col["session_left"][one_bar] == pytest.approx((930 - 560) / 375)  # the clock, not the bar count


def test_a_flat_training_split_scales_without_dividing_by_zero(tmp_path):
    """Every market feature constant over the training split: the scaler keeps std 1 and the later (moving)
    splits stay finite."""
    o, h, l, c, v = extreme_prices()
    train_end = sum(n for _, n in DAYS[:6])
    for x in (o, h, l, c):
        x[:train_end] = 24_000.0
    v[:train_end] = 0.0
    write_processed(tmp_path, "FLAT_5", o, h, l, c, timestamps_for_sessions([n for _, n in DAYS]), volume=v)
    market = data.load_market(tmp_path, "FLAT_5")
    assert market.splits["train"] == (0, 6)
    assert np.all(market.scaler.mean[: F.NUM_SCALED] == 0) and np.all(market.scaler.std[: F.NUM_SCALED] == 1)
    feats = np.asarray(market.data.features)
    assert np.all(np.isfinite(feats)) and np.all(feats[:train_end, : F.NUM_SCALED] == 0)


def _plans(n_steps, seed=0):
    rng = np.random.default_rng(seed)
    flip = np.where(np.arange(n_steps) % 2 == 0, 2, 0)
    return {"long": (np.full(n_steps, 2), 1), "short": (np.full(n_steps, 0), 1), "flip_every_bar": (flip, 1),
            "random_two_lots": (rng.integers(0, 5, n_steps), 2)}


@pytest.mark.parametrize("allow_overnight", [False, True])
@pytest.mark.parametrize("plan", ["long", "short", "flip_every_bar", "random_two_lots"])
def test_money_is_exact_through_gaps_limits_flat_days_and_one_bar_sessions(tmp_path, plan, allow_overnight):
    n = sum(k for _, k in DAYS)
    actions, max_lots = _plans(n - 1)[plan]
    sc = _scenario(actions, max_lots=max_lots, lot_size=65.0, costs="nse_futures", slippage_ticks=1.0,
                   initial_capital=2_500_000.0 * max_lots, allow_overnight=allow_overnight)
    ref = H.reference_replay(sc)
    with jax.enable_x64(True):
        result = H.backtest_scenario(H.load_scenario(tmp_path / "64", sc, price_dtype=jnp.float64), sc)
    eq = result.equity
    tol = 1e-9 * sc.initial_capital
    np.testing.assert_array_equal(eq["position"][1:], ref["lots"])
    np.testing.assert_allclose(eq["cash"][1:], ref["cash"], rtol=0, atol=tol)
    np.testing.assert_allclose(eq["equity"][1:], ref["equity"], rtol=0, atol=tol)
    np.testing.assert_allclose(eq["costs"][1:], ref["costs"], rtol=1e-12, atol=1e-9)
    assert np.all(eq["costs"] >= 0)
    np.testing.assert_allclose(result.trades["net_pnl"], ref["trips"], rtol=0, atol=tol)
    assert result.trades["net_pnl"].sum() == pytest.approx(eq["equity"][-1] - sc.initial_capital, abs=tol)
    last, _, _ = H.bar_facts(sc)
    if not allow_overnight:
        assert np.all(eq["position"][last] == 0)
    if plan == "long" and allow_overnight:
        # Held through the gap: the gap bar earns units x (its close - the last close), with no order.
        g = _session_bars("gap_up")[0]
        assert eq["costs"][g] == 0
        assert eq["equity"][g] - eq["equity"][g - 1] == pytest.approx(65 * (sc.close[g] - sc.close[g - 1]), abs=1e-6)
        assert sc.close[g] / sc.close[g - 1] > 1.19
    # The float32 training env, same orders: equity within 1e-4 relative at every bar.
    led32 = H.run_episode(H.scenario_params(H.load_scenario(tmp_path / "32", sc), sc), sc.actions)
    assert led32["equity"].dtype == np.float32
    np.testing.assert_allclose(led32["equity"], eq["equity"][1:], rtol=1e-4)
    np.testing.assert_array_equal(led32["position"], eq["position"][1:])


def test_a_market_of_one_bar_sessions(tmp_path):
    """Every session one bar: each order fills at a bar's open and is squared off at the same bar's close."""
    o, c = np.array([100.0, 102.0, 99.0, 101.0]), np.array([101.0, 103.5, 98.0, 101.0])
    sc = H.Scenario(open=o, high=np.maximum(o, c), low=np.minimum(o, c), close=c, lengths=(1, 1, 1, 1),
                    actions=np.array([2, 0, 2]), lot_size=10.0, costs="zero")
    with jax.enable_x64(True):
        result = H.backtest_scenario(H.load_scenario(tmp_path, sc, price_dtype=jnp.float64), sc)
    # long 102 -> 103.5, short 99 -> 98, long 101 -> 101: +15, +10, 0
    np.testing.assert_allclose(result.trades["net_pnl"], [15.0, 10.0, 0.0])
    np.testing.assert_allclose(result.equity["equity"], 100_000 + np.array([0.0, 15.0, 25.0, 25.0]))
    assert np.all(result.equity["position"] == 0)


@pytest.mark.parametrize("column,value", [("low", 0.0), ("close", np.nan), ("open", -5.0), ("high", np.inf),
                                          ("volume", -1.0)])
def test_a_processed_file_with_an_impossible_price_is_refused(tmp_path, column, value):
    """data_tools never writes these; a processed file from elsewhere must not load into NaN features."""
    o, h, l, c, v = extreme_prices()
    cols = dict(open=o, high=h, low=l, close=c, volume=v)
    cols[column] = cols[column].copy()
    cols[column][7] = value
    path = write_processed(tmp_path, "BAD_5", cols["open"], cols["high"], cols["low"], cols["close"],
                           timestamps_for_sessions([n for _, n in DAYS]), volume=cols["volume"])
    with pytest.raises(InputError, match=rf"{path}: row 7 \(2024-01-01T09:50\): .*{column}="):
        data.load_market(tmp_path, "BAD_5")
