"""Shared trainer machinery (DESIGN section 4): rollouts as `lax.scan` over a `vmap` of environments, GAE,
on-device episode statistics, and greedy evaluation. PPO, MoE and MAML all use these; none copies them.

Environment contract (gymnax-style, the jaxtrade env's):

    obs, state = env_reset(key, env_params)
    obs, state, reward, done, info = env_step(key, state, action, env_params)   # auto-resets when done

`info` may carry the finished episode's statistics (valid where `done`): `episode_return`, `episode_length`,
and the trading ones `num_trades`, `wins`, `gross_profit`, `gross_loss`, `max_drawdown`. Missing ones read as
zero; `gymnax_env` adapts a gymnax environment (6-tuple `step`) and tracks return and length itself.

Network contract: `apply_fn(params, obs [..., obs_dim]) -> (logits [..., A], value [...])`.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from jaxtrade.sharding import constrain_batch

ApplyFn = Callable[[Any, jax.Array], tuple[jax.Array, jax.Array]]
ResetFn = Callable[[jax.Array, Any], tuple[jax.Array, Any]]
StepFn = Callable[[jax.Array, Any, jax.Array, Any], tuple[jax.Array, Any, jax.Array, jax.Array, dict]]

# Episode statistics read from `info` (valid where the step ended an episode), with their dtypes.
EPISODE_FIELDS: dict[str, Any] = {
    "episode_return": jnp.float32,
    "episode_length": jnp.int32,
    "num_trades": jnp.int32,
    "wins": jnp.int32,
    "gross_profit": jnp.float32,
    "gross_loss": jnp.float32,
    "max_drawdown": jnp.float32,
}


@struct.dataclass
class Transition:
    """One step of `num_envs` environments; a rollout stacks them to `[T, N, ...]`."""

    obs: jax.Array  # [..., obs_dim] the observation the action was chosen on
    action: jax.Array  # [...] int32
    log_prob: jax.Array  # [...] log pi(action | obs) under the behaviour policy
    value: jax.Array  # [...] V(obs)
    reward: jax.Array  # [...]
    done: jax.Array  # [...] bool: this step ended an episode (the env reset after it)
    episode_return: jax.Array  # [...] the finished episode's statistics, valid where done
    episode_length: jax.Array
    num_trades: jax.Array
    wins: jax.Array
    gross_profit: jax.Array
    gross_loss: jax.Array
    max_drawdown: jax.Array


@struct.dataclass
class RolloutState:
    """What a rollout carries between iterations: the envs' states, their current observations, a key."""

    env_state: Any  # [N, ...] pytree
    obs: jax.Array  # [N, obs_dim]
    key: jax.Array


def _episode_info(info: Mapping[str, Any], like: jax.Array) -> dict[str, jax.Array]:
    return {name: (jnp.asarray(info[name]).astype(dt) if name in info else jnp.zeros(like.shape, dt))
            for name, dt in EPISODE_FIELDS.items()}


def env_steps(iteration: jax.Array, batch_size: int) -> jax.Array:
    """Env steps after `iteration` iterations of `batch_size` steps, as float32: an int32 product wraps
    after 2^31 steps (16,384 iterations of a 131,072-step batch), a float only rounds. Host callbacks get the
    exact count (`agents.base.host_call`)."""
    return iteration.astype(jnp.float32) * jnp.float32(batch_size)


def reset_envs(env_reset: ResetFn, env_params, key: jax.Array, num_envs: int) -> RolloutState:
    """Reset `num_envs` environments with independent keys."""
    key, sub = jax.random.split(key)
    obs, env_state = jax.vmap(env_reset, in_axes=(0, None))(jax.random.split(sub, num_envs), env_params)
    obs, env_state = constrain_batch((obs, env_state))  # parallel episodes over the mesh's devices (if any)
    return RolloutState(env_state=env_state, obs=obs, key=key)


def sample_action(logits: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Categorical sample (Gumbel-max) and its log-probability; one key serves a whole batch of rows."""
    log_p = jax.nn.log_softmax(logits, axis=-1)
    action = jax.random.categorical(key, logits, axis=-1)
    return action.astype(jnp.int32), jnp.take_along_axis(log_p, action[..., None], axis=-1)[..., 0]


def rollout(apply_fn: ApplyFn, params, env_step: StepFn, env_params, runner_state: RolloutState,
            num_steps: int, *, per_env_keys: bool = False) -> tuple[RolloutState, Transition]:
    """Run the stochastic policy for `num_steps` steps in every env: `lax.scan` over a `vmap` of envs.

    Returns the new `RolloutState` and a `Transition` batch `[num_steps, num_envs, ...]`.
    per_env_keys: give each env its own step key (gymnax envs draw their reset states from it); the jaxtrade
    env only hashes the key, so by default one key is shared by all envs (`in_axes=None`), which is cheaper.
    """
    num_envs = runner_state.obs.shape[0]
    if per_env_keys:
        vstep = jax.vmap(env_step, in_axes=(0, 0, 0, None))
    else:
        vstep = jax.vmap(env_step, in_axes=(None, 0, 0, None))

    def one_step(carry: RolloutState, _):
        key, k_act, k_env = jax.random.split(carry.key, 3)
        logits, value = apply_fn(params, carry.obs)
        action, log_prob = sample_action(logits, k_act)
        env_keys = jax.random.split(k_env, num_envs) if per_env_keys else k_env
        obs, env_state, reward, done, info = vstep(env_keys, carry.env_state, action, env_params)
        done = jnp.asarray(done, jnp.bool_)
        obs, env_state = constrain_batch((obs, env_state))
        tr = Transition(obs=carry.obs, action=action, log_prob=log_prob, value=value,
                        reward=jnp.asarray(reward, jnp.float32), done=done, **_episode_info(info, done))
        return RolloutState(env_state=env_state, obs=obs, key=key), tr

    return jax.lax.scan(one_step, runner_state, None, length=num_steps)


def compute_gae(transitions: Transition, last_value: jax.Array, gamma: float, gae_lambda: float
                ) -> tuple[jax.Array, jax.Array]:
    """Generalised advantage estimation over `[T, N]` transitions. `last_value` `[N]` is V of the observation
    after the last step. A done step does not bootstrap (the next observation belongs to a new episode).
    Returns (advantages, value targets = advantages + values), both `[T, N]`."""
    def backward(carry, tr):
        gae, next_value = carry
        not_done = 1.0 - tr.done.astype(jnp.float32)
        delta = tr.reward + gamma * next_value * not_done - tr.value
        gae = delta + gamma * gae_lambda * not_done * gae
        return (gae, tr.value), gae

    init = (jnp.zeros_like(last_value), last_value)
    _, adv = jax.lax.scan(backward, init, (transitions), reverse=True)
    return adv, adv + transitions.value


def linear_baseline(traj: Transition, gamma, ridge: float = 1e-5) -> jax.Array:
    """Values `[T, N]` of a linear feature baseline fitted to this batch's own returns (Duan et al. 2016's
    LinearFeatureBaseline, as Finn et al.'s MAML-RL): features (obs, obs^2, tau, tau^2, tau^3, 1) with tau
    the step's place in the rollout; targets the discounted returns-to-go, cut at episode ends and at the
    rollout's end (the time features let the fit see the cut); ridge regression, `ridge` x rows."""
    T, N = traj.reward.shape
    zeros = jnp.zeros_like(traj.reward)
    returns, _ = compute_gae(traj.replace(value=zeros), jnp.zeros((N,), jnp.float32), gamma, 1.0)
    obs = traj.obs.reshape(T, N, -1).astype(jnp.float32)
    tau = jnp.broadcast_to((jnp.arange(T, dtype=jnp.float32) / T)[:, None, None], (T, N, 1))
    x = jnp.concatenate([obs, obs * obs, tau, tau ** 2, tau ** 3, jnp.ones_like(tau)], -1).reshape(T * N, -1)
    y = returns.reshape(T * N)
    gram = x.T @ x / (T * N) + ridge * jnp.eye(x.shape[1], dtype=x.dtype)
    w = _spd_solve(gram, x.T @ y / (T * N))
    return (x @ w).reshape(T, N)


def _spd_solve(a: jax.Array, b: jax.Array) -> jax.Array:
    """x with a x = b for a symmetric positive definite `a` [k, k]: Gauss-Jordan elimination without pivoting
    (stable for SPD) in elementwise ops, so that a `vmap`ped solve equals the unbatched one bit for bit and a
    device mesh partitions it like any other op (LAPACK's solve did neither: batched rounding differed and the
    custom call hung over 4 CPU devices)."""
    def eliminate(i, ab):
        a, b = ab
        row, bi = a[i] / a[i, i], b[i] / a[i, i]
        col = a[:, i]
        a = (a - col[:, None] * row[None, :]).at[i].set(row)
        b = (b - col * bi).at[i].set(bi)
        return a, b

    return jax.lax.fori_loop(0, a.shape[0], eliminate, (a, b))[1]


def summarise_episodes(ep: Mapping[str, jax.Array] | Transition, done: jax.Array | None = None
                       ) -> dict[str, jax.Array]:
    """Statistics over the finished episodes in a batch of any shape (on device, no history kept).

    `ep` holds the `EPISODE_FIELDS` (a `Transition` or a dict); `done` masks the finished episodes (default
    `ep.done`). Returns scalars: `episodes` (count), `mean_episode_return`, `mean_episode_length`,
    `win_rate` = sum(wins) / sum(num_trades), `profit_factor` = sum(gross_profit) / sum(gross_loss),
    `mean_max_drawdown`, `num_trades` (total). A ratio with a zero denominator is NaN (no episodes, no
    trades, no losing trade), as DESIGN section 7's null.
    """
    get = (lambda k: ep[k]) if isinstance(ep, Mapping) else (lambda k: getattr(ep, k))
    mask = jnp.asarray(get("done") if done is None else done, jnp.bool_)
    m = mask.astype(jnp.float32)
    n = m.sum()

    def total(name):
        return jnp.sum(jnp.where(mask, get(name).astype(jnp.float32), 0.0))

    def ratio(a, b):
        return jnp.where(b > 0, a / jnp.where(b > 0, b, 1.0), jnp.nan)

    trades = total("num_trades")
    return {
        "episodes": n.astype(jnp.int32),
        "mean_episode_return": ratio(total("episode_return"), n),
        "mean_episode_length": ratio(total("episode_length"), n),
        "win_rate": ratio(total("wins"), trades),
        "profit_factor": ratio(total("gross_profit"), total("gross_loss")),
        "mean_max_drawdown": ratio(total("max_drawdown"), n),
        "num_trades": trades.astype(jnp.int32),
    }


def evaluate(apply_fn: ApplyFn, params, env_reset: ResetFn, env_step: StepFn, env_params, key: jax.Array,
             num_episodes: int, max_steps: int = 100_000, *, greedy: bool = True, per_env_keys: bool = False
             ) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
    """Run `num_episodes` parallel episodes to their end (or `max_steps`) with the greedy (argmax) policy,
    or sampled when `greedy=False`. Jit-able (a `lax.while_loop` that stops when all have finished).

    Returns (per-episode arrays `[num_episodes]`: the `EPISODE_FIELDS` plus `finished`, and their summary
    from `summarise_episodes`).
    """
    state = reset_envs(env_reset, env_params, key, num_episodes)
    if per_env_keys:
        vstep = jax.vmap(env_step, in_axes=(0, 0, 0, None))
    else:
        vstep = jax.vmap(env_step, in_axes=(None, 0, 0, None))
    zeros = {name: jnp.zeros((num_episodes,), dt) for name, dt in EPISODE_FIELDS.items()}
    finished = jnp.zeros((num_episodes,), jnp.bool_)

    def cond(carry):
        t, _, fin, _ = carry
        return (t < max_steps) & ~jnp.all(fin)

    def body(carry):
        t, rs, fin, stats = carry
        key, k_act, k_env = jax.random.split(rs.key, 3)
        logits, _ = apply_fn(params, rs.obs)
        if greedy:
            action = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        else:
            action, _ = sample_action(logits, k_act)
        env_keys = jax.random.split(k_env, num_episodes) if per_env_keys else k_env
        obs, env_state, _, done, info = vstep(env_keys, rs.env_state, action, env_params)
        first = jnp.asarray(done, jnp.bool_) & ~fin
        new = _episode_info(info, first)
        stats = {k: jnp.where(first, new[k], stats[k]) for k in stats}
        return t + 1, RolloutState(env_state=env_state, obs=obs, key=key), fin | first, stats

    _, _, finished, stats = jax.lax.while_loop(cond, body, (jnp.int32(0), state, finished, zeros))
    per_episode = dict(stats, finished=finished)
    return per_episode, summarise_episodes(stats, done=finished)


class GymnaxEnv(NamedTuple):
    reset: ResetFn
    step: StepFn


@struct.dataclass
class _LogState:
    env_state: Any
    episode_return: jax.Array
    episode_length: jax.Array


def gymnax_env(env) -> GymnaxEnv:
    """Adapt a gymnax environment to this module's contract: a 5-tuple `step` (done = terminated or
    truncated, as gymnax < 1.0 reported it) whose `info` carries `episode_return` and `episode_length`.
    Use with `per_env_keys=True` (gymnax draws reset states from the step key)."""

    def reset(key, params):
        obs, s = env.reset(key, params)
        return obs, _LogState(env_state=s, episode_return=jnp.zeros((), jnp.float32),
                              episode_length=jnp.zeros((), jnp.int32))

    def step(key, state, action, params):
        out = env.step(key, state.env_state, action, params)
        if len(out) == 6:  # gymnax >= 1.0: (obs, state, reward, terminated, truncated, info)
            obs, s, reward, terminated, truncated, info = out
            done = jnp.logical_or(terminated, truncated)
        else:
            obs, s, reward, done, info = out
        reward = jnp.asarray(reward, jnp.float32)
        ret = state.episode_return + reward
        length = state.episode_length + 1
        info = dict(info, episode_return=ret, episode_length=length)
        new = _LogState(env_state=s, episode_return=jnp.where(done, 0.0, ret),
                        episode_length=jnp.where(done, 0, length))
        return obs, new, reward, done, info

    return GymnaxEnv(reset=reset, step=step)
