"""Glue between the property and extreme-market tests and the library: one place to port when `env.step`'s
`info`, `EnvParams` construction or the backtester's API change (issue 11).

    scenario = Scenario(...)                          # prices, session lengths, actions, lots, costs, ...
    market = load_scenario(directory, scenario)       # through the processed-Parquet loader
    params = scenario_params(market, scenario)        # env.make_params
    ledger = run_episode(params, scenario.actions)    # one whole-split episode, per-step numpy ledger
    ref = reference_replay(scenario)                  # an independent float64 numpy replay of the same money
    result = backtest_scenario(market64, scenario)    # the float64 backtester playing the same actions

Shapes are fixed by the caller (bars, sessions), so `run_episode` compiles once per (dtype, max_lots).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxtrade import backtest as B, data, env, policies as P
from jaxtrade.contracts import TICK_SIZE
from jaxtrade.costs import CostParams, cost_model
from tests.market_fixtures import timestamps_for_sessions, write_processed

SYMBOL = "PROP_5"
BAR_MINUTES = 5
FIRST_DAY = "2024-01-01"
SESSION_OPEN_MIN = 9 * 60 + 15


@dataclasses.dataclass(frozen=True)
class Scenario:
    """One drawn market and trading plan. Bars T = len(close), sessions S = len(lengths)."""

    open: np.ndarray  # [T] float64, on the tick grid
    high: np.ndarray  # [T]
    low: np.ndarray  # [T]
    close: np.ndarray  # [T]
    lengths: tuple[int, ...]  # [S] bars per session, each >= 1, summing to T
    actions: np.ndarray  # [T - 1] int: action at bar t's close (may lie outside [0, 2 * max_lots])
    max_lots: int = 1
    lot_size: float = 1.0
    costs: CostParams | str = "zero"  # explicit rates, or a cost model name (rates as of FIRST_DAY)
    slippage_ticks: float = 0.0
    initial_capital: float = 100_000.0
    square_off: str | None = None  # "HH:MM"
    allow_overnight: bool = False
    volume: np.ndarray | None = None

    @property
    def num_bars(self) -> int:
        return len(self.close)

    @property
    def cost_params(self) -> CostParams:
        if isinstance(self.costs, str):
            return cost_model(self.costs, as_of=_dt.date.fromisoformat(FIRST_DAY)).params
        return self.costs

    @property
    def cost_name(self) -> str:
        return self.costs if isinstance(self.costs, str) else "explicit"


# ------------------------------------------------------------------------------------------ building

def load_scenario(directory, scenario: Scenario, price_dtype=None) -> data.Market:
    """Write the scenario as a processed Parquet file and load it with `data.load_market`."""
    ts = timestamps_for_sessions(scenario.lengths, BAR_MINUTES, FIRST_DAY)
    write_processed(directory, SYMBOL, scenario.open, scenario.high, scenario.low, scenario.close, ts,
                    volume=scenario.volume, bar_minutes=BAR_MINUTES)
    return data.load_market(directory, SYMBOL, price_dtype=price_dtype)


def scenario_params(market: data.Market, scenario: Scenario, *, split: str = "all",
                    episode_sessions: int | None = None) -> env.EnvParams:
    """EnvParams for the scenario (default: the whole market as one episode, as the backtester runs it)."""
    return env.make_params(market, split, cost_params=scenario.cost_params, lot_size=scenario.lot_size,
                           slippage_ticks=scenario.slippage_ticks, max_lots=scenario.max_lots,
                           initial_capital=scenario.initial_capital, episode_sessions=episode_sessions,
                           allow_overnight=scenario.allow_overnight, square_off_time=scenario.square_off)


# ------------------------------------------------------------------------------------------ running

LEDGER_FIELDS = ("bar", "position", "fill_price", "costs", "pnl", "cash", "equity")
EPISODE_STATS = ("num_trades", "wins", "gross_profit", "gross_loss", "total_costs", "final_equity", "max_drawdown")


def _step_record(state, new_state, reward, done, info):
    rec = {k: info[k] for k in LEDGER_FIELDS + EPISODE_STATS}
    rec["episode_end"] = state.end  # the last bar of the episode this step belongs to
    # Units held after the bar (the state is already reset where done; a done bar always ends flat).
    rec["units"] = jnp.where(done, jnp.zeros_like(new_state.units), new_state.units)
    rec["reward"] = reward
    rec["done"] = done
    rec["t"] = new_state.t
    return rec


@jax.jit
def _scan_episode(params: env.EnvParams, actions: jax.Array):
    _, state = env.reset_to(params, jnp.uint32(0))

    def body(state, action):
        _, new_state, reward, done, info = env.step(jax.random.key(0), state, action, params)
        return new_state, _step_record(state, new_state, reward, done, info)

    return jax.lax.scan(body, state, actions)[1]


def run_episode(params: env.EnvParams, actions) -> dict[str, np.ndarray]:
    """Step the episode that `reset_to(params, 0)` starts with `actions` ([N] int). Per-step numpy arrays:
    bar, position (lots after the bar), units, fill_price, costs, pnl, cash, equity, reward, done, and the
    episode statistics (valid where done)."""
    out = _scan_episode(params, jnp.asarray(actions, jnp.int32))
    return {k: np.asarray(v) for k, v in jax.device_get(out).items()}


def training_run(params: env.EnvParams, reset_key: jax.Array, step_keys: jax.Array, actions: jax.Array):
    """A training-style rollout (pure, vmap-able): `env.reset(key)`, then `env.step` with auto-reset.
    Returns per-step records (as `run_episode`, as arrays) of `len(actions)` steps."""
    _, state = env.reset(reset_key, params)

    def body(state, x):
        key, action = x
        _, new_state, reward, done, info = env.step(key, state, action, params)
        return new_state, _step_record(state, new_state, reward, done, info)

    return jax.lax.scan(body, state, (step_keys, actions))[1]


# ------------------------------------------------------------------------------------------ backtester

def _scripted_act(key, obs):
    # The scripted action rides in feature column 0 (see `backtest_scenario`).
    del key
    return obs[0].astype(jnp.int32)


SCRIPTED = P.Policy("scripted", _scripted_act, description="plays the scenario's action list")


def backtest_scenario(market: data.Market, scenario: Scenario, bootstrap_resamples: int = 20) -> B.BacktestResult:
    """The float64 backtester (`backtest.backtest`, split "all") playing `scenario.actions`: the decision at
    bar t's close reads action[t] from feature column 0 of the observation. `market` has float64 prices."""
    if not isinstance(scenario.costs, str):
        raise ValueError("the backtester takes a cost model by name")
    feats = np.array(market.data.features)
    feats[:, 0] = 0.0
    feats[: len(scenario.actions), 0] = scenario.actions
    scripted = dataclasses.replace(market, data=market.data.replace(features=jnp.asarray(feats, jnp.float32)))
    config = B.BacktestConfig(split="all", cost_model=scenario.costs, slippage_ticks=scenario.slippage_ticks,
                              lot_size=scenario.lot_size, allow_overnight=scenario.allow_overnight,
                              initial_capital=scenario.initial_capital, max_lots=scenario.max_lots,
                              cost_as_of=_dt.date.fromisoformat(FIRST_DAY),
                              bootstrap_resamples=bootstrap_resamples)
    return B.backtest(scripted, SCRIPTED, config)


# ------------------------------------------------------------------------------------------ reference

def reference_order_cost(c: CostParams, qty: float, price: float) -> float:
    """Charges for one order, written out from the rate definitions of `CostParams` (float64, no JAX)."""
    if qty == 0:
        return 0.0
    value = abs(qty) * price
    buy, sell = (value, 0.0) if qty > 0 else (0.0, value)
    brokerage = min(float(c.brokerage_rate) * value, float(c.brokerage_cap)) + float(c.brokerage_per_order)
    exchange = (float(c.exchange_txn_rate) + float(c.ipft_rate)) * value
    sebi = float(c.sebi_rate) * value
    taxes = float(c.stt_sell_rate) * sell + float(c.stt_buy_rate) * buy + float(c.stamp_buy_rate) * buy
    return brokerage + exchange + sebi + taxes + float(c.gst_rate) * (brokerage + exchange + sebi)


def bar_facts(scenario: Scenario):
    """Per bar, from the scenario alone: (last bar of its session, must be flat, session index)."""
    lengths = np.asarray(scenario.lengths)
    ends = np.cumsum(lengths) - 1
    last = np.zeros(scenario.num_bars, bool)
    last[ends] = True
    session = np.repeat(np.arange(len(lengths)), lengths)
    within = np.arange(scenario.num_bars) - np.repeat(ends - lengths + 1, lengths)
    minute = SESSION_OPEN_MIN + BAR_MINUTES * within
    if scenario.square_off:
        hh, mm = (int(x) for x in scenario.square_off.split(":"))
        must_flat = minute >= hh * 60 + mm
    else:
        must_flat = np.zeros(scenario.num_bars, bool)
    return last, must_flat, session


def reference_replay(scenario: Scenario) -> dict:
    """The whole market as one episode from bar 0, replayed in float64 with plain loops: the order for bar
    t+1 is the action at t's close (clipped to +-max_lots, flat where must-be-flat), filled at t+1's open
    +- slippage; a session's last bar (intraday) and the final bar square off at the close +- slippage.
    Equity is cash + units x close. Round trips: from flat back to flat, or up to a sign flip, whose order
    cost is shared in proportion |units closed| / |units ordered|."""
    last, must_flat, _ = bar_facts(scenario)
    costs = scenario.cost_params
    slip = scenario.slippage_ticks * TICK_SIZE
    lot = float(scenario.lot_size)
    n = scenario.num_bars
    cash, units = float(scenario.initial_capital), 0.0
    rows = {k: [] for k in ("bar", "target_lots", "lots", "units", "cash", "equity", "costs")}
    trips: list[float] = []
    trip = [None]  # net PnL of the open round trip

    def order(q, price, cost):
        nonlocal units
        if q == 0:
            return
        new = units + q
        if units == 0:
            trip[0] = -q * price - cost
        elif new != 0 and np.sign(new) != np.sign(units):
            share = abs(units) / abs(q)
            trips.append(trip[0] + units * price - cost * share)
            trip[0] = -new * price - cost * (1.0 - share)
        else:
            trip[0] += -q * price - cost
            if new == 0:
                trips.append(trip[0])
                trip[0] = None
        units = new

    for t1 in range(1, n):
        lots = int(np.clip(int(scenario.actions[t1 - 1]) - scenario.max_lots, -scenario.max_lots, scenario.max_lots))
        if must_flat[t1]:
            lots = 0
        q = lots * lot - units
        fill = float(scenario.open[t1]) + slip * np.sign(q)
        c1 = reference_order_cost(costs, q, fill)
        cash -= q * fill + c1
        order(q, fill, c1)
        c2 = 0.0
        if ((last[t1] and not scenario.allow_overnight) or t1 == n - 1) and units != 0:
            q2 = -units
            fill2 = float(scenario.close[t1]) + slip * np.sign(q2)
            c2 = reference_order_cost(costs, q2, fill2)
            cash -= q2 * fill2 + c2
            order(q2, fill2, c2)
        rows["bar"].append(t1)
        rows["target_lots"].append(lots)
        rows["lots"].append(int(round(units / lot)))
        rows["units"].append(units)
        rows["cash"].append(cash)
        rows["equity"].append(cash + units * float(scenario.close[t1]))
        rows["costs"].append(c1 + c2)
    out = {k: np.asarray(v) for k, v in rows.items()}
    out["trips"] = np.asarray(trips, np.float64)
    return out


def examples(n: int):
    """`@examples(n)`: n examples under the `ci` profile (tests/conftest.py), 10 n under `explore`."""
    from hypothesis import settings
    scale = 10 if os.environ.get("HYPOTHESIS_PROFILE") == "explore" else 1
    return settings(max_examples=n * scale)
