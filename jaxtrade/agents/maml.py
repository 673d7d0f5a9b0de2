"""Stage 3: MAML meta-learning of a trading policy (DESIGN section 4), with the grad-of-grad core of
`agents.meta`.

    trainer = make_trainer(MAMLConfig(), PPOConfig(), env_params, network=moe_network)
    state = trainer.init(key, params=stage2_params)          # or a stage-1 ActorCritic's (every expert from it)
    state, metrics = trainer.run(state, n)                   # the shared `agents.base.run`

Hyperparameters that do not change shapes are leaves (`MAMLHParams`: meta and inner learning rates; PPO's
`PPOHParams` for GAE and the losses), so `jax.vmap` sweeps them; counts and sizes stay in `MAMLConfig`.

Trading tasks. A task is a (symbol, time window) pair: a window of `window_sessions` consecutive sessions
inside the training split (drawn uniformly per task and meta-iteration), whose first `support_fraction` is the
support range and the rest the query range. Both are the symbol's `EnvParams` with `split_lo`/`split_hi` set
to the sub-range, so tasks are `vmap`ped over those two scalars only (one compilation, no copies of the bars).

Per task and meta-iteration:
  1. support rollout: `support_num_envs` x `support_num_steps` steps with the META-parameters (collected once,
     before adaptation; not re-collected between inner steps), GAE against the `advantage_baseline`: by
     default a linear feature baseline fitted to the batch itself (Finn et al.'s choice; the critic's values
     would drift with every meta-step far beyond the rewards' scale and spoil the inner steps);
  2. inner loop: `inner_loop_steps` SGD steps (`inner_learning_rate`) on the PPO surrogate (`ppo.ppo_loss`:
     clipped ratio against the meta-policy's log-probabilities, value loss, entropy) of that fixed support
     batch; the clipped ratio keeps the repeated steps on one batch a trust region;
  3. query rollout: `query_num_envs` x `query_num_steps` steps under the ADAPTED parameters (stop-gradient:
     sampling is not differentiated), GAE against the same kind of baseline (the adapted critic's with
     `advantage_baseline="critic"`);
  4. outer loss: `ppo.ppo_loss` of the adapted parameters on the query batch (ratio 1 at the behaviour policy,
     so its gradient is the clipped-PPO policy gradient at the adapted parameters), chained back through the
     inner updates to the meta-parameters: params -> inner updates -> adapted params -> query loss.
The dependence of the support data's distribution on the meta-parameters is not differentiated (as in Finn et
al.'s MAML-RL; no DiCE/ProMP correction). A pre-adaptation query rollout with the same key (same episode
starts, common random numbers) gives the `query_return_pre` metric beside `query_return_post`.
The meta-gradient is averaged over `meta_batch_size` tasks (`vmap`) and applied with Adam
(`meta_learning_rate`, after `clip_by_global_norm(max_grad_norm)`). Held-out evaluation (adaptation on later
windows and other symbols) is `jaxtrade.evaluation.adaptation`; the stage's gate is `jaxtrade.gates`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from jaxtrade.agents import rollout as R
from jaxtrade.agents.base import TrainerMixin
from jaxtrade.agents.meta import adapt, maml_step
from jaxtrade.agents.ppo import PPOBatch, PPOConfig, PPOHParams, ppo_loss
from jaxtrade.errors import InputError


# ---------------------------------------------------------------------------------------------------------
# Config

ADVANTAGE_BASELINES = ("linear", "critic")


@dataclasses.dataclass(frozen=True)
class MAMLConfig:
    """MAML stage settings; defaults are the seed's `training_params.maml` and `stage_3_maml` (DESIGN 10).

    evaluation_steps: the seed's key, read here as the number of held-out tasks (time windows per held-out
      symbol) that the held-out evaluation (`jaxtrade.evaluation.adaptation`) and the gate use; adaptation at
      evaluation uses `inner_loop_steps`. The evaluation settings below (`eval_*`, `bootstrap_resamples`,
      `cross_symbol`, `seed`) are read there, not by the trainer.
    window_sessions: sessions per task window (clipped to the split's length); `support_fraction` of them
      (rounded, at least `episode_sessions`) are the support range, the rest the query range.
    """

    meta_learning_rate: float = 5e-4  # Adam step size of the meta-update
    inner_loop_steps: int = 7  # inner policy-gradient steps per task
    evaluation_steps: int = 5  # held-out task windows per symbol for the evaluation and the gate
    meta_batch_size: int = 2  # tasks per meta-step
    num_iterations: int = 150  # meta-iterations (the seed's stage_3_maml.meta_iterations)
    inner_learning_rate: float = 0.1  # plain SGD step of the inner loop (0.01 barely moves a fresh policy)
    first_order: bool = False  # first-order MAML: no gradient through the inner gradients
    remat: bool = True  # jax.checkpoint each inner step (memory about constant in inner steps)
    inner_grad_clip: float = 1.0  # global-norm clip of each inner gradient (0: none)
    inner_clip_epsilon: float = 0.0  # ratio clip of the inner surrogate (0: unclipped importance-weighted PG)
    max_grad_norm: float = 0.5  # global-norm clip of the meta-gradient before Adam
    # Baseline of the support and query advantages: "linear" fits a linear feature baseline to each rollout
    # batch's returns (Duan et al. 2016, as Finn et al.'s MAML-RL); "critic" uses the network's value head.
    # Rewards are equity changes / capital (~1e-4 a bar), so every Adam meta-step moves the critic's weights by
    # far more than its values' scale: with "critic" the support advantages, hence the inner steps, degrade
    # as meta-training goes on (issue 20's figures in tests/planted_edges.py).
    advantage_baseline: str = "linear"
    # Rollouts per task. Second-order MAML through 7 inner steps of the 4-expert network is compute-bound:
    # 16 x 64 samples keep a meta-iteration to a few seconds on a 2-core CPU; raise them on a GPU.
    support_num_envs: int = 16  # support rollouts per task
    support_num_steps: int = 64  # steps of each support rollout
    query_num_envs: int = 16  # query rollouts per task
    query_num_steps: int = 64  # steps of each query rollout
    window_sessions: int = 20
    support_fraction: float = 0.5  # share of a task window used as support (the rest is the query range)
    eval_episodes: int = 32  # query episodes per held-out task and adaptation step
    eval_greedy: bool = False  # evaluate the argmax policy instead of the sampled one (paired keys)
    bootstrap_resamples: int = 2000  # bootstrap resamples of the held-out improvement's interval
    cross_symbol: str = ""  # held-out symbol for the gate ("": the first other processed symbol, if any)
    seed: int = 0  # seed of the evaluation keys and the bootstrap
    early_stopping_patience: int = 0  # stop after P --eval_every evaluations with no better --final_metric (0: never)

    def __post_init__(self):
        for name in ("inner_loop_steps", "evaluation_steps", "num_iterations", "early_stopping_patience"):
            if getattr(self, name) < 0:
                raise ValueError(f"MAMLConfig.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("meta_batch_size", "support_num_envs", "support_num_steps", "query_num_envs",
                     "query_num_steps", "window_sessions", "eval_episodes"):
            if getattr(self, name) < 1:
                raise ValueError(f"MAMLConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.advantage_baseline not in ADVANTAGE_BASELINES:
            raise ValueError(f"MAMLConfig.advantage_baseline must be one of {', '.join(ADVANTAGE_BASELINES)}, "
                             f"got {self.advantage_baseline!r}")
        if not 0.0 < self.support_fraction < 1.0:
            raise ValueError(f"MAMLConfig.support_fraction must be in (0, 1), got {self.support_fraction}")

    def replace(self, **changes) -> "MAMLConfig":
        return dataclasses.replace(self, **changes)

    def hparams(self) -> "MAMLHParams":
        """The shape-free hyperparameters as float32 leaves (what the trainer reads and `vmap` sweeps)."""
        return MAMLHParams(**{f.name: jnp.float32(getattr(self, f.name)) for f in dataclasses.fields(MAMLHParams)})

    def support_query_sessions(self, window: int, episode_sessions: int = 1) -> tuple[int, int]:
        """(support sessions, query sessions) of a window of `window` sessions."""
        n_sup = int(round(window * self.support_fraction))
        n_sup = min(max(n_sup, episode_sessions), window - episode_sessions)
        if n_sup < episode_sessions or window - n_sup < episode_sessions:
            raise ValueError(f"a task window of {window} sessions cannot hold support and query ranges of "
                             f"{episode_sessions}-session episodes")
        return n_sup, window - n_sup


@struct.dataclass
class MAMLHParams:
    """MAML's own shape-free hyperparameters (leaves of the trainer, `vmap`-able)."""

    meta_learning_rate: jax.Array
    inner_learning_rate: jax.Array


# ---------------------------------------------------------------------------------------------------------
# Trading tasks: rollouts to PPO batches


def inner_loss_settings(ppo_config: PPOConfig, ppo_hp: PPOHParams, config: "MAMLConfig"
                        ) -> tuple[PPOConfig, PPOHParams]:
    """The PPO settings of the inner loss: `inner_clip_epsilon` (0: no ratio or value clipping, so the inner
    steps are importance-weighted policy-gradient steps that can move the policy as far as the support data
    says; PPO's clip would cap every action probability at (1 +- clip) x the meta-policy's)."""
    if config.inner_clip_epsilon > 0:
        return ppo_config, ppo_hp.replace(clip_epsilon=jnp.float32(config.inner_clip_epsilon))
    return ppo_config.replace(clip_value_loss=False), ppo_hp.replace(clip_epsilon=jnp.float32(1e9))


def _flat_batch(traj: R.Transition, adv, targets) -> PPOBatch:
    b = PPOBatch(obs=traj.obs, action=traj.action, log_prob=traj.log_prob, value=traj.value, advantages=adv,
                 targets=targets)
    return jax.tree.map(lambda x: jax.lax.stop_gradient(x.reshape((-1,) + x.shape[2:])), b)


def collect_batch(apply_fn, params, env_params, key, num_envs: int, num_steps: int, hp, env_reset=None,
                  env_step=None, baseline: str = "critic"):
    """Fresh envs on `env_params`' session range, a rollout of the stochastic policy, GAE with `hp.gamma` and
    `hp.gae_lambda` (a `PPOHParams` or a `PPOConfig`) against `baseline`: "critic" (the network's values,
    bootstrapped at the rollout's end) or "linear" (`rollout.linear_baseline` of this batch, not bootstrapped).
    The batch's `value` stays the critic's (PPO's value clipping). Returns (PPOBatch flattened to
    `[num_envs * num_steps]`, the Transition batch `[T, N]`)."""
    from jaxtrade import env as trading_env

    env_reset = env_reset or trading_env.reset
    env_step = env_step or trading_env.step
    params = jax.lax.stop_gradient(params)
    rs = R.reset_envs(env_reset, env_params, key, num_envs)
    rs, traj = R.rollout(apply_fn, params, env_step, env_params, rs, num_steps)
    if baseline == "linear":
        values = R.linear_baseline(traj, hp.gamma)
        adv, targets = R.compute_gae(traj.replace(value=values), jnp.zeros((num_envs,), jnp.float32), hp.gamma,
                                     hp.gae_lambda)
    else:
        _, last_value = apply_fn(params, rs.obs)
        adv, targets = R.compute_gae(traj, last_value, hp.gamma, hp.gae_lambda)
    return _flat_batch(traj, adv, targets), traj


def adapt_on_support(apply_fn, params, support_params, key, config: "MAMLConfig", ppo_config: PPOConfig, *,
                     steps: int | None = None, return_trajectory: bool = False):
    """MAML's inner loop as a user runs it after training: one support batch (`config.support_num_envs` x
    `support_num_steps`) under `params` on `support_params`' sessions, then `steps` (default
    `config.inner_loop_steps`) inner SGD steps on it (no remat: nothing is differentiated through them).
    Returns `adapt`'s (adapted, inner losses[, parameters after each step]) and the support rollout."""
    inner_config, inner_hp = inner_loss_settings(ppo_config, ppo_config.hparams(), config)
    batch, traj = collect_batch(apply_fn, params, support_params, key, config.support_num_envs,
                                config.support_num_steps, ppo_config, baseline=config.advantage_baseline)
    out = adapt(params, batch, lambda p, b: ppo_loss(p, apply_fn, b, inner_config, inner_hp)[0],
                config.inner_learning_rate, config.inner_loop_steps if steps is None else steps, remat=False,
                inner_grad_clip=config.inner_grad_clip or None, return_trajectory=return_trajectory)
    return out, traj


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


@struct.dataclass
class MAML(TrainerMixin):
    """MAML over (symbol, time window) tasks of one symbol's training split: `init(key, params=None)` and
    `train_iteration(state)` (the contract of `agents.base`). Build it with `make_trainer`."""

    loss_metrics = ("meta_loss",)  # what `agents.base.run` checks for non-finite values (with grad_norm, params)

    env_params: Any
    hparams: MAMLHParams
    ppo_hparams: PPOHParams
    config: "MAMLConfig" = struct.field(pytree_node=False, default=None)
    ppo_config: PPOConfig = struct.field(pytree_node=False, default=None)
    network: Any = struct.field(pytree_node=False, default=None)
    init_noise: float = struct.field(pytree_node=False, default=0.05)  # a stage-1 start's expert noise
    window: int = struct.field(pytree_node=False, default=0)  # sessions per task window
    n_support: int = struct.field(pytree_node=False, default=0)

    @property
    def env_steps_per_iteration(self) -> int:
        c = self.config
        return int(c.meta_batch_size * (c.support_num_envs * c.support_num_steps
                                        + 2 * c.query_num_envs * c.query_num_steps))

    @property
    def obs_dim(self) -> int:
        return int(self.env_params.obs_dim)

    def apply(self, params, obs):
        return self.network.apply(params, obs)

    def optimizer(self) -> optax.GradientTransformation:
        c = self.config
        return optax.chain(optax.clip_by_global_norm(c.max_grad_norm) if c.max_grad_norm > 0 else optax.identity(),
                           optax.adam(self.hparams.meta_learning_rate))

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
        if "gate_0" not in inner and "experts" not in inner and hasattr(self.network, "num_experts"):
            # A stage-1 ActorCritic (stages ppo,maml): start every expert from it, as stage 2 does.
            from jaxtrade.agents import moe
            return moe.init_from_ppo(params, key, self.network, self.obs_dim, self.init_noise)
        raise ValueError("maml: the given parameters do not match the network "
                         f"{type(self.network).__name__} (pass network= or the stage-2 parameters)")

    def init(self, key: jax.Array, params=None) -> MAMLState:
        k_net, k_run = jax.random.split(key)
        params = self.init_params(k_net) if params is None else self._coerce_params(params, k_net)
        return MAMLState(params=params, opt_state=self.optimizer().init(params), key=k_run, iteration=jnp.int32(0))

    def params_of(self, state: MAMLState):
        return state.params

    def inner_loss(self, params, task):
        config, hp = inner_loss_settings(self.ppo_config, self.ppo_hparams, self.config)
        return ppo_loss(params, self.apply, task["support"], config, hp)[0]

    def outer_loss(self, adapted, task):
        """PPO loss of `adapted` on the query batch that was collected under the same adapted parameters."""
        return ppo_loss(adapted, self.apply, task["query"], self.ppo_config, self.ppo_hparams)

    def _collect(self, params, env_params, key, num_envs, num_steps):
        from jaxtrade import env as trading_env

        return collect_batch(self.apply, params, env_params, key, num_envs, num_steps, self.ppo_hparams,
                             trading_env.reset, trading_env.step, baseline=self.config.advantage_baseline)

    def sample_tasks(self, key, meta_params):
        """`meta_batch_size` windows inside the training split; support batches under the meta-params."""
        c, env_params = self.config, self.env_params
        lo, hi = env_params.split_lo, env_params.split_hi
        k_win, k_sup, k_query = jax.random.split(key, 3)
        starts = jax.random.randint(k_win, (c.meta_batch_size,), lo, hi - self.window + 1)
        sup_keys = jax.random.split(k_sup, c.meta_batch_size)
        query_keys = jax.random.split(k_query, c.meta_batch_size)

        def one(w0, k):
            sp = with_range(env_params, w0, w0 + self.n_support)
            batch, traj = self._collect(meta_params, sp, k, c.support_num_envs, c.support_num_steps)
            return batch, window_return(traj)

        support, support_return = jax.vmap(one)(starts, sup_keys)
        tasks = {"support": support, "query_lo": starts + self.n_support, "query_hi": starts + self.window,
                 "query_key": query_keys}
        return tasks, support_return

    def query_batches(self, meta_params, adapted, tasks):
        """Query rollouts before (meta-params) and after (adapted) adaptation, with the same keys (same
        episode starts, coupled sampling): one `vmap` over 2 x meta_batch_size parameter sets."""
        c = self.config
        b = c.meta_batch_size
        both = jax.tree.map(lambda m, a: jnp.concatenate([jnp.broadcast_to(m, a.shape), a], 0), meta_params,
                            adapted)
        twice = lambda x: jnp.concatenate([x, x], 0)  # noqa: E731

        def one(p, lo, hi, k):
            batch, traj = self._collect(p, with_range(self.env_params, lo, hi), k, c.query_num_envs,
                                        c.query_num_steps)
            return batch, window_return(traj), R.summarise_episodes(traj)

        batch, ret, summ = jax.vmap(one)(both, twice(tasks["query_lo"]), twice(tasks["query_hi"]),
                                         twice(tasks["query_key"]))
        post_batch = jax.tree.map(lambda x: x[b:], batch)
        pre = (ret[:b], jax.tree.map(lambda x: x[:b], summ))
        post = (ret[b:], jax.tree.map(lambda x: x[b:], summ))
        return post_batch, pre, post

    def train_iteration(self, state: MAMLState) -> tuple[MAMLState, dict[str, jax.Array]]:
        c, inner_lr = self.config, self.hparams.inner_learning_rate
        clip = c.inner_grad_clip or None
        key, k_tasks = jax.random.split(state.key)
        tasks, support_return = self.sample_tasks(k_tasks, state.params)
        # The adapted parameters once forward (no gradient) to collect their query rollouts outside the
        # differentiated function; maml_step recomputes the same adapted parameters differentiably.
        adapted = jax.vmap(lambda t: adapt(jax.lax.stop_gradient(state.params), t, self.inner_loss, inner_lr,
                                           c.inner_loop_steps, remat=False, inner_grad_clip=clip)[0])(tasks)
        tasks["query"], (pre_ret, pre_summ), (post_ret, post_summ) = self.query_batches(state.params, adapted, tasks)
        loss, grads, aux = maml_step(state.params, tasks, self.inner_loss, self.outer_loss, inner_lr,
                                     c.inner_loop_steps, c.first_order, remat=c.remat, has_aux=True,
                                     inner_grad_clip=clip)
        updates, opt_state = self.optimizer().update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        it = state.iteration + 1
        inner = aux["inner_loss"]
        nan = jnp.float32(jnp.nan)
        steps = self.env_steps_per_iteration
        metrics = {
            "iteration": it, "env_steps": R.env_steps(it, steps), "batch_size": jnp.int32(steps),
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
        return MAMLState(params=params, opt_state=opt_state, key=key, iteration=it), metrics


def make_trainer(config: "MAMLConfig", ppo_config: PPOConfig, env_params, *, network=None, moe_config=None
                 ) -> MAML:
    """The MAML stage's trainer. `network`: any module with the `(logits, value)` signature (default: the
    stage-2 `MoEActorCritic` of `moe_config`, whose `init_noise` also applies when it starts from a stage-1
    policy). `env_params` may carry a leading axis of stacked folds (task windows fit the shortest split)."""
    from jaxtrade.agents.moe import MoEConfig

    moe_config = moe_config or MoEConfig()
    if network is None:
        network = moe_config.make_network(env_params.num_actions)
    sessions = int(np.min(np.asarray(env_params.split_hi) - np.asarray(env_params.split_lo)))
    episode_sessions = int(np.max(np.asarray(env_params.episode_sessions)))
    window = min(config.window_sessions, sessions)
    try:
        n_support, _ = config.support_query_sessions(window, episode_sessions)
    except ValueError as e:
        raise InputError(f"maml: the training split has {sessions} sessions: {e}") from None
    return MAML(env_params=env_params, hparams=config.hparams(), ppo_hparams=ppo_config.hparams(), config=config,
                ppo_config=ppo_config, network=network, init_noise=float(moe_config.init_noise), window=window,
                n_support=n_support)
