"""Run a policy deterministically over a split of one symbol, through the environment's own `step`.

    enable_x64()                                   # before loading data: money in float64
    market = env.market_for(env_config, dir, "NIFTY", price_dtype=jnp.float64)
    result = backtest(market, policy, BacktestConfig(env=env_config, split="test"))
    result.equity, result.trades, result.metrics   # DESIGN section 6's tables, section 7's metrics

One environment, the whole split as one episode (`env.env_params(config.env, market, split, whole_split=True)`,
the same path that builds the training env, so a model is judged under the rules it trained with), a
`lax.scan` over the bars. The per-bar ledger and the round trips are the step's own `info` (its fills,
their costs and the net PnL of each trip it closes), collected: nothing about fills is recomputed here.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxtrade import env as E, metrics as M, sharpe_ci
from jaxtrade.data import IST_OFFSET_NS, Market
from jaxtrade.env import EnvConfig
from jaxtrade.errors import InputError
from jaxtrade.policies import BoundAct, Policy
from jaxtrade.sharding import axis_size, constrain_batch, fetch

SPLIT_CHOICES = ("train", "val", "test", "all")
# DESIGN section 6, then the columns that make the file replayable alone: `target` lots held from the bar's
# open fill (`fill_qty` units at `fill_price`, against `open`) to its close, where the square-off (if any)
# trades `square_off_qty` units at `square_off_price`, leaving `position`; units are lots x `lot_size`.
EQUITY_COLUMNS = ("timestamp", "close", "position", "cash", "equity", "costs", "open", "target", "lot_size",
                  "fill_qty", "fill_price", "square_off_qty", "square_off_price")
TRADE_COLUMNS = ("entry_time", "exit_time", "side", "lots", "entry_price", "exit_price", "gross_pnl", "costs",
                 "net_pnl")
# The seed's run_backtest defaults (Rs 1 lakh, no slippage); a trained model brings its own EnvConfig.
BACKTEST_ENV = EnvConfig(initial_capital=100_000.0, slippage_ticks=0.0)


def enable_x64() -> None:
    """Money in float64 (DESIGN section 3). Call before loading data or building any array."""
    jax.config.update("jax_enable_x64", True)


@dataclasses.dataclass(frozen=True)
class BacktestConfig:
    """The market rules (`env`, an `EnvConfig`) and what to run over them."""

    env: EnvConfig = BACKTEST_ENV
    split: str = "test"
    seed: int = 0  # the random baseline's key stream
    bootstrap_resamples: int = 2000
    risk_free_rate: float = 0.0  # annual; Sharpe and Sortino use its per-session equivalent

    def replace(self, **changes) -> "BacktestConfig":
        """Like `dataclasses.replace`; `EnvConfig` field names (lot_size=50, ...) change `env`."""
        env_fields = {f.name for f in dataclasses.fields(EnvConfig)}
        env_changes = {k: changes.pop(k) for k in list(changes) if k in env_fields}
        config = dataclasses.replace(self, **changes)
        return dataclasses.replace(config, env=config.env.replace(**env_changes)) if env_changes else config


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
    cost_model: str  # the model's name and the date of its rates
    lot_size: float  # at the split's first bar
    env: EnvConfig  # the market rules it ran under
    synthetic: bool
    env_stats: dict[str, Any]  # the environment's own per-episode statistics (cross-check)
    wall_s: float
    bar_minutes: int = 1
    risk_free_rate: float = 0.0  # annual
    target: np.ndarray | None = None  # [bars] lots held from each bar's open fill (row 0: 0); tear sheet, metrics

    @property
    def initial_capital(self) -> float:
        return float(self.env.initial_capital)

    @property
    def slippage_ticks(self) -> float:
        return float(self.env.slippage_ticks)

    @property
    def allow_overnight(self) -> bool:
        return bool(self.env.allow_overnight)

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
                   allow_overnight=self.allow_overnight, synthetic=self.synthetic, risk_free_rate=self.risk_free_rate,
                   env_config=self.env.to_dict())
        return rec


def build_env(market: Market, config: BacktestConfig) -> tuple[E.EnvParams, str]:
    """EnvParams for the whole split as one episode (through `env.env_params`); returns (params, cost model
    name with the date of its rates)."""
    if config.split not in SPLIT_CHOICES:
        raise InputError(f"--split: unknown split {config.split!r} (choose from {', '.join(SPLIT_CHOICES)})")
    if market.data.close.dtype != jnp.float64:
        raise ValueError("the backtester keeps money in float64: call jaxtrade.backtest.enable_x64() before "
                         "loading the market (load_market(..., price_dtype=jnp.float64))")
    params = E.env_params(config.env, market, config.split, whole_split=True)
    model = E.cost_model_for(config.env, market, config.split)
    lo, _ = market.splits[config.split]
    name = f"{model.name} (rates as of {market.session_dates[lo]})" if model.name.startswith("nse") else model.name
    return params, name


# Compiled backtest programs, keyed by the policies' static act functions (a trained model's parameters are
# arguments, so another model of the same architecture reuses the program); least recently used dropped first.
MAX_RUNNERS = 8
_RUNNERS: collections.OrderedDict = collections.OrderedDict()
_LEDGER_FIELDS = ("bar", "position", "target", "lot_size", "costs", "cash", "equity", "fill_qty", "fill_price",
                  "fill_cost", "fill_cost_closing", "fill_closes", "fill_opens", "fill_closed_pnl", "square_qty",
                  "square_price", "square_cost", "square_closes", "square_closed_pnl")
_STAT_FIELDS = ("num_trades", "wins", "gross_profit", "gross_loss", "max_drawdown", "final_equity", "total_costs")


def _split_act(act) -> tuple[Any, Any]:
    """(static act function of (params, key, obs), its parameters)."""
    if isinstance(act, BoundAct):
        return act.fn, act.params
    return _Unbound(act), None


@dataclasses.dataclass(frozen=True)
class _Unbound:
    act: Any

    def __call__(self, params, key, obs):
        del params
        return self.act(key, obs)


def _runner(fns: tuple):
    """jit(scan over the split) running every act function in `fns` side by side (vmap over a policy index, one
    `lax.switch`), so several policies cost one compilation per market shape."""
    fn = _RUNNERS.get(fns)
    if fn is not None:
        _RUNNERS.move_to_end(fns)
        return fn

    def one_policy(params, keys, policy_params, index):
        def act(k, obs):
            branches = [lambda k, o, f=f, p=p: jnp.asarray(f(p, k, o), jnp.int32) for f, p in zip(fns, policy_params)]
            return branches[0](k, obs) if len(fns) == 1 else jax.lax.switch(index, branches, k, obs)

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
    def scan(params, keys, policy_params):
        # The policies are the batch axis: over a mesh's devices, padded to a multiple of them (repeats of the
        # last policy, dropped by `run_ledgers`).
        n = len(fns)
        index = constrain_batch(jnp.minimum(jnp.arange(-(-n // axis_size()) * axis_size()), n - 1))
        return constrain_batch(jax.vmap(one_policy, in_axes=(None, None, None, 0))(params, keys, policy_params, index))

    _RUNNERS[fns] = scan
    while len(_RUNNERS) > MAX_RUNNERS:
        _RUNNERS.popitem(last=False)
    return scan


def run_ledgers(params: E.EnvParams, policies, num_steps: int, seed: int = 0):
    """Per policy: the per-step ledger (numpy) over `num_steps` bars after the episode's first bar, and the
    environment's final episode statistics. All policies run in one compiled scan, with the same key stream."""
    keys = jax.random.split(jax.random.key(seed), num_steps)
    fns, policy_params = zip(*(_split_act(p.act) for p in policies))
    ledger, stats = fetch(_runner(tuple(fns))(params, keys, tuple(policy_params)))
    out = []
    for i in range(len(policies)):
        led = {k: np.asarray(v[i]) for k, v in ledger.items()}
        st = {k: M.to_python(v[i]) for k, v in stats.items()}
        out.append((led, st))
    return out


def collect_trades(ledger: dict[str, np.ndarray], timestamps: np.ndarray) -> dict[str, np.ndarray]:
    """Round trips from the environment's fills (`ledger`: a `run_ledgers` ledger; `timestamps`: per bar).

    A trip starts where the env says an order opens one and ends where it says one closes (at an open fill or
    at the square-off); its net PnL is the env's, its costs the fills' shares the env charged it, entry and exit
    prices the unit-weighted fills that grew and shrank it. The gross PnL from the fills' cash flow less the
    costs must equal the env's net PnL: a cross-check of the two ledgers."""
    rows: dict[str, list] = {c: [] for c in TRADE_COLUMNS}
    trip: dict[str, Any] | None = None

    def move(t, units, price, cost):
        t["flow"] -= units * price
        t["costs"] += cost
        side = "in" if units * t["side"] > 0 else "out"
        t[f"{side}_q"] += abs(units)
        t[f"{side}_v"] += abs(units) * price
        t["held"] += units
        t["max_units"] = max(t["max_units"], abs(t["held"]))

    def finish(t, i, net):
        gross = t["flow"]
        if abs(gross - t["costs"] - net) > 1e-6 * max(abs(gross), abs(net), 1.0):
            raise AssertionError(f"round trip PnL {gross - t['costs']} disagrees with the environment's {net}")
        rows["entry_time"].append(timestamps[t["entry_bar"]])
        rows["exit_time"].append(timestamps[ledger["bar"][i]])
        rows["side"].append(t["side"])
        rows["lots"].append(t["max_units"] / t["lot"])
        rows["entry_price"].append(t["in_v"] / t["in_q"])
        rows["exit_price"].append(t["out_v"] / t["out_q"])
        rows["gross_pnl"].append(gross)
        rows["costs"].append(t["costs"])
        rows["net_pnl"].append(net)

    def start(i, units, price, cost):
        t = {"entry_bar": ledger["bar"][i], "side": 1 if units > 0 else -1, "lot": float(ledger["lot_size"][i]),
             "flow": 0.0, "costs": 0.0, "in_q": 0.0, "in_v": 0.0, "out_q": 0.0, "out_v": 0.0, "held": 0.0,
             "max_units": 0.0}
        move(t, units, price, cost)
        return t

    for i in np.flatnonzero((ledger["fill_qty"] != 0) | (ledger["square_qty"] != 0)):
        q, price, cost = float(ledger["fill_qty"][i]), float(ledger["fill_price"][i]), float(ledger["fill_cost"][i])
        if ledger["fill_closes"][i]:
            share = float(ledger["fill_cost_closing"][i])
            closing = -trip["held"]
            move(trip, closing, price, share)
            finish(trip, i, float(ledger["fill_closed_pnl"][i]))
            trip, q, cost = None, q - closing, cost - share
        if ledger["fill_opens"][i]:
            trip = start(i, q, price, cost)
        elif q != 0.0:
            move(trip, q, price, cost)
        if ledger["square_closes"][i]:
            move(trip, float(ledger["square_qty"][i]), float(ledger["square_price"][i]),
                 float(ledger["square_cost"][i]))
            finish(trip, i, float(ledger["square_closed_pnl"][i]))
            trip = None
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
    config = (config or BacktestConfig()).replace(**overrides)
    max_lots = config.env.max_lots
    for policy in policies:
        # A model trained for another position limit would have its actions silently re-read as other targets.
        n = policy.num_actions
        if n is not None and n != 2 * max_lots + 1:
            raise InputError(f"{policy.source or policy.name}: the model has {n} actions (max lots {(n - 1) // 2}) "
                             f"but --max-lots={max_lots} gives {2 * max_lots + 1}; pass --max-lots {(n - 1) // 2}")
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
    cap = float(config.env.initial_capital)
    first = lambda name, x: np.r_[x, ledger[name]]  # noqa: E731 - row 0: the split's first bar, before any order
    lot_arr = np.asarray(params.lot_size, np.float64)
    equity = {
        "timestamp": ts[lo_bar:hi_bar],
        "close": np.asarray(market.data.close, np.float64)[lo_bar:hi_bar],
        "position": first("position", 0).astype(np.int32),
        "cash": first("cash", cap).astype(np.float64),
        "equity": first("equity", cap).astype(np.float64),
        "costs": first("costs", 0.0).astype(np.float64),
        "open": np.asarray(market.data.open, np.float64)[lo_bar:hi_bar],
        "target": first("target", 0).astype(np.int32),
        "lot_size": first("lot_size", lot_arr[lo_bar]).astype(np.float64),
        "fill_qty": first("fill_qty", 0.0).astype(np.float64),
        "fill_price": first("fill_price", float(market.data.open[lo_bar])).astype(np.float64),
        "square_off_qty": first("square_qty", 0.0).astype(np.float64),
        "square_off_price": first("square_price", float(market.data.close[lo_bar])).astype(np.float64),
    }
    trades = collect_trades(ledger, ts)
    session = np.asarray(market.data.session)[lo_bar:hi_bar]
    # Lots held from each bar's open fill (the env's `target`, before any square-off at its close): holding time
    # and turnover.
    target = equity["target"]
    traded = M.traded_value(target, equity["position"], equity["lot_size"], equity["open"], equity["close"])
    raw = M.compute_metrics(equity["equity"], session, equity["position"], equity["costs"], trades["net_pnl"],
                            cap, risk_free_rate=config.risk_free_rate, trade_gross_pnl=trades["gross_pnl"],
                            trade_costs=trades["costs"], target=target, traded=traded)
    metrics = M.host_metrics(raw)
    daily = M.daily_returns(equity["equity"], session, cap)
    ci = sharpe_ci.sharpe_bootstrap_ci(daily, num_resamples=config.bootstrap_resamples, seed=0,
                               risk_free=M.daily_risk_free(config.risk_free_rate))
    verdict = sharpe_ci.judge_sample(len(daily), ci)
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
        lot_size=float(lot_arr[lo_bar]), env=config.env, synthetic=market.synthetic, env_stats=stats,
        wall_s=wall + time.perf_counter() - t0, bar_minutes=int(market.bar_minutes),
        risk_free_rate=float(config.risk_free_rate), target=target)


def timestamps_utc_ns(local_ist: np.ndarray) -> np.ndarray:
    """IST wall-clock datetime64 -> int64 UTC nanoseconds (for timestamp[ns, tz=Asia/Kolkata] columns)."""
    return np.asarray(local_ist, "datetime64[ns]").astype(np.int64) - IST_OFFSET_NS
