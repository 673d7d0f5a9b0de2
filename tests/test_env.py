"""The trading environment: hand-worked money, square-off, auto-reset, vmap equivalence, determinism."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtrade import data, env
from jaxtrade.costs import CostParams, cost_model, order_cost
from tests.market_fixtures import random_walk_market, session_timestamps, write_processed

SHORT, FLAT, LONG = 0, 1, 2


@pytest.fixture
def tiny_market(tmp_path):
    """3 sessions x 4 five-minute bars with round prices (sessions 1 and 2 repeat session 0 shifted)."""
    o = np.array([100.0, 102.0, 103.0, 106.0])
    c = np.array([101.0, 104.0, 105.0, 107.0])
    opens = np.concatenate([o, o + 10, o + 20])
    closes = np.concatenate([c, c + 10, c + 20])
    highs = np.maximum(opens, closes) + 0.5
    lows = np.minimum(opens, closes) - 0.5
    ts = session_timestamps(3, 4, 5)
    write_processed(tmp_path, "TEST_5", opens, highs, lows, closes, ts)
    return data.load_market(tmp_path, "TEST_5")


def make(market, **kw):
    # 10 bp of turnover + Rs 5 per order, 2 ticks (0.1 points) of slippage, 10 units per lot.
    defaults = dict(split="all", cost_params=cost_model("bps", bps=10.0, fixed_per_order=5.0).params,
                    lot_size=10, slippage_ticks=2, episode_sessions=1)
    defaults.update(kw)
    return env.make_params(market, **defaults)


def run_actions(params, state, actions):
    out = []
    key = jax.random.key(0)
    for a in actions:
        obs, state, reward, done, info = env.step(key, state, jnp.int32(a), params)
        out.append((obs, state, float(reward), bool(done), info))
    return out


def session0(params):
    return env.reset_to(params, 0)  # rng 0 -> first session of the split


def test_long_round_trip_hand_worked(tiny_market):
    params = make(tiny_market)
    _, state = session0(params)
    assert int(state.t) == 0 and int(state.end) == 3
    steps = run_actions(params, state, [LONG, LONG, FLAT])
    # bar 1: buy 10 at open 102 + 0.1 = 102.1; cost 0.001 * 1021 + 5 = 6.021; marked at close 104.
    s1 = steps[0][1]
    assert float(s1.units) == 10.0 and float(s1.entry_price) == pytest.approx(102.1)
    assert float(s1.equity) == pytest.approx(100_000 + 10 * (104 - 102.1) - 6.021, abs=1e-2)
    assert steps[0][2] == pytest.approx((10 * 1.9 - 6.021) / 100_000, rel=1e-4)
    # bar 2: hold, +10 * (105 - 104).
    assert float(steps[1][1].equity) == pytest.approx(100_000 + 19 - 6.021 + 10, abs=1e-2)
    # bar 3 (session's last): sell 10 at 106 - 0.1 = 105.9; cost 0.001 * 1059 + 5 = 6.059; episode ends.
    _, _, reward3, done3, info3 = steps[2]
    net = 10 * (105.9 - 102.1) - 6.021 - 6.059
    assert done3
    assert int(info3["num_trades"]) == 1 and int(info3["wins"]) == 1
    assert float(info3["gross_profit"]) == pytest.approx(net, abs=1e-2)
    assert float(info3["gross_loss"]) == 0.0
    assert float(info3["final_equity"]) == pytest.approx(100_000 + net, abs=1e-2)
    assert float(info3["total_costs"]) == pytest.approx(6.021 + 6.059, abs=1e-3)
    assert float(info3["episode_return"]) == pytest.approx(net / 100_000, rel=1e-4)


def test_reversal_and_square_off_hand_worked(tiny_market):
    params = make(tiny_market)
    _, state = session0(params)
    steps = run_actions(params, state, [LONG, SHORT, SHORT])
    # bar 1: buy 10 at 102.1 (cost 6.021).
    # bar 2: reverse: sell 20 at 103 - 0.1 = 102.9; cost 0.001 * 20 * 102.9 + 5 = 7.058, half to each leg.
    trade1 = 10 * (102.9 - 102.1) - 6.021 - 7.058 / 2
    s2, info2 = steps[1][1], steps[1][4]
    assert float(s2.units) == -10.0 and float(s2.entry_price) == pytest.approx(102.9)
    assert int(info2["num_trades"]) == 1 and int(info2["wins"]) == 0
    assert float(info2["gross_loss"]) == pytest.approx(-trade1, abs=1e-3)
    # bar 3 (last of the session): still short, squared off at close 107 + 0.1 = 107.1 (cost 0.001*1071+5).
    trade2 = -10 * (107.1 - 102.9) - 7.058 / 2 - 6.071
    _, s3, _, done3, info3 = steps[2]
    assert done3 and int(info3["position"]) == 0
    assert int(info3["num_trades"]) == 2 and int(info3["wins"]) == 0
    assert float(info3["gross_loss"]) == pytest.approx(-(trade1 + trade2), abs=1e-2)
    assert float(info3["final_equity"]) == pytest.approx(100_000 + trade1 + trade2, abs=1e-2)
    assert float(info3["cash"]) == pytest.approx(float(info3["final_equity"]), abs=1e-2)  # flat: equity = cash
    assert float(info3["costs"]) == pytest.approx(6.071, abs=1e-3)


def test_square_off_time_forces_flat_at_open(tiny_market):
    params = make(tiny_market, square_off_time="09:25")  # bars start 09:15, 09:20, 09:25, 09:30
    _, state = session0(params)
    steps = run_actions(params, state, [LONG, LONG, LONG])
    assert int(steps[0][4]["position"]) == 1
    # bar 2 starts 09:25: the target is forced flat, the long is sold at bar 2's open 103 - 0.1.
    info2 = steps[1][4]
    assert int(info2["position"]) == 0
    assert float(info2["fill_price"]) == pytest.approx(102.9)
    assert int(steps[2][4]["position"]) == 0


def test_costs_nse_futures_hand_worked():
    p = cost_model("nse_futures").params
    # Buy 65 NIFTY at 25,000: turnover 1,625,000. Brokerage min(0.03% x turnover = 487.5, 20) = 20;
    # exchange 0.00173% + IPFT 0.0001% = 29.7375; SEBI 0.0001% = 1.625; stamp 0.002% = 32.5;
    # GST 18% of (20 + 29.7375 + 1.625) = 9.24525; no STT on a buy.
    buy = 20 + 29.7375 + 1.625 + 32.5 + 0.18 * (20 + 29.7375 + 1.625)
    # Sell: same brokerage, exchange, SEBI and GST; STT 0.05% of sell value = 812.5; no stamp duty.
    sell = 20 + 29.7375 + 1.625 + 812.5 + 0.18 * (20 + 29.7375 + 1.625)
    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), p)
        assert float(order_cost(p64, 65.0, 25_000.0)) == pytest.approx(buy, abs=1e-9)
        assert float(order_cost(p64, -65.0, 25_000.0)) == pytest.approx(sell, abs=1e-9)
        assert float(order_cost(p64, 0.0, 25_000.0)) == 0.0
        # A small order pays 0.03% brokerage instead of the Rs 20 cap: 1 unit at 25,000 -> 7.5.
        small = 7.5 + 25_000 * (0.0000183 + 0.000001) + 0.5 + 0.18 * (7.5 + 25_000 * 0.0000193)
        assert float(order_cost(p64, 1.0, 25_000.0)) == pytest.approx(small, abs=1e-9)


def test_options_and_dated_stt():
    import datetime as dt
    opt = cost_model("nse_options").params
    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), opt)
        # Sell 75 units of premium 100: turnover 7500; brokerage flat 20; STT 0.15% = 11.25.
        exch = 7500 * (0.0003503 + 0.000005)
        expected = 20 + 11.25 + exch + 0.0075 + 0.18 * (20 + exch + 0.0075)
        assert float(order_cost(p64, -75.0, 100.0)) == pytest.approx(expected, abs=1e-9)
    assert cost_model("nse_futures", as_of=dt.date(2022, 5, 1)).params.stt_sell_rate == 0.000125
    assert cost_model("nse_futures", as_of=dt.date(2025, 5, 1)).params.stt_sell_rate == 0.0002
    assert cost_model("zero").params == CostParams()


def _random_run(params, key, num_steps, num_envs):
    def body(carry, k):
        state = carry
        ka, ks = jax.random.split(k)
        actions = jax.random.randint(ka, (num_envs,), 0, params.num_actions)
        obs, state, reward, done, info = jax.vmap(env.step, in_axes=(None, 0, 0, None))(ks, state, actions, params)
        return state, (obs, reward, done, info["position"], info["bar"], state)

    keys = jax.random.split(key, num_envs)
    _, state = jax.vmap(env.reset, in_axes=(0, None))(keys, params)
    return jax.lax.scan(body, state, jax.random.split(key, num_steps))


def test_flat_at_every_session_end_and_auto_reset(tmp_path):
    random_walk_market(tmp_path, num_sessions=12, bars_per_session=20)
    market = data.load_market(tmp_path, "NIFTY_5")
    params = env.make_params(market, split="train", episode_sessions=2, cost_params=cost_model("nse_futures").params)
    _, (obs, reward, done, position, bar, states) = jax.jit(_random_run, static_argnums=(2, 3))(
        params, jax.random.key(3), 400, 8)
    last_bars = set(np.asarray(market.data.session_end).tolist())
    bar, position, done = np.asarray(bar), np.asarray(position), np.asarray(done)
    at_session_end = np.isin(bar, list(last_bars))
    assert at_session_end.any()
    assert np.all(position[at_session_end] == 0)
    assert done.sum() >= 8
    # After each done the env has restarted: fresh stats, flat, at a train session's first bar.
    starts = np.asarray(market.data.session_start)
    train_lo, train_hi = market.splits["train"]
    t = np.asarray(states.t)[done]
    assert np.all(np.isin(t, starts[train_lo:train_hi]))
    assert np.all(np.asarray(states.num_trades)[done] == 0)
    assert np.allclose(np.asarray(states.equity)[done], 100_000.0)
    # Episodes of 2 sessions: done comes only at the second session's last bar.
    sess = np.asarray(market.data.session)[bar[done]]
    assert np.all((sess - train_lo) >= 1)
    # Obs after a reset carries no position.
    assert np.all(np.asarray(obs)[done][:, -2:] == 0)


def test_vmap_equals_single_runs(tmp_path):
    random_walk_market(tmp_path, num_sessions=10, bars_per_session=15)
    market = data.load_market(tmp_path, "NIFTY_5")
    params = env.make_params(market, split="all", cost_params=cost_model("nse_futures").params,
                             slippage_ticks=1)
    n, steps = 5, 60
    keys = jax.random.split(jax.random.key(7), n)
    actions = jax.random.randint(jax.random.key(8), (steps, n), 0, 3)
    step_keys = jax.random.split(jax.random.key(9), steps)

    def single(k, acts):
        obs, state = env.reset(k, params)

        def body(s, x):
            sk, a = x
            o, s, r, d, _ = env.step(sk, s, a, params)
            return s, (o, r, d)

        return jax.lax.scan(body, state, (step_keys, acts))

    batched = jax.jit(jax.vmap(single, in_axes=(0, 1)))(keys, actions)
    for i in range(n):
        one = jax.jit(single)(keys[i], actions[:, i])
        for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(batched)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b)[i])


def test_determinism_and_observation_spec(tmp_path):
    random_walk_market(tmp_path, num_sessions=10, bars_per_session=15)
    market = data.load_market(tmp_path, "NIFTY_5")
    params = env.make_params(market, split="train", max_lots=2)
    assert params.num_actions == 5 and params.obs_dim == len(env.OBS_NAMES)
    run = jax.jit(_random_run, static_argnums=(2, 3))
    a = run(params, jax.random.key(1), 50, 4)
    b = run(params, jax.random.key(1), 50, 4)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    obs = np.asarray(a[1][0])
    assert obs.shape == (50, 4, params.obs_dim) and obs.dtype == np.float32
    assert np.all(np.abs(obs[..., -2]) <= 1.0)  # position as a fraction of max_lots


def test_stacked_params_of_different_lengths(tmp_path):
    random_walk_market(tmp_path, "A_5", num_sessions=10, bars_per_session=15)
    random_walk_market(tmp_path, "B_5", num_sessions=14, bars_per_session=12, seed=1)
    pa = env.make_params(data.load_market(tmp_path, "A_5"), split="train")
    pb = env.make_params(data.load_market(tmp_path, "B_5"), split="train")
    stacked = env.stack_params([pa, pb])
    assert stacked.close.shape[0] == 2
    obs, state = jax.vmap(env.reset)(jax.random.split(jax.random.key(0), 2), stacked)
    ob_a, st_a = env.reset(jax.random.split(jax.random.key(0), 2)[0], pa)
    np.testing.assert_array_equal(np.asarray(obs[0]), np.asarray(ob_a))
    assert int(state.t[0]) == int(st_a.t)
