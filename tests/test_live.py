"""Bar-by-bar inference (jaxtrade.live): streaming features equal the batch features on every bar, decisions
equal the backtester's on every bar of a processed split (Orbax and .pth models), refusals, fills, the CLI."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtrade import backtest as B, data as D, env as E, export, features as F, networks as N, policies as P
from jaxtrade.checkpoints import StageCheckpointer
from jaxtrade.live import LiveInputError, LivePolicy, bars_of, ist_minute
from tests.market_fixtures import random_walk_market, session_timestamps, write_processed

ROOT = Path(__file__).resolve().parents[1]
SYMBOL = "NIFTY_5"
TRAINING_ENV = {"initial_capital": 2_000_000.0, "slippage_ticks": 1.0, "max_lots": 1, "allow_overnight": False,
                "lot_size": 0.0, "split_fractions": [0.7, 0.15, 0.15]}


def test_stream_equals_batch_features_on_every_bar():
    rng = np.random.default_rng(1)
    ts = session_timestamps(12, 75, 5)
    ts = np.r_[ts[:75 * 5], ts[75 * 5:75 * 5 + 20], ts[75 * 6:]]  # a short day (an outage) in the middle
    n = len(ts)
    c = 20000 * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
    o = np.r_[20000.0, c[:-1]] * np.exp(rng.normal(0, 3e-4, n))
    h = np.maximum(o, c) * (1 + np.abs(rng.normal(0, 5e-4, n)))
    lo = np.minimum(o, c) * (1 - np.abs(rng.normal(0, 5e-4, n)))
    v = np.where(np.arange(n) < 150, 0.0, rng.integers(1, 1000, n))  # an index, then a traded contract
    days = ts.astype("datetime64[D]")
    _, session = np.unique(days, return_inverse=True)
    minute = (ts - days).astype("timedelta64[m]").astype(np.int64)
    weekday = (days.astype(np.int64) + 3) % 7
    batch = F.compute_features(o, h, lo, c, v, minute, weekday, session, 5)
    stream = F.FeatureStream(5)
    rows = [stream.update(o[t], h[t], lo[t], c[t], v[t], minute[t], weekday[t], t == 0 or days[t] != days[t - 1])
            for t in range(n)]
    # same formulas over the same running sums: equal to rounding (bit for bit on the development machine)
    np.testing.assert_allclose(np.array(rows), batch, rtol=0, atol=1e-12)


def _network_params(seed=0):
    net = N.make_network(3, (32, 32), "tanh")
    params = net.init(jax.random.key(seed), jnp.zeros((1, len(E.OBS_NAMES)), jnp.float32))
    # larger output weights than the 0.01 init, so the position inputs move the argmax often
    params = jax.tree_util.tree_map_with_path(
        lambda p, x: x * 300.0 if "actor_out" in jax.tree_util.keystr(p) else x, params)
    return net, params


def _orbax_model(path, seed=0):
    net, params = _network_params(seed)
    ck = StageCheckpointer(path, keep=1)
    ck.save(1, {"params": params}, {"stage": "ppo", "symbol": SYMBOL, "network": export.network_config(net, len(E.OBS_NAMES)),
                                    "observation": {"obs_names": list(E.OBS_NAMES), "obs_dim": len(E.OBS_NAMES)},
                                    "settings": {"env": TRAINING_ENV}})
    ck.close()
    return path


@pytest.fixture(scope="module")
def market_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("live")
    random_walk_market(d / "processed", SYMBOL, num_sessions=30, bars_per_session=75, volume=True, seed=4)
    _orbax_model(d / "model")
    return d


def _replay(policy, market, split, live):
    cols, _ = D.read_processed(market.path)
    lo, hi = market.split_bars(split)
    live.warm_up(bars_of(cols, 0, lo))
    return np.array([live.step(*bar) for bar in bars_of(cols, lo, hi)])


def test_decisions_equal_the_backtester_on_every_bar(market_dir):
    with jax.enable_x64(True):
        market = D.load_market(market_dir / "processed", SYMBOL, price_dtype=jnp.float64)
        policy = P.load_policy(market_dir / "model")
        config = B.BacktestConfig(split="test", slippage_ticks=1.0, initial_capital=2e6, lot_size=65.0)
        result = B.backtest(market, policy, config)
        live = LivePolicy.load(policy, bar_minutes=5, scaler=market.scaler)
        assert (live.initial_capital, live.slippage, live.lot_size) == (2e6, 0.05, 65.0)  # from the model
        decisions = _replay(policy, market, "test", live)
    target = result.target[1:]
    assert len(decisions) == result.num_bars and len(set(target.tolist())) == 3
    assert result.metrics["num_trades"] >= 10  # the position inputs matter on this split
    np.testing.assert_array_equal(decisions[:-1], target)
    assert live.notes == []


def test_pth_model_replays_like_its_backtest(tmp_path):
    pytest.importorskip("torch")
    random_walk_market(tmp_path, "BANKNIFTY_15", num_sessions=8, bars_per_session=25, bar_minutes=15, seed=7,
                       level=45000.0)
    with jax.enable_x64(True):
        market = D.load_market(tmp_path, "BANKNIFTY_15", price_dtype=jnp.float64)
        net, params = _network_params(seed=3)
        pth = export.export_pth(tmp_path / "m.pth", params, net, symbol="BANKNIFTY_15", stage="final",
                                obs_names=E.OBS_NAMES, scaler=market.scaler.to_dict(),
                                extra={"training_env": TRAINING_ENV})
        policy = P.load_policy(pth)
        result = B.backtest(market, policy, B.BacktestConfig(split="all", slippage_ticks=1.0, initial_capital=2e6))
        live = LivePolicy.load(pth, bar_minutes=15)  # scaling from the file
        assert live.lot_size == 30.0  # BANKNIFTY's current lot
        decisions = _replay(policy, market, "all", live)
    np.testing.assert_array_equal(decisions[:-1], result.target[1:])


def _bars(day="2024-01-02", start="09:15", n=5, step=5, price=100.0):
    t0 = np.datetime64(f"{day}T{start}")
    return [(t0 + np.timedelta64(i * step, "m"), price, price + 1, price - 1, price + 0.5, 0.0) for i in range(n)]


def _constant_live(target_lots=1, **kw):
    policy = P.constant(1 + target_lots, f"const{target_lots}")
    scaler = F.Scaler(mean=np.zeros(len(F.FEATURE_NAMES)), std=np.ones(len(F.FEATURE_NAMES)))
    return LivePolicy(policy, scaler=scaler, bar_minutes=5, lot_size=10.0, initial_capital=1000.0, **kw)


@pytest.mark.parametrize("bad, message", [
    ((np.datetime64("2024-01-02T09:20"), 100, 101, 99, 100, 0), "is not after the previous bar"),
    ((np.datetime64("2024-01-02T09:30"), 100, 101, 99, 100, 0), "is not after the previous bar"),
    ((np.datetime64("2024-01-03T09:10"), 100, 101, 99, 100, 0), "outside the regular session"),
    ((np.datetime64("2024-01-03T15:30"), 100, 101, 99, 100, 0), "outside the regular session"),
    ((np.datetime64("2024-01-03T09:15"), 100, 99, 101, 100, 0), "impossible prices"),
    ((np.datetime64("2024-01-03T09:15"), 100, 101, 99, float("nan"), 0), "impossible prices"),
    (("2024-01-03 nine", 100, 101, 99, 100, 0), "not an ISO date"),
])
def test_refuses_bad_bars_with_one_line_and_keeps_its_state(bad, message):
    live = _constant_live()
    for bar in _bars(n=4):
        live.step(*bar)
    before = live.state()
    with pytest.raises(LiveInputError, match=message) as err:
        live.step(*bad)
    assert "\n" not in str(err.value)
    assert live.state() == before
    live.step(np.datetime64("2024-01-02T09:35"), 100, 101, 99, 100)  # the next good bar is taken


def test_position_fills_square_off_and_reported_fills():
    live = _constant_live(1, slippage_ticks=2.0)  # always long 1 lot of 10 units
    assert live.step(*_bars(n=1)[0]) == 1
    t, o, h, lo, c, v = _bars(start="09:20", n=1)[0]
    live.step(t, o, h, lo, c, v)
    # filled at the open plus 2 ticks; unrealised PnL in % of capital: 10 * (100.5 - 100.1) / 1000 * 100
    assert live.position.entry_price == pytest.approx(100.1)
    assert live.last_obs[-1] == pytest.approx(np.float32(10 * 0.4 / 1000 * 100))
    assert live.last_obs[-2] == 1.0
    live.fill(1, 99.0)  # the broker says: already long (no trade), so the entry price stays
    live.step(*_bars(start="09:25", n=1)[0])
    assert live.position.entry_price == pytest.approx(100.1)
    flat = _constant_live(0)
    flat.step(*_bars(n=1)[0])
    flat.fill(-1, 100.7)  # the broker filled a short the policy did not ask for
    flat.step(*_bars(start="09:20", n=1)[0])
    assert flat.position.lots == -1 and flat.position.entry_price == 100.7
    assert flat.last_obs[-1] == pytest.approx(np.float32(-10 * (100.5 - 100.7) / 1000 * 100))
    # the bar ending at 15:30 squares off at its close
    live.step(*_bars(start="15:25", n=1)[0])
    assert live.position.lots == 0 and live.last_obs[-2] == 0.0 and live.pending == 1
    # a session that stops early with a position open: counted as squared off at its last close, and said
    short = _constant_live(1)
    for bar in _bars(n=3):
        short.step(*bar)
    short.step(*_bars(day="2024-01-03", n=1)[0])
    assert len(short.notes) == 1 and "2024-01-02 09:25" in short.notes[0] and short.position.lots == 1


def test_timestamp_forms():
    want = np.datetime64("2025-01-10T09:15")
    assert ist_minute(1736480700) == want  # epoch seconds of the bar start, as the seed's raw files hold
    assert ist_minute(dt.datetime(2025, 1, 10, 3, 45, tzinfo=dt.timezone.utc)) == want
    assert ist_minute(dt.datetime(2025, 1, 10, 9, 15)) == want
    assert ist_minute("2025-01-10T09:15:00+05:30") == want
    assert ist_minute(np.datetime64("2025-01-10T09:15:00.000000000")) == want


def test_orbax_model_without_scaling_needs_a_scaler(market_dir):
    from jaxtrade.errors import InputError

    with pytest.raises(InputError, match="no feature scaling"):
        LivePolicy.load(market_dir / "model", bar_minutes=5)


def _cli(args, timeout=300):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", "experiments.replay", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_replay_cli_agrees_and_refuses_bad_bars(market_dir, tmp_path):
    out = tmp_path / "replay.csv"
    r = _cli(["--model", str(market_dir / "model"), "--processed_data_dir", str(market_dir / "processed"),
              "--symbol", SYMBOL, "--output", str(out)])
    assert r.returncode == 0, r.stderr
    assert "decisions equal the backtester's on all" in r.stdout and "records no feature scaling" in r.stdout
    rows = out.read_text().splitlines()
    lo, hi = D.split_sessions(30)["test"]
    assert rows[0] == "timestamp,open,high,low,close,target,backtest_target" and len(rows) == 1 + (hi - lo) * 75
    # a processed file with a bar after the close: refused in one line, exit 2
    ts = session_timestamps(10, 20, 5)
    ts[-1] = np.datetime64("2024-01-12T15:45")
    p = np.full(len(ts), 20000.0)
    write_processed(tmp_path / "bad", SYMBOL, p, p + 5, p - 5, p, ts)
    r = _cli(["--model", str(market_dir / "model"), "--processed_data_dir", str(tmp_path / "bad"),
              "--symbol", SYMBOL, "--scaler", "data"])
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "15:45 IST starts outside the regular session" in r.stderr
