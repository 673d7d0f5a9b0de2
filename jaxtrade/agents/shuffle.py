"""Minibatch shuffling without a sort.

`jax.random.permutation` shuffles by sorting random keys (two rounds of `sort_key_val` for a 131,072-row
batch); on a CPU those sorts cost ~100 ms per epoch, more than the epoch's gradient steps. PPO only needs each
epoch to visit the batch in an unpredictable, key-dependent order with every row exactly once, so
`permutation(key, n)` builds one from a keyed (unbalanced) Feistel network instead: a bijection of
[0, 2^b), b the smallest bit width covering n, evaluated on every index in parallel; when n is not a power of
two the images that fall outside [0, n) are dropped by a stable compaction. O(n) elementwise work (plus one
scatter when n is not a power of two); no sort, no loop.

Four rounds of a murmur3-mixed round function: a Luby-Rackoff-style pseudo-random permutation, far more
mixing than minibatch sampling needs. It is not `jax.random.permutation`'s distribution bit for bit, only a
different uniform-looking shuffle; tests check it is a bijection, key-dependent, and spreads every source
block over the whole output.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

ROUNDS = 4


def _mix32(x: jax.Array) -> jax.Array:
    """murmur3's 32-bit finaliser."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x85EBCA6B)
    x = x ^ (x >> 13)
    x = x * jnp.uint32(0xC2B2AE35)
    return x ^ (x >> 16)


def feistel(key: jax.Array, index: jax.Array, bits: int) -> jax.Array:
    """A key-dependent bijection of [0, 2^bits) applied to `index` (uint32, any shape), 2 <= bits <= 32.

    Unbalanced Feistel rounds: (L, R) -> (R, L ^ F(R)), F(R) = mix32(R ^ round key) cut to L's width; the
    halves swap widths each round, and each round is undone by the same XOR, so the whole is a bijection."""
    round_keys = jax.random.bits(key, (ROUNDS,), jnp.uint32)
    w_left = bits // 2
    w_right = bits - w_left
    left = index >> w_right
    right = index & jnp.uint32((1 << w_right) - 1)
    for r in range(ROUNDS):
        f = _mix32(right ^ round_keys[r]) & jnp.uint32((1 << w_left) - 1)
        left, right = right, left ^ f
        w_left, w_right = w_right, w_left
    return (left << w_right) | right


def permutation(key: jax.Array, n: int) -> jax.Array:
    """A pseudo-random permutation of `arange(n)`, `[n]` int32, determined by `key`. `n` is static."""
    n = int(n)
    if n <= 1:
        return jnp.zeros((n,), jnp.int32)
    bits = max(int(n - 1).bit_length(), 2)
    domain = 1 << bits  # < 2 n
    image = feistel(key, jnp.arange(domain, dtype=jnp.uint32), bits)
    if domain == n:
        return image.astype(jnp.int32)
    keep = image < jnp.uint32(n)
    slot = jnp.cumsum(keep.astype(jnp.int32)) - 1
    # Exactly n images are below n (a bijection of the domain), so the kept ones fill slots 0..n-1.
    slot = jnp.where(keep, slot, n)  # dropped: out of bounds
    return jnp.zeros((n,), jnp.int32).at[slot].set(image.astype(jnp.int32), mode="drop",
                                                      unique_indices=True)
