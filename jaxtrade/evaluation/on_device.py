"""The gate's metrics of a greedy policy over a whole split, on device: one jitted `lax.scan` of the environment's
own `step` (the backtester's episode: the split as one episode, the same start bar, the same fills), with the
metrics taken from `jaxtrade.metrics`' formulas run in `jax.numpy` (docs/metrics.md). What early stopping
(`--eval_every`) calls every K iterations: no host round trip per bar, no float64.

    evaluator = SplitEvaluator(env_params, session_of_bar, lo_bar, hi_bar, risk_free_rate)   # or .for_split(...)
    metrics = evaluator(network, params)            # {"sharpe": 1.2, "win_rate": 0.41, ...} (None: undefined)

Precision: training data is float32. Trade statistics are the environment's; daily returns are each session's
summed bar PnL over the equity at the previous session's close (so a daily return is not the small difference of
two large float32 balances); drawdown is taken on the running equity. Against the float64 backtester on the same
policy the metrics agree to about 1e-4 relative (tests/test_early_stopping.py).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxtrade import env as E, metrics as M

# The metrics returned (and what `--final_metric` may name).
KEYS = ("sharpe", "sortino", "total_return", "cagr", "calmar", "max_drawdown", "win_rate", "profit_factor",
        "num_trades")


def _greedy(network, params, obs):
    out = network.apply(params, obs)
    logits = out[0] if isinstance(out, (tuple, list)) else out
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("network", "num_steps", "num_sessions"))
def split_metrics(network, params, env_params: E.EnvParams, step_session: jax.Array, risk_free: jax.Array, *,
                  num_steps: int, num_sessions: int) -> dict[str, jax.Array]:
    """The metrics (NaN for null) of `network`'s greedy policy over `env_params`' split as one episode.

    env_params: a whole-split episode (`env.env_params(..., whole_split=True)`); step_session [num_steps] int32:
    the split-relative session of the bar each step lands on (step i: bar lo + 1 + i); risk_free: the per-session
    rate. Shapes are static: one compilation per network structure and split length."""
    obs, state = E.reset_to(env_params, jnp.uint32(0))
    key = jax.random.key(0)  # the environment only hashes it to draw the next episode, which never comes

    def body(carry, _):
        obs, state = carry
        obs, state, _, done, info = E.step(key, state, _greedy(network, params, obs), env_params)
        return (obs, state), (info["pnl"], info["equity"], done, {k: info[k] for k in (
            "num_trades", "wins", "gross_profit", "gross_loss")})

    _, (pnl, equity, done, stats) = jax.lax.scan(body, (obs, state), None, length=num_steps)
    cap = env_params.initial_capital.astype(jnp.float32)
    pnl = pnl.astype(jnp.float32)
    session_pnl = jax.ops.segment_sum(pnl, step_session, num_segments=num_sessions)
    closes = cap + jnp.cumsum(session_pnl)
    daily = session_pnl / jnp.concatenate([cap[None], closes[:-1]])
    final = closes[-1]
    mdd = M.max_drawdown(equity.astype(jnp.float32), cap, xp=jnp)
    cagr = M.cagr(final, cap, num_sessions, xp=jnp)
    last = {k: v[-1] for k, v in stats.items()}
    return {
        "sharpe": M.sharpe(daily, xp=jnp, risk_free=risk_free),
        "sortino": M.sortino(daily, xp=jnp, risk_free=risk_free),
        "total_return": M.total_return(final, cap, xp=jnp),
        "cagr": cagr,
        "calmar": M.calmar(cagr, mdd, xp=jnp),
        "max_drawdown": mdd,
        "win_rate": M.win_rate(last["wins"], last["num_trades"], xp=jnp),
        "profit_factor": M.profit_factor(last["gross_profit"], last["gross_loss"], xp=jnp),
        "num_trades": last["num_trades"],
        "episode_done": done[-1],
    }


class SplitEvaluator:
    """`evaluator(network, params) -> {metric: float or None}` over one split (see the module docstring).
    `params` may carry leading axes given by `batch_dims` (e.g. stacked seeds): then each metric is a list."""

    def __init__(self, env_params: E.EnvParams, session: np.ndarray, lo_bar: int, hi_bar: int,
                 risk_free_rate: float = 0.0):
        self.env_params = env_params
        self.num_steps = int(hi_bar - lo_bar - 1)
        if self.num_steps < 1:
            raise ValueError("SplitEvaluator: the split has a single bar")
        s = np.asarray(session)[lo_bar + 1:hi_bar]
        self.num_sessions = int(np.asarray(session)[hi_bar - 1] - np.asarray(session)[lo_bar] + 1)
        self.step_session = jnp.asarray(s - int(np.asarray(session)[lo_bar]), jnp.int32)
        self.risk_free = jnp.float32(M.daily_risk_free(risk_free_rate))

    @classmethod
    def for_split(cls, env_config: E.EnvConfig, market, split: str, risk_free_rate: float = 0.0) -> "SplitEvaluator":
        """The evaluator of `market`'s `split` under `env_config` (through `env.env_params`, the one path)."""
        lo, hi = market.split_bars(split)
        return cls(E.env_params(env_config, market, split, whole_split=True), np.asarray(market.data.session), lo, hi,
                   risk_free_rate)

    def raw(self, network, params, batch_dims: int = 0) -> dict[str, jax.Array]:
        fn = functools.partial(split_metrics, network, num_steps=self.num_steps, num_sessions=self.num_sessions)
        call = lambda p: fn(p, self.env_params, self.step_session, self.risk_free)  # noqa: E731
        for _ in range(batch_dims):
            call = jax.vmap(call)
        return call(params)

    def __call__(self, network, params, batch_dims: int = 0) -> dict[str, Any]:
        out = jax.device_get(self.raw(network, params, batch_dims))
        if not bool(np.all(out.pop("episode_done"))):
            raise AssertionError("the evaluation episode did not reach the split's end")
        return {k: M.to_python(v) for k, v in out.items()}
