"""Shape-free hyperparameters are leaves of the trainer, so `jax.vmap` sweeps them in one program: `vmap` of
`train` over 4 (learning rate, seed) pairs equals 4 separate runs, for PPO, MoE and MAML; changing any of them
does not recompile; shape-setting settings stay static."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtrade import env as E
from jaxtrade.agents import maml, moe, ppo
from tests.market_fixtures import random_walk_market

LRS = (1e-4, 3e-4, 1e-3, 3e-3)
PPO_TINY = ppo.PPOConfig(num_envs=4, num_steps=8, minibatch_size=16, update_epochs=1, num_iterations=2)


@pytest.fixture(scope="module")
def env_params(tmp_path_factory):
    d = tmp_path_factory.mktemp("market")
    random_walk_market(d, "NIFTY_5", num_sessions=12, bars_per_session=20, seed=5)
    config = E.EnvConfig()
    return E.env_params(config, E.market_for(config, d, "NIFTY_5"), "train")


def _trainers(env_params):
    small_moe = moe.MoEConfig(num_experts=2, expert_hidden_dim=8, gating_hidden_dim=4, num_iterations=2)
    # 8 x 8 rollouts: more rows than the linear advantage baseline's 42 features (2 x 19 observations + 4); with
    # 16 rows its fit is underdetermined, and last-ulp differences between a batched and a single matmul grow
    # past 1e-6
    tiny_maml = maml.MAMLConfig(support_num_envs=8, support_num_steps=8, query_num_envs=8, query_num_steps=8,
                                window_sessions=4, inner_loop_steps=1, meta_batch_size=1, num_iterations=2)
    return {
        "ppo": (ppo.make_trainer(PPO_TINY.replace(hidden_sizes=(8,)), env_params), "learning_rate"),
        "moe": (moe.make_trainer(small_moe, PPO_TINY, env_params), "learning_rate"),
        "maml": (maml.make_trainer(tiny_maml, PPO_TINY, env_params, moe_config=small_moe), "meta_learning_rate"),
    }


HPARAMS = {  # every shape-free hyperparameter of each trainer, with another value
    "ppo": {"gamma": 0.9, "gae_lambda": 0.8, "clip_epsilon": 1e-6, "ent_coef": 0.5, "vf_coef": 2.0,
            "max_grad_norm": 0.01, "adam_eps": 1e-3},
    "moe": {"diversity_loss_weight": 5.0, "load_balance_weight": 5.0, "gating_temperature": 3.0},
    "maml": {"inner_learning_rate": 0.5},
}


def _flat(tree):
    return np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree.leaves(tree)])


@pytest.mark.parametrize("stage", ["ppo", "moe", "maml"])
def test_vmap_over_learning_rates_and_seeds_equals_separate_runs(env_params, stage):
    trainer, lr_field = _trainers(env_params)[stage]
    keys = jax.random.split(jax.random.key(11), len(LRS))
    swept = jax.jit(jax.vmap(lambda t, lr, k: t.with_hparams(**{lr_field: lr}).train(k), in_axes=(None, 0, 0)))
    states, metrics = swept(trainer, jnp.asarray(LRS, jnp.float32), keys)
    one = jax.jit(lambda t, k: t.train(k))
    for i, lr in enumerate(LRS):
        state, m = one(trainer.with_hparams(**{lr_field: lr}), keys[i])
        for a, b in zip(jax.tree.leaves(trainer.params_of(state)), jax.tree.leaves(trainer.params_of(states))):
            np.testing.assert_allclose(np.asarray(b)[i], np.asarray(a), rtol=1e-6, atol=1e-6)
        for name in m:
            np.testing.assert_allclose(np.asarray(metrics[name])[i], np.asarray(m[name]), rtol=1e-6, atol=1e-6,
                                       err_msg=name)
    # Every other shape-free hyperparameter is a leaf too: it changes the run, and nothing recompiles.
    base = _flat(trainer.params_of(one(trainer, keys[0])[0]))
    for name, value in HPARAMS[stage].items():
        changed = _flat(trainer.params_of(one(trainer.with_hparams(**{name: value}), keys[0])[0]))
        assert not np.array_equal(base, changed), name
    assert one._cache_size() == 1
    with pytest.raises(ValueError, match="no hyperparameter"):
        trainer.with_hparams(num_envs=8)  # shape-setting: static, in the config
