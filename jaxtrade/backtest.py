"""Run a policy deterministically over a split of one symbol, through the environment's own `step`.

    enable_x64()                                   # before loading data: money in float64
    market = load_market(dir, "NIFTY", price_dtype=jnp.float64)
    result = backtest(market, policy, split="test", cost_model="nse_futures")
    result.equity, result.trades, result.metrics   # DESIGN section 6's tables, section 7's metrics

One environment, the whole split as one episode (`episode_sessions=None`, `env.reset_to(params, 0)`), a
`lax.scan` over the bars, compiled once per policy and market shape. The per-bar ledger comes from the step's
`info`; round trips are rebuilt on the host from the position path and the fill prices, splitting a sign
flip's order cost between the closing and the opening trip exactly as `env.step` does.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxtrade import contracts, env as E, metrics as M
from jaxtrade.costs import CostParams, cost_model as make_cost_model, order_cost
from jaxtrade.data import IST_OFFSET_NS, Market
from jaxtrade.errors import InputError
from jaxtrade.policies import Policy

SPLIT_CHOICES = ("train", "val", "test", "all")
EQUITY_COLUMNS = ("timestamp", "close", "position", "cash", "equity", "costs")
TRADE_COLUMNS = ("entry_time", "exit_time", "side", "lots", "entry_price", "exit_price", "gross_pnl", "costs",
                 "net_pnl")


def enable_x64() -> None:
    """Money in float64 (DESIGN section 3). Call before loading data or building any array."""
    jax.config.update("jax_enable_x64", True)


@dataclasses.dataclass(frozen=True)
class BacktestConfig:
    split: str = "test"
    cost_model: str = "nse_futures"
    slippage_ticks: float = 0.0
    tick_size: float = contracts.TICK_SIZE
    lot_size: float | None = None  # None: the symbol's current NSE lot (1 for an unknown symbol)
    allow_overnight: bool = False
    initial_capital: float = 100_000.0
    max_lots: int = 1
    seed: int = 0  # the random baseline's key stream
    cost_as_of: _dt.date | None = None  # rates (STT) in force on this date; None: the split's first session
    bootstrap_resamples: int = 2000
    risk_free_rate: float = 0.0  # annual; Sharpe and Sortino use its per-session equivalent


@dataclasses.dataclass
class BacktestResult:
    symbol: str
    policy: str  # policy name or model file
    split: str
    equity: dict[str, np.ndarray]  # EQUITY_COLUMNS; timestamp as datetime64[ns] IST wall clock
    trades: dict[str, np.ndarray]  # TRADE_COLUMNS
    metrics: dict[str, Any]  # METRIC_KEYS (None for null)
    daily_returns: np.ndarray
    sharpe_ci: tuple[float, float] | None
    verdict: str | None  # a plain sentence when the sample is too short / too noisy to judge
    start: str
    end: str
    num_bars: int
    num_sessions: int
    cost_model: str
    lot_size: float
    slippage_ticks: float
    initial_capital: float
    allow_overnight: bool
    synthetic: bool
    env_stats: dict[str, Any]  # the environment's own per-episode statistics (cross-check)
    wall_s: float
    bar_minutes: int = 1
    risk_free_rate: float = 0.0  # annual
    target: np.ndarray | None = None  # [bars] lots held from each bar's open fill (row 0: 0); tear sheet, metrics

    def metrics_record(self) -> dict:
        """metrics.json: section 7's keys + symbol, model, split, start, end, the Sharpe CI and context."""
        rec = dict(self.metrics)
        rec.update(symbol=self.symbol, model=self.policy, split=self.split, start=self.start, end=self.end,
                   sharpe_ci95=list(self.sharpe_ci) if self.sharpe_ci else None,
                   sharpe_ci_method=("stationary block bootstrap (Politis-Romano) of daily returns, "
                                     f"2000 resamples, seed 0") if self.sharpe_ci else None,
                   verdict=self.verdict, bars=self.num_bars, sessions=self.num_sessions,
                   cost_model=self.cost_model, lot_size=self.lot_size, slippage_ticks=self.slippage_ticks,
                   initial_capital=self.initial_capital, final_equity=float(self.equity["equity"][-1]),
                   allow_overnight=self.allow_overnight, synthetic=self.synthetic, risk_free_rate=self.risk_free_rate)
        return rec


def build_env(market: Market, config: BacktestConfig) -> tuple[E.EnvParams, str]:
    """EnvParams for the whole split as one episode; returns (params, cost model name)."""
    if config.split not in SPLIT_CHOICES:
        raise InputError(f"--split: unknown split {config.split!r} (choose from {', '.join(SPLIT_CHOICES)})")
    if market.data.close.dtype != jnp.float64:
        raise ValueError("the backtester keeps money in float64: call jaxtrade.backtest.enable_x64() before "
                         "loading the market (load_market(..., price_dtype=jnp.float64))")
    if config.initial_capital <= 0:
        raise InputError(f"--initial_capital must be positive, got {config.initial_capital:g}")
    if config.slippage_ticks < 0:
        raise InputError(f"--slippage_ticks must be >= 0, got {config.slippage_ticks:g}")
    lo, _ = market.splits[config.split]
    as_of = config.cost_as_of or market.session_dates[lo].astype(object)
    model = make_cost_model(config.cost_model, as_of=as_of)
    params = E.make_params(market, config.split, cost_params=model.params, lot_size=config.lot_size,
                           slippage_ticks=config.slippage_ticks, tick_size=config.tick_size,
                           max_lots=config.max_lots, initial_capital=config.initial_capital,
                           episode_sessions=None, allow_overnight=config.allow_overnight)
    name = f"{model.name} (rates as of {as_of})" if model.name.startswith("nse") else model.name
    return params, name


_RUNNERS: dict[Any, Any] = {}
_LEDGER_FIELDS = ("bar", "position", "fill_price", "costs", "pnl", "cash", "equity")
_STAT_FIELDS = ("num_trades", "wins", "gross_profit", "gross_loss", "max_drawdown", "final_equity", "total_costs")


def _runner(acts: tuple):
    """jit(scan over the split) running every `act` in `acts` side by side (vmap over a policy index, one
    `lax.switch`), so several policies cost one compilation per market shape. Cached by the act functions."""
    fn = _RUNNERS.get(acts)
    if fn is not None:
        return fn

    def one_policy(params, keys, index):
        def act(k, obs):
            if len(acts) == 1:
                return jnp.asarray(acts[0](k, obs), jnp.int32)
            branches = [lambda k, o, a=a: jnp.asarray(a(k, o), jnp.int32) for a in acts]
            return jax.lax.switch(index, branches, k, obs)

        def body(carry, k):
            obs, state = carry
            k_act, k_env = jax.random.split(k)
            action = act(k_act, obs)
            obs, state, _, done, info = E.step(k_env, state, action, params)
            out = {name: info[name] for name in _LEDGER_FIELDS}
            out["action"] = action
            out["done"] = done
            return (obs, state), (out, {name: info[name] for name in _STAT_FIELDS})

        _, (ledger, stats) = jax.lax.scan(body, E.reset_to(params, jnp.uint32(0)), keys)
        return ledger, jax.tree.map(lambda x: x[-1], stats)

    @jax.jit
    def scan(params, keys):
        return jax.vmap(one_policy, in_axes=(None, None, 0))(params, keys, jnp.arange(len(acts)))

    _RUNNERS[acts] = scan
    return scan


def run_ledgers(params: E.EnvParams, policies, num_steps: int, seed: int = 0):
    """Per policy: the per-step ledger (numpy) over `num_steps` bars after the episode's first bar, and the
    environment's final episode statistics. All policies run in one compiled scan, with the same key stream."""
    keys = jax.random.split(jax.random.key(seed), num_steps)
    ledger, stats = jax.device_get(_runner(tuple(p.act for p in policies))(params, keys))
    out = []
    for i in range(len(policies)):
        led = {k: np.asarray(v[i]) for k, v in ledger.items()}
        st = {k: M.to_python(v[i]) for k, v in stats.items()}
        out.append((led, st))
    return out


def _order_cost_np(costs: CostParams, qty: np.ndarray, price: np.ndarray) -> np.ndarray:
    return np.asarray(order_cost(costs, jnp.asarray(qty, jnp.float64), jnp.asarray(price, jnp.float64)),
                      np.float64)


def reconstruct_trades(*, bars: np.ndarray, action: np.ndarray, open_: np.ndarray, close: np.ndarray,
                       lot_size: np.ndarray, flags: np.ndarray, timestamps: np.ndarray, max_lots: int,
                       slippage: float, allow_overnight: bool, costs: CostParams,
                       ledger_costs: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Round trips from the position path (host, float64), mirroring `env.step`'s fills.

    Per step at bar b (t+1): the target `action - max_lots` (action clipped to [0, 2 max_lots]; flat where
    MUST_BE_FLAT) fills at open[b] +/-
    slippage; at a square-off (session's last bar when intraday, and the episode's last step) the position
    closes at close[b] -/+ slippage. A round trip ends when the position returns to 0 or flips sign; a flip's
    order cost goes to the closing trip in proportion |old units| / |order units|, the rest to the new trip.
    Prices are volume-weighted fills: entry over orders that grow the position, exit over those that shrink it.
    """
    bars = np.asarray(bars, np.int64)
    n = len(bars)
    must_flat = (np.asarray(flags)[bars] & E.MUST_BE_FLAT) != 0
    tgt_lots = np.where(must_flat, 0, np.clip(np.asarray(action, np.int64), 0, 2 * max_lots) - max_lots)
    lot = np.asarray(lot_size, np.float64)[bars]
    tgt_units = tgt_lots * lot
    last = (np.asarray(flags)[bars] & E.LAST_BAR) != 0
    square = (last & (not allow_overnight)) | (np.arange(n) == n - 1)
    after_units = np.where(square, 0.0, tgt_units)
    prev_units = np.r_[0.0, after_units[:-1]]
    qty = tgt_units - prev_units
    fill = np.asarray(open_, np.float64)[bars] + slippage * np.sign(qty)
    qty_sq = np.where(square, -tgt_units, 0.0)
    fill_sq = np.asarray(close, np.float64)[bars] + slippage * np.sign(qty_sq)
    cost_open = _order_cost_np(costs, qty, fill)
    cost_sq = _order_cost_np(costs, qty_sq, fill_sq)
    if ledger_costs is not None:
        scale = np.maximum(np.abs(ledger_costs), 1.0)
        if np.any(np.abs(cost_open + cost_sq - ledger_costs) > 1e-9 * scale):
            raise AssertionError("trade reconstruction disagrees with the environment's costs")

    rows: dict[str, list] = {c: [] for c in TRADE_COLUMNS}
    trip: dict[str, Any] | None = None
    cur = 0.0  # units held

    def is_zero(x, ref):
        return abs(x) <= 1e-9 * max(abs(ref), 1.0)

    def start(units, price, cost, i):
        return {"entry_i": i, "side": 1 if units > 0 else -1, "max_units": abs(units), "lot": lot[i],
                "flow": -units * price, "costs": cost, "in_q": abs(units), "in_v": abs(units) * price,
                "out_q": 0.0, "out_v": 0.0}

    def finish(t, i):
        gross = t["flow"]
        rows["entry_time"].append(timestamps[bars[t["entry_i"]]])
        rows["exit_time"].append(timestamps[bars[i]])
        rows["side"].append(t["side"])
        rows["lots"].append(t["max_units"] / t["lot"])
        rows["entry_price"].append(t["in_v"] / t["in_q"])
        rows["exit_price"].append(t["out_v"] / t["out_q"])
        rows["gross_pnl"].append(gross)
        rows["costs"].append(t["costs"])
        rows["net_pnl"].append(gross - t["costs"])

    def order(q, price, cost, i):
        nonlocal trip, cur
        if q == 0.0:
            return
        new = cur + q
        if trip is None:  # opening from flat
            trip = start(q, price, cost, i)
        elif not is_zero(new, cur) and np.sign(new) != np.sign(cur):  # a flip: close, then open the rest
            share = min(abs(cur) / abs(q), 1.0)
            trip["flow"] += cur * price  # sells/buys back -cur units
            trip["costs"] += cost * share
            trip["out_q"] += abs(cur)
            trip["out_v"] += abs(cur) * price
            finish(trip, i)
            trip = start(new, price, cost * (1.0 - share), i)
        else:
            trip["flow"] -= q * price
            trip["costs"] += cost
            if abs(new) > abs(cur):
                trip["in_q"] += abs(q)
                trip["in_v"] += abs(q) * price
                trip["max_units"] = max(trip["max_units"], abs(new))
            else:
                trip["out_q"] += abs(q)
                trip["out_v"] += abs(q) * price
            if is_zero(new, cur):
                finish(trip, i)
                trip = None
                new = 0.0
        cur = new

    for i in np.flatnonzero((qty != 0) | (qty_sq != 0)):
        order(qty[i], fill[i], cost_open[i], i)
        order(qty_sq[i], fill_sq[i], cost_sq[i], i)
    if trip is not None:  # cannot happen: the episode's last step squares off
        raise AssertionError("a round trip is still open at the end of the backtest")

    out = {}
    for c in TRADE_COLUMNS:
        if c.endswith("_time"):
            out[c] = np.asarray(rows[c], "datetime64[ns]")
        elif c == "side":
            out[c] = np.asarray(rows[c], np.int8)
        else:
            out[c] = np.asarray(rows[c], np.float64)
    return out


def _fmt_day(ts: np.datetime64) -> str:
    return str(np.datetime_as_string(ts, unit="m")).replace("T", " ")


def backtest(market: Market, policy: Policy, config: BacktestConfig | None = None, **overrides) -> BacktestResult:
    """Backtest `policy` on `market` (loaded with float64 prices) over `config.split`."""
    return backtest_many(market, [policy], config, **overrides)[0]


def backtest_many(market: Market, policies, config: BacktestConfig | None = None, **overrides
                  ) -> list[BacktestResult]:
    """Backtest several policies on one market and split in one compiled program (same env, same keys)."""
    config = dataclasses.replace(config or BacktestConfig(), **overrides)
    for policy in policies:
        # A model trained for another position limit would have its actions silently re-read as other targets.
        n = policy.num_actions
        if n is not None and n != 2 * config.max_lots + 1:
            raise InputError(f"{policy.source or policy.name}: the model has {n} actions (max lots {(n - 1) // 2}) "
                             f"but --max-lots={config.max_lots} gives {2 * config.max_lots + 1}; pass "
                             f"--max-lots {(n - 1) // 2}")
    t0 = time.perf_counter()
    params, cost_name = build_env(market, config)
    lo_bar, hi_bar = market.split_bars(config.split)
    num_steps = hi_bar - lo_bar - 1
    if num_steps < 1:
        raise InputError(f"{market.symbol}: the {config.split} split has a single bar; nothing to backtest")
    runs = run_ledgers(params, list(policies), num_steps, config.seed)
    wall = (time.perf_counter() - t0) / max(len(runs), 1)
    return [_result(market, config, params, cost_name, policy, ledger, stats, wall)
            for policy, (ledger, stats) in zip(policies, runs)]


def _result(market, config, params, cost_name, policy, ledger, stats, wall) -> BacktestResult:
    t0 = time.perf_counter()
    lo_bar, hi_bar = market.split_bars(config.split)
    bars = ledger["bar"].astype(np.int64)
    if bars[0] != lo_bar + 1 or bars[-1] != hi_bar - 1 or not bool(ledger["done"][-1]) \
            or bool(np.any(ledger["done"][:-1])):
        raise AssertionError("the backtest episode does not cover the split exactly once")

    ts = market.timestamps
    close = np.asarray(market.data.close, np.float64)
    open_ = np.asarray(market.data.open, np.float64)
    cap = float(config.initial_capital)
    equity = {
        "timestamp": ts[lo_bar:hi_bar],
        "close": close[lo_bar:hi_bar],
        "position": np.r_[0, ledger["position"]].astype(np.int32),
        "cash": np.r_[cap, ledger["cash"]].astype(np.float64),
        "equity": np.r_[cap, ledger["equity"]].astype(np.float64),
        "costs": np.r_[0.0, ledger["costs"]].astype(np.float64),
    }
    lot_arr = np.asarray(params.lot_size, np.float64)
    trades = reconstruct_trades(
        bars=bars, action=ledger["action"], open_=open_, close=close, lot_size=lot_arr,
        flags=np.asarray(params.bar_flags), timestamps=ts, max_lots=params.max_lots,
        slippage=float(params.slippage), allow_overnight=config.allow_overnight,
        costs=jax.tree.map(float, params.costs), ledger_costs=ledger["costs"])
    session = np.asarray(market.data.session)[lo_bar:hi_bar]
    # Lots held from each bar's open fill (before any square-off at its close): holding time and turnover.
    must_flat = (np.asarray(params.bar_flags)[bars] & E.MUST_BE_FLAT) != 0
    target = np.r_[0, np.where(must_flat, 0, ledger["action"].astype(np.int64) - params.max_lots)]
    traded = M.traded_value(target, equity["position"], lot_arr[lo_bar:hi_bar], open_[lo_bar:hi_bar],
                            equity["close"])
    raw = M.compute_metrics(equity["equity"], session, equity["position"], equity["costs"], trades["net_pnl"],
                            cap, risk_free_rate=config.risk_free_rate, trade_gross_pnl=trades["gross_pnl"],
                            trade_costs=trades["costs"], target=target, traded=traded)
    metrics = M.host_metrics(raw)
    daily = M.daily_returns(equity["equity"], session, cap)
    ci = M.sharpe_bootstrap_ci(daily, num_resamples=config.bootstrap_resamples, seed=0,
                               risk_free=M.daily_risk_free(config.risk_free_rate))
    verdict = M.judge_sample(len(daily), ci)
    ruined = np.flatnonzero(equity["equity"] <= 0)
    if len(ruined):
        verdict = (f"equity fell to zero or below on {_fmt_day(equity['timestamp'][ruined[0]])} (the account "
                   f"was ruined: the position is too large for the capital), so the return ratios and the "
                   f"Sharpe interval are meaningless" + (f"; {verdict}" if verdict else ""))
    s_lo, s_hi = market.splits[config.split]
    return BacktestResult(
        symbol=market.symbol, policy=policy.source or policy.name, split=config.split, equity=equity,
        trades=trades, metrics=metrics, daily_returns=daily, sharpe_ci=ci,
        verdict=verdict, start=_fmt_day(ts[lo_bar]), end=_fmt_day(ts[hi_bar - 1]),
        num_bars=hi_bar - lo_bar, num_sessions=s_hi - s_lo, cost_model=cost_name,
        lot_size=float(lot_arr[lo_bar]), slippage_ticks=float(config.slippage_ticks), initial_capital=cap,
        allow_overnight=bool(config.allow_overnight), synthetic=market.synthetic, env_stats=stats,
        wall_s=wall + time.perf_counter() - t0, bar_minutes=int(market.bar_minutes),
        risk_free_rate=float(config.risk_free_rate), target=target.astype(np.int32))


def timestamps_utc_ns(local_ist: np.ndarray) -> np.ndarray:
    """IST wall-clock datetime64 -> int64 UTC nanoseconds (for timestamp[ns, tz=Asia/Kolkata] columns)."""
    return np.asarray(local_ist, "datetime64[ns]").astype(np.int64) - IST_OFFSET_NS
