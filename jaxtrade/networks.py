"""Flax (linen) policy networks. Every network maps observations `[..., obs_dim]` to `(logits [..., A],
value [...])`; the trainers (`jaxtrade.agents`) take any module with that signature.

Parameter names are part of the export contract (`jaxtrade.export` maps them to PyTorch): the actor-critic MLP
has Dense layers `actor_0`, `actor_1`, ..., `actor_out` and `critic_0`, `critic_1`, ..., `critic_out`, each
with `kernel` `[in, out]` and `bias` `[out]` (PyTorch's `nn.Linear.weight` is the kernel transposed).
"""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "tanh": jnp.tanh,
    "relu": nn.relu,
    "gelu": nn.gelu,
    "elu": nn.elu,
    "silu": nn.silu,
}


def activation_fn(name: str) -> Callable[[jax.Array], jax.Array]:
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r} (choose from {', '.join(ACTIVATIONS)})") from None


def _orthonormal_columns(z: jax.Array) -> jax.Array:
    """`[m, n]` (m >= n) -> `[m, n]`: the Q of z's QR with R's diagonal made positive, by Gram-Schmidt with
    re-orthogonalisation (CGS2: orthogonal to float rounding), in plain matmuls."""
    def add_column(q, j):
        v = z[:, j]
        v = v - q @ (q.T @ v)
        v = v - q @ (q.T @ v)
        return q.at[:, j].set(v / jnp.sqrt(jnp.sum(v * v))), None

    q, _ = jax.lax.scan(add_column, jnp.zeros_like(z), jnp.arange(z.shape[1]))
    return q


def orthogonal(scale: float = 1.0) -> Callable:
    """`jax.nn.initializers.orthogonal(scale)` for 2-D kernels, without LAPACK's QR: the same normal draws and
    the same matrix (to float rounding). XLA:CPU (jaxlib 0.10.2) deadlocks when two QR custom calls run at
    once in one jitted program on a small thread pool (each blocks a pool thread waiting for batch work that
    only the other pool threads could run): seen on 2 cores when a jitted `train(key)` initialised the actor
    and the critic, and earlier with vmapped experts."""
    def init(key, shape, dtype=jnp.float32):
        if len(shape) != 2:
            raise ValueError(f"orthogonal: expected a 2-D kernel shape, got {shape}")
        n_rows, n_cols = shape
        z = jax.random.normal(key, (max(n_rows, n_cols), min(n_rows, n_cols)), dtype)
        q = _orthonormal_columns(z)
        return jnp.asarray(scale, dtype) * (q.T if n_rows < n_cols else q)

    return init


def _dense(features: int, scale: float, name: str) -> nn.Dense:
    return nn.Dense(features, kernel_init=orthogonal(scale), bias_init=nn.initializers.zeros, name=name)


class ActorCritic(nn.Module):
    """Separate actor and critic MLPs with orthogonal initialisation (sqrt(2) hidden, 0.01 actor output,
    1.0 critic output: the purejaxrl / CleanRL recipe)."""

    num_actions: int
    hidden_sizes: Sequence[int] = (64, 64)
    activation: str = "tanh"

    def dense(self, features: int, scale: float, name: str) -> nn.Dense:
        return _dense(features, scale, name)

    @nn.compact
    def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        act = activation_fn(self.activation)
        hidden_scale = float(np.sqrt(2.0))
        h = obs
        for i, width in enumerate(self.hidden_sizes):
            h = act(self.dense(width, hidden_scale, f"actor_{i}")(h))
        logits = self.dense(self.num_actions, 0.01, "actor_out")(h)
        v = obs
        for i, width in enumerate(self.hidden_sizes):
            v = act(self.dense(width, hidden_scale, f"critic_{i}")(v))
        value = self.dense(1, 1.0, "critic_out")(v)
        return logits, jnp.squeeze(value, -1)


def make_network(num_actions: int, hidden_sizes: Sequence[int] = (64, 64), activation: str = "tanh"
                 ) -> ActorCritic:
    return ActorCritic(num_actions=int(num_actions), hidden_sizes=tuple(int(h) for h in hidden_sizes),
                       activation=activation)


# ---------------------------------------------------------------------------------------------------------
# Mixture of experts (stage 2)


def _scaled_normal_dense(features: int, scale: float, name: str) -> nn.Dense:
    # Gaussian with std scale / sqrt(fan_in): the same per-unit gain as `_dense`'s orthogonal(scale) but no QR.
    return nn.Dense(features, kernel_init=nn.initializers.variance_scaling(scale ** 2, "fan_in", "normal"),
                    bias_init=nn.initializers.zeros, name=name)


class ExpertActorCritic(ActorCritic):
    """One expert: `ActorCritic`'s layers, names and shapes (`actor_0`.., `actor_out`, `critic_0`..,
    `critic_out`), so an expert's sliced parameters run in `ActorCritic` unchanged. Initialised with scaled
    Gaussians (std gain / sqrt(fan_in), gains sqrt(2) hidden, 0.01 actor output, 1.0 critic output) instead
    of orthogonal matrices: a batched (vmapped) QR inside a larger jitted program was seen to hang XLA:CPU
    (jax 0.10.2), and the MoE stage normally starts from stage 1's weights anyway (`init_from_ppo`)."""

    hidden_sizes: Sequence[int] = (128, 128)

    def dense(self, features: int, scale: float, name: str) -> nn.Dense:
        return _scaled_normal_dense(features, scale, name)


def stacked_experts(num_experts: int) -> type[nn.Module]:
    """`ExpertActorCritic` lifted with `nn.vmap` over a leading expert axis: every parameter gains a leading
    `[num_experts]` axis and all experts run as one batched computation (no Python loop). The observation
    is shared (`in_axes=None`); outputs are `(logits [E, ..., A], value [E, ...])`."""
    return nn.vmap(ExpertActorCritic, in_axes=None, out_axes=0, variable_axes={"params": 0},
                   split_rngs={"params": True}, axis_size=int(num_experts))


class MoEActorCritic(nn.Module):
    """Soft mixture of `num_experts` actor-critics behind a gating MLP (DESIGN section 4, stage 2).

    gate:    g = softmax(gate_out(act(gate_0(obs))) / gating_temperature)            [..., E]
    experts: (logits_e, v_e) = ActorCritic_e(obs), e = 0..E-1, evaluated together by one `nn.vmap`
    policy:  pi(a|s) = sum_e g_e softmax(logits_e)(a); `logits` = log pi (a normalised log-probability)
    value:   V(s) = sum_e g_e v_e

    `__call__(obs) -> (logits [..., A], value [...])`, the trainers' network contract (the MoE trainer passes
    `temperature=`, its hyperparameter leaf); `details(obs) -> dict` adds the aux: `gate_probs [..., E]`, `gate_logits [..., E]` (after the
    temperature), `expert_logits [..., E, A]`, `expert_values [..., E]`, `logits`, `value`.

    Parameter names (export contract):
      gate_0/{kernel [obs_dim, gating_hidden_dim], bias}, gate_out/{kernel [gating_hidden_dim, E], bias [E]}
      experts/{actor_0, actor_1, actor_out, critic_0, critic_1, critic_out}/{kernel, bias}: exactly
        `ActorCritic(hidden_sizes=(expert_hidden_dim,) * expert_num_layers)`'s names and shapes (see
        `ExpertActorCritic`), each with a
        leading expert axis `[E, ...]` (expert e's `actor_0` kernel is `experts/actor_0/kernel[e]`).
    The gate's output layer starts small (orthogonal, scale 0.01), so the gate starts near uniform.
    """

    num_actions: int
    num_experts: int = 4
    expert_hidden_dim: int = 128
    gating_hidden_dim: int = 64
    gating_temperature: float = 0.8
    activation: str = "tanh"
    expert_num_layers: int = 2

    def setup(self):
        if self.num_experts < 1:
            raise ValueError(f"MoEActorCritic.num_experts must be >= 1, got {self.num_experts}")
        if not self.gating_temperature > 0:
            raise ValueError(f"MoEActorCritic.gating_temperature must be > 0, got {self.gating_temperature}")
        self.gate_0 = _dense(self.gating_hidden_dim, float(np.sqrt(2.0)), "gate_0")
        self.gate_out = _dense(self.num_experts, 0.01, "gate_out")
        self.experts = stacked_experts(self.num_experts)(
            num_actions=self.num_actions, hidden_sizes=self.expert_hidden_sizes, activation=self.activation,
            name="experts")

    @property
    def expert_hidden_sizes(self) -> tuple[int, ...]:
        return (int(self.expert_hidden_dim),) * int(self.expert_num_layers)

    def gate(self, obs: jax.Array, temperature=None) -> tuple[jax.Array, jax.Array]:
        """(gate probabilities [..., E], tempered gate logits [..., E]). `temperature` (a float or a traced
        hyperparameter, for sweeps) replaces `gating_temperature` when given."""
        h = activation_fn(self.activation)(self.gate_0(obs))
        z = self.gate_out(h) / (self.gating_temperature if temperature is None else temperature)
        return jax.nn.softmax(z, axis=-1), z

    def details(self, obs: jax.Array, temperature=None) -> dict[str, jax.Array]:
        gate_probs, gate_logits = self.gate(obs, temperature)
        expert_logits, expert_values = self.experts(obs)  # [E, ..., A], [E, ...]
        expert_logits = jnp.moveaxis(expert_logits, 0, -2)  # [..., E, A]
        expert_values = jnp.moveaxis(expert_values, 0, -1)  # [..., E]
        expert_log_p = jax.nn.log_softmax(expert_logits, axis=-1)
        log_gate = jax.nn.log_softmax(gate_logits, axis=-1)
        logits = jax.nn.logsumexp(log_gate[..., None] + expert_log_p, axis=-2)  # log sum_e g_e p_e
        value = jnp.sum(gate_probs * expert_values, axis=-1)
        return {"logits": logits, "value": value, "gate_probs": gate_probs, "gate_logits": gate_logits,
                "expert_logits": expert_logits, "expert_values": expert_values}

    def __call__(self, obs: jax.Array, temperature=None) -> tuple[jax.Array, jax.Array]:
        d = self.details(obs, temperature)
        return d["logits"], d["value"]


def make_moe_network(num_actions: int, num_experts: int = 4, expert_hidden_dim: int = 128,
                     gating_hidden_dim: int = 64, gating_temperature: float = 0.8, activation: str = "tanh",
                     expert_num_layers: int = 2) -> MoEActorCritic:
    return MoEActorCritic(num_actions=int(num_actions), num_experts=int(num_experts),
                          expert_hidden_dim=int(expert_hidden_dim), gating_hidden_dim=int(gating_hidden_dim),
                          gating_temperature=float(gating_temperature), activation=activation,
                          expert_num_layers=int(expert_num_layers))
