"""Stage 1: PPO as a pure JAX/Optax trainer (DESIGN section 4, purejaxrl's and rejax's shape).

    trainer = make_trainer(config, env_params)               # a pytree: env params + hyperparameters as leaves
    state, metrics = jax.jit(trainer.train)(key)             # init + `num_iterations` iterations, one program
    jax.jit(jax.vmap(lambda lr, k: trainer.with_hparams(learning_rate=lr).train(k)))(lrs, keys)   # a sweep

One iteration (`train_iteration`) = a rollout of `num_envs` x `num_steps` env steps (`agents.rollout`), GAE,
then `update_epochs` passes over the batch in shuffled minibatches (clipped surrogate, clipped value loss,
entropy bonus; Adam after `clip_by_global_norm`, optionally with a linearly annealed learning rate). The
iterations are scanned by the shared `agents.base.run`, which also does the logging.

Hyperparameters that do not change shapes (`PPOHParams`: learning rate, gamma, GAE lambda, clip, value and
entropy coefficients, gradient clip, Adam eps) are leaves of the trainer; the optimiser is built from them
inside the program, so a batched learning rate is simply an array. Sizes and counts stay in the static
`PPOConfig`.

The loss is a standalone function, `ppo_loss(params, apply_fn, batch, config, hp)`, with its terms in
`ppo_loss_from_outputs`; a `loss_hook(trainer, params, batch)` replaces it (the MoE stage adds its terms that
way, with its own hyperparameters in `hook_hparams`), and `init_hook(trainer, key)` builds the starting
parameters from `init_from` (the MoE stage starts from the stage-1 policy).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import struct

from jaxtrade.agents import rollout as R
from jaxtrade.agents import shuffle
from jaxtrade.agents.base import TrainerMixin
from jaxtrade.networks import make_network
from jaxtrade.sharding import constrain_batch


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    """PPO hyperparameters; defaults are the seed's `training_params.ppo` (DESIGN section 10)."""

    learning_rate: float = 1e-4  # Adam step size
    minibatch_size: int = 128  # samples per gradient step (the seed's batch_size)
    gamma: float = 0.995  # discount factor per bar
    gae_lambda: float = 0.95  # GAE lambda (bias-variance trade-off of advantages)
    clip_epsilon: float = 0.15  # PPO ratio clip
    update_epochs: int = 6  # passes over each rollout per iteration (the seed's k_epochs)
    ent_coef: float = 0.01  # weight of the entropy bonus
    vf_coef: float = 0.5  # weight of the value loss
    max_grad_norm: float = 0.5  # global-norm gradient clip
    num_envs: int = 64  # parallel episodes per iteration (64 x 128 keeps minibatch 128 affordable on a CPU)
    num_steps: int = 128  # rollout length per iteration
    num_iterations: int = 500  # the seed's "episodes": iterations of one rollout and one update each
    anneal_lr: bool = False  # decay the learning rate linearly to 0 over num_iterations
    hidden_sizes: tuple[int, ...] = (64, 64)  # widths of the actor and critic MLP layers
    activation: str = "tanh"  # hidden-layer activation
    normalize_advantages: bool = True  # normalise advantages per minibatch
    clip_value_loss: bool = True  # clip the value update as the policy's
    adam_eps: float = 1e-5  # Adam epsilon
    early_stopping_patience: int = 0  # stop after P --eval_every evaluations with no better --final_metric (0: never)

    def __post_init__(self):
        object.__setattr__(self, "hidden_sizes", tuple(int(h) for h in self.hidden_sizes))
        for name in ("minibatch_size", "update_epochs", "num_envs", "num_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"PPOConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.num_iterations < 0 or self.early_stopping_patience < 0:
            raise ValueError("PPOConfig.num_iterations and early_stopping_patience must be >= 0")
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

    def hparams(self) -> "PPOHParams":
        """The shape-free hyperparameters as float32 leaves (what a trainer reads and `vmap` sweeps)."""
        return PPOHParams(**{f.name: jnp.float32(getattr(self, f.name)) for f in dataclasses.fields(PPOHParams)})


@struct.dataclass
class PPOHParams:
    """PPO's shape-free hyperparameters: pytree leaves of the trainer, so `jax.vmap` sweeps them (one program)."""

    learning_rate: jax.Array
    gamma: jax.Array
    gae_lambda: jax.Array
    clip_epsilon: jax.Array
    ent_coef: jax.Array
    vf_coef: jax.Array
    max_grad_norm: jax.Array
    adam_eps: jax.Array


@struct.dataclass
class PPOBatch:
    """What the loss reads, `[B, ...]` (or any leading shape)."""

    obs: jax.Array
    action: jax.Array
    log_prob: jax.Array  # behaviour policy's log pi(action | obs)
    value: jax.Array  # behaviour critic's V(obs)
    advantages: jax.Array
    targets: jax.Array  # value targets (advantages + value)


def ppo_loss_from_outputs(logits: jax.Array, value: jax.Array, batch: PPOBatch, config: PPOConfig,
                          hp: PPOHParams | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The PPO objective from the network's outputs on `batch.obs`; `hp` (default `config.hparams()`) gives the
    coefficients, `config` the static switches.

    loss = -mean(min(r A, clip(r, 1-eps, 1+eps) A)) + vf_coef * value_loss - ent_coef * entropy, with
    r = pi(a|s) / pi_old(a|s) and A normalised over the minibatch when `config.normalize_advantages`;
    value_loss = 0.5 * mean(max((V - R)^2, (V_old + clip(V - V_old, -eps, eps) - R)^2)) (unclipped when
    `config.clip_value_loss` is False). aux: policy_loss, value_loss, entropy, approx_kl (the k3 estimator
    mean((r - 1) - log r)), clip_frac (fraction with |r - 1| > eps), total_loss. (The update adds grad_norm,
    the pre-clip gradient's global norm, averaged over minibatches.)
    """
    hp = config.hparams() if hp is None else hp
    eps = hp.clip_epsilon
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

    total = policy_loss + hp.vf_coef * value_loss - hp.ent_coef * entropy
    aux = {
        "policy_loss": policy_loss,
        "value_loss": value_loss,
        "entropy": entropy,
        "approx_kl": jnp.mean((ratio - 1.0) - log_ratio),
        "clip_frac": jnp.mean((jnp.abs(ratio - 1.0) > eps).astype(jnp.float32)),
        "total_loss": total,
    }
    return total, aux


def ppo_loss(params, apply_fn: Callable, batch: PPOBatch, config: PPOConfig, hp: PPOHParams | None = None
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """`ppo_loss_from_outputs` of `apply_fn(params, batch.obs)`; differentiable in `params`."""
    logits, value = apply_fn(params, batch.obs)
    return ppo_loss_from_outputs(logits, value, batch, config, hp)


@struct.dataclass
class PPOState:
    """Everything one training run carries between iterations (and between `run` chunks)."""

    params: Any  # the network's variables {"params": ...}
    opt_state: Any
    rollout: R.RolloutState  # env states, current observations, PRNG key
    iteration: jax.Array  # () int32: iterations completed


@struct.dataclass
class PPO(TrainerMixin):
    """The PPO trainer: `init(key, params=None)` and `train_iteration(state)` (the contract of `agents.base`).
    Build it with `make_trainer`; it sees its config, env params and network, nothing else."""

    env_params: Any
    hparams: PPOHParams
    hook_hparams: Any = None  # the loss hook's own hyperparameters (leaves)
    init_from: Any = None  # parameters `init_hook` starts from (leaves)
    config: PPOConfig = struct.field(pytree_node=False, default=None)
    network: Any = struct.field(pytree_node=False, default=None)
    loss_hook: Callable | None = struct.field(pytree_node=False, default=None)
    init_hook: Callable | None = struct.field(pytree_node=False, default=None)
    env_reset: Callable = struct.field(pytree_node=False, default=None)
    env_step: Callable = struct.field(pytree_node=False, default=None)
    per_env_keys: bool = struct.field(pytree_node=False, default=False)

    @property
    def env_steps_per_iteration(self) -> int:
        return self.config.batch_size

    def apply(self, params, obs):
        """`network.apply(params, obs) -> (logits, value)`, with the hook's network arguments (the MoE gate's
        temperature) when it has them."""
        kwargs = self.hook_hparams.network_kwargs() if hasattr(self.hook_hparams, "network_kwargs") else {}
        return self.network.apply(params, obs, **kwargs)

    def optimizer(self) -> optax.GradientTransformation:
        """Adam after global-norm clipping, from the hyperparameter leaves (traced: a sweep is one program)."""
        cfg, hp = self.config, self.hparams
        lr = hp.learning_rate
        if cfg.anneal_lr:
            lr = optax.linear_schedule(lr, 0.0, max(cfg.num_iterations * cfg.update_epochs * cfg.num_minibatches, 1))
        return optax.chain(optax.clip_by_global_norm(hp.max_grad_norm), optax.adam(lr, eps=hp.adam_eps))

    def loss(self, params, batch: PPOBatch) -> tuple[jax.Array, dict[str, jax.Array]]:
        if self.loss_hook is not None:
            return self.loss_hook(self, params, batch)
        return ppo_loss(params, self.apply, batch, self.config, self.hparams)

    def init_params(self, key: jax.Array):
        if self.init_hook is not None and self.init_from is not None:
            return self.init_hook(self, key)
        obs_shape = jax.eval_shape(self.env_reset, jax.random.key(0), self.env_params)[0]
        return self.network.init(key, jnp.zeros(obs_shape.shape, jnp.float32))

    def params_of(self, state: PPOState):
        return state.params

    def init(self, key: jax.Array, params=None) -> PPOState:
        """A fresh optimiser and envs; the network's initialisation (or `init_hook`) unless `params` are given."""
        k_net, k_env = jax.random.split(key)
        if params is None:
            params = self.init_params(k_net)
        ro = R.reset_envs(self.env_reset, self.env_params, k_env, self.config.num_envs)
        return PPOState(params=params, opt_state=self.optimizer().init(params), rollout=ro, iteration=jnp.int32(0))

    def update(self, params, opt_state, traj: R.Transition, advantages: jax.Array, targets: jax.Array,
               key: jax.Array):
        """`update_epochs` passes of shuffled minibatch steps (a fused `lax.scan`); aux averaged."""
        cfg = self.config
        tx = self.optimizer()
        nb, mb = cfg.num_minibatches, cfg.minibatch_size
        batch = PPOBatch(obs=traj.obs, action=traj.action, log_prob=traj.log_prob, value=traj.value,
                         advantages=advantages, targets=targets)
        flat = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), batch)
        size = flat.action.shape[0]
        grad_fn = jax.value_and_grad(self.loss, has_aux=True)

        def minibatch_step(carry, mbatch: PPOBatch):
            p, s = carry
            (_, aux), grads = grad_fn(p, mbatch)
            updates, s = tx.update(grads, s, p)
            # the global norm is what the clip computes anyway; the run's fault check reads it
            return (optax.apply_updates(p, updates), s), dict(aux, grad_norm=optax.global_norm(grads))

        def epoch(carry, _):
            p, s, key = carry
            key, k_perm = jax.random.split(key)
            perm = shuffle.permutation(k_perm, size)[: nb * mb]
            mbs = jax.tree.map(lambda x: jnp.take(x, perm, axis=0, mode="clip", unique_indices=True)
                               .reshape((nb, mb) + x.shape[1:]), flat)
            mbs = constrain_batch(mbs, axis=1)  # each minibatch over the mesh's devices (if any): data parallel
            (p, s), aux = jax.lax.scan(minibatch_step, (p, s), mbs)
            return (p, s, key), aux

        (params, opt_state, _), aux = jax.lax.scan(epoch, (params, opt_state, key), None, length=cfg.update_epochs)
        return params, opt_state, jax.tree.map(jnp.mean, aux)

    def train_iteration(self, state: PPOState) -> tuple[PPOState, dict[str, jax.Array]]:
        """One rollout + GAE + update. Returns the new state and this iteration's metrics (scalars)."""
        cfg, hp = self.config, self.hparams
        key, k_update = jax.random.split(state.rollout.key)
        ro, traj = R.rollout(self.apply, state.params, self.env_step, self.env_params, state.rollout.replace(key=key),
                             cfg.num_steps, per_env_keys=self.per_env_keys)
        _, last_value = self.apply(state.params, ro.obs)
        advantages, targets = R.compute_gae(traj, last_value, hp.gamma, hp.gae_lambda)
        params, opt_state, aux = self.update(state.params, state.opt_state, traj, advantages, targets, k_update)
        it = state.iteration + 1
        metrics = {"iteration": it, "env_steps": R.env_steps(it, cfg.batch_size),
                   "batch_size": jnp.int32(cfg.batch_size)}
        metrics.update(R.summarise_episodes(traj))
        eps = metrics["episodes"].astype(jnp.float32)
        metrics["trades_per_episode"] = jnp.where(
            eps > 0, metrics["num_trades"].astype(jnp.float32) / jnp.maximum(eps, 1.0), jnp.nan)
        metrics["mean_reward"] = traj.reward.mean()
        metrics.update(aux)
        return PPOState(params=params, opt_state=opt_state, rollout=ro, iteration=it), metrics


def make_trainer(config: PPOConfig, env_params, network=None, *, env_reset: R.ResetFn | None = None,
                 env_step: R.StepFn | None = None, per_env_keys: bool = False, loss_hook: Callable | None = None,
                 hook_hparams: Any = None, init_from: Any = None, init_hook: Callable | None = None) -> PPO:
    """Build a `PPO` trainer. `network`: any Flax module with the `(logits, value)` contract (default: the
    actor-critic MLP of `config`); `env_reset` / `env_step`: another environment (default jaxtrade's);
    `per_env_keys`: one step key per env (gymnax envs draw their resets from it)."""
    if env_reset is None or env_step is None:
        from jaxtrade import env as trading_env
        env_reset = env_reset or trading_env.reset
        env_step = env_step or trading_env.step
    if network is None:
        num_actions = getattr(env_params, "num_actions", None)
        if num_actions is None:
            raise ValueError("make_trainer: pass `network` (env_params has no num_actions)")
        network = make_network(num_actions, config.hidden_sizes, config.activation)
    return PPO(env_params=env_params, hparams=config.hparams(), hook_hparams=hook_hparams, init_from=init_from,
               config=config, network=network, loss_hook=loss_hook, init_hook=init_hook, env_reset=env_reset,
               env_step=env_step, per_env_keys=per_env_keys)
