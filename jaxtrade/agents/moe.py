"""Stage 2: Mixture-of-Experts specialisation (DESIGN section 4), built on the PPO trainer.

    trainer = make_trainer(MoEConfig(), PPOConfig(), env_params, init_from=ppo_params)
    rs = trainer.init(key)                    # experts copied from the stage-1 policy, symmetry broken
    rs, metrics = trainer.run(rs, n)          # metrics: PPO's + diversity, load_balance, gate_entropy,
                                              #          usage_0..usage_{E-1}, trades_per_episode
    table = expert_regime_table(trainer.network, rs.train_state.params, market, "val")

The network is `jaxtrade.networks.MoEActorCritic` (experts stacked on a leading axis, one `nn.vmap`). The
rollout, GAE, minibatch update and optimiser are `PPOTrainer`'s, unchanged; only the loss and the extra
metrics are this module's.

Loss = `ppo_loss_from_outputs` (the shared PPO objective, on the mixture's logits and value)
       - diversity_loss_weight * diversity + load_balance_weight * load_balance, where
  diversity    = mean over unordered expert pairs (i, j) and over the batch of JS(pi_i(.|s), pi_j(.|s)), the
                 Jensen-Shannon divergence of the experts' own action distributions: 0 for identical
                 experts, at most log 2; minimising the loss increases it.
  load_balance = KL(mean_batch(g) || uniform) = sum_e gbar_e log(E gbar_e): 0 when every expert carries the
                 same share of the batch's gate mass, log E when one expert takes it all. It balances usage
                 over the batch but leaves each state's gate free to be sharp (specialisation).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from jaxtrade.agents import ppo as P
from jaxtrade.agents import rollout as R
from jaxtrade.agents.ppo import PPOBatch, PPOConfig, PPOTrainer, RunnerState
from jaxtrade.networks import MoEActorCritic, make_moe_network


@dataclasses.dataclass(frozen=True)
class MoEConfig:
    """MoE stage settings; defaults are the seed's `training_params.moe` and `stage_2_moe` (DESIGN section 10).

    The PPO hyperparameters (learning rate, minibatch, epochs, clip, rollout size) come from a `PPOConfig`
    passed beside this one; `num_iterations` here overrides the PPO config's.
    init_noise: symmetry breaking when starting from a stage-1 policy (`init_from_ppo`): every kernel entry of
      every expert gets independent Gaussian noise of standard deviation `init_noise` x the RMS of the stage-1
      kernel it was copied from (so 0.05 = 5% of that layer's typical weight); biases are copied exactly.
    """

    num_experts: int = 4
    expert_hidden_dim: int = 128
    expert_num_layers: int = 2
    gating_hidden_dim: int = 64
    gating_temperature: float = 0.8
    activation: str = "tanh"
    diversity_loss_weight: float = 0.02
    load_balance_weight: float = 0.01
    init_noise: float = 0.05
    num_iterations: int = 800  # the seed's stage_2_moe.episodes
    # Gate criteria on the validation split (applied by the sequence runner).
    min_win_rate: float = 0.40
    min_profit_factor: float = 1.0
    max_drawdown: float = 0.35

    def __post_init__(self):
        if self.num_experts < 1 or self.expert_hidden_dim < 1 or self.gating_hidden_dim < 1:
            raise ValueError("MoEConfig: num_experts, expert_hidden_dim and gating_hidden_dim must be >= 1")
        if self.expert_num_layers < 1:
            raise ValueError(f"MoEConfig.expert_num_layers must be >= 1, got {self.expert_num_layers}")
        if not self.gating_temperature > 0:
            raise ValueError(f"MoEConfig.gating_temperature must be > 0, got {self.gating_temperature}")
        if self.init_noise < 0 or self.num_iterations < 0:
            raise ValueError("MoEConfig.init_noise and num_iterations must be >= 0")

    def replace(self, **changes) -> "MoEConfig":
        return dataclasses.replace(self, **changes)

    def make_network(self, num_actions: int) -> MoEActorCritic:
        return make_moe_network(num_actions, self.num_experts, self.expert_hidden_dim, self.gating_hidden_dim,
                                self.gating_temperature, self.activation, self.expert_num_layers)


# ---------------------------------------------------------------------------------------------------------
# Loss terms


def expert_diversity(expert_logits: jax.Array) -> jax.Array:
    """Mean pairwise Jensen-Shannon divergence between the experts' action distributions.

    expert_logits `[..., E, A]` -> scalar: the mean over the leading (batch) axes and over the E(E-1)/2
    unordered pairs. 0 when all experts agree (and for E = 1); bounded by log 2.
    """
    log_p = jax.nn.log_softmax(expert_logits.astype(jnp.float32), axis=-1)
    num_experts = log_p.shape[-2]
    if num_experts < 2:
        return jnp.zeros((), jnp.float32)
    lp_i = log_p[..., :, None, :]  # [..., E, 1, A]
    lp_j = log_p[..., None, :, :]  # [..., 1, E, A]
    log_m = jnp.logaddexp(lp_i, lp_j) - math.log(2.0)
    js = 0.5 * (jnp.sum(jnp.exp(lp_i) * (lp_i - log_m), -1) + jnp.sum(jnp.exp(lp_j) * (lp_j - log_m), -1))
    # js is symmetric with a zero diagonal: the sum over all ordered pairs is twice the unordered one.
    per_sample = js.sum((-2, -1)) / (num_experts * (num_experts - 1))
    return per_sample.mean()


def load_balance(gate_probs: jax.Array) -> jax.Array:
    """KL(mean gate over the batch || uniform) for gate probabilities `[..., E]`: 0 when balanced."""
    num_experts = gate_probs.shape[-1]
    mean_gate = gate_probs.reshape(-1, num_experts).mean(0)
    return jnp.sum(mean_gate * (jnp.log(jnp.maximum(mean_gate, 1e-12)) + math.log(num_experts)))


def gate_statistics(gate_probs: jax.Array) -> dict[str, jax.Array]:
    """Scalars: `gate_entropy` (mean per-state entropy of the gate, nats; log E = uniform), `usage_{e}`
    (mean gate probability of expert e over the batch). Scalars only: the trainer averages aux over
    minibatches and epochs with a full `jnp.mean`, which would flatten a vector."""
    num_experts = gate_probs.shape[-1]
    flat = gate_probs.reshape(-1, num_experts)
    ent = -jnp.sum(flat * jnp.log(jnp.maximum(flat, 1e-12)), -1).mean()
    usage = flat.mean(0)
    out = {"gate_entropy": ent}
    out.update({f"usage_{e}": usage[e] for e in range(num_experts)})
    return out


def moe_loss(params, apply_fn: Callable, batch: PPOBatch, config: PPOConfig, *, network: MoEActorCritic,
             moe_config: MoEConfig) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The stage-2 loss (module docstring). `apply_fn` is unused: the loss needs the experts' outputs, so it
    applies `network.details` itself (one forward pass for all terms). Bind `network` and `moe_config` with
    `make_moe_loss` to get `ppo_loss`'s signature."""
    del apply_fn
    d = network.apply(params, batch.obs, method=network.details)
    ppo_total, aux = P.ppo_loss_from_outputs(d["logits"], d["value"], batch, config)
    div = expert_diversity(d["expert_logits"])
    lb = load_balance(d["gate_probs"])
    total = ppo_total - moe_config.diversity_loss_weight * div + moe_config.load_balance_weight * lb
    aux = dict(aux, ppo_loss=ppo_total, diversity=div, load_balance=lb, total_loss=total)
    aux.update(gate_statistics(d["gate_probs"]))
    return total, aux


def make_moe_loss(network: MoEActorCritic, moe_config: MoEConfig) -> P.LossFn:
    return functools.partial(moe_loss, network=network, moe_config=moe_config)


# ---------------------------------------------------------------------------------------------------------
# Initialisation from stage 1


def _params_dict(params) -> Mapping[str, Any]:
    params = getattr(params, "params", params)  # a TrainState
    if isinstance(params, Mapping) and "params" in params:
        params = params["params"]
    return params


def init_from_ppo(ppo_params, key: jax.Array, network: MoEActorCritic, obs_dim: int,
                  init_noise: float = 0.05) -> dict:
    """MoE parameters whose every expert starts as the stage-1 `ActorCritic` (`ppo_params`: its variables,
    `{"params": ...}`, the inner dict, or a TrainState), then per-expert noise breaks the symmetry.

    Width embedding (stage-1 hidden 64 into experts of 128): the stage-1 kernel fills the top-left block of
    each layer; the extra units' incoming weights keep the MoE's fresh initialisation, while their outgoing
    weights into the original units (and into the output layers) are zero. With `init_noise=0` each expert
    therefore computes exactly the stage-1 logits and value, and the extra units are live (not stuck at a
    zero-gradient saddle). Layer counts must match and stage-1 widths must not exceed the experts'.
    Noise: each expert's kernels get i.i.d. N(0, (init_noise x RMS of the stage-1 kernel)^2) entries,
    independent across experts; biases are copied. The gate keeps its fresh initialisation (output layer at
    scale 0.01), so it starts near uniform and the mixture starts (near) equal to the stage-1 policy.
    Jit-able (shapes only are inspected).
    """
    src = _params_dict(ppo_params)
    k_fresh, k_noise = jax.random.split(key)
    fresh = network.init(k_fresh, jnp.zeros((obs_dim,), jnp.float32))["params"]
    experts = fresh["experts"]
    missing = sorted(set(experts) - set(src))
    if missing:
        raise ValueError(f"init_from_ppo: the stage-1 parameters lack layer(s) {', '.join(missing)} "
                         f"(have {', '.join(sorted(src))}); expert_num_layers must match the PPO network")
    extra = sorted(k for k in src if k.startswith(("actor_", "critic_")) and k not in experts)
    if extra:
        raise ValueError(f"init_from_ppo: the stage-1 network has layer(s) {', '.join(extra)} that the experts "
                         f"lack; expert_num_layers must match the PPO network")
    new_experts = {}
    noise_keys = jax.random.split(k_noise, len(experts))
    for (name, layer), nk in zip(sorted(experts.items()), noise_keys):
        w_src = jnp.asarray(src[name]["kernel"], jnp.float32)
        b_src = jnp.asarray(src[name]["bias"], jnp.float32)
        w = layer["kernel"]  # [E, in, out]
        in_p, out_p = w_src.shape
        if in_p > w.shape[1] or out_p > w.shape[2]:
            raise ValueError(f"init_from_ppo: layer {name} is {in_p}x{out_p} in the stage-1 network, larger "
                             f"than the experts' {w.shape[1]}x{w.shape[2]}")
        # Block layout with static masks (no scatter): [[src, fresh], [0, fresh]] over (in, out).
        in_f, out_f = w.shape[1:]
        w_pad = jnp.pad(w_src, ((0, in_f - in_p), (0, out_f - out_p)))
        cols_src = np.arange(out_f) < out_p
        rows_src = np.arange(in_f) < in_p
        keep_fresh = np.broadcast_to(~cols_src[None, :], (in_f, out_f))
        from_src = rows_src[:, None] & cols_src[None, :]
        w = jnp.where(keep_fresh, w, jnp.where(from_src, w_pad, 0.0))
        b = jnp.where(cols_src, jnp.pad(b_src, (0, out_f - out_p)), layer["bias"])
        if init_noise > 0:
            rms = jnp.sqrt(jnp.mean(jnp.square(w_src)))
            w = w + init_noise * rms * jax.random.normal(nk, w.shape, w.dtype)
        new_experts[name] = {"kernel": w, "bias": b}
    return {"params": dict(fresh, experts=new_experts)}


# ---------------------------------------------------------------------------------------------------------
# The trainer


class MoELogCallback(P.LogCallback):
    """PPO's log line plus one line of gate statistics."""

    def __call__(self, metrics: Mapping[str, np.ndarray]) -> None:
        super().__call__(metrics)
        m = {k: float(np.mean(np.asarray(v))) for k, v in metrics.items()}
        usage = " ".join(f"{m[k]:.2f}" for k in sorted((k for k in m if k.startswith("usage_")),
                                                      key=lambda k: int(k.split("_")[1])))
        logging.info("%s it %d | usage [%s] | gate entropy %.3f | diversity %.4f | load balance %.4f | "
                     "trades/episode %.2f", self.name, m["iteration"], usage, m["gate_entropy"], m["diversity"],
                     m["load_balance"], m["trades_per_episode"])


class MoETrainer(PPOTrainer):
    """`PPOTrainer` with the MoE network and loss; `init` starts from `init_from` (stage-1 parameters) when
    given. Adds `trades_per_episode` to every iteration's metrics (the gate statistics come from the loss's
    aux, averaged over the iteration's minibatches)."""

    def __init__(self, moe_config: MoEConfig, ppo_config: PPOConfig, env_params, *, init_from=None,
                 network: MoEActorCritic | None = None,
                 callback: Callable[[dict[str, np.ndarray]], None] | None | str = "default", **kwargs):
        ppo_config = ppo_config.replace(num_iterations=moe_config.num_iterations)
        if network is None:
            num_actions = getattr(env_params, "num_actions", None)
            if num_actions is None:
                raise ValueError("moe.make_trainer: pass `network` (env_params has no num_actions)")
            network = moe_config.make_network(num_actions)
        if callback == "default":
            callback = MoELogCallback(name="moe", total_iterations=moe_config.num_iterations)
        kwargs.setdefault("loss_fn", make_moe_loss(network, moe_config))
        super().__init__(ppo_config, env_params, network, callback=None, **kwargs)
        self.moe_config = moe_config
        self.init_from = init_from
        self.callback = None  # PPOTrainer.iteration must not log: ours logs the extended metrics
        self.moe_callback = callback

    def init_params(self, key: jax.Array, env_params=None):
        if self.init_from is None:
            return super().init_params(key, env_params)
        env_params = self.env_params if env_params is None else env_params
        obs_shape = jax.eval_shape(self.env_reset, jax.random.key(0), env_params)[0]
        return init_from_ppo(self.init_from, key, self.network, obs_shape.shape[-1], self.moe_config.init_noise)

    def iteration(self, rs: RunnerState, env_params, log_now: jax.Array | bool = False
                  ) -> tuple[RunnerState, dict[str, jax.Array]]:
        rs, metrics = super().iteration(rs, env_params, False)
        eps = metrics["episodes"].astype(jnp.float32)
        metrics["trades_per_episode"] = jnp.where(
            eps > 0, metrics["num_trades"].astype(jnp.float32) / jnp.maximum(eps, 1.0), jnp.nan)
        if self.moe_callback is not None and self.config.log_every > 0:
            host = R.host_call(self.moe_callback)
            jax.lax.cond(log_now, lambda m: jax.debug.callback(host, m), lambda m: None, metrics)
        return rs, metrics


def make_trainer(moe_config: MoEConfig, ppo_config: PPOConfig, env_params, init_from=None, **kwargs
                 ) -> MoETrainer:
    """Build a `MoETrainer`. `init_from`: stage-1 PPO parameters to start every expert from (else a fresh
    MoE init). kwargs as `ppo.make_trainer` (env_reset, env_step, per_env_keys, callback, network, loss_fn)."""
    return MoETrainer(moe_config, ppo_config, env_params, init_from=init_from, **kwargs)


# ---------------------------------------------------------------------------------------------------------
# Which expert leads in which market regime


VOL_BUCKETS = ("low", "mid", "high")
TREND_BUCKETS = ("down", "sideways", "up")


def _float_or_none(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def gate_trace(network: MoEActorCritic, params, env_params) -> dict[str, np.ndarray]:
    """Greedy run through one episode from `reset_to(env_params, 0)` (build `env_params` with
    `episode_sessions=None` to cover the whole split): per decision bar, `bar` index `[N]`, `gate_probs`
    `[N, E]`, `action` `[N]`. Host numpy arrays."""
    from jaxtrade import env as trading_env

    start = int(env_params.session_start[int(env_params.split_lo)])
    end = int(env_params.session_end[int(env_params.split_lo) + int(env_params.episode_sessions) - 1])
    n_steps = end - start

    @jax.jit
    def run(params, env_params):
        obs0, s0 = trading_env.reset_to(env_params, 0)
        key = jax.random.key(0)

        def body(carry, _):
            obs, s = carry
            d = network.apply(params, obs, method=network.details)
            action = jnp.argmax(d["logits"], -1).astype(jnp.int32)
            obs2, s2, _, _, _ = trading_env.step(key, s, action, env_params)
            return (obs2, s2), (s.t, d["gate_probs"], action)

        _, out = jax.lax.scan(body, (obs0, s0), None, length=n_steps)
        return out

    bar, gate, action = jax.device_get(run(params, env_params))
    return {"bar": np.asarray(bar), "gate_probs": np.asarray(gate), "action": np.asarray(action)}


def expert_regime_table(network: MoEActorCritic, params, market, split: str = "val", *, env_params=None,
                        vol_feature: str = "rvol_20", trend_feature: str = "logret_60",
                        trend_band: float = 0.5) -> dict:
    """Which expert leads in which market regime, on `split` (greedy evaluation through the env).

    Every decision bar of the split is bucketed by volatility terciles of `vol_feature` (unscaled with
    `market.scaler`; edges are the split's own 1/3 and 2/3 quantiles) and by trend: `trend_feature`
    (unscaled) below -band is "down", above +band "up", else "sideways", with band = `trend_band` x the
    split's standard deviation of that feature. For each of the 3 x 3 cells: bar count, mean gate
    probabilities and the leading expert (argmax of the mean; None for an empty cell).
    `env_params`: default `env.env_params(EnvConfig(), market, split, whole_split=True)` (the split as one
    episode under the default rules); the sequence passes its own.
    Returns a JSON-serialisable dict: `cells` (a list of per-cell dicts) and the same as 3 x 3 grids
    `leader`, `bars`, `mean_gate` (rows = vol low/mid/high, columns = trend down/sideways/up), plus
    `usage` (mean gate over all bars) and the bucket edges.
    """
    from jaxtrade import env as trading_env
    from jaxtrade.features import FEATURE_NAMES

    if env_params is None:
        config = trading_env.EnvConfig(split_fractions=market.split_fractions)
        env_params = trading_env.env_params(config, market, split, whole_split=True)
    trace = gate_trace(network, params, env_params)
    bars, gate = trace["bar"], trace["gate_probs"]
    num_experts = gate.shape[-1]
    feats = np.asarray(market.data.features)[bars].astype(np.float64)
    mean, std = np.asarray(market.scaler.mean), np.asarray(market.scaler.std)
    names = list(FEATURE_NAMES)
    for f in (vol_feature, trend_feature):
        if f not in names:
            raise ValueError(f"expert_regime_table: unknown feature {f!r}")
    iv, it = names.index(vol_feature), names.index(trend_feature)
    vol = feats[:, iv] * std[iv] + mean[iv]
    trend = feats[:, it] * std[it] + mean[it]
    vol_edges = np.quantile(vol, [1 / 3, 2 / 3]) if len(vol) else np.zeros(2)
    vol_bucket = np.digitize(vol, vol_edges)  # 0, 1, 2
    band = float(trend_band * np.std(trend)) if len(trend) else 0.0
    trend_bucket = np.where(trend < -band, 0, np.where(trend > band, 2, 1))

    cells, leader, counts, mean_gate = [], [], [], []
    for vi, vname in enumerate(VOL_BUCKETS):
        row_l, row_c, row_g = [], [], []
        for ti, tname in enumerate(TREND_BUCKETS):
            mask = (vol_bucket == vi) & (trend_bucket == ti)
            n = int(mask.sum())
            g = gate[mask].mean(0) if n else np.full(num_experts, np.nan)
            lead = int(np.argmax(g)) if n else None
            g_list = [_float_or_none(x) for x in g]
            cells.append({"vol": vname, "trend": tname, "bars": n, "leader": lead, "mean_gate": g_list,
                          "long_share": _float_or_none(np.mean(trace["action"][mask] > env_params.max_lots))
                          if n else None})
            row_l.append(lead)
            row_c.append(n)
            row_g.append(g_list)
        leader.append(row_l)
        counts.append(row_c)
        mean_gate.append(row_g)
    return {
        "symbol": market.symbol, "split": split, "num_bars": int(len(bars)), "num_experts": int(num_experts),
        "vol_feature": vol_feature, "trend_feature": trend_feature,
        "vol_buckets": list(VOL_BUCKETS), "trend_buckets": list(TREND_BUCKETS),
        "vol_edges": [float(x) for x in vol_edges], "trend_band": band,
        "usage": [_float_or_none(x) for x in (gate.mean(0) if len(gate) else np.full(num_experts, np.nan))],
        "cells": cells, "leader": leader, "bars": counts, "mean_gate": mean_gate,
    }


def plot_expert_regimes(table: Mapping[str, Any], path) -> str | None:
    """Heat maps (one panel per expert) of the mean gate probability in each volatility x trend cell, the
    leading expert's cells starred, bar counts in the first panel. Returns the path, or None (with a log
    notice) when matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logging.warning("plot_expert_regimes: matplotlib is not installed; skipping %s "
                        "(pip install 'jaxtrade[report]')", path)
        return None
    num_experts = int(table["num_experts"])
    g = np.array([[[np.nan if x is None else x for x in cell] for cell in row] for row in table["mean_gate"]],
                 dtype=np.float64)  # [3 vol, 3 trend, E]
    fig, axes = plt.subplots(1, num_experts, figsize=(3.2 * num_experts + 1.0, 3.4), squeeze=False)
    im = None
    for e, ax in enumerate(axes[0]):
        im = ax.imshow(g[:, :, e], vmin=0.0, vmax=1.0, cmap="viridis", origin="lower")
        ax.set_xticks(range(3), table["trend_buckets"])
        ax.set_yticks(range(3), table["vol_buckets"])
        ax.set_xlabel("trend")
        if e == 0:
            ax.set_ylabel("volatility")
        ax.set_title(f"expert {e}")
        for vi in range(3):
            for ti in range(3):
                val = g[vi, ti, e]
                if np.isnan(val):
                    continue
                star = "*" if table["leader"][vi][ti] == e else ""
                text = f"{val:.2f}{star}"
                if e == 0:
                    text += f"\nn={table['bars'][vi][ti]}"
                ax.text(ti, vi, text, ha="center", va="center", fontsize=8,
                        color="white" if val < 0.6 else "black")
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="mean gate probability")
    fig.suptitle(f"{table.get('symbol', '')} {table.get('split', '')}: expert gate by regime (* = leader)")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)
