"""Benchmark helpers (the benchmarks themselves are run by hand, not timed in tests)."""

import jax
import jax.numpy as jnp

from experiments import bench
from jaxtrade.networks import make_moe_network, make_network


def test_dense_macs_per_row_counts_every_kernel():
    obs = jnp.zeros((1, 19))
    ppo = make_network(3, (64, 64)).init(jax.random.key(0), obs)
    # actor 19*64 + 64*64 + 64*3, critic 19*64 + 64*64 + 64*1
    assert bench._dense_macs_per_row(ppo) == (1216 + 4096 + 192) + (1216 + 4096 + 64)
    moe = make_moe_network(3, num_experts=4, expert_hidden_dim=128, gating_hidden_dim=64).init(jax.random.key(0), obs)
    one = (19 * 128 + 128 * 128 + 128 * 3) + (19 * 128 + 128 * 128 + 128 * 1)
    assert bench._dense_macs_per_row(moe) == 4 * one + 19 * 64 + 64 * 4
