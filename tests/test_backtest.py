"""The backtester: an independent float64 replay of the equity table, trades reconciling with equity,
intraday flatness, no look-ahead, determinism, the policies and the model-loading hooks."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jaxtrade import backtest as B, features as F, metrics as M, policies as P
from jaxtrade.data import load_market
from jaxtrade.errors import InputError

IST_MIN = 330


def write_fixture(directory, symbol="NIFTY_15", sessions=30, bars=25, bar_minutes=15, seed=0, level=20000.0,
                  vol=2e-3, synthetic=False, mutate=None) -> Path:
    """A processed Parquet file (DESIGN section 2) with a random walk; `mutate(o, h, l, c)` may edit prices."""
    rng = np.random.default_rng(seed)
    n = sessions * bars
    c = level * np.exp(np.cumsum(rng.normal(0.0, vol, n)))
    o = np.r_[level, c[:-1]] * np.exp(rng.normal(0.0, vol / 3, n))
    h = np.maximum(o, c) * (1 + np.abs(rng.normal(0.0, vol / 2, n)))
    l = np.minimum(o, c) * (1 - np.abs(rng.normal(0.0, vol / 2, n)))
    if mutate is not None:
        o, h, l, c = mutate(o.copy(), h.copy(), l.copy(), c.copy())
    days = np.busday_offset("2024-01-01", np.arange(sessions), roll="forward").astype("datetime64[m]")
    ts = (days[:, None] + np.timedelta64(9 * 60 + 15, "m") + np.arange(bars) * np.timedelta64(bar_minutes, "m"))
    utc = (ts.ravel() - np.timedelta64(IST_MIN, "m")).astype("datetime64[ns]").astype(np.int64)
    table = pa.table({
        "timestamp": pa.array(utc, pa.int64()).cast(pa.timestamp("ns", tz="Asia/Kolkata")),
        "open": o, "high": h, "low": l, "close": c, "volume": np.zeros(n),
        "session": pa.array(np.repeat(np.arange(sessions), bars), pa.int32()),
    }).replace_schema_metadata({"symbol": symbol, "bar_minutes": str(bar_minutes), "source": "tests",
                                "rows_in": str(n), "rows_out": str(n),
                                "synthetic": "true" if synthetic else "false"})
    Path(directory).mkdir(parents=True, exist_ok=True)
    path = Path(directory) / f"{symbol}.parquet"
    pq.write_table(table, path)
    return path


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


@pytest.fixture
def market(tmp_path):
    write_fixture(tmp_path)
    return load_market(tmp_path, "NIFTY_15", price_dtype=jnp.float64)


def _momentum(market, horizon=5):
    return P.momentum(market.scaler, horizon=horizon)


def replay(result, market, slippage, target):
    """Cash and equity from position, processed opens/closes, slippage and the charged costs (float64 loop).
    `target`: lots ordered at each row's open (row 0: none), which differs from `position` only where the
    environment squared off at that bar's close."""
    lo, hi = market.split_bars(result.split)
    opens = np.asarray(market.data.open)[lo:hi]
    closes = np.asarray(market.data.close)[lo:hi]
    e = result.equity
    lot = result.lot_size
    cash, units = result.initial_capital, 0.0
    cash_out, eq_out = [cash], [cash]
    for i in range(1, len(opens)):
        tgt = float(target[i]) * lot
        q = tgt - units
        cash -= q * (opens[i] + slippage * np.sign(q))
        held = float(e["position"][i]) * lot
        if held != tgt:  # squared off at the close
            q2 = held - tgt
            cash -= q2 * (closes[i] + slippage * np.sign(q2))
        cash -= float(e["costs"][i])
        units = held
        cash_out.append(cash)
        eq_out.append(cash + units * closes[i])
    return np.array(cash_out), np.array(eq_out)


def _targets(result, market, policy, config):
    """Re-derive the per-row targets from the same ledger (the action path)."""
    params, _ = B.build_env(market, config)
    lo, hi = market.split_bars(config.split)
    (ledger, _), = B.run_ledgers(params, [policy], hi - lo - 1, config.seed)
    return np.r_[0, ledger["action"] - config.max_lots]


@pytest.mark.parametrize("cost_model", ["nse_futures", "bps"])
def test_equity_replays_independently(market, cost_model):
    config = B.BacktestConfig(cost_model=cost_model, slippage_ticks=2, lot_size=50, split="all")
    pol = _momentum(market)
    r = B.backtest(market, pol, config)
    target = _targets(r, market, pol, config)
    cash, equity = replay(r, market, 2 * 0.05, target)
    np.testing.assert_allclose(r.equity["cash"], cash, rtol=1e-9)
    np.testing.assert_allclose(r.equity["equity"], equity, rtol=1e-9)
    assert r.equity["equity"][0] == r.initial_capital and r.equity["position"][0] == 0
    lo, hi = market.split_bars("all")
    assert len(r.equity["timestamp"]) == hi - lo
    if cost_model == "bps":  # 1 bp of turnover, independently: |q| x fill x 1e-4 per order
        opens = np.asarray(market.data.open)[lo:hi]
        closes = np.asarray(market.data.close)[lo:hi]
        pos = r.equity["position"] * 50.0
        tgt = target * 50.0
        q = tgt - np.r_[0.0, pos[:-1]]
        q2 = pos - tgt
        want = 1e-4 * (np.abs(q) * (opens + 0.1 * np.sign(q)) + np.abs(q2) * (closes + 0.1 * np.sign(q2)))
        np.testing.assert_allclose(r.equity["costs"][1:], want[1:], rtol=1e-9, atol=1e-9)


def test_trades_reconcile_with_equity(market):
    config = B.BacktestConfig(slippage_ticks=1, lot_size=50, split="all")
    r = B.backtest(market, _momentum(market), config)
    tr, eq = r.trades, r.equity
    assert len(tr["net_pnl"]) > 10
    assert np.sum(tr["net_pnl"]) == pytest.approx(eq["equity"][-1] - r.initial_capital, abs=1e-6)
    assert np.sum(tr["costs"]) == pytest.approx(np.sum(eq["costs"]), abs=1e-6)
    np.testing.assert_allclose(tr["net_pnl"], tr["gross_pnl"] - tr["costs"], atol=1e-9)
    # one-lot trips: gross = side x lots x lot size x (exit - entry)
    np.testing.assert_allclose(tr["gross_pnl"], tr["side"] * tr["lots"] * 50 * (tr["exit_price"] - tr["entry_price"]),
                               rtol=1e-9, atol=1e-6)
    # equity change between consecutive flat points = net PnL of the trips that closed in between
    flat_rows = np.flatnonzero(eq["position"] == 0)
    exit_row = np.searchsorted(eq["timestamp"], tr["exit_time"])
    assert np.all(eq["timestamp"][exit_row] == tr["exit_time"])
    for a, b in zip(flat_rows[:-1], flat_rows[1:]):
        inside = (exit_row > a) & (exit_row <= b)
        assert np.sum(tr["net_pnl"][inside]) == pytest.approx(eq["equity"][b] - eq["equity"][a], abs=1e-6)
    assert np.all(tr["exit_time"] >= tr["entry_time"])
    assert np.all(np.isin(tr["side"], [-1, 1]))
    # the environment's on-device statistics agree with the host's trade list (one definition)
    n, w, gp, gl = M.trade_stats(tr["net_pnl"])
    assert r.env_stats["num_trades"] == n == r.metrics["num_trades"]
    assert r.env_stats["wins"] == w
    assert r.env_stats["gross_profit"] == pytest.approx(gp, rel=1e-9)
    assert r.env_stats["gross_loss"] == pytest.approx(gl, rel=1e-9)
    assert r.env_stats["max_drawdown"] == pytest.approx(r.metrics["max_drawdown"], rel=1e-9)
    assert r.env_stats["final_equity"] == pytest.approx(eq["equity"][-1], rel=1e-12)


def test_flat_at_every_session_end_unless_overnight(market):
    lo, hi = market.split_bars("all")
    session = np.asarray(market.data.session)[lo:hi]
    last = M.session_last_rows(session)
    for name in ("buy_and_hold", "momentum", "random"):
        r = B.backtest(market, P.make_baseline(name, scaler=market.scaler), split="all", lot_size=50)
        assert np.all(r.equity["position"][last] == 0), name
    r = B.backtest(market, P.buy_and_hold(), split="all", lot_size=50, allow_overnight=True)
    assert np.all(r.equity["position"][last[:-1]] == 1)
    assert r.equity["position"][-1] == 0  # the episode's end squares off
    assert r.metrics["num_trades"] == 1
    # intraday buy-and-hold: one long trip per session, entered at the session's first open (after the first)
    r = B.backtest(market, P.buy_and_hold(), split="all", lot_size=50)
    assert r.metrics["num_trades"] == market.num_sessions
    firsts = np.r_[0, last[:-1] + 1]
    np.testing.assert_array_equal(r.trades["entry_time"][1:], r.equity["timestamp"][firsts[1:]])
    np.testing.assert_array_equal(r.trades["exit_time"], r.equity["timestamp"][last])


def test_no_look_ahead(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    write_fixture(a)
    ma = load_market(a, "NIFTY_15", price_dtype=jnp.float64)
    lo, hi = ma.split_bars("test")
    cut = lo + (hi - lo) // 2  # a bar inside the test split (the scaler comes from train only)

    def mutate(o, h, l, c):
        rng = np.random.default_rng(99)
        k = np.exp(rng.normal(0, 0.01, len(c) - cut - 1))
        o[cut + 1:] *= k
        c[cut + 1:] *= k[::-1]
        h[cut + 1:] = np.maximum(o[cut + 1:], c[cut + 1:]) * 1.001
        l[cut + 1:] = np.minimum(o[cut + 1:], c[cut + 1:]) * 0.999
        return o, h, l, c

    write_fixture(b, mutate=mutate)
    mb = load_market(b, "NIFTY_15", price_dtype=jnp.float64)
    ra = B.backtest(ma, _momentum(ma, 1), lot_size=50)
    rb = B.backtest(mb, _momentum(mb, 1), lot_size=50)
    upto = cut - lo + 1
    for col in B.EQUITY_COLUMNS:
        np.testing.assert_array_equal(ra.equity[col][:upto], rb.equity[col][:upto], err_msg=col)
    assert not np.array_equal(ra.equity["equity"], rb.equity["equity"])  # the change did matter later


def test_deterministic_and_seeded(market):
    r1 = B.backtest(market, P.random_policy(), seed=3, lot_size=50)
    r2 = B.backtest(market, P.random_policy(), seed=3, lot_size=50)
    r3 = B.backtest(market, P.random_policy(), seed=4, lot_size=50)
    np.testing.assert_array_equal(r1.equity["equity"], r2.equity["equity"])
    assert not np.array_equal(r1.equity["equity"], r3.equity["equity"])
    flat = B.backtest(market, P.flat())
    assert np.all(flat.equity["equity"] == flat.initial_capital) and flat.metrics["num_trades"] == 0


def test_several_policies_in_one_program_match_single_runs(market):
    pols = [P.make_baseline(n, scaler=market.scaler) for n in P.BASELINES]
    many = B.backtest_many(market, pols, lot_size=50, slippage_ticks=1)
    for pol, r in zip(pols, many):
        if pol.name not in ("random", "momentum"):
            continue
        single = B.backtest(market, pol, lot_size=50, slippage_ticks=1)
        np.testing.assert_array_equal(single.equity["equity"], r.equity["equity"])
        assert single.metrics == r.metrics


def test_momentum_reads_the_true_sign(market):
    """The observation holds z-scores; momentum un-scales them: its target is sign(log c_t - log c_{t-N})."""
    r = B.backtest(market, _momentum(market, 5), split="all", lot_size=50)
    c = np.asarray(market.data.close)
    params, _ = B.build_env(market, B.BacktestConfig(split="all", lot_size=50))
    (ledger, _), = B.run_ledgers(params, [_momentum(market, 5)], market.num_bars - 1)
    t = ledger["bar"] - 1  # the bar whose close the decision saw
    ret = np.log(c[t]) - np.log(c[np.maximum(t - 5, 0)])
    np.testing.assert_array_equal(ledger["action"] - 1, np.sign(ret).astype(int))
    with pytest.raises(Exception, match="horizon"):
        P.momentum(market.scaler, horizon=7)
    assert r.metrics["num_trades"] > 0


def test_trained_model_hooks(market):
    """A logits policy and the same weights as a PyTorch module (host callback) trade identically."""
    torch = pytest.importorskip("torch")
    d = market.data.features.shape[1] + 2
    rng = np.random.default_rng(0)
    w = rng.normal(0, 1, (d, 3)).astype(np.float32)
    jax_pol = P.policy_from_logits(lambda p, obs: (obs @ p, None), jnp.asarray(w), "lin")
    lin = torch.nn.Linear(d, 3, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(w.T))
    torch_pol = P.torch_policy(lin, "lin_torch")
    ra = B.backtest(market, jax_pol, lot_size=50)
    rb = B.backtest(market, torch_pol, lot_size=50)
    np.testing.assert_array_equal(ra.equity["position"], rb.equity["position"])
    np.testing.assert_allclose(ra.equity["equity"], rb.equity["equity"], rtol=0, atol=0)


def test_load_policy_rejects_a_file_that_is_not_a_model(tmp_path):
    p = tmp_path / "NIFTY_final_model.pth"
    p.write_bytes(b"x")
    with pytest.raises(InputError):
        P.load_policy(p)


def test_float32_market_is_refused(tmp_path):
    write_fixture(tmp_path)
    m = load_market(tmp_path, "NIFTY_15", price_dtype=jnp.float32)
    with pytest.raises(ValueError, match="float64"):
        B.backtest(m, P.flat())


def test_model_trained_for_other_max_lots_is_refused(market):
    # A 3-action model (max lots 1) under max_lots=2 would have its actions re-read as -2..0 lots.
    model = P.Policy("model", lambda key, obs: jnp.int32(2), source="m.pth", num_actions=3)
    with pytest.raises(InputError, match=r"m\.pth: the model has 3 actions \(max lots 1\) but --max-lots=2"):
        B.backtest(market, model, B.BacktestConfig(max_lots=2))
    assert B.backtest(market, model, B.BacktestConfig(max_lots=1)).metrics is not None


def test_model_capital_follows_training_unless_the_flag_is_given():
    from jaxtrade.policies import model_capital, training_env
    env = training_env({"extra": {"training_env": {"initial_capital": 2_000_000.0}}})
    assert model_capital(env, 100_000.0, False, "--initial-capital") == (
        2_000_000.0, "initial capital 2,000,000: the model's training capital (--initial-capital overrides)")
    capital, line = model_capital(env, 100_000.0, True, "--initial-capital")
    assert capital == 100_000.0 and line.startswith("notice: the model trained with initial capital 2,000,000")
    assert model_capital(env, 2_000_000.0, True, "--initial-capital") == (2_000_000.0, None)
    assert model_capital(None, 100_000.0, False, "--initial-capital") == (100_000.0, None)  # file records none
    assert training_env({"settings": {"env": {"initial_capital": 5.0}}}) == {"initial_capital": 5.0}  # Orbax meta
