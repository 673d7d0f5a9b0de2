"""The sort-free minibatch shuffle (jaxtrade.agents.shuffle)."""

import jax
import numpy as np
import pytest

from jaxtrade.agents import shuffle


def _feistel_reference(round_keys, index: int, bits: int) -> int:
    """Pure-Python unbalanced Feistel, written from the definition, for one index."""
    def mix(x):
        x &= 0xFFFFFFFF
        x ^= x >> 16
        x = (x * 0x85EBCA6B) & 0xFFFFFFFF
        x ^= x >> 13
        x = (x * 0xC2B2AE35) & 0xFFFFFFFF
        return x ^ (x >> 16)

    w_left, w_right = bits // 2, bits - bits // 2
    left, right = index >> w_right, index & ((1 << w_right) - 1)
    for k in round_keys:
        left, right = right, left ^ (mix(right ^ int(k)) & ((1 << w_left) - 1))
        w_left, w_right = w_right, w_left
    return (left << w_right) | right


@pytest.mark.parametrize("n", [0, 1, 2, 3, 5, 64, 100, 1000, 4096, 131071])
def test_is_a_permutation(n):
    perm = np.asarray(jax.jit(shuffle.permutation, static_argnums=1)(jax.random.key(3), n))
    assert perm.shape == (n,) and perm.dtype == np.int32
    np.testing.assert_array_equal(np.sort(perm), np.arange(n))


def test_matches_python_reference():
    key = jax.random.key(11)
    round_keys = np.asarray(jax.random.bits(key, (shuffle.ROUNDS,), np.uint32))
    for n in (16, 1000):  # a power of two (no compaction) and not
        bits = max((n - 1).bit_length(), 2)
        images = [_feistel_reference(round_keys, i, bits) for i in range(1 << bits)]
        expected = [v for v in images if v < n]
        np.testing.assert_array_equal(np.asarray(shuffle.permutation(key, n)), expected)


def test_deterministic_and_key_dependent():
    a = np.asarray(shuffle.permutation(jax.random.key(0), 4096))
    b = np.asarray(shuffle.permutation(jax.random.key(0), 4096))
    c = np.asarray(shuffle.permutation(jax.random.key(1), 4096))
    np.testing.assert_array_equal(a, b)
    assert np.mean(a == c) < 0.01


def test_minibatches_mix_the_whole_batch():
    # A rollout batch is [T, N] flattened time-major: neighbouring rows are the same env or the same step.
    # Every 128-row minibatch must draw from all over the batch, not from a few contiguous blocks.
    n, mb = 8192, 128
    perm = np.asarray(shuffle.permutation(jax.random.key(5), n)).reshape(-1, mb)
    blocks = perm // 256  # 32 source blocks of 256 rows
    distinct = np.array([len(np.unique(row)) for row in blocks])
    # 128 draws from 32 blocks cover ~31.3 of them on average for a uniform shuffle.
    assert distinct.mean() > 29.0 and distinct.min() >= 24
    # Consecutive source rows land far apart.
    position = np.argsort(perm.ravel())
    assert np.median(np.abs(np.diff(position))) > n / 8


def test_positions_are_uniform_over_keys():
    # Where does each of 16 items land, over 4000 keys? A uniform shuffle gives 250 per cell.
    n, trials = 16, 4000
    perms = np.asarray(jax.vmap(lambda k: shuffle.permutation(k, n))(jax.random.split(jax.random.key(9), trials)))
    counts = np.zeros((n, n))
    for p in perms:
        counts[p, np.arange(n)] += 1
    chi2 = ((counts - trials / n) ** 2 / (trials / n)).sum()
    # 225 degrees of freedom: mean 225, sd ~21; a biased shuffle lands in the thousands.
    assert chi2 < 330, chi2
