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


NSE_FUTURES_2024 = dict(brokerage=0.0003, cap=20.0, stt_sell=0.000125, exchange=0.0000173 + 0.000001,
                        sebi=0.000001, stamp_buy=0.00002, gst=0.18)  # nse-facts.md, rates before 1 Oct 2024


def order_cost_by_hand(cost_model: str, qty: np.ndarray, price: np.ndarray) -> np.ndarray:
    """Charges of each order in float64, written from the published rates (not through jaxtrade.costs)."""
    turnover = np.abs(qty) * price
    if cost_model == "bps":  # 1 bp of turnover
        return 1e-4 * turnover
    r = NSE_FUTURES_2024
    brokerage = np.where(qty != 0, np.minimum(r["brokerage"] * turnover, r["cap"]), 0.0)
    stt = np.where(qty < 0, r["stt_sell"] * turnover, 0.0)
    stamp = np.where(qty > 0, r["stamp_buy"] * turnover, 0.0)
    exchange, sebi = r["exchange"] * turnover, r["sebi"] * turnover
    return brokerage + stt + exchange + sebi + stamp + r["gst"] * (brokerage + exchange + sebi)


@pytest.mark.parametrize("cost_model", ["nse_futures", "bps"])
def test_parquet_files_replay_alone_in_float64(market, cost_model, tmp_path):
    """equity.parquet and trades.parquet, read back with nothing else, replay in float64: every fill at its bar's
    open (or, for the square-off, its close) plus slippage against the trader, charged as the published rates
    say, square-offs exactly at each session's last bar, cash and equity to the paisa, and round trips that
    add up to the equity."""
    from jaxtrade import report as R

    config = B.BacktestConfig(split="all").replace(cost_model=cost_model, slippage_ticks=2, lot_size=50)
    R.write_symbol_outputs(B.backtest(market, _momentum(market), config), [], tmp_path, plot=False)
    table = pq.read_table(tmp_path / "equity.parquet")
    meta = {k.decode(): v.decode() for k, v in table.schema.metadata.items()}
    e = {c: table.column(c).to_numpy() for c in table.column_names if c != "timestamp"}
    days = table.column("timestamp").cast(pa.int64()).to_numpy() + 330 * 60 * 10**9  # IST wall clock
    days = days // (86_400 * 10**9)
    capital, slip = float(meta["initial_capital"]), float(meta["slippage_ticks"]) * 0.05
    assert (capital, slip) == (100_000.0, 0.1)

    # Fills: the open's price (the square-off: the close's), slippage against the trader.
    q, q_sq = e["fill_qty"], e["square_off_qty"]
    np.testing.assert_array_equal(e["fill_price"][q != 0], (e["open"] + slip * np.sign(q))[q != 0])
    np.testing.assert_array_equal(e["square_off_price"][q_sq != 0], (e["close"] + slip * np.sign(q_sq))[q_sq != 0])
    assert (q != 0).sum() > 20 and (q_sq != 0).sum() > 5
    # Units: the target fills at the open, the square-off empties it at the close.
    held = np.r_[0.0, e["position"][:-1] * e["lot_size"][:-1]]
    np.testing.assert_allclose(held + q, e["target"] * e["lot_size"], atol=1e-9)
    np.testing.assert_allclose(e["target"] * e["lot_size"] + q_sq, e["position"] * e["lot_size"], atol=1e-9)
    # Square-offs happen at each session's last bar, and only there; nothing is held into the next day.
    last = np.r_[days[1:] != days[:-1], True]
    assert np.all(q_sq[~last] == 0) and np.all(e["position"][last] == 0)
    assert np.all((q_sq[last] != 0) == (e["target"][last] != 0))
    # A position opened at the last bar's open and squared off at its close shows in the file.
    opened_and_closed = last & (q != 0) & (q_sq != 0)
    if opened_and_closed.any():
        assert np.all(e["target"][opened_and_closed] != 0)
    # Money: charges from the published rates, cash and equity recomputed bar by bar in float64.
    costs = order_cost_by_hand(cost_model, q, e["fill_price"]) + order_cost_by_hand(cost_model, q_sq,
                                                                                     e["square_off_price"])
    np.testing.assert_allclose(e["costs"], costs, rtol=1e-9, atol=1e-9)
    cash = capital - np.cumsum(q * e["fill_price"] + q_sq * e["square_off_price"] + costs)
    np.testing.assert_allclose(e["cash"], cash, rtol=0, atol=0.01)
    np.testing.assert_allclose(e["equity"], cash + e["position"] * e["lot_size"] * e["close"], rtol=0, atol=0.01)
    # Round trips: their net PnL is the equity's change, their costs the charged costs, each entered and left
    # at a bar where an order filled.
    tr = pq.read_table(tmp_path / "trades.parquet")
    t = {c: tr.column(c).to_numpy() for c in ("side", "lots", "entry_price", "exit_price", "gross_pnl", "costs",
                                              "net_pnl")}
    assert t["net_pnl"].sum() == pytest.approx(e["equity"][-1] - capital, abs=0.01)
    assert t["costs"].sum() == pytest.approx(e["costs"].sum(), abs=0.01)
    np.testing.assert_allclose(t["gross_pnl"], t["side"] * t["lots"] * 50 * (t["exit_price"] - t["entry_price"]),
                               rtol=1e-9, atol=1e-6)
    ts = table.column("timestamp").cast(pa.int64()).to_numpy()
    filled = ts[(q != 0) | (q_sq != 0)]
    for col in ("entry_time", "exit_time"):
        assert np.isin(tr.column(col).cast(pa.int64()).to_numpy(), filled).all(), col


def test_trades_reconcile_with_equity(market):
    config = B.BacktestConfig(split="all").replace(slippage_ticks=1, lot_size=50)
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
    params, _ = B.build_env(market, B.BacktestConfig(split="all").replace(lot_size=50))
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
        B.backtest(market, model, B.BacktestConfig().replace(max_lots=2))
    assert B.backtest(market, model, B.BacktestConfig().replace(max_lots=1)).metrics is not None


def test_a_model_runs_under_its_own_rules_and_each_override_is_said_once():
    from jaxtrade.env import EnvConfig
    from jaxtrade.policies import model_env_config, rules_for_model

    trained = EnvConfig(initial_capital=2_000_000.0, square_off_time="14:30", dated_lots=True,
                        split_fractions=(0.6, 0.2, 0.2))
    flag = lambda f: "--" + f.replace("_", "-")  # noqa: E731
    base = EnvConfig(initial_capital=100_000.0, slippage_ticks=0.0)
    assert model_env_config({"env_config": trained.to_dict()}) == trained  # .pth config / Orbax meta
    rules, lines = rules_for_model(trained, base, {}, flag)
    assert rules == trained and len(lines) == 1 and lines[0].startswith("market rules: the model's own")
    assert "flat from 14:30" in lines[0] and "dated NSE lots" in lines[0] and "splits 0.6/0.2/0.2" in lines[0]
    rules, lines = rules_for_model(trained, base, {"initial_capital": 100_000.0, "slippage_ticks": 1.0}, flag)
    assert rules == trained.replace(initial_capital=100_000.0)  # slippage 1 is the model's own: no notice
    assert lines[1:] == ["notice: --initial-capital 100,000 overrides the model's initial_capital 2,000,000: its "
                         "position features are scaled by capital, so it will not act as in training"]
    rules, lines = rules_for_model(trained, base, {"square_off_time": ""}, flag)
    assert rules.square_off_time == "" and "--square-off-time '' overrides the model's square_off_time 14:30" in lines[1]
    # A file that records no rules: the command's defaults, silently.
    assert rules_for_model(None, base, {"lot_size": 50.0}, flag) == (base.replace(lot_size=50.0), [])
    # Older files recorded part of the rules under other keys; fields they lack keep the defaults.
    assert model_env_config({"extra": {"training_env": {"initial_capital": 5.0}}}) == EnvConfig(initial_capital=5.0)
    assert model_env_config({"settings": {"env": {"max_lots": 2}}}) == EnvConfig(max_lots=2)
    assert model_env_config({"network": {}}) is None
    with pytest.raises(InputError, match="unknown market setting"):
        model_env_config({"env_config": {"tick_value": 3}})


def test_compiled_backtests_are_reused_for_models_of_one_architecture_and_bounded(market):
    from jaxtrade.networks import make_network

    net = make_network(3, (8,))
    d = market.data.features.shape[1] + 2
    params = [net.init(jax.random.key(i), jnp.zeros((d,))) for i in range(3)]
    B._RUNNERS.clear()
    results = [B.backtest(market, P.network_policy(net, p, f"m{i}"), lot_size=50) for i, p in enumerate(params)]
    assert len(B._RUNNERS) == 1  # three models, one program: their parameters are arguments
    (program,) = B._RUNNERS.values()
    assert program._cache_size() == 1
    assert not np.array_equal(results[0].equity["equity"], results[2].equity["equity"])  # they did differ
    for i in range(B.MAX_RUNNERS + 3):  # distinct act functions: the cache keeps the most recent few
        B.backtest(market, P.constant(1, f"flat{i}", description=str(i)), lot_size=50)
    assert len(B._RUNNERS) == B.MAX_RUNNERS
