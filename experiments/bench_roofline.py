"""PPO against the machine's matrix-product peak: FLOPs per env step derived from the config and the network's
parameters, and a jitted microbenchmark of exactly the matrix products a PPO minibatch step performs.

On a CPU PPO is bound by the products of its update (BUILD.md, "Benchmarks"): per observation row, a Dense
layer with an `[in, out]` kernel costs 2 x in x out FLOPs forward, as much again for its weight gradient
(a product over the minibatch rows) and, except for a first layer (whose input is the observation, which
needs no gradient), as much for its input gradient. Per env step PPO pays one forward pass in the rollout
(plus the bootstrap value of each env once per rollout) and `update_epochs` forward and backward passes over
the rows its minibatches use. Elementwise work (tanh, the loss, Adam) is not counted: the roofline asks how
close the trainer gets to the speed of its matrix products alone.

    flops = ppo_flops(config, params)           # PPOFlops: per-row and per-env-step counts
    peak = matmul_peak(params, minibatch_size)  # {"gflops": ..., ...} measured here, now
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments.bench_measure import time_calls


@dataclasses.dataclass(frozen=True)
class Layer:
    """One Dense layer of the actor-critic: `chain` ("actor" / "critic"), position in it, kernel shape."""

    chain: str
    index: int
    fan_in: int
    fan_out: int

    @property
    def first(self) -> bool:
        return self.index == 0


def actor_critic_layers(params) -> list[Layer]:
    """The Dense layers of a `jaxtrade.networks.ActorCritic` in order, from its parameter names (the export
    contract: `actor_0`, `actor_1`, ..., `actor_out`; the same for `critic`)."""
    inner = params.get("params", params)
    layers = []
    for chain in ("actor", "critic"):
        names = sorted((k for k in inner if k.startswith(f"{chain}_") and k != f"{chain}_out"),
                       key=lambda k: int(k.rsplit("_", 1)[1])) + [f"{chain}_out"]
        for i, name in enumerate(names):
            if name not in inner:
                raise ValueError(f"actor_critic_layers: no {name} in the parameters (not an ActorCritic?)")
            fan_in, fan_out = np.shape(inner[name]["kernel"])
            layers.append(Layer(chain, i, int(fan_in), int(fan_out)))
    return layers


@dataclasses.dataclass(frozen=True)
class PPOFlops:
    """Matrix-product FLOPs of PPO (see the module docstring)."""

    forward_per_row: int  # one forward pass of actor and critic for one observation
    backward_per_row: int  # weight gradients + input gradients of every non-first layer
    rollout_per_step: float  # forward pass per step + bootstrap value per env per rollout
    update_per_step: float  # update_epochs x used rows per step x (forward + backward)
    layers: tuple[Layer, ...]

    @property
    def per_step(self) -> float:
        return self.rollout_per_step + self.update_per_step

    def as_dict(self) -> dict:
        return {"forward_flops_per_row": self.forward_per_row, "backward_flops_per_row": self.backward_per_row,
                "rollout_flops_per_step": round(self.rollout_per_step, 1),
                "update_flops_per_step": round(self.update_per_step, 1),
                "flops_per_step": round(self.per_step, 1),
                "layers": [f"{l.chain}_{l.index}:{l.fan_in}x{l.fan_out}" for l in self.layers]}


def ppo_flops(config, params) -> PPOFlops:
    """FLOPs per env step of PPO under `config` (a `PPOConfig`) with an ActorCritic's `params`."""
    layers = tuple(actor_critic_layers(params))
    forward = sum(2 * l.fan_in * l.fan_out for l in layers)
    backward = sum(2 * l.fan_in * l.fan_out * (1 if l.first else 2) for l in layers)
    used = config.num_minibatches * config.minibatch_size / config.batch_size
    return PPOFlops(forward_per_row=forward, backward_per_row=backward,
                    rollout_per_step=forward * (1.0 + 1.0 / config.num_steps),
                    update_per_step=config.update_epochs * used * (forward + backward), layers=layers)


def _minibatch_products(weights, x):
    """The products of one minibatch step for each chain, with no elementwise work in between: forward
    h_{i+1} = h_i W_i, then from g = h_L backwards dW_i = h_i^T g and, for i > 0, g <- g W_i^T.
    `weights`: {chain: [W_0, ..., W_L]}; x: [M, obs_dim]. Returns {chain: [dW_0, ..., dW_L]}."""
    grads = {}
    for chain, ws in weights.items():
        hs = [x]
        for w in ws:
            hs.append(hs[-1] @ w)
        g = hs[-1]
        dws = [None] * len(ws)
        for i in range(len(ws) - 1, -1, -1):
            dws[i] = jnp.einsum("mi,mo->io", hs[i], g)
            if i > 0:
                g = g @ ws[i].T
        grads[chain] = dws
    return grads


class MatmulProgram:
    """The matrix products of `minibatches` PPO minibatch steps of `minibatch_size` rows on an ActorCritic's
    layer shapes, compiled: a `lax.scan`, each step on its own data and updating the kernels it
    differentiates (so nothing is loop-invariant). `call()` runs it once: `flops_per_call` FLOPs."""

    def __init__(self, params, minibatch_size: int, *, minibatches: int = 16, seed: int = 0):
        self.layers = actor_critic_layers(params)
        self.minibatch_size = int(minibatch_size)
        rng = np.random.default_rng(seed)
        weights = {}
        for l in self.layers:
            w = rng.standard_normal((l.fan_in, l.fan_out)).astype(np.float32) / np.sqrt(l.fan_in)
            weights.setdefault(l.chain, []).append(jnp.asarray(w))
        obs_dim = self.layers[0].fan_in
        self._xs = jnp.asarray(rng.standard_normal((minibatches, minibatch_size, obs_dim)).astype(np.float32))
        per_row = sum(2 * l.fan_in * l.fan_out * (2 if l.first else 3) for l in self.layers)
        self.flops_per_call = int(per_row * minibatch_size * minibatches)

        def body(ws, x):
            grads = _minibatch_products(ws, x)
            return jax.tree.map(lambda w, g: w - 1e-7 * g, ws, grads), None

        def run(ws, xs):
            return jax.lax.scan(body, ws, xs)[0]

        t0 = time.perf_counter()
        self._compiled = jax.jit(run).lower(weights, self._xs).compile()
        self.compile_s = time.perf_counter() - t0
        self._weights = weights

    def call(self):
        self._weights = self._compiled(self._weights, self._xs)
        return self._weights

    def describe(self) -> dict:
        return {"minibatch_size": self.minibatch_size, "flops_per_call": self.flops_per_call,
                "compile_s": round(self.compile_s, 3),
                "shapes": [f"{l.chain}_{l.index}:{l.fan_in}x{l.fan_out}" for l in self.layers]}


def matmul_peak(params, minibatch_size: int, *, repeats: int = 5) -> dict:
    """The FLOP rate of `MatmulProgram` alone: median of `repeats` runs."""
    program = MatmulProgram(params, minibatch_size)
    timing = time_calls(program.call, repeats=repeats, min_run_s=0.3, max_total_s=20.0)
    return {**program.describe(), "gflops": round(program.flops_per_call / timing["per_call_s"] / 1e9, 2),
            "run_s": timing["run_s"]}


def square_matmul_peak(n: int = 1024, products: int = 8, *, repeats: int = 5) -> dict:
    """The FLOP rate of large square float32 products (`products` chained `[n, n] @ [n, n]` in one jitted
    scan): the most this device's matrix units give any program, beside `matmul_peak`'s rate at PPO's own
    shapes. The weights are scaled by 1/sqrt(n), so the chained values stay finite."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((n, n)).astype(np.float32))
    ws = jnp.asarray((rng.standard_normal((products, n, n)) / np.sqrt(n)).astype(np.float32))
    compiled = jax.jit(lambda x, ws: jax.lax.scan(lambda h, w: (h @ w, None), x, ws)[0]).lower(x, ws).compile()
    timing = time_calls(lambda: compiled(x, ws), repeats=repeats, min_run_s=0.3, max_total_s=20.0)
    flops = 2 * n ** 3 * products
    return {"n": n, "gflops": round(flops / timing["per_call_s"] / 1e9, 2), "run_s": timing["run_s"]}
