"""Stage 1: PPO as a pure JAX/Optax trainer (DESIGN section 4, purejaxrl's shape).

    train = make_train(config, env_params)            # -> train(key) -> (train_state, metrics)
    train_state, metrics = jax.jit(train)(key)         # or jax.jit(jax.vmap(train))(keys) over seeds

One iteration = a rollout of `num_envs` x `num_steps` env steps (`agents.rollout.rollout`), GAE, then
`update_epochs` passes over the batch in shuffled minibatches (clipped surrogate, clipped value loss, entropy
bonus; Adam after `clip_by_global_norm`, optionally with a linearly annealed learning rate). The iterations
are a `lax.scan`; nothing leaves the device inside an iteration except, every `log_every` iterations, one
`jax.debug.callback` with that iteration's metrics.

For the sequence runner (chunks, checkpoints, starting from given parameters) `make_trainer` exposes the same
code path in pieces: `trainer.init(key, params=None)` and `trainer.run(runner_state, n)`, both jitted; `run`
compiles once per distinct `n`. `train(key)` is `run(init(key), config.num_iterations)`.

The loss is a standalone function, `ppo_loss(params, apply_fn, batch, config) -> (loss, aux)`, with its
terms in `ppo_loss_from_outputs(logits, value, batch, config)`, so that the MoE stage can call it and add its
own terms; `make_trainer(..., loss_fn=...)` takes any function with `ppo_loss`'s signature.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax import struct
from flax.training.train_state import TrainState

from jaxtrade.agents import rollout as R
from jaxtrade.agents import shuffle
from jaxtrade.networks import make_network


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    """PPO hyperparameters; defaults are the seed's `training_params.ppo` (DESIGN section 10)."""

    learning_rate: float = 1e-4
    minibatch_size: int = 128  # the seed's `batch_size`
    gamma: float = 0.995
    gae_lambda: float = 0.95
    clip_epsilon: float = 0.15
    update_epochs: int = 6  # the seed's `k_epochs`
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    num_envs: int = 64  # parallel episodes per iteration; 64 x 128 keeps the seed's minibatch 128 affordable on a CPU
    num_steps: int = 128  # rollout length per iteration
    num_iterations: int = 500  # the seed's "episodes": one rollout + one update each
    anneal_lr: bool = False  # linear decay to 0 over num_iterations
    hidden_sizes: tuple[int, ...] = (64, 64)
    activation: str = "tanh"
    normalize_advantages: bool = True  # per minibatch
    clip_value_loss: bool = True
    adam_eps: float = 1e-5
    log_every: int = 10  # iterations between host callbacks (0 = never)

    def __post_init__(self):
        object.__setattr__(self, "hidden_sizes", tuple(int(h) for h in self.hidden_sizes))
        for name in ("minibatch_size", "update_epochs", "num_envs", "num_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"PPOConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.num_iterations < 0 or self.log_every < 0:
            raise ValueError("PPOConfig.num_iterations and log_every must be >= 0")
        if not self.learning_rate > 0:
            raise ValueError(f"PPOConfig.learning_rate must be > 0, got {self.learning_rate}")
        if not 0 < self.gamma <= 1 or not 0 <= self.gae_lambda <= 1 or not self.clip_epsilon > 0:
            raise ValueError(f"PPOConfig: need 0 < gamma <= 1, 0 <= gae_lambda <= 1, clip_epsilon > 0 (got gamma "
                             f"{self.gamma}, gae_lambda {self.gae_lambda}, clip_epsilon {self.clip_epsilon})")
        if self.minibatch_size > self.batch_size:
            raise ValueError(f"PPOConfig.minibatch_size={self.minibatch_size} exceeds the rollout batch "
                             f"num_envs x num_steps = {self.batch_size}")

    @property
    def batch_size(self) -> int:
        """Env steps per iteration."""
        return self.num_envs * self.num_steps

    @property
    def num_minibatches(self) -> int:
        """Minibatches per epoch; a remainder of the shuffled batch is left out of that epoch."""
        return self.batch_size // self.minibatch_size

    def replace(self, **changes) -> "PPOConfig":
        return dataclasses.replace(self, **changes)


@struct.dataclass
class PPOBatch:
    """What the loss reads, `[B, ...]` (or any leading shape)."""

    obs: jax.Array
    action: jax.Array
    log_prob: jax.Array  # behaviour policy's log pi(action | obs)
    value: jax.Array  # behaviour critic's V(obs)
    advantages: jax.Array
    targets: jax.Array  # value targets (advantages + value)


LossFn = Callable[[Any, Callable, PPOBatch, PPOConfig], tuple[jax.Array, dict[str, jax.Array]]]


def ppo_loss_from_outputs(logits: jax.Array, value: jax.Array, batch: PPOBatch, config: PPOConfig
                          ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The PPO objective from the network's outputs on `batch.obs`.

    loss = -mean(min(r A, clip(r, 1-eps, 1+eps) A)) + vf_coef * value_loss - ent_coef * entropy, with
    r = pi(a|s) / pi_old(a|s) and A normalised over the minibatch when `config.normalize_advantages`;
    value_loss = 0.5 * mean(max((V - R)^2, (V_old + clip(V - V_old, -eps, eps) - R)^2)) (unclipped when
    `config.clip_value_loss` is False). aux: policy_loss, value_loss, entropy, approx_kl (the k3 estimator
    mean((r - 1) - log r)), clip_frac (fraction with |r - 1| > eps), total_loss.
    """
    eps = config.clip_epsilon
    log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    new_log_prob = jnp.take_along_axis(log_p, batch.action[..., None].astype(jnp.int32), axis=-1)[..., 0]
    entropy = -jnp.sum(jnp.exp(log_p) * log_p, axis=-1).mean()

    adv = batch.advantages
    if config.normalize_advantages:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    log_ratio = new_log_prob - batch.log_prob
    ratio = jnp.exp(log_ratio)
    surrogate = jnp.minimum(ratio * adv, jnp.clip(ratio, 1.0 - eps, 1.0 + eps) * adv)
    policy_loss = -surrogate.mean()

    value_err = jnp.square(value - batch.targets)
    if config.clip_value_loss:
        v_clipped = batch.value + jnp.clip(value - batch.value, -eps, eps)
        value_err = jnp.maximum(value_err, jnp.square(v_clipped - batch.targets))
    value_loss = 0.5 * value_err.mean()

    total = policy_loss + config.vf_coef * value_loss - config.ent_coef * entropy
    aux = {
        "policy_loss": policy_loss,
        "value_loss": value_loss,
        "entropy": entropy,
        "approx_kl": jnp.mean((ratio - 1.0) - log_ratio),
        "clip_frac": jnp.mean((jnp.abs(ratio - 1.0) > eps).astype(jnp.float32)),
        "total_loss": total,
    }
    return total, aux


def ppo_loss(params, apply_fn: Callable, batch: PPOBatch, config: PPOConfig
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """`ppo_loss_from_outputs` of `apply_fn(params, batch.obs)`; differentiable in `params`."""
    logits, value = apply_fn(params, batch.obs)
    return ppo_loss_from_outputs(logits, value, batch, config)


@struct.dataclass
class RunnerState:
    """Everything one training run carries between iterations (and between `run` chunks)."""

    train_state: TrainState  # params, opt_state, step (gradient updates so far)
    rollout: R.RolloutState  # env states, current observations, PRNG key
    iteration: jax.Array  # () int32: iterations completed


# ---------------------------------------------------------------------------------------------------------
# Host-side logging


class LogCallback:
    """Default host callback: one absl log line per call, with env steps/s from wall time between calls."""

    def __init__(self, name: str = "ppo", total_iterations: int | None = None):
        self.name = name
        self.total = total_iterations
        self._last: tuple[float, float] | None = None

    def __call__(self, metrics: Mapping[str, np.ndarray]) -> None:
        m = {k: float(np.mean(np.asarray(v))) for k, v in metrics.items()}
        now = time.perf_counter()
        rate = ""
        if self._last is not None and m["env_steps"] > self._last[1] and now > self._last[0]:
            rate = f" | {(m['env_steps'] - self._last[1]) / (now - self._last[0]):,.0f} steps/s"
        self._last = (now, m["env_steps"])
        total = f"/{self.total}" if self.total else ""
        logging.info("%s it %d%s | steps %d%s | return %.4g (%d eps) | win %.3f pf %.3f | pi %.4f v %.4f "
                     "ent %.3f kl %.4f clip %.3f", self.name, m["iteration"], total, m["env_steps"], rate,
                     m["mean_episode_return"], m["episodes"], m["win_rate"], m["profit_factor"],
                     m["policy_loss"], m["value_loss"], m["entropy"], m["approx_kl"], m["clip_frac"])


# ---------------------------------------------------------------------------------------------------------
# The trainer


class PPOTrainer:
    """PPO in jitted pieces. Build with `make_trainer`.

    init(key, params=None) -> RunnerState       fresh optimiser; network init unless `params` are given
    run(runner_state, num_iterations) -> (RunnerState, metrics {name: [num_iterations]})
    train(key, env_params=None) -> (TrainState, metrics)    pure, un-jitted: jit / vmap it yourself

    `init_fn(key, params, env_params)` and `run_fn(runner_state, env_params, num_iterations)` are the pure
    (un-jitted) versions, for composing into bigger programs (vmap over seeds or symbols).
    """

    def __init__(self, config: PPOConfig, env_params, network: nn.Module | None = None, *,
                 env_reset: R.ResetFn | None = None, env_step: R.StepFn | None = None,
                 per_env_keys: bool = False, loss_fn: LossFn = ppo_loss,
                 callback: Callable[[dict[str, np.ndarray]], None] | None | str = "default"):
        if env_reset is None or env_step is None:
            from jaxtrade import env as trading_env
            env_reset = env_reset or trading_env.reset
            env_step = env_step or trading_env.step
        if network is None:
            num_actions = getattr(env_params, "num_actions", None)
            if num_actions is None:
                raise ValueError("make_trainer: pass `network` (env_params has no num_actions)")
            network = make_network(num_actions, config.hidden_sizes, config.activation)
        self.config = config
        self.env_params = env_params
        self.network = network
        self.env_reset = env_reset
        self.env_step = env_step
        self.per_env_keys = per_env_keys
        self.loss_fn = loss_fn
        if callback == "default":
            callback = LogCallback(total_iterations=config.num_iterations)
        self.callback = callback
        self.tx = self.make_optimizer(config)
        self._init_jit = jax.jit(self.init_fn)
        self._run_jit = jax.jit(self.run_fn, static_argnums=2)

    # -- pieces ------------------------------------------------------------------------------------------
    @staticmethod
    def make_optimizer(config: PPOConfig) -> optax.GradientTransformation:
        if config.anneal_lr:
            total = max(config.num_iterations * config.update_epochs * config.num_minibatches, 1)
            lr = optax.linear_schedule(config.learning_rate, 0.0, total)
        else:
            lr = config.learning_rate
        return optax.chain(optax.clip_by_global_norm(config.max_grad_norm),
                           optax.adam(lr, eps=config.adam_eps))

    def apply_fn(self, params, obs):
        return self.network.apply(params, obs)

    def init_params(self, key: jax.Array, env_params=None):
        env_params = self.env_params if env_params is None else env_params
        obs_shape = jax.eval_shape(self.env_reset, jax.random.key(0), env_params)[0]
        return self.network.init(key, jnp.zeros(obs_shape.shape, jnp.float32))

    def init_fn(self, key: jax.Array, params, env_params) -> RunnerState:
        k_net, k_env = jax.random.split(key)
        if params is None:
            params = self.init_params(k_net, env_params)
        ts = TrainState.create(apply_fn=self.apply_fn, params=params, tx=self.tx)
        ro = R.reset_envs(self.env_reset, env_params, k_env, self.config.num_envs)
        return RunnerState(train_state=ts, rollout=ro, iteration=jnp.int32(0))

    def update(self, train_state: TrainState, traj: R.Transition, advantages: jax.Array, targets: jax.Array,
               key: jax.Array) -> tuple[TrainState, dict[str, jax.Array]]:
        """`update_epochs` passes of shuffled minibatch steps (a fused `lax.scan`); aux averaged."""
        cfg = self.config
        nb, mb = cfg.num_minibatches, cfg.minibatch_size
        batch = PPOBatch(obs=traj.obs, action=traj.action, log_prob=traj.log_prob, value=traj.value,
                         advantages=advantages, targets=targets)
        flat = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), batch)
        size = flat.action.shape[0]
        grad_fn = jax.value_and_grad(self.loss_fn, has_aux=True)

        def minibatch_step(ts: TrainState, mbatch: PPOBatch):
            (_, aux), grads = grad_fn(ts.params, ts.apply_fn, mbatch, cfg)
            return ts.apply_gradients(grads=grads), aux

        def epoch(carry, _):
            ts, key = carry
            key, k_perm = jax.random.split(key)
            perm = shuffle.permutation(k_perm, size)[: nb * mb]
            mbs = jax.tree.map(lambda x: jnp.take(x, perm, axis=0, mode="clip", unique_indices=True)
                               .reshape((nb, mb) + x.shape[1:]), flat)
            ts, aux = jax.lax.scan(minibatch_step, ts, mbs)
            return (ts, key), aux

        (train_state, _), aux = jax.lax.scan(epoch, (train_state, key), None, length=cfg.update_epochs)
        return train_state, jax.tree.map(jnp.mean, aux)

    def iteration(self, rs: RunnerState, env_params, log_now: jax.Array | bool = False
                  ) -> tuple[RunnerState, dict[str, jax.Array]]:
        """One rollout + GAE + update. Returns the new state and this iteration's metrics (scalars)."""
        cfg = self.config
        ts = rs.train_state
        key, k_update = jax.random.split(rs.rollout.key)
        ro, traj = R.rollout(ts.apply_fn, ts.params, self.env_step, env_params, rs.rollout.replace(key=key),
                             cfg.num_steps, per_env_keys=self.per_env_keys)
        _, last_value = ts.apply_fn(ts.params, ro.obs)
        advantages, targets = R.compute_gae(traj, last_value, cfg.gamma, cfg.gae_lambda)
        ts, aux = self.update(ts, traj, advantages, targets, k_update)
        it = rs.iteration + 1
        metrics = {"iteration": it, "env_steps": R.env_steps(it, cfg.batch_size),
                   "batch_size": jnp.int32(cfg.batch_size)}
        metrics.update(R.summarise_episodes(traj))
        metrics["mean_reward"] = traj.reward.mean()
        metrics.update(aux)
        if self.callback is not None and cfg.log_every > 0:
            host = R.host_call(self.callback)
            jax.lax.cond(log_now, lambda m: jax.debug.callback(host, m), lambda m: None, metrics)
        return RunnerState(train_state=ts, rollout=ro, iteration=it), metrics

    def run_fn(self, runner_state: RunnerState, env_params, num_iterations: int
               ) -> tuple[RunnerState, dict[str, jax.Array]]:
        """`num_iterations` iterations as one `lax.scan`; metrics stacked to `[num_iterations]`."""
        every = max(self.config.log_every, 1)
        n = int(num_iterations)

        def body(rs, i):
            # The scan index, not the (possibly batched) iteration counter, decides when to log, so the
            # predicate stays unbatched under vmap.
            log_now = ((i + 1) % every == 0) | (i == n - 1)
            return self.iteration(rs, env_params, log_now)

        return jax.lax.scan(body, runner_state, jnp.arange(n, dtype=jnp.int32))

    # -- jitted entry points -----------------------------------------------------------------------------
    def init(self, key: jax.Array, params=None) -> RunnerState:
        return self._init_jit(key, params, self.env_params)

    def run(self, runner_state: RunnerState, num_iterations: int | None = None
            ) -> tuple[RunnerState, dict[str, jax.Array]]:
        n = self.config.num_iterations if num_iterations is None else int(num_iterations)
        return self._run_jit(runner_state, self.env_params, n)

    def train(self, key: jax.Array, env_params=None) -> tuple[TrainState, dict[str, jax.Array]]:
        env_params = self.env_params if env_params is None else env_params
        rs = self.init_fn(key, None, env_params)
        # The barrier keeps XLA from fusing initialisation into the first iteration, so that `train(key)`
        # gives bit-for-bit the result of `run(init(key), n)` (and of the same run in chunks).
        rs = jax.lax.optimization_barrier(rs)
        rs, metrics = self.run_fn(rs, env_params, self.config.num_iterations)
        return rs.train_state, metrics


def make_trainer(config: PPOConfig, env_params, network: nn.Module | None = None, **kwargs) -> PPOTrainer:
    """Build a `PPOTrainer`. kwargs: env_reset, env_step (default: jaxtrade.env's), per_env_keys, loss_fn,
    callback (a function of a dict of numpy metrics; "default" logs with absl; None disables)."""
    return PPOTrainer(config, env_params, network, **kwargs)


def make_train(config: PPOConfig, env_params, network: nn.Module | None = None, **kwargs
               ) -> Callable[..., tuple[TrainState, dict[str, jax.Array]]]:
    """`train(key, env_params=None) -> (train_state, metrics)`: pure, one `jit`, `vmap`-able over seeds (and
    over stacked env params). Same kwargs as `make_trainer`.

    Pass `env_params` as an argument for large markets: `jax.jit(train)(key, env_params)`, or over seeds
    `jax.jit(jax.vmap(train, in_axes=(0, None)))(keys, env_params)`. A closed-over market is embedded in the
    compiled program as a constant: slower to compile, and XLA may fold it into float rounding slightly
    different from `trainer.run`'s."""
    return make_trainer(config, env_params, network, **kwargs).train
