"""Market rules: `EnvConfig` (every setting that changes how the market trades) and the ONE path from it to the
environment's `EnvParams`, `env_params(config, market, split)` (DESIGN sections 1 and 3). Training, gates, the
report, backtests, adaptation and benchmarks all build their params through it; `make_params` is the
low-level constructor behind it (explicit values; tests use it directly).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxtrade import contracts
from jaxtrade.costs import COST_MODELS, CostModel, CostParams, cost_model
from jaxtrade.data import Market, check_split_fractions, load_market
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


def parse_square_off_time(text: str, flag: str = "--square_off_time") -> _dt.time:
    """"HH:MM" (IST wall clock) -> time; else an InputError naming `flag`."""
    try:
        hh, mm = (int(x) for x in text.split(":"))
        return _dt.time(hh, mm)
    except ValueError:
        raise InputError(f"{flag}: expected HH:MM (IST), got {text!r}") from None


@dataclasses.dataclass(frozen=True)
class EnvConfig:
    """Every setting that changes how the market trades. `env_params(config, market, split)` is the one path
    from these settings to `EnvParams`: training, gates, reports, backtests, adaptation and benchmarks all use
    it, and every model records the whole config (`to_dict`) so that it is judged under the rules it trained
    with. Flags: `--env.<field>` in the sequence, the bare names in `run_backtest.py` and `experiments.adapt`."""

    cost_model: str = "nse_futures"  # transaction-cost model (bps: cost_bps of turnover; nse_*: NSE charges and taxes)
    cost_bps: float = 1.0  # basis points of turnover charged per fill with cost_model=bps
    slippage_ticks: float = 1.0  # slippage per fill in 0.05 ticks, against the trader
    lot_size: float = 0.0  # units per lot; 0: the symbol's current NSE lot size
    dated_lots: bool = False  # trade the lot size in force on each session's date
    max_lots: int = 1  # largest position in lots (actions -max_lots .. +max_lots)
    # Rs 20 lakh: about one lot's contract value (NSE sets it at Rs 15-20 lakh), so one lot is ~1x leverage.
    # The seed's Rs 1 lakh cannot even margin one NIFTY lot; run_backtest.py keeps it as its default.
    initial_capital: float = 2_000_000.0  # starting equity in rupees
    episode_sessions: int = 1  # sessions per training episode (an evaluation runs its whole split as one)
    allow_overnight: bool = False  # keep positions across sessions (default: squared off at each session's last bar)
    square_off_time: str = ""  # HH:MM IST from which bars are forced flat (empty: the session's last bar)
    split_fractions: tuple[float, ...] = (0.70, 0.15, 0.15)  # train, validation, test shares of the sessions

    def __post_init__(self):
        """Checked when the flags are read, before any data is loaded or a run folder is made; the errors
        name the sequence's flag (`--env.cost_model`); other commands check their own spellings first."""
        object.__setattr__(self, "split_fractions", tuple(float(f) for f in self.split_fractions))
        if self.cost_model not in COST_MODELS:
            raise InputError(f"--env.cost_model: unknown cost model {self.cost_model!r} (choose from "
                             f"{', '.join(COST_MODELS)})")
        for name in ("cost_bps", "slippage_ticks", "lot_size"):
            if not getattr(self, name) >= 0:  # also refuses NaN
                raise InputError(f"--env.{name} must be >= 0, got {getattr(self, name)}")
        if self.max_lots < 1:
            raise InputError(f"--env.max_lots must be >= 1, got {self.max_lots}")
        if not self.initial_capital > 0:
            raise InputError(f"--env.initial_capital must be positive, got {self.initial_capital}")
        if self.episode_sessions < 1:
            raise InputError(f"--env.episode_sessions must be >= 1, got {self.episode_sessions}")
        if self.square_off_time:
            parse_square_off_time(self.square_off_time, "--env.square_off_time")
        check_split_fractions(self.split_fractions, "--env.split_fractions")

    def replace(self, **changes) -> "EnvConfig":
        return dataclasses.replace(self, **changes)

    def describe(self) -> str:
        """One line for reports and notices."""
        cost = f"bps {self.cost_bps:g}" if self.cost_model == "bps" else self.cost_model
        lots = f"lot {self.lot_size:g}" if self.lot_size else ("dated NSE lots" if self.dated_lots else "current NSE lot")
        session = "overnight allowed" if self.allow_overnight else (
            f"flat from {self.square_off_time}" if self.square_off_time else "intraday")
        return (f"cost {cost}, slippage {self.slippage_ticks:g} tick(s), {lots}, max lots {self.max_lots}, capital "
                f"{self.initial_capital:,.0f}, {session}, splits {'/'.join(f'{f:g}' for f in self.split_fractions)}, "
                f"{self.episode_sessions}-session episodes")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON (what `.pth` configs and Orbax metadata record under "env_config")."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "env_config") -> "EnvConfig":
        """Inverse of `to_dict`. Fields it lacks keep their defaults (older files); a field this version does not
        know is an error: its rule would be silently dropped."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise InputError(f"{where}: unknown market setting(s) {', '.join(unknown)} (written by a newer jaxtrade?)")
        kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()}
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as e:
            raise InputError(f"{where}: {str(e).splitlines()[0]}") from None


def market_for(config: EnvConfig, processed_dir, symbol: str, *, price_dtype=None) -> Market:
    """`data.load_market` with the config's split fractions (they set the splits and the feature scaler)."""
    return load_market(processed_dir, symbol, split_fractions=config.split_fractions, price_dtype=price_dtype)


def cost_model_for(config: EnvConfig, market: Market, split: str) -> CostModel:
    """The config's cost model with the rates in force at the split's first session (STT changes by budget)."""
    lo, _ = market.splits[split]
    return cost_model(config.cost_model, bps=config.cost_bps, as_of=market.session_dates[lo].astype(object))


def env_params(config: EnvConfig, market: Market, split: str, *, whole_split: bool = False) -> EnvParams:
    """THE path from settings to market rules: `EnvParams` of `market`'s `split` under `config`.

    whole_split: the split as one episode (backtests, gates, reports), else episodes of
    `config.episode_sessions` sessions (training, adaptation). `market` must have been split with
    `config.split_fractions` (load it with `market_for`)."""
    if tuple(market.split_fractions) != config.split_fractions:
        raise ValueError(f"{market.symbol}: the market was split {list(market.split_fractions)} but the config says "
                         f"{list(config.split_fractions)}; load it with env.market_for(config, ...)")
    if split not in market.splits:
        raise InputError(f"--split: unknown split {split!r} (choose from {', '.join(market.splits)})")
    return make_params(market, split, cost_params=cost_model_for(config, market, split).params,
                       lot_size=config.lot_size or None, dated_lots=config.dated_lots,
                       slippage_ticks=config.slippage_ticks, max_lots=config.max_lots,
                       initial_capital=config.initial_capital,
                       episode_sessions=None if whole_split else config.episode_sessions,
                       allow_overnight=config.allow_overnight, square_off_time=config.square_off_time or None)


def make_params(market: Market, split: str = "train", *, cost_params: CostParams | None = None,
                lot_size: int | float | None = None, dated_lots: bool = False, slippage_ticks: float = 0.0,
                tick_size: float = contracts.TICK_SIZE, max_lots: int = 1, initial_capital: float = 100_000.0,
                episode_sessions: int | None = 1, allow_overnight: bool = False,
                square_off_time: str | _dt.time | None = None) -> EnvParams:
    """The low-level constructor behind `env_params` (explicit values, any `CostParams`; tests use it directly).
    Commands and the pipeline never call it: they build params from an `EnvConfig` through `env_params`.

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
