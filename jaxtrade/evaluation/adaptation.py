"""Held-out adaptation (DESIGN section 4, stage 3): how fast and how far a meta-learned policy adapts to time
windows it never trained on (a later split of its symbol, or another symbol).

Per task (`HeldOutTask`: a support and a query session range of one symbol's `EnvParams`), the support rollout
uses the task's first sessions under the given parameters, the policy is adapted for `inner_loop_steps` steps
(`agents.maml.adapt_on_support`, the inner loop as training runs it), and episodes on the query sessions run after
k = 0..K steps with the same keys (paired). The improvement (after K - before) per episode gets a seeded 95%
percentile-bootstrap interval; the adaptation speed is the smallest k whose mean improvement reaches
`speed_fraction` (90%) of the final one. The caller builds the tasks' env params (the pipeline: from its
`EnvConfig`, through `env.env_params`); nothing here loads data or reads the pipeline.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxtrade import env as trading_env
from jaxtrade.agents import rollout as R
from jaxtrade.agents.maml import MAMLConfig, adapt_on_support, with_range
from jaxtrade.agents.ppo import PPOConfig


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
    def apply_fn(p, obs):
        return network.apply(p, obs)

    @jax.jit
    def run(params, env_params, sup_lo, sup_hi, q_lo, q_hi, key):
        k_sup, k_eval = jax.random.split(key)
        (_, losses, traj), _ = adapt_on_support(apply_fn, params, with_range(env_params, sup_lo, sup_hi), k_sup,
                                                config, ppo_config, steps=steps, return_trajectory=True)
        all_params = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b], 0), params, traj)  # [K+1, ...]
        qp = with_range(env_params, q_lo, q_hi)

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


def evaluate_heldout(network, params, own_tasks: Sequence[HeldOutTask], cross_tasks: Sequence[HeldOutTask] | None,
                     config: MAMLConfig, ppo_config: PPOConfig, *, split: str, own_symbol: str,
                     cross_symbol: str | None = None, speed_fraction: float = 0.9) -> dict:
    """The MAML stage's held-out evaluation: `evaluate_adaptation` on windows of a later split of the trained
    symbol (`own_tasks`) and, when given, of a symbol it never trained on (`cross_tasks`). Returns
    {"split", "own_symbol", "own": ..., "cross_symbol", "cross": ... | None}, what `gates.check_maml_gate` reads."""
    key = jax.random.key(config.seed)
    out = {"split": split, "own_symbol": own_symbol, "cross_symbol": None, "cross": None,
           "own": evaluate_adaptation(network, params, own_tasks, config, jax.random.fold_in(key, 0), ppo_config,
                                      speed_fraction=speed_fraction)}
    if cross_tasks:
        out["cross_symbol"] = cross_symbol
        out["cross"] = evaluate_adaptation(network, params, cross_tasks, config, jax.random.fold_in(key, 1),
                                           ppo_config, speed_fraction=speed_fraction)
    return out
