"""Property-based tests of the environment's money (hypothesis): random prices with gaps and flat stretches,
session lengths down to one bar, actions (some outside the valid range), lots, cost rates, slippage, capital,
square-off times and overnight holding.

Every market has the same shape (NUM_BARS bars in NUM_SESSIONS sessions; only values are drawn), so each
jitted program compiles once per test. The money is checked against `env_harness.reference_replay`, an
independent float64 numpy loop over the same orders.
"""

from __future__ import annotations

import dataclasses
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra.numpy import arrays

from jaxtrade import env
from jaxtrade.contracts import TICK_SIZE
from jaxtrade.costs import COST_MODELS, CostParams, order_cost
from tests import env_harness as H

NUM_BARS, NUM_SESSIONS = 32, 4

_RATE = st.floats(0.0, 1e-3)


def _ticks(x, how=np.round):
    return np.maximum(how(np.asarray(x) / TICK_SIZE), 1.0) * TICK_SIZE


explicit_costs = st.builds(
    CostParams, brokerage_rate=_RATE, brokerage_cap=st.one_of(st.just(float("inf")), st.floats(0.0, 100.0)),
    brokerage_per_order=st.floats(0.0, 50.0), stt_sell_rate=_RATE, stt_buy_rate=_RATE,
    exchange_txn_rate=st.floats(0.0, 1e-4), ipft_rate=st.floats(0.0, 1e-5), sebi_rate=st.floats(0.0, 1e-5),
    stamp_buy_rate=st.floats(0.0, 1e-4), gst_rate=st.floats(0.0, 0.3))


@st.composite
def scenarios(draw, max_lots=None, named_costs=False, square_off=True, min_capital_multiple=0.05):
    """A market of NUM_BARS bars in NUM_SESSIONS sessions (one-bar sessions included), bar returns up to 2%,
    session gaps up to 20% either way, prices on the tick grid, and a trading plan."""
    cuts = draw(st.lists(st.integers(1, NUM_BARS - 1), min_size=NUM_SESSIONS - 1, max_size=NUM_SESSIONS - 1,
                         unique=True))
    lengths = tuple(int(x) for x in np.diff([0, *sorted(cuts), NUM_BARS]))
    level = draw(st.floats(100.0, 60_000.0))
    returns = draw(arrays(np.float64, NUM_BARS, elements=st.floats(-0.02, 0.02)))
    open_moves = draw(arrays(np.float64, NUM_BARS, elements=st.floats(-0.005, 0.005)))
    gaps = draw(arrays(np.float64, NUM_SESSIONS, elements=st.floats(-0.2, 0.2)))
    wicks = draw(arrays(np.float64, NUM_BARS, elements=st.floats(0.0, 0.01)))
    starts = np.r_[0, np.cumsum(lengths)[:-1]]
    moves = open_moves.copy()
    moves[starts] = gaps
    o, c = np.empty(NUM_BARS), np.empty(NUM_BARS)
    prev = level
    for t in range(NUM_BARS):
        o[t] = prev * np.exp(moves[t])
        c[t] = prev = o[t] * np.exp(returns[t])
    o, c = _ticks(o), _ticks(c)
    h = _ticks(np.maximum(o, c) * (1 + wicks), np.ceil)
    lo = _ticks(np.minimum(o, c) * (1 - wicks), np.floor)

    m = draw(st.sampled_from([1, 2])) if max_lots is None else max_lots
    actions = draw(arrays(np.int64, NUM_BARS - 1, elements=st.integers(-1, 2 * m + 1)))
    lot = float(draw(st.one_of(st.sampled_from([1, 15, 25, 30, 50, 65, 75]), st.integers(1, 200))))
    costs = draw(st.sampled_from(COST_MODELS) if named_costs else st.one_of(st.sampled_from(COST_MODELS),
                                                                            explicit_costs))
    capital = draw(st.floats(min_capital_multiple, 5.0)) * m * lot * float(np.max(h))
    cutoff = draw(st.one_of(st.none(), st.integers(0, 30))) if square_off else None
    return H.Scenario(
        open=o, high=h, low=lo, close=c, lengths=lengths, actions=actions, max_lots=m, lot_size=lot, costs=costs,
        slippage_ticks=draw(st.floats(0.0, 4.0)), initial_capital=round(capital, 2),
        square_off=None if cutoff is None else f"{(555 + 5 * cutoff) // 60:02d}:{(555 + 5 * cutoff) % 60:02d}",
        allow_overnight=draw(st.booleans()))


@given(explicit_costs, arrays(np.float64, 64, elements=st.integers(-500, 500).map(float)),
       arrays(np.float64, 64, elements=st.floats(0.05, 100_000.0)))
@H.examples(30)
def test_order_costs_are_never_negative_and_match_the_rate_definitions(costs, qty, price):
    """`costs.order_cost` on random orders (buys, sells, none) and non-negative rates: >= 0, zero without an
    order, and equal to the rates written out in plain float64 (`env_harness.reference_order_cost`)."""
    with jax.enable_x64(True):
        got = np.asarray(order_cost(jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), costs),
                                    jnp.asarray(qty), jnp.asarray(price)))
    want = np.array([H.reference_order_cost(costs, q, p) for q, p in zip(qty, price)])
    assert np.all(got >= 0) and np.all(got[qty == 0] == 0)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def _money_scale(sc: H.Scenario) -> float:
    """A rupee magnitude for absolute tolerances: capital plus the largest position's value."""
    return sc.initial_capital + 2 * sc.max_lots * sc.lot_size * float(np.max(sc.high))


def _check_structure(sc: H.Scenario, led: dict):
    """Positions within +-max_lots; flat at must-be-flat bars, at every session end when intraday, and at the
    episode's end; costs never negative."""
    last, must_flat, _ = H.bar_facts(sc)
    bars = led["bar"]
    assert np.all(np.abs(led["position"]) <= sc.max_lots)
    assert np.all(led["position"][must_flat[bars]] == 0)
    if not sc.allow_overnight:
        assert np.all(led["position"][last[bars]] == 0) and np.all(led["units"][last[bars]] == 0)
    assert led["position"][-1] == 0 and led["units"][-1] == 0
    assert np.all(led["costs"] >= 0) and np.all(np.isfinite(led["costs"]))


@given(scenarios())
@H.examples(40)
def test_money_matches_a_float64_replay(sc):
    """Equity = cash + units x close at every bar; cash, equity, positions, costs and the on-device trade
    statistics equal an independent float64 replay of the same orders."""
    with jax.enable_x64(True), tempfile.TemporaryDirectory() as d:
        market = H.load_scenario(d, sc, price_dtype=jnp.float64)
        led = H.run_episode(H.scenario_params(market, sc), sc.actions)
    ref = H.reference_replay(sc)
    tol = 1e-9 * _money_scale(sc)
    np.testing.assert_array_equal(led["bar"], np.arange(1, NUM_BARS))
    np.testing.assert_array_equal(led["done"], np.arange(1, NUM_BARS) == NUM_BARS - 1)
    _check_structure(sc, led)
    np.testing.assert_array_equal(led["position"], ref["lots"])
    np.testing.assert_array_equal(led["units"], ref["units"])
    np.testing.assert_allclose(led["costs"], ref["costs"], rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(led["cash"], ref["cash"], rtol=0, atol=tol)
    np.testing.assert_allclose(led["equity"], ref["equity"], rtol=0, atol=tol)
    # The environment's own equity (built from price differences) is its cash plus the position's value.
    np.testing.assert_allclose(led["equity"], led["cash"] + led["units"] * sc.close[led["bar"]], rtol=0, atol=tol)
    # Reward: the bar's change in equity over initial capital (float32).
    d_equity = np.diff(np.r_[sc.initial_capital, ref["equity"]])
    np.testing.assert_allclose(led["reward"], d_equity / sc.initial_capital, rtol=1e-5, atol=1e-9)
    # The episode's statistics (read at done) against the replay's round trips.
    end = {k: led[k][-1] for k in H.EPISODE_STATS}
    trips = ref["trips"]
    assert end["num_trades"] == len(trips)
    assert end["total_costs"] == pytest.approx(ref["costs"].sum(), rel=1e-12, abs=1e-9)
    assert end["final_equity"] == pytest.approx(ref["equity"][-1], rel=0, abs=tol)
    # A trip within rounding of zero may count either way.
    assert np.sum(trips > tol) <= end["wins"] <= np.sum(trips > -tol)
    assert end["gross_profit"] == pytest.approx(trips[trips > 0].sum(), rel=0, abs=len(trips) * tol)
    assert end["gross_loss"] == pytest.approx(-trips[trips < 0].sum(), rel=0, abs=len(trips) * tol)
    assert trips.sum() == pytest.approx(ref["equity"][-1] - sc.initial_capital, rel=0, abs=tol)


@given(scenarios(), st.sampled_from(["float32", "float64"]))
@H.examples(25)
def test_flat_policy_never_trades_and_keeps_its_equity(sc, dtype):
    sc = dataclasses.replace(sc, actions=np.full(NUM_BARS - 1, sc.max_lots))
    with jax.enable_x64(dtype == "float64"), tempfile.TemporaryDirectory() as d:
        market = H.load_scenario(d, sc, price_dtype=jnp.dtype(dtype))
        led = H.run_episode(H.scenario_params(market, sc), sc.actions)
    assert np.all(led["position"] == 0) and np.all(led["units"] == 0)
    assert np.all(led["costs"] == 0) and np.all(led["pnl"] == 0) and np.all(led["reward"] == 0)
    capital = np.asarray(sc.initial_capital, dtype)  # as the env stores it
    assert led["cash"].dtype == capital.dtype and np.all(led["cash"] == capital)
    np.testing.assert_array_equal(led["equity"], led["cash"])
    assert led["num_trades"][-1] == 0 and led["total_costs"][-1] == 0 and led["max_drawdown"][-1] == 0


@given(scenarios(named_costs=True, square_off=False, min_capital_multiple=1.0))
@H.examples(25)
def test_float32_training_env_agrees_with_float64_backtester(sc):
    """The same orders through the float32 training env and the float64 backtester (`backtest.backtest`):
    equity within 1e-4 relative at every bar (capital >= the largest position's value, as in training).
    The backtester's own tables also replay exactly and its trades reconcile with the replay's."""
    with tempfile.TemporaryDirectory() as d:
        market32 = H.load_scenario(d, sc)
        assert market32.data.close.dtype == jnp.float32
        led32 = H.run_episode(H.scenario_params(market32, sc), sc.actions)
    with jax.enable_x64(True), tempfile.TemporaryDirectory() as d:
        result = H.backtest_scenario(H.load_scenario(d, sc, price_dtype=jnp.float64), sc)
    equity64 = result.equity["equity"]
    assert equity64.dtype == np.float64 and led32["equity"].dtype == np.float32
    np.testing.assert_allclose(led32["equity"], equity64[1:], rtol=1e-4)
    np.testing.assert_array_equal(led32["position"], result.equity["position"][1:])

    ref = H.reference_replay(sc)
    tol = 1e-9 * _money_scale(sc)
    np.testing.assert_array_equal(result.equity["position"][1:], ref["lots"])
    np.testing.assert_allclose(equity64[1:], ref["equity"], rtol=0, atol=tol)
    np.testing.assert_allclose(result.equity["costs"][1:], ref["costs"], rtol=1e-12, atol=1e-9)
    net = result.trades["net_pnl"]
    assert len(net) == len(ref["trips"]) == result.env_stats["num_trades"]
    np.testing.assert_allclose(net, ref["trips"], rtol=0, atol=tol)
    assert net.sum() == pytest.approx(equity64[-1] - sc.initial_capital, rel=0, abs=tol)


def _training_steps(sc, num_steps, seed):
    rng = np.random.default_rng(seed)
    keys = jax.random.split(jax.random.key(seed), num_steps + 1)
    actions = rng.integers(-1, 2 * sc.max_lots + 2, num_steps)
    return keys[0], keys[1:], jnp.asarray(actions, jnp.int32)


_training_run = jax.jit(H.training_run)
_training_run_batched = jax.jit(jax.vmap(H.training_run))


@given(st.lists(scenarios(max_lots=2), min_size=3, max_size=3), st.integers(0, 2**31 - 1),
       st.integers(1, 2))
@H.examples(15)
def test_vmap_over_envs_and_params_equals_single_runs(scs, seed, episode_sessions):
    """Training rollouts (reset, then auto-resetting steps) of three different markets and parameter sets,
    batched with `vmap` over the params, keys and actions, equal the single runs exactly."""
    with tempfile.TemporaryDirectory() as d:
        params = [H.scenario_params(H.load_scenario(f"{d}/{i}", sc), sc, episode_sessions=episode_sessions)
                  for i, sc in enumerate(scs)]
    steps = [_training_steps(sc, 2 * NUM_BARS, seed + i) for i, sc in enumerate(scs)]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *params)
    batched = _training_run_batched(stacked, *(jnp.stack(x) for x in zip(*steps)))
    for i, (p, s) in enumerate(zip(params, steps)):
        single = _training_run(p, *s)
        for name in single:
            np.testing.assert_array_equal(np.asarray(batched[name][i]), np.asarray(single[name]), err_msg=name)


@given(scenarios(max_lots=1), st.integers(0, 2**31 - 1), st.integers(1, 2))
@H.examples(25)
def test_training_episodes_stay_inside_their_sessions(sc, seed, episode_sessions):
    """Auto-resetting training episodes of whole sessions (one-bar sessions included): every step lies inside
    its episode, an episode ends exactly at a session's last bar, positions stay within +-max_lots and are
    flat at every session end when intraday, and a one-bar-session episode does nothing."""
    with tempfile.TemporaryDirectory() as d:
        params = H.scenario_params(H.load_scenario(d, sc), sc, episode_sessions=episode_sessions)
    led = {k: np.asarray(v) for k, v in _training_run(params, *_training_steps(sc, 2 * NUM_BARS, seed)).items()}
    last, must_flat, session = H.bar_facts(sc)
    bars = led["bar"]
    assert np.all(bars <= led["episode_end"])
    np.testing.assert_array_equal(led["done"], bars == led["episode_end"])
    assert np.all(last[bars[led["done"]]])
    assert np.all(np.abs(led["position"]) <= sc.max_lots)
    assert np.all(led["position"][must_flat[bars]] == 0)
    if not sc.allow_overnight:
        assert np.all(led["position"][last[bars]] == 0)
    assert np.all(led["position"][led["done"]] == 0) and np.all(led["costs"] >= 0)
    # The bars an episode steps through lie in at most `episode_sessions` consecutive sessions.
    episode = np.r_[0, np.cumsum(led["done"])[:-1]]
    for e in np.unique(episode):
        sessions = session[bars[episode == e]]
        assert sessions.max() - sessions.min() <= episode_sessions - 1


# ------------------------------------------------------------------------------------------ regressions

def test_one_bar_session_episode_does_not_trade_in_the_next_session(tmp_path):
    """Found by test_training_episodes_stay_inside_their_sessions: an episode of a one-bar session (start ==
    end) stepped into the next session's first bar, filled there and was squared off at its close: a trade
    on another session's prices (across the split boundary when the session ended the training split)."""
    sc = H.Scenario(open=np.array([99.5, 100.5, 101.5, 102.5, 103.5, 104.5, 105.5, 106.5]),
                    high=np.full(8, 110.0), low=np.full(8, 90.0),
                    close=np.array([100.0, 101, 102, 103, 104, 105, 106, 107]), lengths=(3, 1, 2, 2),
                    actions=np.full(7, 2), lot_size=1.0)
    params = H.scenario_params(H.load_scenario(tmp_path, sc), sc, episode_sessions=1)
    _, state = env.reset_to(params, 1)  # the split's second session: bar 3 alone
    assert int(state.t) == 3 and int(state.end) == 3
    _, _, reward, done, info = env.step(jax.random.key(0), state, jnp.int32(2), params)
    assert int(info["bar"]) == 3  # the step stays on the episode's own bar
    assert bool(done) and float(reward) == 0.0 and float(info["pnl"]) == 0.0 and float(info["costs"]) == 0.0
    assert int(info["position"]) == 0 and float(info["final_equity"]) == sc.initial_capital
    assert int(info["num_trades"]) == 0


def test_actions_outside_the_range_are_clipped_to_max_lots(tmp_path):
    """Found by test_money_matches_a_float64_replay: action 7 with max_lots 1 held 6 lots (`action - max_lots`
    was not bounded); a policy bug or a foreign model must not scale the position past the limit."""
    sc = H.Scenario(open=np.full(8, 100.0), high=np.full(8, 101.0), low=np.full(8, 99.0), close=np.full(8, 100.0),
                    lengths=(3, 3, 2), actions=np.array([7, 7, -5, -5, 3, 1, 1]), lot_size=10.0)
    params = H.scenario_params(H.load_scenario(tmp_path, sc), sc)
    led = H.run_episode(params, sc.actions)
    np.testing.assert_array_equal(led["position"], [1, 0, -1, -1, 0, 0, 0])
