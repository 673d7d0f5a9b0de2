"""Stage 3: MAML meta-learning with a grad-of-grad meta-update (DESIGN section 4).

The core is loss-agnostic, so the same code meta-learns a trading policy and the sinusoid regression of
Finn et al. (2017) in the tests:

    adapted, inner_losses = adapt(params, task, inner_loss_fn, inner_lr, inner_steps)
    loss, grads, aux = maml_step(meta_params, tasks, inner_loss_fn, outer_loss_fn, inner_lr, inner_steps,
                                 first_order=False)

`inner_loss_fn(params, task) -> scalar`; `outer_loss_fn(adapted_params, task) -> scalar` (or `(scalar, aux)`
with `has_aux=True`); `tasks` is a pytree with a leading task axis (`vmap`ped). The inner loop is
`inner_steps` plain SGD steps in a `lax.scan` (each step under `jax.checkpoint` when `remat`), and the meta-loss
is differentiated through it: `jax.grad` of a function that itself calls `jax.grad` (second order).
`first_order=True` wraps the inner gradients in `jax.lax.stop_gradient` (first-order MAML).

Trading tasks. A task is a (symbol, time window) pair: a window of `window_sessions` consecutive sessions
inside the training split (drawn uniformly per task and meta-iteration), whose first `support_fraction` is the
support range and the rest the query range. Both are the symbol's `EnvParams` with `split_lo`/`split_hi` set
to the sub-range, so tasks are `vmap`ped over those two scalars only (one compilation, no copies of the bars).

Per task and meta-iteration:
  1. support rollout: `support_num_envs` x `support_num_steps` steps with the META-parameters (collected once,
     before adaptation; not re-collected between inner steps), GAE with the meta critic;
  2. inner loop: `inner_loop_steps` SGD steps (`inner_learning_rate`) on the PPO surrogate (`ppo.ppo_loss`:
     clipped ratio against the meta-policy's log-probabilities, value loss, entropy) of that fixed support
     batch; the clipped ratio keeps the repeated steps on one batch a trust region;
  3. query rollout: `query_num_envs` x `query_num_steps` steps under the ADAPTED parameters (stop-gradient:
     sampling is not differentiated), GAE with the adapted critic;
  4. outer loss: `ppo.ppo_loss` of the adapted parameters on the query batch (ratio 1 at the behaviour policy,
     so its gradient is the clipped-PPO policy gradient at the adapted parameters), chained back through the
     inner updates to the meta-parameters: params -> inner updates -> adapted params -> query loss.
The dependence of the support data's distribution on the meta-parameters is not differentiated (as in Finn et
al.'s MAML-RL; no DiCE/ProMP correction). A pre-adaptation query rollout with the same key (same episode
starts, common random numbers) gives the `query_return_pre` metric beside `query_return_post`.
The meta-gradient is averaged over `meta_batch_size` tasks (`vmap`) and applied with Adam
(`meta_learning_rate`, after `clip_by_global_norm(max_grad_norm)`).

Held-out evaluation (`evaluate_adaptation`): windows of a later split (validation by default) of the trained
symbol and, when there is one, of a symbol the model never trained on; per task the support rollout uses the
task's first sessions, the policy is adapted for `inner_loop_steps` steps, and episodes on the query sessions
are run after k = 0..K steps with the same keys (paired). The improvement (after K - before) per episode gets
a seeded 95% percentile-bootstrap interval; the adaptation speed is the smallest k whose mean improvement
reaches 90% of the final one.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax import struct

from jaxtrade.agents import rollout as R
from jaxtrade.agents.ppo import PPOBatch, PPOConfig, ppo_loss


# ---------------------------------------------------------------------------------------------------------
# Configs


@dataclasses.dataclass(frozen=True)
class MAMLConfig:
    """MAML stage settings; defaults are the seed's `training_params.maml` and `stage_3_maml` (DESIGN 10).

    evaluation_steps: the seed's key, read here as the number of held-out tasks (time windows per held-out
      symbol) that `evaluate_adaptation` and the gate use. Adaptation at evaluation uses `inner_loop_steps`.
    window_sessions: sessions per task window (clipped to the split's length); `support_fraction` of them
      (rounded, at least `episode_sessions`) are the support range, the rest the query range.
    """

    meta_learning_rate: float = 5e-4
    inner_loop_steps: int = 7
    evaluation_steps: int = 5
    meta_batch_size: int = 2
    num_iterations: int = 150  # the seed's stage_3_maml.meta_iterations
    inner_learning_rate: float = 0.1  # plain SGD in the inner loop (0.01 barely moves a fresh policy)
    first_order: bool = False  # stop_gradient on inner gradients (first-order MAML)
    remat: bool = True  # jax.checkpoint on each inner step (memory ~ constant in inner steps)
    inner_grad_clip: float = 1.0  # global-norm clip of each inner gradient (0: none)
    inner_clip_epsilon: float = 0.0  # ratio clip of the inner surrogate (0: unclipped importance-weighted PG)
    max_grad_norm: float = 0.5  # global-norm clip of the meta-gradient before Adam
    # Rollouts per task. Second-order MAML through 7 inner steps of the 4-expert network is compute-bound:
    # 16 x 64 samples keep a meta-iteration to a few seconds on a 2-core CPU; raise them on a GPU.
    support_num_envs: int = 16
    support_num_steps: int = 64
    query_num_envs: int = 16
    query_num_steps: int = 64
    window_sessions: int = 20
    support_fraction: float = 0.5
    eval_episodes: int = 32  # query episodes per held-out task and adaptation step
    eval_greedy: bool = False  # evaluate the sampled policy (paired keys) or its argmax
    bootstrap_resamples: int = 2000
    cross_symbol: str = ""  # held-out symbol for the gate ("": the first other processed symbol, if any)
    seed: int = 0  # evaluation keys and bootstrap
    log_every: int = 10

    def __post_init__(self):
        for name in ("inner_loop_steps", "evaluation_steps", "num_iterations"):
            if getattr(self, name) < 0:
                raise ValueError(f"MAMLConfig.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("meta_batch_size", "support_num_envs", "support_num_steps", "query_num_envs",
                     "query_num_steps", "window_sessions", "eval_episodes"):
            if getattr(self, name) < 1:
                raise ValueError(f"MAMLConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 < self.support_fraction < 1.0:
            raise ValueError(f"MAMLConfig.support_fraction must be in (0, 1), got {self.support_fraction}")
        if self.log_every < 0:
            raise ValueError("MAMLConfig.log_every must be >= 0")

    def replace(self, **changes) -> "MAMLConfig":
        return dataclasses.replace(self, **changes)

    def support_query_sessions(self, window: int, episode_sessions: int = 1) -> tuple[int, int]:
        """(support sessions, query sessions) of a window of `window` sessions."""
        n_sup = int(round(window * self.support_fraction))
        n_sup = min(max(n_sup, episode_sessions), window - episode_sessions)
        if n_sup < episode_sessions or window - n_sup < episode_sessions:
            raise ValueError(f"a task window of {window} sessions cannot hold support and query ranges of "
                             f"{episode_sessions}-session episodes")
        return n_sup, window - n_sup


@dataclasses.dataclass(frozen=True)
class MAMLGateConfig:
    """Stage-3 success criteria (DESIGN section 10), checked on held-out tasks.

    Main criterion: mean episode return after adaptation minus before, on the held-out tasks, has a 95%
    bootstrap interval above zero (`require_improvement_ci`).
    min_adaptation_speed: the seed's name for a MAXIMUM: inner steps needed to reach `speed_fraction` of the
      final adapted improvement must be <= this.
    min_cross_symbol_performance: the held-out symbol's post-adaptation `cross_symbol_metric` relative to the
      trained symbol's own (checked only when another processed symbol exists).
    min_win_rate / min_profit_factor / max_drawdown: optional validation-backtest criteria (None: unchecked).
    """

    min_adaptation_speed: float = 3.0
    min_cross_symbol_performance: float = 0.85
    require_improvement_ci: bool = True
    speed_fraction: float = 0.9
    cross_symbol_metric: str = "win_rate"  # win_rate | profit_factor | mean_episode_return
    min_win_rate: float | None = None
    min_profit_factor: float | None = None
    max_drawdown: float | None = None
    min_iterations: int = 0

    def __post_init__(self):
        if self.cross_symbol_metric not in ("win_rate", "profit_factor", "mean_episode_return"):
            raise ValueError(f"MAMLGateConfig.cross_symbol_metric: {self.cross_symbol_metric!r} is not one of "
                             "win_rate, profit_factor, mean_episode_return")

    def replace(self, **changes) -> "MAMLGateConfig":
        return dataclasses.replace(self, **changes)


# ---------------------------------------------------------------------------------------------------------
# The loss-agnostic MAML core


def _clip_tree(g, max_norm):
    norm = optax.global_norm(g)
    scale = jnp.minimum(1.0, max_norm / jnp.maximum(norm, 1e-12))
    return jax.tree.map(lambda x: x * scale.astype(x.dtype), g)


def adapt(params, task, inner_loss_fn: Callable, inner_lr, inner_steps: int, *, first_order: bool = False,
          remat: bool = True, inner_grad_clip: float | None = None, return_trajectory: bool = False):
    """`inner_steps` SGD steps `p <- p - inner_lr * grad inner_loss_fn(p, task)` from `params` in a `lax.scan`.

    Differentiable in `params` (second order) unless `first_order`, which stops the gradient through the inner
    gradients (d adapted / d params = identity). Returns (adapted params, inner losses `[inner_steps]` before
    each step), and with `return_trajectory` also the parameters after each step (leading axis inner_steps)."""
    grad_fn = jax.value_and_grad(inner_loss_fn)

    def step(p, _):
        loss, g = grad_fn(p, task)
        if first_order:
            g = jax.lax.stop_gradient(g)
        if inner_grad_clip:
            g = _clip_tree(g, inner_grad_clip)
        p = jax.tree.map(lambda x, gx: x - jnp.asarray(inner_lr, x.dtype) * gx, p, g)
        return p, ((loss, p) if return_trajectory else (loss, None))

    if remat:
        step = jax.checkpoint(step)
    adapted, (losses, traj) = jax.lax.scan(step, params, None, length=int(inner_steps))
    if return_trajectory:
        return adapted, losses, traj
    return adapted, losses


def maml_loss(meta_params, tasks, inner_loss_fn: Callable, outer_loss_fn: Callable, inner_lr, inner_steps: int,
              first_order: bool = False, *, remat: bool = True, has_aux: bool = False,
              inner_grad_clip: float | None = None):
    """Mean over tasks (leading axis of `tasks`, `vmap`) of `outer_loss_fn(adapt(meta_params, task), task)`.
    Returns (loss, aux) with aux = {outer aux..., "task_loss" [tasks], "inner_loss" [tasks, inner_steps]}."""
    def one(task):
        adapted, inner_losses = adapt(meta_params, task, inner_loss_fn, inner_lr, inner_steps,
                                      first_order=first_order, remat=remat, inner_grad_clip=inner_grad_clip)
        out = outer_loss_fn(adapted, task)
        loss, aux = out if has_aux else (out, {})
        return loss, dict(aux, inner_loss=inner_losses)

    losses, aux = jax.vmap(one)(tasks)
    aux = dict(aux, task_loss=losses)
    return losses.mean(), aux


def maml_step(meta_params, tasks, inner_loss_fn: Callable, outer_loss_fn: Callable, inner_lr, inner_steps: int,
              first_order: bool = False, *, remat: bool = True, has_aux: bool = False,
              inner_grad_clip: float | None = None):
    """(meta loss, meta-gradient, aux): `jax.value_and_grad` of `maml_loss` (whose inner loop calls
    `jax.grad`). Any losses: `inner_loss_fn(params, task) -> scalar`, `outer_loss_fn(adapted, task) -> scalar`
    (or `(scalar, aux)` with `has_aux`). Apply the gradient with any Optax optimiser."""
    fn = functools.partial(maml_loss, inner_loss_fn=inner_loss_fn, outer_loss_fn=outer_loss_fn,
                           inner_lr=inner_lr, inner_steps=inner_steps, first_order=first_order, remat=remat,
                           has_aux=has_aux, inner_grad_clip=inner_grad_clip)
    (loss, aux), grads = jax.value_and_grad(fn, has_aux=True)(meta_params, tasks)
    return loss, grads, aux


# ---------------------------------------------------------------------------------------------------------
# Trading tasks: rollouts to PPO batches


def inner_ppo_config(ppo_config: PPOConfig, config: MAMLConfig) -> PPOConfig:
    """The PPO settings of the inner loss: `inner_clip_epsilon` (0: no ratio or value clipping, so the inner
    steps are importance-weighted policy-gradient steps that can move the policy as far as the support data
    says; PPO's clip would cap every action probability at (1 +- clip) x the meta-policy's)."""
    if config.inner_clip_epsilon > 0:
        return ppo_config.replace(clip_epsilon=config.inner_clip_epsilon)
    return ppo_config.replace(clip_epsilon=1e9, clip_value_loss=False)


def _flat_batch(traj: R.Transition, adv, targets) -> PPOBatch:
    b = PPOBatch(obs=traj.obs, action=traj.action, log_prob=traj.log_prob, value=traj.value, advantages=adv,
                 targets=targets)
    return jax.tree.map(lambda x: jax.lax.stop_gradient(x.reshape((-1,) + x.shape[2:])), b)


def collect_batch(apply_fn, params, env_params, key, num_envs: int, num_steps: int, ppo_config: PPOConfig,
                  env_reset=None, env_step=None):
    """Fresh envs on `env_params`' session range, a rollout of the stochastic policy, GAE.
    Returns (PPOBatch flattened to `[num_envs * num_steps]`, the Transition batch `[T, N]`)."""
    from jaxtrade import env as trading_env

    env_reset = env_reset or trading_env.reset
    env_step = env_step or trading_env.step
    params = jax.lax.stop_gradient(params)
    rs = R.reset_envs(env_reset, env_params, key, num_envs)
    rs, traj = R.rollout(apply_fn, params, env_step, env_params, rs, num_steps)
    _, last_value = apply_fn(params, rs.obs)
    adv, targets = R.compute_gae(traj, last_value, ppo_config.gamma, ppo_config.gae_lambda)
    return _flat_batch(traj, adv, targets), traj


def window_return(traj: R.Transition) -> jax.Array:
    """Mean over envs of the summed reward of a rollout (a truncated-episode return; always defined)."""
    return traj.reward.sum(0).mean()


def with_range(env_params, lo, hi):
    return env_params.replace(split_lo=jnp.asarray(lo, jnp.int32), split_hi=jnp.asarray(hi, jnp.int32))


# ---------------------------------------------------------------------------------------------------------
# The trainer


@struct.dataclass
class MAMLState:
    """The stage's runner state (an Orbax-savable pytree; `params` on top so `restore_params` finds it)."""

    params: Any  # meta-parameters (flax variables {"params": ...})
    opt_state: Any  # Adam state of the meta-update
    key: jax.Array
    iteration: jax.Array  # () int32 meta-iterations completed


class MAMLLogCallback:
    """Default host callback: one absl log line."""

    def __init__(self, total: int | None = None):
        self.total = total

    def __call__(self, m: Mapping[str, np.ndarray]) -> None:
        m = {k: float(np.mean(np.asarray(v))) for k, v in m.items()}
        logging.info("maml it %d%s | steps %d | query return pre %+.5f post %+.5f (adapt %+.5f) | meta loss %.4f "
                     "| inner %.4f -> %.4f | grad %.3f", m["iteration"], f"/{self.total}" if self.total else "",
                     m["env_steps"], m["query_return_pre"], m["query_return_post"], m["adaptation_gain"],
                     m["meta_loss"], m["inner_loss_first"], m["inner_loss_last"], m["grad_norm"])


class MAMLTrainer:
    """MAML over (symbol, time window) tasks of one symbol's training split. Build with `make_trainer`.

    init(key, params=None) -> MAMLState          params: stage-2 MoE variables (None: fresh init)
    run(state, n) -> (state, metrics {name: [n]}) jitted once per distinct n (env params are an argument)
    params_of(state) -> meta-parameters; network; env_steps_per_iteration
    gate(ctx, params, cfg) -> (passed, reasons); summary_extras(ctx, params) -> dict (summary.json)
    """

    def __init__(self, config: MAMLConfig, ppo_config: PPOConfig, env_params, moe_config=None, *,
                 network: nn.Module | None = None,
                 callback: Callable[[dict[str, np.ndarray]], None] | None | str = "default"):
        from jaxtrade import env as trading_env

        self.config = config
        self.ppo_config = ppo_config
        self.env_params = env_params
        if network is None:
            from jaxtrade.agents.moe import MoEConfig

            self.moe_config = moe_config or MoEConfig()
            network = self.moe_config.make_network(env_params.num_actions)
        else:
            self.moe_config = moe_config
        self.network = network
        self.env_reset = trading_env.reset
        self.env_step = trading_env.step
        if callback == "default":
            callback = MAMLLogCallback(config.num_iterations)
        self.callback = callback
        lo, hi = int(env_params.split_lo), int(env_params.split_hi)
        self.episode_sessions = int(env_params.episode_sessions)
        self.window = min(config.window_sessions, hi - lo)
        try:
            self.n_support, self.n_query = config.support_query_sessions(self.window, self.episode_sessions)
        except ValueError as e:
            from jaxtrade.errors import InputError
            raise InputError(f"maml: the training split has {hi - lo} sessions: {e}") from None
        self.obs_dim = int(env_params.obs_dim)
        c = config
        self.env_steps_per_iteration = int(c.meta_batch_size * (c.support_num_envs * c.support_num_steps
                                                                + 2 * c.query_num_envs * c.query_num_steps))
        self.tx = optax.chain(optax.clip_by_global_norm(c.max_grad_norm) if c.max_grad_norm > 0
                              else optax.identity(), optax.adam(c.meta_learning_rate))
        self._iteration_jit = jax.jit(self.iteration)
        self._eval_cache: tuple[Any, dict] | None = None

    # -- network -----------------------------------------------------------------------------------------
    def apply_fn(self, params, obs):
        return self.network.apply(params, obs)

    def init_params(self, key):
        return self.network.init(key, jnp.zeros((self.obs_dim,), jnp.float32))

    def _coerce_params(self, params, key):
        params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
        if not (isinstance(params, Mapping) and "params" in params):
            params = {"params": params}
        want = jax.tree.structure(jax.eval_shape(self.init_params, key))
        if jax.tree.structure(params) == want:
            return params
        inner = params["params"]
        if "gate_0" not in inner and "experts" not in inner and self.moe_config is not None:
            # A stage-1 ActorCritic (stages ppo,maml): start every expert from it, as stage 2 does.
            from jaxtrade.agents import moe
            return moe.init_from_ppo(params, key, self.network, self.obs_dim, self.moe_config.init_noise)
        raise ValueError("maml: the given parameters do not match the network "
                         f"{type(self.network).__name__} (pass network= or the stage-2 parameters)")

    # -- pieces ------------------------------------------------------------------------------------------
    def init(self, key: jax.Array, params=None) -> MAMLState:
        k_net, k_run = jax.random.split(key)
        params = self.init_params(k_net) if params is None else self._coerce_params(params, k_net)
        return MAMLState(params=params, opt_state=self.tx.init(params), key=k_run, iteration=jnp.int32(0))

    def params_of(self, state: MAMLState):
        return state.params

    def inner_loss(self, params, task):
        return ppo_loss(params, self.apply_fn, task["support"], inner_ppo_config(self.ppo_config, self.config))[0]

    def outer_loss(self, adapted, task):
        """PPO loss of `adapted` on the query batch that was collected under the same adapted parameters."""
        loss, aux = ppo_loss(adapted, self.apply_fn, task["query"], self.ppo_config)
        return loss, aux

    def sample_tasks(self, key, meta_params, env_params):
        """`meta_batch_size` windows inside `env_params`' split; support batches under the meta-params."""
        c = self.config
        lo, hi = env_params.split_lo, env_params.split_hi
        k_win, k_sup, k_query = jax.random.split(key, 3)
        starts = jax.random.randint(k_win, (c.meta_batch_size,), lo, hi - self.window + 1)
        sup_keys = jax.random.split(k_sup, c.meta_batch_size)
        query_keys = jax.random.split(k_query, c.meta_batch_size)

        def one(w0, k):
            sp = with_range(env_params, w0, w0 + self.n_support)
            batch, traj = collect_batch(self.apply_fn, meta_params, sp, k, c.support_num_envs,
                                        c.support_num_steps, self.ppo_config, self.env_reset, self.env_step)
            return batch, window_return(traj)

        support, support_return = jax.vmap(one)(starts, sup_keys)
        tasks = {"support": support, "query_lo": starts + self.n_support, "query_hi": starts + self.window,
                 "query_key": query_keys}
        return tasks, support_return

    def query_batches(self, meta_params, adapted, tasks, env_params):
        """Query rollouts before (meta-params) and after (adapted) adaptation, with the same keys (same
        episode starts, coupled sampling): one `vmap` over 2 x meta_batch_size parameter sets."""
        c = self.config
        b = c.meta_batch_size
        both = jax.tree.map(lambda m, a: jnp.concatenate([jnp.broadcast_to(m, a.shape), a], 0), meta_params,
                            adapted)
        twice = lambda x: jnp.concatenate([x, x], 0)  # noqa: E731

        def one(p, lo, hi, k):
            batch, traj = collect_batch(self.apply_fn, p, with_range(env_params, lo, hi), k, c.query_num_envs,
                                        c.query_num_steps, self.ppo_config, self.env_reset, self.env_step)
            return batch, window_return(traj), R.summarise_episodes(traj)

        batch, ret, summ = jax.vmap(one)(both, twice(tasks["query_lo"]), twice(tasks["query_hi"]),
                                         twice(tasks["query_key"]))
        post_batch = jax.tree.map(lambda x: x[b:], batch)
        pre = (ret[:b], jax.tree.map(lambda x: x[:b], summ))
        post = (ret[b:], jax.tree.map(lambda x: x[b:], summ))
        return post_batch, pre, post

    def iteration(self, state: MAMLState, env_params, log_now=False):
        c = self.config
        clip = c.inner_grad_clip or None
        key, k_tasks = jax.random.split(state.key)
        tasks, support_return = self.sample_tasks(k_tasks, state.params, env_params)
        # The adapted parameters once forward (no gradient) to collect their query rollouts outside the
        # differentiated function; maml_step recomputes the same adapted parameters differentiably.
        adapted = jax.vmap(lambda t: adapt(jax.lax.stop_gradient(state.params), t, self.inner_loss,
                                           c.inner_learning_rate, c.inner_loop_steps, remat=False,
                                           inner_grad_clip=clip)[0])(tasks)
        tasks["query"], (pre_ret, pre_summ), (post_ret, post_summ) = self.query_batches(
            state.params, adapted, tasks, env_params)
        loss, grads, aux = maml_step(state.params, tasks, self.inner_loss, self.outer_loss, c.inner_learning_rate,
                                     c.inner_loop_steps, c.first_order, remat=c.remat, has_aux=True,
                                     inner_grad_clip=clip)
        updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        it = state.iteration + 1
        inner = aux["inner_loss"]
        nan = jnp.float32(jnp.nan)
        metrics = {
            "iteration": it, "env_steps": R.env_steps(it, self.env_steps_per_iteration),
            "batch_size": jnp.int32(self.env_steps_per_iteration),
            "meta_loss": loss, "grad_norm": optax.global_norm(grads),
            "support_return": support_return.mean(),
            "query_return_pre": pre_ret.mean(), "query_return_post": post_ret.mean(),
            "adaptation_gain": post_ret.mean() - pre_ret.mean(),
            "inner_loss_first": inner[:, 0].mean() if c.inner_loop_steps else nan,
            "inner_loss_last": inner[:, -1].mean() if c.inner_loop_steps else nan,
            "pre_mean_episode_return": jnp.nanmean(pre_summ["mean_episode_return"]),
            "mean_episode_return": jnp.nanmean(post_summ["mean_episode_return"]),
            "episodes": post_summ["episodes"].sum(),
            "win_rate": jnp.nanmean(post_summ["win_rate"]), "profit_factor": jnp.nanmean(post_summ["profit_factor"]),
        }
        for k in ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_frac"):
            metrics[k] = aux[k].mean()
        if self.callback is not None and c.log_every > 0:
            host = R.host_call(self.callback)
            jax.lax.cond(log_now, lambda m: jax.debug.callback(host, m), lambda m: None, metrics)
        return MAMLState(params=params, opt_state=opt_state, key=key, iteration=it), metrics

    def run_fn(self, state: MAMLState, env_params, num_iterations: int):
        """Pure `lax.scan` of `num_iterations` meta-iterations (for composing into bigger programs)."""
        every = max(self.config.log_every, 1)
        n = int(num_iterations)

        def body(s, i):
            log_now = ((s.iteration + 1) % every == 0) | (i == n - 1)
            return self.iteration(s, env_params, log_now)

        return jax.lax.scan(body, state, jnp.arange(n, dtype=jnp.int32))

    def run(self, state: MAMLState, num_iterations: int | None = None):
        """`num_iterations` meta-iterations: one jitted meta-iteration (compiled once, whatever the chunk
        sizes; env params are an argument, not a constant) called in a host loop, so chunked runs equal
        unchunked ones exactly. Metrics stacked to `[num_iterations]` (on device)."""
        n = self.config.num_iterations if num_iterations is None else int(num_iterations)
        every = max(self.config.log_every, 1)
        history = []
        start = int(state.iteration) if n else 0
        for i in range(n):
            log_now = (start + i + 1) % every == 0 or i == n - 1
            state, metrics = self._iteration_jit(state, self.env_params, jnp.asarray(log_now))
            history.append(metrics)
        if not history:
            return state, {}
        return state, jax.tree.map(lambda *xs: jnp.stack(xs), *history)

    # -- held-out evaluation, gate, summary --------------------------------------------------------------
    def heldout_evaluation(self, ctx, params) -> dict:
        """`evaluate_adaptation` on the sequence's held-out tasks (cached for the last `params`)."""
        if self._eval_cache is not None and self._eval_cache[0] is params:
            return self._eval_cache[1]
        result = evaluate_symbol_adaptation(self.network, params, ctx, self.config, self.ppo_config)
        self._eval_cache = (params, result)
        return result

    def gate(self, ctx, params, cfg) -> tuple[bool, list[str]]:
        gate_cfg = cfg.groups.get("maml_gate") if hasattr(cfg, "groups") else None
        gate_cfg = gate_cfg or MAMLGateConfig()
        ev = self.heldout_evaluation(ctx, params)
        reasons = check_maml_gate(ev, gate_cfg)
        if any(v is not None for v in (gate_cfg.min_win_rate, gate_cfg.min_profit_factor, gate_cfg.max_drawdown)):
            from jaxtrade.config import GateConfig
            from jaxtrade.sequence import check_gate, policy_of

            val = ctx.backtest(policy_of(self.network, params, "maml (validation)"), cfg.run.eval_split)
            _, more = check_gate(val.metrics, GateConfig(gate_cfg.min_win_rate, gate_cfg.min_profit_factor,
                                                         gate_cfg.max_drawdown), 0)
            reasons += more
        return not reasons, reasons

    def summary_extras(self, ctx, params) -> dict:
        return {"adaptation": _json_safe(self.heldout_evaluation(ctx, params))}


def make_trainer(maml_config: MAMLConfig, ppo_config: PPOConfig, env_params, moe_config=None, callback="default",
                 **kwargs) -> MAMLTrainer:
    """Build a `MAMLTrainer` (the sequence's stage-3 trainer). kwargs: network (any module with the
    `(logits, value)` signature; default the stage-2 `MoEActorCritic` of `moe_config`)."""
    return MAMLTrainer(maml_config, ppo_config, env_params, moe_config, callback=callback, **kwargs)


# ---------------------------------------------------------------------------------------------------------
# Held-out evaluation


class HeldOutTask(NamedTuple):
    name: str
    env_params: Any  # EnvParams of the task's symbol (any split; the ranges below are used)
    support: tuple[int, int]  # [first, end) sessions of the support range
    query: tuple[int, int]  # [first, end) sessions of the query range


def window_tasks(env_params, split: tuple[int, int], num_tasks: int, config: MAMLConfig, name: str = "task"
                 ) -> list[HeldOutTask]:
    """`num_tasks` windows of `config.window_sessions` (clipped to the split) spread evenly over `split`."""
    lo, hi = int(split[0]), int(split[1])
    window = min(config.window_sessions, hi - lo)
    n_sup, _ = config.support_query_sessions(window, int(env_params.episode_sessions))
    starts = np.unique(np.linspace(lo, hi - window, max(num_tasks, 1)).round().astype(int))
    return [HeldOutTask(f"{name}[{s}:{s + window}]", env_params, (int(s), int(s + n_sup)),
                        (int(s + n_sup), int(s + window))) for s in starts]


@functools.lru_cache(maxsize=16)
def _eval_fn(network, ppo_config: PPOConfig, config: MAMLConfig, steps: int):
    from jaxtrade import env as trading_env

    def apply_fn(p, obs):
        return network.apply(p, obs)

    inner_config = inner_ppo_config(ppo_config, config)

    def inner_loss(p, batch):
        return ppo_loss(p, apply_fn, batch, inner_config)[0]

    @jax.jit
    def run(params, env_params, sup_lo, sup_hi, q_lo, q_hi, key):
        k_sup, k_eval = jax.random.split(key)
        sp = with_range(env_params, sup_lo, sup_hi)
        qp = with_range(env_params, q_lo, q_hi)
        batch, _ = collect_batch(apply_fn, params, sp, k_sup, config.support_num_envs, config.support_num_steps,
                                 ppo_config)
        _, losses, traj = adapt(params, batch, inner_loss, config.inner_learning_rate, steps,
                                remat=False, inner_grad_clip=config.inner_grad_clip or None,
                                return_trajectory=True)
        all_params = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b], 0), params, traj)  # [K+1, ...]

        def ev(p):
            per_ep, _ = R.evaluate(apply_fn, p, trading_env.reset, trading_env.step, qp, k_eval,
                                   config.eval_episodes, greedy=config.eval_greedy)
            return per_ep

        return jax.vmap(ev)(all_params), losses

    return run


def _summary(per_ep: Mapping[str, np.ndarray]) -> dict:
    stats = {k: jnp.asarray(v) for k, v in per_ep.items() if k != "finished"}
    out = R.summarise_episodes(stats, done=jnp.asarray(per_ep["finished"]))
    return {k: float(v) if k not in ("episodes", "num_trades") else int(v) for k, v in out.items()}


def bootstrap_mean_ci(x: np.ndarray, num_resamples: int = 2000, seed: int = 0, level: float = 0.95
                      ) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean of `x` (numpy, seeded); None for fewer than 2 values."""
    x = np.asarray(x, np.float64)
    x = x[np.isfinite(x)]
    if len(x) < 2:
        return None
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), (num_resamples, len(x)))].mean(1)
    a = (1.0 - level) / 2
    return float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


def adaptation_speed(curve: Sequence[float], fraction: float = 0.9) -> int | None:
    """Smallest k with curve[k] - curve[0] >= fraction * (curve[-1] - curve[0]); None when the final
    improvement is not positive."""
    c = np.asarray(curve, np.float64)
    if len(c) < 2 or not np.all(np.isfinite(c)) or not c[-1] > c[0]:
        return None
    gain = c - c[0]
    return int(np.argmax(gain >= fraction * gain[-1]))


def evaluate_adaptation(network, meta_params, tasks: Sequence[HeldOutTask], config: MAMLConfig, key,
                        ppo_config: PPOConfig | None = None, *, steps: int | None = None,
                        speed_fraction: float = 0.9) -> dict:
    """Adaptation on held-out tasks: per task, support rollout under `meta_params` on the support range,
    `steps` (default `config.inner_loop_steps`) inner steps, then `config.eval_episodes` query episodes after
    each of k = 0..steps inner steps with the same key (paired). Returns plain JSON: `pre` / `post` pooled
    episode summaries (mean_episode_return, win_rate, profit_factor, ...), `improvement` (mean over all
    held-out episodes of post - pre return) with `improvement_ci95` (seeded percentile bootstrap over those
    episodes), `adaptation_curve` (mean return after k steps), `adaptation_speed`, and per-task numbers."""
    ppo_config = ppo_config or PPOConfig()
    steps = config.inner_loop_steps if steps is None else int(steps)
    run = _eval_fn(network, ppo_config, config, steps)
    per_task, diffs, curves, pre_all, post_all = [], [], [], [], []
    for i, task in enumerate(tasks):
        k = jax.random.fold_in(key, i)
        per_ep, losses = run(meta_params, task.env_params, task.support[0], task.support[1], task.query[0],
                             task.query[1], k)
        per_ep = jax.device_get(per_ep)  # each [K+1, E]
        fin = per_ep["finished"][0] & per_ep["finished"][-1]
        ret = np.asarray(per_ep["episode_return"], np.float64)
        d = (ret[-1] - ret[0])[fin]
        diffs.append(d)
        curve = [float(ret[j][fin].mean()) if fin.any() else float("nan") for j in range(steps + 1)]
        curves.append((curve, int(fin.sum())))
        pre = {k2: v[0] for k2, v in per_ep.items()}
        post = {k2: v[-1] for k2, v in per_ep.items()}
        pre_all.append(pre)
        post_all.append(post)
        per_task.append({"name": task.name, "support_sessions": list(task.support), "query_sessions": list(task.query),
                         "episodes": int(fin.sum()), "pre": _summary(pre), "post": _summary(post),
                         "improvement": float(d.mean()) if len(d) else None,
                         "inner_loss": [float(x) for x in np.asarray(losses)], "curve": curve})
    all_d = np.concatenate(diffs) if diffs else np.zeros(0)
    cat = lambda dicts: {k: np.concatenate([d[k] for d in dicts]) for k in dicts[0]}  # noqa: E731
    weights = np.array([n for _, n in curves], np.float64)
    curve = (np.nansum([np.asarray(c) * n for c, n in curves], 0) / max(weights.sum(), 1)).tolist() if curves else []
    ci = bootstrap_mean_ci(all_d, config.bootstrap_resamples, config.seed)
    return {
        "tasks": per_task, "num_tasks": len(tasks), "num_episodes": int(len(all_d)), "adaptation_steps": steps,
        "pre": _summary(cat(pre_all)) if pre_all else {}, "post": _summary(cat(post_all)) if post_all else {},
        "improvement": float(all_d.mean()) if len(all_d) else None,
        "improvement_ci95": list(ci) if ci else None,
        "ci_method": (f"percentile bootstrap of the mean paired (post - pre) episode return over held-out episodes, "
                      f"{config.bootstrap_resamples} resamples, numpy seed {config.seed}"),
        "adaptation_curve": curve, "adaptation_speed": adaptation_speed(curve, speed_fraction),
        "speed_fraction": speed_fraction,
        "policy": "greedy" if config.eval_greedy else "sampled (paired keys)",
    }


def evaluate_symbol_adaptation(network, params, ctx, config: MAMLConfig, ppo_config: PPOConfig) -> dict:
    """The sequence's held-out evaluation: `config.evaluation_steps` windows of the eval split of the trained
    symbol (a later time) and, when another processed symbol exists (`config.cross_symbol` or the first other
    one), of that never-trained symbol. Returns {"split", "own": ..., "cross": ... | None, "cross_symbol"}."""
    from jaxtrade import data as D

    cfg = ctx.cfg
    split = cfg.run.eval_split
    gate_cfg = cfg.groups.get("maml_gate") if hasattr(cfg, "groups") else None
    fraction = gate_cfg.speed_fraction if gate_cfg is not None else 0.9
    key = jax.random.key(config.seed)
    _, own_params = ctx.split_params(split)
    own_tasks = window_tasks(own_params, ctx.market.splits[split], config.evaluation_steps, config,
                             name=f"{ctx.symbol}/{split}")
    out = {"split": split, "own_symbol": ctx.symbol,
           "own": evaluate_adaptation(network, params, own_tasks, config, jax.random.fold_in(key, 0), ppo_config,
                                      speed_fraction=fraction),
           "cross_symbol": None, "cross": None}
    other = config.cross_symbol
    if not other:
        try:
            others = [s for s in D.list_symbols(cfg.run.processed_data_dir) if s != ctx.symbol]
        except Exception:  # noqa: BLE001 - no directory listing: no cross-symbol check
            others = []
        other = others[0] if others else ""
    if other and other != ctx.symbol:
        market, env_params = ctx.split_params(split, other)
        tasks = window_tasks(env_params, market.splits[split], config.evaluation_steps, config,
                             name=f"{other}/{split}")
        out["cross_symbol"] = other
        out["cross"] = evaluate_adaptation(network, params, tasks, config, jax.random.fold_in(key, 1), ppo_config,
                                           speed_fraction=fraction)
    return out


def check_maml_gate(ev: Mapping, gate: MAMLGateConfig) -> list[str]:
    """Reasons the held-out evaluation `ev` (from `evaluate_symbol_adaptation`) fails `gate` (empty: passed)."""
    reasons = []
    own = ev["own"]
    ci = own.get("improvement_ci95")
    if gate.require_improvement_ci and (ci is None or not ci[0] > 0):
        ci_txt = "n/a" if ci is None else f"[{ci[0]:.3g}, {ci[1]:.3g}]"
        reasons.append(f"adaptation improvement {own.get('improvement')} has 95% CI {ci_txt}, not above 0")
    speed = own.get("adaptation_speed")
    if speed is None:
        reasons.append("adaptation did not improve held-out returns (adaptation speed undefined)")
    elif speed > gate.min_adaptation_speed:
        reasons.append(f"adaptation speed {speed} steps > {gate.min_adaptation_speed:g}")
    cross = ev.get("cross")
    if cross is not None:
        ratio = cross_symbol_ratio(ev, gate.cross_symbol_metric)
        ev_ratio = None if ratio is None else round(ratio, 4)
        if ratio is None or not ratio >= gate.min_cross_symbol_performance:
            reasons.append(f"cross-symbol {gate.cross_symbol_metric} ratio ({ev['cross_symbol']} / "
                           f"{ev['own_symbol']}) {ev_ratio} < {gate.min_cross_symbol_performance:g}")
    return reasons


def cross_symbol_ratio(ev: Mapping, metric: str = "win_rate") -> float | None:
    """Held-out symbol's post-adaptation `metric` / the trained symbol's own (None when undefined)."""
    if ev.get("cross") is None:
        return None
    a, b = ev["cross"]["post"].get(metric), ev["own"]["post"].get(metric)
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)) or b <= 0:
        return None
    return float(a / b)


def _json_safe(x):
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(float(x)) else None
    if isinstance(x, np.integer):
        return int(x)
    return x
