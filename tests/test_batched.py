"""Runs batched behind one trainer (`agents.batched`): walk-forward folds x seeds (x swept learning rates) under
`vmap` equal separate runs at the trainer level, for PPO and for the MoE stage started from each cell's own
stage-1 policy; the batch keeps the trainer contract (Runner chunks, hyperparameter changes without recompiling)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtrade import env as E
from jaxtrade.agents import moe, ppo
from jaxtrade.agents.base import Runner
from jaxtrade.agents.batched import batched, folds_by_runs, unstack
from jaxtrade.evaluation import folds as W
from tests.market_fixtures import random_walk_market

TINY = ppo.PPOConfig(num_envs=4, num_steps=8, minibatch_size=16, update_epochs=1, num_iterations=3,
                     hidden_sizes=(8,))
CONFIG = E.EnvConfig()


@pytest.fixture(scope="module")
def fold_params(tmp_path_factory):
    d = tmp_path_factory.mktemp("market")
    random_walk_market(d, "NIFTY_5", num_sessions=30, bars_per_session=12, seed=3)
    market = E.market_for(CONFIG, d, "NIFTY_5")
    _, markets = W.fold_markets(market, W.WalkForwardConfig(2))
    per_fold = [E.env_params(CONFIG, m, "train") for m in markets]
    return per_fold, W.stack_folds(per_fold)


def _close(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-5, atol=2e-6)


def test_folds_by_seeds_by_learning_rates_equal_separate_runs(fold_params):
    per_fold, stacked = fold_params
    lrs = jnp.asarray([1e-3, 1e-3, 3e-3], jnp.float32)  # runs: (lr 1e-3, seed 0), (1e-3, seed 1), (3e-3, seed 0)
    seeds = [0, 1, 0]
    keys = jnp.stack([jnp.stack([jax.random.key(s) for s in seeds])] * 2)  # [2 folds, 3 runs]: same keys per fold
    template = ppo.make_trainer(TINY, per_fold[0])
    grid = folds_by_runs(template.replace(env_params=stacked).with_hparams(learning_rate=lrs), 2, 3,
                         per_run=("hparams",))
    # with_hparams broadcasts the other hyperparameters: a vector is per-run, a scalar shared
    grid = grid.with_hparams(ent_coef=0.02)
    state, metrics = jax.jit(lambda t, k: t.run(t.init(k), TINY.num_iterations))(grid, keys)
    assert metrics["mean_reward"].shape == (TINY.num_iterations, 2, 3)
    one = jax.jit(lambda t, k: t.run(t.init(k), TINY.num_iterations))
    for f in range(2):
        for r in range(3):
            alone = ppo.make_trainer(TINY, per_fold[f]).with_hparams(learning_rate=lrs[r], ent_coef=0.02)
            s, m = one(alone, jax.random.key(seeds[r]))
            _close(jax.tree.map(lambda x: x[f, r], grid.params_of(state)), alone.params_of(s))
            # `fault` is the whole batch's (one flag per iteration: a fault in any cell stops the batch)
            _close({k: v[:, f, r] for k, v in metrics.items() if k != "fault"}, {k: v for k, v in m.items()
                                                                              if k != "fault"})
    assert metrics["fault"].shape == (TINY.num_iterations,) and not np.asarray(metrics["fault"]).any()
    # folds see different data, runs different keys or learning rates: no two cells agree
    p = np.asarray(jax.tree.leaves(grid.params_of(state))[0]).reshape(6, -1)
    assert len({row.tobytes() for row in p}) == 6


@pytest.mark.slow
def test_moe_cells_start_from_their_own_stage1_policy(fold_params):
    per_fold, stacked = fold_params
    keys = jnp.stack([jax.random.split(jax.random.key(7), 2)] * 2)  # [2 folds, 2 seeds]
    stage1 = folds_by_runs(ppo.make_trainer(TINY, per_fold[0]).replace(env_params=stacked), 2, 2)
    s1, _ = jax.jit(lambda t, k: t.run(t.init(k), 2))(stage1, keys)
    start = stage1.params_of(s1)  # [2, 2, ...]
    small = moe.MoEConfig(num_experts=2, expert_hidden_dim=8, gating_hidden_dim=4, expert_num_layers=1,
                          num_iterations=2)
    template = moe.make_trainer(small, TINY, per_fold[0], init_from=unstack(unstack(start, 0), 0))
    grid = folds_by_runs(template.replace(env_params=stacked, init_from=start), 2, 2, per_cell=("init_from",))
    state, _ = jax.jit(lambda t, k: t.run(t.init(k), 2))(grid, keys)
    one = jax.jit(lambda t, k: t.run(t.init(k), 2))
    for f in range(2):
        for r in range(2):
            alone = moe.make_trainer(small, TINY, per_fold[f], init_from=unstack(unstack(start, f), r))
            s, _ = one(alone, keys[f, r])
            _close(jax.tree.map(lambda x: x[f, r], grid.params_of(state)), alone.params_of(s))


def test_a_batch_keeps_the_trainer_contract(fold_params):
    per_fold, _ = fold_params
    runs = batched(ppo.make_trainer(TINY, per_fold[0]), 4)
    keys = jax.random.split(jax.random.key(0), 4)
    runner = Runner()
    state = jax.jit(lambda t, k: t.init(k))(runs, keys)
    whole, m1 = runner(runs, state, 4, chunk=2)
    # the learning rate an extension halves: one value for all runs, an argument (no new program)
    halved = runs.with_hparams(learning_rate=5e-5)
    runner(halved, state, 4, chunk=2)
    assert runner.cache_size() == 1
    assert m1["iteration"].shape == (4, 4) and runs.env_steps_per_iteration == 4 * TINY.batch_size
    alone, _ = jax.jit(lambda t, k: t.run(t.init(k), 4))(runs.inner, keys[2])
    _close(unstack(runs.params_of(whole), 2), runs.inner.params_of(alone))
    with pytest.raises(ValueError, match="4 keys"):
        runs.init(keys[:3])
    with pytest.raises(ValueError, match="does not lead with"):
        folds_by_runs(runs.inner, 2, 4, per_run=("hparams",))
