"""Stage 3 MAML: the grad-of-grad meta-gradient, the sinusoid regression of Finn et al. (2017), adaptation on a
synthetic drift task family, and the sequence trainer's contract."""

import functools

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxtrade import data, env, gates
from jaxtrade.agents import base, maml
from jaxtrade.agents import meta as core
from jaxtrade.agents.ppo import PPOConfig
from jaxtrade.evaluation import adaptation
from jaxtrade.networks import make_network
from tests.market_fixtures import random_walk_market, session_timestamps, write_processed


# ------------------------------------------------------------------------------------------- the MAML core

def _tiny_problem():
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.normal(size=(3, 4))), "v": jnp.asarray(rng.normal(size=(4,)))}
    tasks = {"xs": jnp.asarray(rng.normal(size=(2, 5, 3))), "ys": jnp.asarray(rng.normal(size=(2, 5))),
             "xq": jnp.asarray(rng.normal(size=(2, 6, 3))), "yq": jnp.asarray(rng.normal(size=(2, 6)))}

    def f(p, x):
        return jnp.tanh(x @ p["w"]) @ p["v"]

    inner = lambda p, t: jnp.mean((f(p, t["xs"]) - t["ys"]) ** 2)  # noqa: E731
    outer = lambda p, t: jnp.mean((f(p, t["xq"]) - t["yq"]) ** 2)  # noqa: E731
    return params, tasks, inner, outer


def test_second_order_meta_gradient_matches_finite_differences():
    with jax.enable_x64(True):
        params, tasks, inner, outer = _tiny_problem()
        lr, steps = 0.3, 3
        _, g2, _ = core.maml_step(params, tasks, inner, outer, lr, steps, first_order=False)
        _, g1, _ = core.maml_step(params, tasks, inner, outer, lr, steps, first_order=True)
        _, g2_noremat, _ = core.maml_step(params, tasks, inner, outer, lr, steps, remat=False)
        loss = jax.jit(lambda p: core.maml_loss(p, tasks, inner, outer, lr, steps)[0])
        flat, unravel = jax.flatten_util.ravel_pytree(params)
        eps = 1e-6
        fd = np.array([(loss(unravel(flat.at[i].add(eps))) - loss(unravel(flat.at[i].add(-eps)))) / (2 * eps)
                       for i in range(flat.size)])
        g2f = np.asarray(jax.flatten_util.ravel_pytree(g2)[0])
        g1f = np.asarray(jax.flatten_util.ravel_pytree(g1)[0])
        assert g2f.dtype == np.float64
        np.testing.assert_allclose(g2f, fd, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(g2f, np.asarray(jax.flatten_util.ravel_pytree(g2_noremat)[0]), rtol=1e-10)
        # First order drops the inner loop's Hessian terms: a clearly different gradient.
        assert np.linalg.norm(g1f - fd) > 1e-2 * np.linalg.norm(fd)


def test_adapt_is_sgd_and_first_order_has_identity_jacobian():
    params, tasks, inner, _ = _tiny_problem()
    task = jax.tree.map(lambda x: x[0], tasks)
    adapted, losses = core.adapt(params, task, inner, 0.1, 2)
    p = params
    for k in range(2):
        assert np.isclose(losses[k], inner(p, task), rtol=1e-5)
        p = jax.tree.map(lambda a, g: a - 0.1 * g, p, jax.grad(inner)(p, task))
    np.testing.assert_allclose(adapted["w"], p["w"], rtol=1e-5, atol=1e-6)
    # d(sum of adapted v)/dv is the identity (all ones) under first order.
    g = jax.grad(lambda q: core.adapt(q, task, inner, 0.1, 2, first_order=True)[0]["v"].sum())(params)
    np.testing.assert_allclose(g["v"], np.ones(4), rtol=1e-6)
    np.testing.assert_allclose(g["w"], 0.0, atol=1e-7)


# ------------------------------------------------------------------------------------------- sinusoid

def _init_mlp(key, sizes=(1, 40, 40, 1)):
    out = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        out.append({"w": jax.random.normal(jax.random.fold_in(key, i), (a, b)) / jnp.sqrt(a), "b": jnp.zeros(b)})
    return out


def _mlp(ps, x):
    for p in ps[:-1]:
        x = jax.nn.relu(x @ p["w"] + p["b"])
    return x @ ps[-1]["w"] + ps[-1]["b"]


def _sinusoid_tasks(key, n, k=10):
    """Finn et al. (2017): amplitude in [0.1, 5], phase in [0, pi], x in [-5, 5]; K support, K query points."""
    ka, kp, kx = jax.random.split(key, 3)
    amp = jax.random.uniform(ka, (n, 1, 1), minval=0.1, maxval=5.0)
    phase = jax.random.uniform(kp, (n, 1, 1), minval=0.0, maxval=jnp.pi)
    x = jax.random.uniform(kx, (n, 2 * k, 1), minval=-5.0, maxval=5.0)
    y = amp * jnp.sin(x - phase)
    return {"xs": x[:, :k], "ys": y[:, :k], "xq": x[:, k:], "yq": y[:, k:]}


@pytest.mark.slow
def test_sinusoid_maml_beats_jointly_trained_baseline():
    inner = lambda p, t: jnp.mean((_mlp(p, t["xs"]) - t["ys"]) ** 2)  # noqa: E731
    outer = lambda p, t: jnp.mean((_mlp(p, t["xq"]) - t["yq"]) ** 2)  # noqa: E731
    steps, lr, iters, batch = 5, 0.003, 600, 25
    tx = optax.adam(1e-3)

    @functools.partial(jax.jit, static_argnums=0)
    def train(meta: bool):
        p = _init_mlp(jax.random.key(0))

        def body(carry, k):
            p, s = carry
            t = _sinusoid_tasks(k, batch)
            if meta:
                _, g, _ = core.maml_step(p, t, inner, outer, lr, steps)
            else:  # joint training on every point of every task
                g = jax.grad(lambda q: jax.vmap(lambda tk: inner(q, tk) + outer(q, tk))(t).mean())(p)
            u, s = tx.update(g, s, p)
            return (optax.apply_updates(p, u), s), None

        (p, _), _ = jax.lax.scan(body, (p, tx.init(p)), jax.random.split(jax.random.key(1), iters))
        return p

    held_out = _sinusoid_tasks(jax.random.key(99), 200)

    def post_adaptation_error(p):
        return float(jax.vmap(lambda t: outer(core.adapt(p, t, inner, lr, steps)[0], t))(held_out).mean())

    meta_err = post_adaptation_error(train(True))
    base_err = post_adaptation_error(train(False))
    assert np.isfinite(meta_err) and np.isfinite(base_err)
    assert meta_err < 0.75 * base_err, (meta_err, base_err)


# ------------------------------------------------------------------------------------------- trading tasks

def _drift_market(directory, num_sessions=60, bars=30, block=10, drift=3e-4, vol=3e-4, seed=0):
    """Blocks of `block` sessions alternating up- and down-trend drift (the task's hidden parameter)."""
    rng = np.random.default_rng(seed)
    sign = np.repeat(np.where(np.arange(num_sessions // block + 1) % 2 == 0, 1.0, -1.0), block)[:num_sessions]
    r = np.repeat(sign, bars) * drift + rng.normal(0.0, vol, num_sessions * bars)
    close = 20_000.0 * np.exp(np.cumsum(r))
    open_ = np.r_[20_000.0, close[:-1]]
    high, low = np.maximum(open_, close) * 1.0002, np.minimum(open_, close) * 0.9998
    write_processed(directory, "DRIFT_5", open_, high, low, close, session_timestamps(num_sessions, bars, 5),
                    synthetic=True)
    return data.load_market(directory, "DRIFT_5"), sign


@pytest.mark.slow
def test_adaptation_improves_held_out_drift_tasks(tmp_path):
    market, sign = _drift_market(tmp_path)
    params_env = env.make_params(market, "all", lot_size=1)
    cfg = maml.MAMLConfig(support_num_envs=16, support_num_steps=32, window_sessions=8, inner_loop_steps=7,
                          inner_learning_rate=0.5, eval_episodes=32)
    net = make_network(3, (32, 32))
    params = net.init(jax.random.key(0), jnp.zeros(params_env.obs_dim))
    # Held-out windows in the last blocks (sessions 40-49 trend up, 50-59 down); support then query inside one
    # block, so the support data reveals the query's drift.
    tasks = [adaptation.HeldOutTask(f"w{s}", params_env, (s, s + 4), (s + 4, s + 8)) for s in (40, 42, 50, 52)]
    assert {sign[s] for s in (40, 50)} == {1.0, -1.0}
    r = adaptation.evaluate_adaptation(net, params, tasks, cfg, jax.random.key(1), PPOConfig())
    lo, hi = r["improvement_ci95"]
    assert lo > 0, r["improvement_ci95"]
    # Meaningful: the gain is a sizeable share of what knowing the drift is worth (|drift| x bars x price / capital
    # per one-unit session) and the post-adaptation return is several times the pre-adaptation one.
    oracle = 3e-4 * 29 * 20_000.0 / 100_000.0
    assert r["improvement"] > 0.1 * oracle, (r["improvement"], oracle)
    assert r["post"]["mean_episode_return"] > 2 * abs(r["pre"]["mean_episode_return"])
    assert r["adaptation_curve"][-1] > r["adaptation_curve"][0]
    assert r["adaptation_speed"] is not None and 1 <= r["adaptation_speed"] <= 7


def _transitions(obs, reward, done):
    from jaxtrade.agents import rollout as R

    z = jnp.zeros(reward.shape, jnp.float32)
    fields = {f: z for f in R.Transition.__dataclass_fields__}
    return R.Transition(**{**fields, "obs": jnp.asarray(obs, jnp.float32), "reward": jnp.asarray(reward, jnp.float32),
                           "done": jnp.asarray(done), "action": z.astype(jnp.int32)})


def test_linear_baseline_is_a_ridge_fit_of_the_batch_returns():
    """Against an independent float64 computation: returns-to-go by a Python loop (cut at done and at the end),
    features (obs, obs^2, tau^1..3, 1), numpy ridge solve. And a return that is exactly linear in the features is
    reproduced (the fit sees the rollout's cut through the time features)."""
    from jaxtrade.agents import rollout as R

    rng = np.random.default_rng(3)
    T, N, D, gamma = 24, 5, 3, 0.9
    obs = rng.normal(size=(T, N, D))
    reward = rng.normal(size=(T, N)) * 1e-3
    done = rng.random((T, N)) < 0.1
    ret = np.zeros((T, N))
    for n in range(N):
        acc = 0.0
        for t in reversed(range(T)):
            acc = reward[t, n] + gamma * acc * (not done[t, n])
            ret[t, n] = acc
    tau = np.broadcast_to((np.arange(T) / T)[:, None, None], (T, N, 1))
    x = np.concatenate([obs, obs ** 2, tau, tau ** 2, tau ** 3, np.ones_like(tau)], -1).reshape(T * N, -1)
    ridge = 1e-5
    w = np.linalg.solve(x.T @ x + ridge * T * N * np.eye(x.shape[1]), x.T @ ret.reshape(-1))
    want = (x @ w).reshape(T, N)
    got = np.asarray(R.linear_baseline(_transitions(obs, reward, done), gamma, ridge))
    np.testing.assert_allclose(got, want, atol=2e-4 * np.abs(want).max())  # float32 normal equations
    assert np.corrcoef(got.ravel(), ret.ravel())[0, 1] > 0.2  # a fit, not zeros

    # Rewards that make the return-to-go exactly 0.01 * (obs[..., 0] + 1) at every step are fitted exactly.
    target = 0.01 * (obs[..., 0] + 1.0)
    reward2 = target - gamma * np.concatenate([target[1:], np.zeros((1, N))]) * (~done)
    reward2[-1] = target[-1]
    got2 = np.asarray(R.linear_baseline(_transitions(obs, reward2, done), gamma, 1e-9))
    np.testing.assert_allclose(got2, target, atol=1e-4)


def test_linear_baseline_maml_collects_advantages_without_the_critic():
    """With `advantage_baseline="linear"` the support batch's advantages do not depend on the critic's weights
    (the critic-baseline batch does): the reason for the setting (issue 20)."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        random_walk_market(d, "RW_5", num_sessions=12, bars_per_session=30)
        market = data.load_market(d, "RW_5")
    params_env = env.make_params(market, "train")
    net = make_network(3, (16, 16))
    params = net.init(jax.random.key(0), jnp.zeros(params_env.obs_dim))
    shifted = jax.tree_util.tree_map_with_path(
        lambda path, x: x + 0.05 if "critic" in jax.tree_util.keystr(path) else x, params)
    for baseline, same in (("linear", True), ("critic", False)):
        a = maml.collect_batch(net.apply, params, params_env, jax.random.key(1), 8, 16, PPOConfig(),
                               baseline=baseline)[0]
        b = maml.collect_batch(net.apply, shifted, params_env, jax.random.key(1), 8, 16, PPOConfig(),
                               baseline=baseline)[0]
        assert np.array_equal(np.asarray(a.action), np.asarray(b.action))  # same rollout: the actor is unchanged
        assert np.allclose(np.asarray(a.advantages), np.asarray(b.advantages), atol=0) == same, baseline
    with pytest.raises(ValueError, match="advantage_baseline"):
        maml.MAMLConfig(advantage_baseline="mean")


def _small_trainer(directory, **kw):
    from jaxtrade.agents.moe import MoEConfig

    random_walk_market(directory, "RW_5", num_sessions=40, bars_per_session=30)
    market = data.load_market(directory, "RW_5")
    env_params = env.make_params(market, "train")
    cfg = maml.MAMLConfig(support_num_envs=4, support_num_steps=16, query_num_envs=4, query_num_steps=16,
                          window_sessions=6, inner_loop_steps=2, **kw)
    trainer = maml.make_trainer(cfg, PPOConfig(), env_params,
                                moe_config=MoEConfig(num_experts=2, expert_hidden_dim=16, gating_hidden_dim=8))
    return trainer, market


@pytest.mark.slow
def test_trainer_smoke_chunked_equals_unchunked_and_checkpoint(tmp_path):
    from jaxtrade.checkpoints import StageCheckpointer, restore_params
    from jaxtrade.networks import MoEActorCritic

    trainer, _ = _small_trainer(tmp_path / "data")
    assert isinstance(trainer.network, MoEActorCritic)
    assert trainer.env_steps_per_iteration == 2 * (4 * 16 + 2 * 4 * 16)
    state = trainer.init(jax.random.key(0))
    calls = []
    s2, metrics = base.Runner(callback=calls.append, log_every=1)(trainer, state, 2)
    jax.effects_barrier()
    assert metrics["iteration"].tolist() == [1, 2]
    assert metrics["env_steps"].tolist() == [trainer.env_steps_per_iteration * k for k in (1, 2)]
    for k in ("meta_loss", "query_return_pre", "query_return_post", "grad_norm", "inner_loss_first"):
        assert np.all(np.isfinite(np.asarray(metrics[k]))), k
    assert len(calls) == 2 and {"iteration", "env_steps", "query_return_pre", "query_return_post",
                                "meta_loss"} <= set(calls[0])
    runner = base.Runner()
    a, _ = runner(trainer, state, 1)
    a, _ = runner(trainer, a, 1)
    chex_equal = jax.tree.map(lambda x, y: bool(jnp.all(x == y)), trainer.params_of(a), trainer.params_of(s2))
    assert all(jax.tree.leaves(chex_equal))
    moved = jax.tree.map(lambda x, y: float(jnp.max(jnp.abs(x - y))), trainer.params_of(s2), state.params)
    assert max(jax.tree.leaves(moved)) > 0
    # The runner state is Orbax-savable and `restore_params` finds the meta-parameters.
    ckpt = StageCheckpointer(tmp_path / "ckpt")
    ckpt.save(2, s2, {"iteration": 2, "network": {"architecture": "moe_actor_critic"}})
    ckpt.close()
    restored, meta = restore_params(tmp_path / "ckpt")
    assert meta["iteration"] == 2
    np.testing.assert_array_equal(restored["params"]["gate_0"]["kernel"], s2.params["params"]["gate_0"]["kernel"])
    # Starting from given (stage-2) parameters keeps them.
    s0 = trainer.init(jax.random.key(1), jax.tree.map(np.asarray, s2.params))
    np.testing.assert_array_equal(s0.params["params"]["gate_out"]["bias"], s2.params["params"]["gate_out"]["bias"])


def test_config_defaults_and_gate_logic():
    c = maml.MAMLConfig()
    assert (c.meta_learning_rate, c.inner_loop_steps, c.evaluation_steps, c.meta_batch_size, c.num_iterations,
            c.first_order, c.remat) == (5e-4, 7, 5, 2, 150, False, True)
    assert c.replace(first_order=True).first_order
    g = gates.MAMLGateConfig()
    assert (g.min_adaptation_speed, g.min_cross_symbol_performance) == (3.0, 0.85)
    assert adaptation.adaptation_speed([0.0, 0.5, 0.95, 1.0]) == 2
    assert adaptation.adaptation_speed([0.0, -1.0]) is None
    ci = adaptation.bootstrap_mean_ci(np.r_[np.ones(50), 2 * np.ones(50)], seed=0)
    assert 1.3 < ci[0] < 1.5 < ci[1] < 1.7
    good = {"improvement": 1.0, "improvement_ci95": [0.5, 1.5], "adaptation_speed": 2,
            "post": {"win_rate": 0.5}}
    ev = {"own": good, "cross": None, "own_symbol": "A", "cross_symbol": None}
    assert gates.check_maml_gate(ev, g) == []
    ev_bad = dict(ev, own=dict(good, improvement_ci95=[-0.1, 1.0], adaptation_speed=5),
                  cross={"post": {"win_rate": 0.3}}, cross_symbol="B")
    reasons = gates.check_maml_gate(ev_bad, g)
    assert len(reasons) == 3 and "CI" in reasons[0] and "speed" in reasons[1] and "cross-symbol" in reasons[2]
    # --maml_gate.min_iterations is read (as the other stages' min_iterations), and so are the optional
    # validation-backtest criteria
    assert gates.check_maml_gate(ev, g.replace(min_iterations=5), 4) == ["iterations 4 < 5"]
    assert gates.check_maml_gate(ev, g.replace(min_iterations=5), 5) == []
    assert gates.check_maml_gate(ev, g.replace(min_win_rate=0.5), 5, {"win_rate": 0.4}) == ["win_rate 0.400 < 0.5"]
