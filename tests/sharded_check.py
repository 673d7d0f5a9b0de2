"""Run by tests/test_sharding.py in a subprocess with `XLA_FLAGS=--xla_force_host_platform_device_count=4`:
PPO, MoE and MAML trained over a 4-device mesh against the same run on one device; a seed sweep sharded over
the `sweep` axis against separate runs; the backtester's policies over 4 devices against one. Prints one
`ok <name> <largest difference>` line per check and exits non-zero on the first failure.

    XLA_FLAGS=--xla_force_host_platform_device_count=4 python -m tests.sharded_check
"""

from __future__ import annotations

import re
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxtrade import env as E, sharding as S
from jaxtrade.agents import maml, moe, ppo
from jaxtrade.agents.base import Runner
from jaxtrade.networks import make_network
from tests.market_fixtures import random_walk_market

TOL = 1e-5
T0 = time.perf_counter()
BATCH_CONSTRAINT = re.compile(r'sharding_constraint[^\n]*"batch"')  # in the lowered (Shardy) program
PPO_TINY = ppo.PPOConfig(num_envs=8, num_steps=8, minibatch_size=16, update_epochs=2, num_iterations=2,
                         hidden_sizes=(8,))
SMALL_MOE = moe.MoEConfig(num_experts=2, expert_hidden_dim=8, gating_hidden_dim=4, num_iterations=2)
TINY_MAML = maml.MAMLConfig(support_num_envs=4, support_num_steps=8, query_num_envs=4, query_num_steps=8,
                            window_sessions=4, inner_loop_steps=1, meta_batch_size=2, num_iterations=2)


def flat(tree) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(S.fetch(tree))])


def check(name: str, a, b) -> None:
    a, b = flat(a), flat(b)
    diff = float(np.nanmax(np.abs(a - b))) if a.size else 0.0
    if a.shape != b.shape or not np.allclose(a, b, rtol=TOL, atol=TOL, equal_nan=True):
        sys.exit(f"FAIL {name}: sharded and one-device runs differ by {diff}")
    print(f"ok {name} {diff:.3g} ({time.perf_counter() - T0:.1f} s)", flush=True)


def train_on(mesh, trainer, key, n: int = 2):
    """init + `n` iterations through the pipeline's `Runner`, every program traced over `mesh`."""
    with S.use_mesh(mesh):
        state = jax.jit(lambda t, k: t.init(k))(trainer, key)
        state, metrics = Runner()(trainer, state, n)
        text = jax.jit(lambda t, s: t.train_iteration(s)).lower(trainer, state).as_text()  # traced, not compiled
    return state, metrics, text


def main(checks=("ppo", "moe", "maml", "sweep", "backtest")) -> None:
    assert jax.device_count() == 4, jax.devices()
    d = tempfile.mkdtemp()
    random_walk_market(d, "NIFTY_5", num_sessions=12, bars_per_session=20, seed=5)
    config = E.EnvConfig()
    market = E.market_for(config, d, "NIFTY_5")
    env_params = E.env_params(config, market, "train")
    four, one = S.make_mesh(4), S.make_mesh(1)
    key = jax.random.key(3)
    trainers = {
        "ppo": ppo.make_trainer(PPO_TINY, env_params),
        "moe": moe.make_trainer(SMALL_MOE, PPO_TINY, env_params),
        # MAML on a one-layer actor-critic: grad-of-grad through the mixture compiles for minutes over 4 devices
        "maml": maml.make_trainer(TINY_MAML, PPO_TINY, env_params, network=make_network(3, (8,), "tanh")),
    }
    for name, trainer in trainers.items():
        if name not in checks:
            continue
        s4, m4, text4 = train_on(four, trainer, key)
        s1, m1, text1 = train_on(one, trainer, key)
        if name != "maml":  # the parallel episodes are split over the 4 devices
            spec = s4.rollout.obs.sharding.spec
            if s4.rollout.obs.sharding.num_devices != 4 or spec[0] != S.BATCH:
                sys.exit(f"FAIL {name}: episodes not sharded ({s4.rollout.obs.sharding})")
        # the episode axis is constrained to the mesh's `batch` axis inside the program (MAML's envs too)
        if not BATCH_CONSTRAINT.search(text4) or BATCH_CONSTRAINT.search(text1):
            sys.exit(f"FAIL {name}: expected the episode axis constrained over 4 devices only")
        check(f"{name} params", trainer.params_of(s4), trainer.params_of(s1))
        check(f"{name} metrics", {k: v for k, v in m4.items()}, {k: m1[k] for k in m4})

    if "sweep" in checks:
        sweep(trainers["ppo"], key, one)
    if "backtest" in checks:
        backtest(trainers["ppo"], key, d, four, one)
    print("all ok")


def sweep(trainer, key, one) -> None:
    """A seed x learning-rate sweep: the swept axis over `sweep` (4 runs, 4 devices), against separate runs."""
    keys = jax.random.split(key, 4)
    lrs = jnp.asarray([1e-4, 3e-4, 1e-3, 3e-3], jnp.float32)
    mesh = S.sweep_mesh(4)
    assert dict(mesh.shape) == {S.SWEEP: 4, S.BATCH: 1}, mesh.shape
    swept = S.sweep_jit(lambda t, lr, k: t.with_hparams(learning_rate=lr).train(k), mesh, in_axes=(None, 0, 0))
    states, _ = swept(trainer, lrs, keys)
    leaf = jax.tree.leaves(trainer.params_of(states))[0]
    if leaf.sharding.num_devices != 4 or leaf.sharding.spec[0] != S.SWEEP:
        sys.exit(f"FAIL sweep: runs not sharded ({leaf.sharding})")
    single = jax.jit(lambda t, k: t.train(k))
    for i in range(4):
        with S.use_mesh(one):
            ref, _ = single(trainer.with_hparams(learning_rate=lrs[i]), keys[i])
        check(f"sweep run {i} params", jax.tree.map(lambda x: S.fetch(x)[i], trainer.params_of(states)),
              trainer.params_of(ref))


def backtest(trainer, key, d, four, one) -> None:
    """The backtester: 5 policies (padded to 8 slots) over 4 devices against one device, in float64."""
    from jaxtrade import backtest as B, policies as P

    config = E.EnvConfig()
    with S.use_mesh(one):
        s1 = jax.jit(lambda t, k: t.init(k))(trainer, key)

    B.enable_x64()
    market64 = E.market_for(config, d, "NIFTY_5", price_dtype=jnp.float64)
    net = trainer.network
    pols = [P.network_policy(net, S.fetch(trainer.params_of(s1)), "ppo")]
    pols += [P.make_baseline(b, scaler=market64.scaler) for b in P.BASELINES]
    results = {}
    for label, mesh in (("four", four), ("one", one)):
        with S.use_mesh(mesh):
            B._RUNNERS.clear()
            results[label] = [r.equity for r in B.backtest_many(market64, pols, B.BacktestConfig(split="all"))]
    strip = lambda runs: [{k: v for k, v in r.items() if k != "timestamp"} for r in runs]  # noqa: E731
    check("backtest equity", strip(results["four"]), strip(results["one"]))


if __name__ == "__main__":
    main(tuple(sys.argv[1:]) or ("ppo", "moe", "maml", "sweep", "backtest"))
