"""The trading environment (DESIGN section 3): pure functions over `flax.struct` dataclasses, gymnax-style.

    obs, state = reset(key, params)
    obs, state, reward, done, info = step(key, state, action, params)

Timing: the agent sees bar t's close and picks a target position in lots, `action - max_lots` in
{-max_lots .. +max_lots}. The order fills at bar t+1's open plus slippage (against the trader), and the
position is marked to market at bar t+1's close. Intraday by default: a position still open at a session's
last bar is squared off at that bar's close (plus slippage and costs), so every session ends flat; with a
square-off time, bars from that time on force the target to flat (filled at their open). An episode is one or
more whole sessions sampled from a split; `step` resets automatically when an episode ends, and `info` keeps
the finished episode's statistics and its last observation. An action outside [0, 2 max_lots] is clipped to
the nearest target. An episode of a single one-bar session has no next bar: its one step stays on that bar,
flat, and ends the episode (it never fills on the next session's bar).

Money: PnL is computed as price differences times quantity (never as differences of large cash balances), so
float32 training stays accurate; the backtester enables x64 and the same code runs in float64.
Reward: the change in equity over the bar, net of costs, divided by the initial capital.

Per-bar work is kept to a handful of gathers; what only matters at a reset (drawing the next session) uses a
cheap integer hash of the step key and the env's own counter instead of a per-step threefry draw.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxtrade import contracts
from jaxtrade.costs import CostParams, order_cost
from jaxtrade.data import Market
from jaxtrade.errors import InputError
from jaxtrade.features import FEATURE_NAMES

LAST_BAR = 1  # bar_flags bit: the last bar of its session
MUST_BE_FLAT = 2  # bar_flags bit: at or after the square-off time: no position may be held into this bar

POSITION_FEATURES = ("position", "unrealised_pnl_pct")
OBS_NAMES = FEATURE_NAMES + POSITION_FEATURES


@struct.dataclass
class EnvParams:
    """Everything `step` reads. Array leaves can be stacked and `vmap`ped (per symbol, regime, task)."""

    open: jax.Array  # [T] bar open
    close: jax.Array  # [T] bar close
    features: jax.Array  # [T, F] scaled causal features (float32)
    bar_flags: jax.Array  # [T] int32 bitmask: LAST_BAR, MUST_BE_FLAT
    lot_size: jax.Array  # [T] units per lot in force at each bar
    session_start: jax.Array  # [S] int32 first bar of each session
    session_end: jax.Array  # [S] int32 last bar of each session (inclusive)
    split_lo: jax.Array  # () int32: first session episodes may start from
    split_hi: jax.Array  # () int32: end (exclusive) of the split's sessions
    episode_sessions: jax.Array  # () int32: sessions per episode
    initial_capital: jax.Array  # () rupees
    slippage: jax.Array  # () price points per unit, against the trader
    allow_overnight: jax.Array  # () bool: keep positions across sessions
    costs: CostParams
    max_lots: int = struct.field(pytree_node=False, default=1)

    @property
    def num_actions(self) -> int:
        return 2 * self.max_lots + 1

    @property
    def obs_dim(self) -> int:
        return self.features.shape[-1] + len(POSITION_FEATURES)


@struct.dataclass
class EnvState:
    t: jax.Array  # () int32: the bar whose close the agent has just seen
    end: jax.Array  # () int32: the episode's last bar
    lots: jax.Array  # () int32: signed lots held
    units: jax.Array  # () signed units held (lots x lot size at the fill)
    entry_price: jax.Array  # () average entry price of the open position
    cash: jax.Array  # ()
    equity: jax.Array  # () cash + units x close
    peak_equity: jax.Array  # ()
    max_drawdown: jax.Array  # () max of 1 - equity / peak so far, a positive fraction
    trade_pnl: jax.Array  # () net PnL of the open round trip so far (costs included)
    num_trades: jax.Array  # () int32: closed round trips this episode
    wins: jax.Array  # () int32: closed round trips with net PnL > 0
    gross_profit: jax.Array  # () sum of positive round-trip net PnL
    gross_loss: jax.Array  # () sum of |negative round-trip net PnL|
    total_costs: jax.Array  # ()
    episode_return: jax.Array  # () sum of rewards this episode
    episode_length: jax.Array  # () int32: steps this episode
    rng: jax.Array  # () uint32: the env's own counter for drawing the next episode


def parse_square_off_time(text: str, flag: str = "--square_off_time") -> _dt.time:
    """"HH:MM" (IST wall clock) -> time; else an InputError naming `flag`."""
    try:
        hh, mm = (int(x) for x in text.split(":"))
        return _dt.time(hh, mm)
    except ValueError:
        raise InputError(f"{flag}: expected HH:MM (IST), got {text!r}") from None


def make_params(market: Market, split: str = "train", *, cost_params: CostParams | None = None,
                lot_size: int | float | None = None, dated_lots: bool = False, slippage_ticks: float = 0.0,
                tick_size: float = contracts.TICK_SIZE, max_lots: int = 1, initial_capital: float = 100_000.0,
                episode_sessions: int | None = 1, allow_overnight: bool = False,
                square_off_time: str | _dt.time | None = None) -> EnvParams:
    """Build `EnvParams` for one symbol and split.

    lot_size: units per lot (default: the symbol's current NSE contract; 1 for an unknown symbol);
    dated_lots: use the dated NSE schedule so each session trades the lot size then in force.
    episode_sessions: sessions per episode; None = the whole split as one episode (backtesting).
    square_off_time: "HH:MM" IST; positions are flat in bars starting at or after it.
    """
    if split not in market.splits:
        raise InputError(f"--split: unknown split {split!r} (choose from {', '.join(market.splits)})")
    if max_lots < 1:
        raise InputError(f"--max_lots must be >= 1, got {max_lots}")
    lo, hi = market.splits[split]
    n_sessions = hi - lo
    episode_sessions = n_sessions if episode_sessions is None else int(episode_sessions)
    if not 1 <= episode_sessions <= n_sessions:
        raise InputError(f"--episode_sessions={episode_sessions}: the {split} split of {market.symbol} has "
                         f"{n_sessions} sessions")
    price_dtype = market.data.close.dtype
    n = market.num_bars
    if dated_lots and lot_size is None:
        per_session = contracts.lot_sizes_for_dates(market.symbol, market.session_dates)
        lots = (np.ones(n) if per_session is None else per_session[np.asarray(market.data.session)])
    else:
        size = lot_size if lot_size is not None else contracts.lot_size(market.symbol)
        if size is None:
            size = 1.0
        if size <= 0:
            raise InputError(f"--lot_size must be positive, got {size}")
        lots = np.full(n, float(size))
    flags = np.zeros(n, np.int32)
    flags[np.asarray(market.data.session_end)] |= LAST_BAR
    if square_off_time:
        if isinstance(square_off_time, str):
            square_off_time = parse_square_off_time(square_off_time)
        cutoff = square_off_time.hour * 60 + square_off_time.minute
        flags[market.minute_of_day >= cutoff] |= MUST_BE_FLAT
    return EnvParams(
        open=market.data.open, close=market.data.close, features=market.data.features,
        bar_flags=jnp.asarray(flags), lot_size=jnp.asarray(lots, price_dtype),
        session_start=market.data.session_start, session_end=market.data.session_end,
        split_lo=jnp.int32(lo), split_hi=jnp.int32(hi), episode_sessions=jnp.int32(episode_sessions),
        initial_capital=jnp.asarray(initial_capital, price_dtype),
        slippage=jnp.asarray(slippage_ticks * tick_size, price_dtype),
        allow_overnight=jnp.asarray(bool(allow_overnight)),
        costs=jax.tree.map(lambda x: jnp.asarray(x, price_dtype), cost_params or CostParams()),
        max_lots=int(max_lots))


def stack_params(params_list: list[EnvParams]) -> EnvParams:
    """Stack several symbols' params on a leading axis for `vmap`, padding bars and sessions (never recompile
    per symbol). Padding repeats the last bar; episodes never reach it because they end at session ends."""
    if len({p.max_lots for p in params_list}) != 1:
        raise InputError("all symbols in one run must share max_lots")
    t_max = max(p.close.shape[0] for p in params_list)
    s_max = max(p.session_start.shape[0] for p in params_list)

    def pad(p: EnvParams) -> EnvParams:
        def pad_to(x, size):
            extra = size - x.shape[0]
            if extra == 0:
                return x
            return jnp.concatenate([x, jnp.repeat(x[-1:], extra, axis=0)], axis=0)

        bar_fields = dict(open=pad_to(p.open, t_max), close=pad_to(p.close, t_max),
                          features=pad_to(p.features, t_max), bar_flags=pad_to(p.bar_flags, t_max),
                          lot_size=pad_to(p.lot_size, t_max))
        return p.replace(**bar_fields, session_start=pad_to(p.session_start, s_max),
                         session_end=pad_to(p.session_end, s_max))

    padded = [pad(p) for p in params_list]
    return jax.tree.map(lambda *xs: jnp.stack(xs), *padded)


def _mix32(x):
    """murmur3's 32-bit finaliser: a cheap, well-mixed integer hash."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x85EBCA6B)
    x = x ^ (x >> 13)
    x = x * jnp.uint32(0xC2B2AE35)
    return x ^ (x >> 16)


def _key_bits(key) -> jax.Array:
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    flat = key.reshape(-1).astype(jnp.uint32)
    return flat[0] ^ _mix32(flat[-1] + jnp.uint32(0x9E3779B9))


def _episode_bounds(params: EnvParams, rng):
    """First and last bar of the episode that `rng` picks among the split's valid start sessions."""
    n_starts = (params.split_hi - params.split_lo - params.episode_sessions + 1).astype(jnp.uint32)
    first = params.split_lo + (rng % jnp.maximum(n_starts, 1)).astype(jnp.int32)
    last = first + params.episode_sessions - 1
    return params.session_start[first], params.session_end[last]


def _fresh_state(params: EnvParams, start, end, rng) -> EnvState:
    dt = params.close.dtype
    zero = jnp.zeros((), dt)
    cap = params.initial_capital.astype(dt)
    return EnvState(t=start, end=end, lots=jnp.int32(0), units=zero, entry_price=zero, cash=cap, equity=cap,
                    peak_equity=cap, max_drawdown=zero, trade_pnl=zero, num_trades=jnp.int32(0),
                    wins=jnp.int32(0), gross_profit=zero, gross_loss=zero, total_costs=zero,
                    episode_return=jnp.zeros((), jnp.float32), episode_length=jnp.int32(0),
                    rng=rng.astype(jnp.uint32))


def _observation(params: EnvParams, t, lots, units, entry_price, close) -> jax.Array:
    """`[F + 2]` float32: the bar's features, the position as a fraction of max_lots, and the unrealised PnL
    in percent of initial capital."""
    upnl = units * (close - entry_price) / params.initial_capital * 100.0
    extra = jnp.stack([lots.astype(jnp.float32) / params.max_lots, upnl.astype(jnp.float32)])
    return jnp.concatenate([params.features[t], extra])


def reset_to(params: EnvParams, rng) -> tuple[jax.Array, EnvState]:
    """Reset to the episode picked by the uint32 `rng` (deterministic; the backtester's entry point)."""
    rng = jnp.asarray(rng, jnp.uint32)
    start, end = _episode_bounds(params, rng)
    state = _fresh_state(params, start, end, rng)
    zero = jnp.zeros((), params.close.dtype)
    return _observation(params, start, state.lots, zero, zero, zero), state


def reset(key: chex.PRNGKey, params: EnvParams) -> tuple[jax.Array, EnvState]:
    rng = jax.random.bits(key, (), jnp.uint32)
    return reset_to(params, rng)


def step(key: chex.PRNGKey, state: EnvState, action: jax.Array, params: EnvParams
         ) -> tuple[jax.Array, EnvState, jax.Array, jax.Array, dict[str, Any]]:
    """One bar. `action` in [0, 2 * max_lots] (clipped). Returns (obs [F+2], state, reward, done, info)."""
    dt = params.close.dtype
    # An episode of one one-bar session (start == end) has no next bar: its single step stays on that bar, flat.
    past_end = state.t >= state.end
    t1 = jnp.minimum(state.t + 1, state.end)
    c0 = params.close[state.t]
    o1 = params.open[t1]
    c1 = params.close[t1]
    flags = params.bar_flags[t1]
    lot = params.lot_size[t1]

    # 1. The order placed at bar t's close fills at bar t+1's open. An action outside [0, 2 max_lots] is clipped
    # (a position never exceeds max_lots).
    must_be_flat = ((flags & MUST_BE_FLAT) != 0) | past_end
    target_lots = jnp.where(must_be_flat, 0,
                            jnp.clip(jnp.asarray(action, jnp.int32), 0, 2 * params.max_lots) - params.max_lots)
    target_units = target_lots.astype(dt) * lot
    old_units = state.units
    qty = target_units - old_units
    fill = o1 + params.slippage * jnp.sign(qty)
    cost_open = order_cost(params.costs, qty, fill)

    # Split the bar's PnL at the fill: the old position earns up to the fill, the new one after it.
    pnl_old = old_units * (fill - c0)
    pnl_new = target_units * (c1 - fill)
    was_open = old_units != 0
    is_open = target_units != 0
    closes = was_open & (~is_open | (jnp.sign(target_units) != jnp.sign(old_units)))
    opens = is_open & (~was_open | closes)
    abs_qty = jnp.maximum(jnp.abs(qty), jnp.finfo(dt).tiny)
    cost_closing = jnp.where(closes, cost_open * jnp.minimum(jnp.abs(old_units) / abs_qty, 1.0), 0.0)
    closed_pnl_1 = state.trade_pnl + pnl_old - cost_closing
    trade_pnl = jnp.where(opens, pnl_new - (cost_open - cost_closing),
                          jnp.where(is_open, state.trade_pnl + pnl_old + pnl_new - cost_open, 0.0))
    adding = is_open & (~was_open | closes | (jnp.abs(target_units) > jnp.abs(old_units)))
    entry_price = jnp.where(
        opens, fill,
        jnp.where(adding, (state.entry_price * jnp.abs(old_units) + fill * jnp.abs(qty))
                  / jnp.maximum(jnp.abs(target_units), jnp.finfo(dt).tiny), state.entry_price))
    cash = state.cash - qty * fill - cost_open
    pnl = pnl_old + pnl_new - cost_open

    # 2. Square-off at this bar's close: the episode's last bar, and every session's last bar when intraday.
    session_last = (flags & LAST_BAR) != 0
    done = t1 >= state.end
    square = (session_last & ~params.allow_overnight) | done
    qty_sq = jnp.where(square, -target_units, 0.0)
    fill_sq = c1 + params.slippage * jnp.sign(qty_sq)
    cost_sq = order_cost(params.costs, qty_sq, fill_sq)
    pnl_sq = qty_sq * (c1 - fill_sq) - cost_sq
    closes_sq = square & is_open
    closed_pnl_2 = trade_pnl + pnl_sq
    pnl = pnl + pnl_sq
    cash = cash - qty_sq * fill_sq - cost_sq
    units = target_units + qty_sq
    lots = jnp.where(square, 0, target_lots)
    trade_pnl = jnp.where(closes_sq, 0.0, trade_pnl)
    costs = cost_open + cost_sq

    # 3. Episode statistics on device.
    def tally(closed, value, n, w, gp, gl):
        return (n + closed.astype(jnp.int32), w + (closed & (value > 0)).astype(jnp.int32),
                gp + jnp.where(closed & (value > 0), value, 0.0), gl + jnp.where(closed & (value < 0), -value, 0.0))

    n, w, gp, gl = tally(closes, closed_pnl_1, state.num_trades, state.wins, state.gross_profit, state.gross_loss)
    n, w, gp, gl = tally(closes_sq, closed_pnl_2, n, w, gp, gl)
    equity = state.equity + pnl
    peak = jnp.maximum(state.peak_equity, equity)
    drawdown = jnp.maximum(state.max_drawdown, 1.0 - equity / peak)
    reward = (pnl / params.initial_capital).astype(jnp.float32)
    stepped = EnvState(t=t1, end=state.end, lots=lots, units=units, entry_price=entry_price, cash=cash,
                       equity=equity, peak_equity=peak, max_drawdown=drawdown, trade_pnl=trade_pnl,
                       num_trades=n, wins=w, gross_profit=gp, gross_loss=gl,
                       total_costs=state.total_costs + costs, episode_return=state.episode_return + reward,
                       episode_length=state.episode_length + 1, rng=state.rng)

    # 4. Auto-reset: draw the next episode from a cheap hash (no threefry per step).
    next_rng = _mix32(state.rng ^ _key_bits(key))
    reset_start, reset_end = _episode_bounds(params, next_rng)
    fresh = _fresh_state(params, reset_start, reset_end, next_rng)
    new_state = jax.tree.map(lambda a, b: jnp.where(done, a, b), fresh, stepped)
    obs = _observation(params, new_state.t, new_state.lots, new_state.units, new_state.entry_price,
                       jnp.where(done, 0.0, c1).astype(dt))

    info = {
        # per step (the backtester's ledger)
        "bar": t1, "position": lots, "fill_price": fill, "costs": costs, "pnl": pnl, "cash": cash,
        "equity": equity, "closed_trades": closes.astype(jnp.int32) + closes_sq.astype(jnp.int32),
        # the finished episode (valid where done)
        "returned_episode": done, "episode_return": stepped.episode_return,
        "episode_length": stepped.episode_length, "num_trades": n, "wins": w, "gross_profit": gp,
        "gross_loss": gl, "max_drawdown": drawdown, "final_equity": equity, "total_costs": stepped.total_costs,
        "terminal_obs": _observation(params, t1, lots, units, entry_price, c1),
    }
    return obs, new_state, reward, done, info
