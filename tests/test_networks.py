"""Shapes and parameter names of jaxtrade.networks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtrade import networks as N
from jaxtrade.networks import ActorCritic, make_network


@pytest.mark.parametrize("batch_shape", [(), (5,), (3, 4)])
def test_actor_critic_shapes(batch_shape):
    net = ActorCritic(num_actions=3)
    params = net.init(jax.random.key(0), jnp.zeros((19,)))
    logits, value = net.apply(params, jnp.ones(batch_shape + (19,)))
    assert logits.shape == batch_shape + (3,)
    assert value.shape == batch_shape
    assert logits.dtype == jnp.float32 and value.dtype == jnp.float32


def test_parameter_names_and_shapes_are_stable():
    net = make_network(5, hidden_sizes=(32, 16))
    params = net.init(jax.random.key(0), jnp.zeros((7,)))["params"]
    shapes = {name: {k: v.shape for k, v in layer.items()} for name, layer in params.items()}
    assert shapes == {
        "actor_0": {"kernel": (7, 32), "bias": (32,)}, "actor_1": {"kernel": (32, 16), "bias": (16,)},
        "actor_out": {"kernel": (16, 5), "bias": (5,)},
        "critic_0": {"kernel": (7, 32), "bias": (32,)}, "critic_1": {"kernel": (32, 16), "bias": (16,)},
        "critic_out": {"kernel": (16, 1), "bias": (1,)},
    }


def test_initialisation_small_policy_head():
    net = ActorCritic(num_actions=3)
    params = net.init(jax.random.key(1), jnp.zeros((19,)))
    logits, _ = net.apply(params, jax.random.normal(jax.random.key(2), (256, 19)))
    # orthogonal(0.01) final actor layer: a near-uniform initial policy
    assert float(jnp.abs(logits).max()) < 0.1
    for layer in params["params"].values():
        np.testing.assert_array_equal(np.asarray(layer["bias"]), 0.0)


def test_unknown_activation():
    net = ActorCritic(num_actions=3, activation="nope")
    with pytest.raises(ValueError, match="unknown activation"):
        net.init(jax.random.key(0), jnp.zeros((4,)))


@pytest.mark.parametrize("shape", [(19, 64), (64, 64), (64, 3), (3, 200)])
def test_orthogonal_init_equals_jax_qr_init_without_lapack(shape):
    """Same draws, same matrix as jax's QR-based initializer (to float rounding), orthonormal, and the jitted
    network init has no LAPACK custom call (two concurrent QRs deadlock XLA:CPU on a 2-thread pool)."""
    key = jax.random.key(7)
    ours = np.asarray(N.orthogonal(1.5)(key, shape))
    ref = np.asarray(jax.nn.initializers.orthogonal(1.5)(key, shape))
    np.testing.assert_allclose(ours, ref, atol=5e-6)
    m = ours / 1.5
    gram = m.T @ m if shape[0] >= shape[1] else m @ m.T
    np.testing.assert_allclose(gram, np.eye(min(shape)), atol=5e-6)
    net = N.ActorCritic(num_actions=3)
    compiled = jax.jit(lambda k: net.init(k, jnp.zeros((1, 19)))).lower(key).compile().as_text()
    assert "custom-call" not in compiled
