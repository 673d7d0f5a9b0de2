"""Stage 2: Mixture-of-Experts specialisation (DESIGN section 4): PPO with another network and a loss hook.

    trainer = make_trainer(MoEConfig(), PPOConfig(), env_params, init_from=ppo_params)   # an `agents.ppo.PPO`
    state = trainer.init(key)                 # experts copied from the stage-1 policy, symmetry broken
    state, metrics = trainer.run(state, n)    # metrics: PPO's + diversity, load_balance, gate_entropy,
                                              #          usage_0..usage_{E-1}

The network is `jaxtrade.networks.MoEActorCritic` (experts stacked on a leading axis, one `nn.vmap`). The
rollout, GAE, minibatch update and optimiser are the PPO trainer's, unchanged; this module gives it the
network, the loss hook (`moe_loss`), the start from stage 1 (`init_from_ppo`) and its hyperparameter leaves
(`MoEHParams`: the diversity and load-balance weights and the gate's temperature). Which expert leads in which
market regime is `jaxtrade.evaluation.regimes`.

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
import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxtrade.agents import ppo as P
from jaxtrade.agents.ppo import PPOBatch, PPOConfig
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

    num_experts: int = 4  # experts, evaluated in parallel (vmap over stacked parameters)
    expert_hidden_dim: int = 128  # width of each expert's MLP layers
    expert_num_layers: int = 2  # hidden layers per expert
    gating_hidden_dim: int = 64  # width of the gate MLP
    gating_temperature: float = 0.8  # softmax temperature of the gate
    activation: str = "tanh"  # hidden-layer activation of experts and gate
    diversity_loss_weight: float = 0.02  # weight of the expert-diversity term of the loss
    load_balance_weight: float = 0.01  # weight of the load-balance term of the loss
    init_noise: float = 0.05  # symmetry-breaking noise from stage 1, x each layer's RMS weight
    num_iterations: int = 800  # training iterations (the seed's stage_2_moe.episodes)
    early_stopping_patience: int = 0  # stop after P --eval_every evaluations with no better --final_metric (0: never)

    def __post_init__(self):
        if self.num_experts < 1 or self.expert_hidden_dim < 1 or self.gating_hidden_dim < 1:
            raise ValueError("MoEConfig: num_experts, expert_hidden_dim and gating_hidden_dim must be >= 1")
        if self.expert_num_layers < 1:
            raise ValueError(f"MoEConfig.expert_num_layers must be >= 1, got {self.expert_num_layers}")
        if self.early_stopping_patience < 0:
            raise ValueError(f"MoEConfig.early_stopping_patience must be >= 0, got {self.early_stopping_patience}")
        if not self.gating_temperature > 0:
            raise ValueError(f"MoEConfig.gating_temperature must be > 0, got {self.gating_temperature}")
        if self.init_noise < 0 or self.num_iterations < 0:
            raise ValueError("MoEConfig.init_noise and num_iterations must be >= 0")

    def replace(self, **changes) -> "MoEConfig":
        return dataclasses.replace(self, **changes)

    def hparams(self) -> "MoEHParams":
        """The shape-free hyperparameters as float32 leaves (what the loss hook reads and `vmap` sweeps)."""
        return MoEHParams(**{f.name: jnp.float32(getattr(self, f.name)) for f in dataclasses.fields(MoEHParams)})

    def make_network(self, num_actions: int) -> MoEActorCritic:
        return make_moe_network(num_actions, self.num_experts, self.expert_hidden_dim, self.gating_hidden_dim,
                                self.gating_temperature, self.activation, self.expert_num_layers)


@struct.dataclass
class MoEHParams:
    """The MoE stage's own hyperparameter leaves (beside PPO's): loss weights and the gate's temperature."""

    diversity_loss_weight: jax.Array
    load_balance_weight: jax.Array
    gating_temperature: jax.Array

    def network_kwargs(self) -> dict:
        return {"temperature": self.gating_temperature}


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


def moe_loss(trainer: P.PPO, params, batch: PPOBatch) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The stage-2 loss (module docstring), the PPO trainer's `loss_hook`: one forward pass of the experts
    (`network.details`) for every term; weights and temperature from `trainer.hook_hparams`."""
    hook = trainer.hook_hparams
    d = trainer.network.apply(params, batch.obs, hook.gating_temperature, method=trainer.network.details)
    ppo_total, aux = P.ppo_loss_from_outputs(d["logits"], d["value"], batch, trainer.config, trainer.hparams)
    div = expert_diversity(d["expert_logits"])
    lb = load_balance(d["gate_probs"])
    total = ppo_total - hook.diversity_loss_weight * div + hook.load_balance_weight * lb
    aux = dict(aux, ppo_loss=ppo_total, diversity=div, load_balance=lb, total_loss=total)
    aux.update(gate_statistics(d["gate_probs"]))
    return total, aux


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


@dataclasses.dataclass(frozen=True)
class _FromStage1:
    """The PPO trainer's `init_hook`: every expert from `trainer.init_from` (stage-1 parameters)."""

    init_noise: float

    def __call__(self, trainer: P.PPO, key: jax.Array):
        obs_shape = jax.eval_shape(trainer.env_reset, jax.random.key(0), trainer.env_params)[0]
        return init_from_ppo(trainer.init_from, key, trainer.network, obs_shape.shape[-1], self.init_noise)


def make_trainer(moe_config: MoEConfig, ppo_config: PPOConfig, env_params, init_from=None, *,
                 network: MoEActorCritic | None = None, **kwargs) -> P.PPO:
    """The MoE stage's trainer: `ppo.make_trainer` with the MoE network, `moe_loss` and `MoEHParams`, running
    `moe_config.num_iterations`. `init_from`: stage-1 PPO parameters every expert starts from (else a fresh MoE
    init). kwargs as `ppo.make_trainer` (env_reset, env_step, per_env_keys)."""
    ppo_config = ppo_config.replace(num_iterations=moe_config.num_iterations)
    if network is None:
        num_actions = getattr(env_params, "num_actions", None)
        if num_actions is None:
            raise ValueError("moe.make_trainer: pass `network` (env_params has no num_actions)")
        network = moe_config.make_network(num_actions)
    if init_from is not None:
        init_from = jax.tree.map(jnp.asarray, _params_dict(init_from))
    return P.make_trainer(ppo_config, env_params, network, loss_hook=moe_loss, hook_hparams=moe_config.hparams(),
                          init_from=init_from, init_hook=_FromStage1(moe_config.init_noise), **kwargs)
