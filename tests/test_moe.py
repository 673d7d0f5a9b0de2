"""Stage 2 MoE: network shapes, vmap == loop over experts, diversity term, init from PPO, training routes
two synthetic regimes to different experts, regime table."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtrade import data, env
from jaxtrade.agents import base, moe, ppo
from jaxtrade.evaluation import regimes
from jaxtrade.networks import ActorCritic, MoEActorCritic, make_moe_network, make_network
from tests.market_fixtures import random_walk_market, session_timestamps, write_processed

OBS_DIM = 19


def _obs(n=7, seed=1):
    return jax.random.normal(jax.random.key(seed), (n, OBS_DIM))


def test_shapes_and_names():
    net = make_moe_network(3, num_experts=4, expert_hidden_dim=16, gating_hidden_dim=8)
    params = net.init(jax.random.key(0), jnp.zeros((OBS_DIM,)))
    p = params["params"]
    assert set(p) == {"gate_0", "gate_out", "experts"}
    assert p["gate_0"]["kernel"].shape == (OBS_DIM, 8) and p["gate_out"]["kernel"].shape == (8, 4)
    assert set(p["experts"]) == {"actor_0", "actor_1", "actor_out", "critic_0", "critic_1", "critic_out"}
    assert p["experts"]["actor_0"]["kernel"].shape == (4, OBS_DIM, 16)
    assert p["experts"]["critic_out"]["kernel"].shape == (4, 16, 1)
    obs = jnp.zeros((2, 5, OBS_DIM)) + _obs(5)
    logits, value = net.apply(params, obs)
    assert logits.shape == (2, 5, 3) and value.shape == (2, 5)
    np.testing.assert_allclose(jnp.exp(logits).sum(-1), 1.0, rtol=1e-5)
    d = net.apply(params, obs, method="details")
    assert d["gate_probs"].shape == (2, 5, 4) and d["expert_logits"].shape == (2, 5, 4, 3)
    assert d["expert_values"].shape == (2, 5, 4)
    np.testing.assert_allclose(d["gate_probs"].sum(-1), 1.0, rtol=1e-5)
    # The gate starts near uniform.
    assert float(jnp.abs(d["gate_probs"] - 0.25).max()) < 0.02
    # Mixture: probabilities and values mixed by the gate.
    g = d["gate_probs"]
    mix = jnp.sum(g[..., None] * jax.nn.softmax(d["expert_logits"], -1), -2)
    np.testing.assert_allclose(jnp.exp(logits), mix, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(value, jnp.sum(g * d["expert_values"], -1), rtol=1e-5, atol=1e-6)
    # Experts start different (split rngs).
    k = p["experts"]["actor_0"]["kernel"]
    assert float(jnp.abs(k[0] - k[1]).max()) > 1e-3


def test_vmap_equals_loop_over_experts():
    net = make_moe_network(3, num_experts=3, expert_hidden_dim=24, gating_hidden_dim=8, gating_temperature=0.5)
    params = net.init(jax.random.key(2), jnp.zeros((OBS_DIM,)))
    obs = _obs(11)
    d = net.apply(params, obs, method="details")
    single = ActorCritic(num_actions=3, hidden_sizes=(24, 24))
    logits_loop, values_loop = [], []
    for e in range(3):
        p_e = jax.tree.map(lambda x: x[e], params["params"]["experts"])
        lg, v = single.apply({"params": p_e}, obs)
        logits_loop.append(lg)
        values_loop.append(v)
    np.testing.assert_allclose(d["expert_logits"], jnp.stack(logits_loop, -2), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(d["expert_values"], jnp.stack(values_loop, -1), rtol=1e-5, atol=1e-6)
    # The gate is the softmax of the gating MLP at the temperature.
    p = params["params"]
    h = jnp.tanh(obs @ p["gate_0"]["kernel"] + p["gate_0"]["bias"])
    z = (h @ p["gate_out"]["kernel"] + p["gate_out"]["bias"]) / 0.5
    np.testing.assert_allclose(d["gate_probs"], jax.nn.softmax(z, -1), rtol=1e-5, atol=1e-6)


def test_diversity_zero_for_identical_and_monotone():
    base = jax.random.normal(jax.random.key(0), (64, 1, 3))
    direction = jax.random.normal(jax.random.key(1), (64, 4, 3))
    same = jnp.broadcast_to(base, (64, 4, 3))
    assert float(moe.expert_diversity(same)) == pytest.approx(0.0, abs=1e-7)
    values = [float(moe.expert_diversity(base + s * direction)) for s in (0.0, 0.05, 0.2, 0.5, 1.0, 2.0)]
    assert values[0] == pytest.approx(0.0, abs=1e-7)
    assert all(b > a for a, b in zip(values, values[1:])), values
    assert values[-1] <= math.log(2.0)
    # Single expert: no diversity; and the loss sign: minimising the MoE loss increases diversity.
    assert float(moe.expert_diversity(base)) == 0.0
    # Through the network: experts initialised from one policy with growing noise.
    pnet = make_network(3)
    pp = pnet.init(jax.random.key(3), jnp.zeros((OBS_DIM,)))
    mnet = make_moe_network(3, expert_hidden_dim=64)
    obs = _obs(128)
    div = []
    for s in (0.0, 0.1, 0.3, 1.0):
        mp = moe.init_from_ppo(pp, jax.random.key(4), mnet, OBS_DIM, init_noise=s)
        div.append(float(moe.expert_diversity(mnet.apply(mp, obs, method="details")["expert_logits"])))
    assert div[0] == pytest.approx(0.0, abs=1e-7)
    assert all(b > a for a, b in zip(div, div[1:])), div


def test_load_balance_and_gate_statistics():
    uniform = jnp.full((10, 4), 0.25)
    assert float(moe.load_balance(uniform)) == pytest.approx(0.0, abs=1e-7)
    one = jnp.zeros((10, 4)).at[:, 0].set(1.0)
    assert float(moe.load_balance(one)) == pytest.approx(math.log(4), rel=1e-5)
    # Sharp per state but balanced over the batch: no load-balance penalty.
    alternating = jnp.eye(4)[jnp.arange(12) % 4]
    assert float(moe.load_balance(alternating)) == pytest.approx(0.0, abs=1e-6)
    stats = moe.gate_statistics(uniform)
    assert stats["gate_entropy"] == pytest.approx(math.log(4), rel=1e-5)
    assert [float(stats[f"usage_{e}"]) for e in range(4)] == pytest.approx([0.25] * 4)


@pytest.mark.parametrize("ppo_hidden", [(64, 64), (128, 128)])
def test_init_from_ppo_reproduces_policy(ppo_hidden):
    pnet = make_network(3, ppo_hidden)
    pp = pnet.init(jax.random.key(0), jnp.zeros((OBS_DIM,)))
    # Make the stage-1 policy non-trivial (the fresh actor output is nearly uniform).
    pp = jax.tree.map(lambda x: x * 1.0, pp)
    pp["params"]["actor_out"]["kernel"] = pp["params"]["actor_out"]["kernel"] * 100.0
    mnet = make_moe_network(3)  # experts of hidden 128
    obs = _obs(64)
    logits_ppo, value_ppo = pnet.apply(pp, obs)
    mp = moe.init_from_ppo(pp, jax.random.key(1), mnet, OBS_DIM, init_noise=0.0)
    d = mnet.apply(mp, obs, method="details")
    for e in range(4):
        np.testing.assert_allclose(jax.nn.softmax(d["expert_logits"][:, e]), jax.nn.softmax(logits_ppo),
                                   atol=1e-5)
        np.testing.assert_allclose(d["expert_values"][:, e], value_ppo, atol=1e-5)
    np.testing.assert_allclose(jnp.exp(d["logits"]), jax.nn.softmax(logits_ppo), atol=1e-5)
    np.testing.assert_allclose(d["value"], value_ppo, atol=1e-5)
    # Jit-able, and with noise the experts differ while staying close to the stage-1 policy.
    noisy = jax.jit(lambda p, k: moe.init_from_ppo(p, k, mnet, OBS_DIM, init_noise=0.05))(pp, jax.random.key(2))
    dn = mnet.apply(noisy, obs, method="details")
    probs = jax.nn.softmax(dn["expert_logits"], -1)
    assert float(jnp.abs(probs[:, 0] - probs[:, 1]).max()) > 1e-4
    assert float(jnp.abs(jnp.exp(dn["logits"]) - jax.nn.softmax(logits_ppo)).max()) < 0.1
    assert float(moe.expert_diversity(dn["expert_logits"])) > 0.0


def test_init_from_ppo_rejects_mismatched_layers():
    pp = make_network(3, (64, 64, 64)).init(jax.random.key(0), jnp.zeros((OBS_DIM,)))
    with pytest.raises(ValueError, match="actor_2"):
        moe.init_from_ppo(pp, jax.random.key(1), make_moe_network(3), OBS_DIM)
    pp = make_network(3, (256, 256)).init(jax.random.key(0), jnp.zeros((OBS_DIM,)))
    with pytest.raises(ValueError, match="larger"):
        moe.init_from_ppo(pp, jax.random.key(1), make_moe_network(3), OBS_DIM)


def test_config_defaults():
    c = moe.MoEConfig()
    assert (c.num_experts, c.expert_hidden_dim, c.gating_hidden_dim, c.gating_temperature) == (4, 128, 64, 0.8)
    assert c.diversity_loss_weight == 0.02 and c.num_iterations == 800
    from jaxtrade import config as C
    gate = C.default_config().moe_gate  # the stage-2 gate lives in --moe_gate.* (not in the stage's own config)
    assert (gate.min_win_rate, gate.min_profit_factor, gate.max_drawdown) == (0.40, 1.0, 0.35)
    assert not {"min_win_rate", "min_profit_factor", "max_drawdown"} & set(c.__dataclass_fields__)
    with pytest.raises(ValueError):
        moe.MoEConfig(gating_temperature=0.0)


def _small_ppo_config(**kw):
    settings = dict(num_envs=16, num_steps=32, minibatch_size=128, update_epochs=2)
    settings.update(kw)
    return ppo.PPOConfig(**settings)


def test_trainer_from_ppo_runs_and_logs(tmp_path):
    random_walk_market(tmp_path, num_sessions=12, bars_per_session=30)
    market = data.load_market(tmp_path, "NIFTY_5")
    ep = env.make_params(market, "train")
    pcfg = _small_ppo_config()
    stage1 = ppo.make_trainer(pcfg, ep)
    rs1 = stage1.init(jax.random.key(0))
    logged = []
    mcfg = moe.MoEConfig(num_experts=2, expert_hidden_dim=64, num_iterations=2, init_noise=0.0)
    trainer = moe.make_trainer(mcfg, pcfg, ep, init_from=rs1.params)
    assert trainer.config.num_iterations == 2
    rs = trainer.init(jax.random.key(1))
    obs = rs1.rollout.obs
    np.testing.assert_allclose(jax.nn.softmax(trainer.apply(rs.params, obs)[0]),
                               jax.nn.softmax(stage1.apply(rs1.params, obs)[0]), atol=1e-5)
    rs, metrics = base.Runner(callback=logged.append, log_every=1)(trainer, rs, trainer.config.num_iterations)
    jax.effects_barrier()
    for name in ("diversity", "load_balance", "gate_entropy", "usage_0", "usage_1", "trades_per_episode",
                 "policy_loss", "win_rate"):
        assert metrics[name].shape == (2,), name
    usage = np.asarray(metrics["usage_0"]) + np.asarray(metrics["usage_1"])
    np.testing.assert_allclose(usage, 1.0, rtol=1e-5)
    assert int(rs.iteration) == 2
    assert len(logged) == 2 and "usage_1" in logged[0] and "trades_per_episode" in logged[0]

    table = regimes.expert_regime_table(trainer.network, rs.params, market, "val")
    json.dumps(table)
    lo, hi = market.split_bars("val")
    assert table["num_bars"] == hi - lo - 1
    assert sum(sum(r) for r in table["bars"]) == table["num_bars"]
    for cell in table["cells"]:
        if cell["bars"]:
            assert cell["leader"] == int(np.argmax(cell["mean_gate"]))
            assert sum(cell["mean_gate"]) == pytest.approx(1.0, rel=1e-4)
    pytest.importorskip("matplotlib")
    out = regimes.plot_expert_regimes(table, tmp_path / "regimes.png")
    assert out and (tmp_path / "regimes.png").stat().st_size > 0


def two_regime_market(directory, num_sessions=40, bars=40, seed=0):
    """Sessions alternate: even = trending and volatile (drift +-1.5e-3 a bar, vol 2e-3), odd = calm and
    mean-reverting (vol 2e-4, each bar undoes 60% of the last). Volatility features tell them apart."""
    rng = np.random.default_rng(seed)
    logc, price = [], np.log(20000.0)
    for s in range(num_sessions):
        if s % 2 == 0:
            r = rng.choice([-1.0, 1.0]) * 1.5e-3 + rng.normal(0, 2e-3, bars)
        else:
            e = rng.normal(0, 2e-4, bars)
            r = e.copy()
            for i in range(1, bars):
                r[i] = e[i] - 0.6 * r[i - 1]
        path = price + np.cumsum(r)
        logc.append(path)
        price = path[-1]
    close = np.exp(np.concatenate(logc))
    open_ = np.r_[close[0], close[:-1]]
    high = np.maximum(open_, close) * 1.0001
    low = np.minimum(open_, close) * 0.9999
    ts = session_timestamps(num_sessions, bars, 5)
    write_processed(directory, "REGIME_5", open_, high, low, close, ts)
    return data.load_market(directory, "REGIME_5")


def test_training_routes_regimes_to_different_experts(tmp_path):
    market = two_regime_market(tmp_path)
    ep = env.make_params(market, "train", lot_size=1)
    pcfg = _small_ppo_config(num_envs=32, num_steps=40, minibatch_size=256, update_epochs=4,
                             learning_rate=1e-3)
    mcfg = moe.MoEConfig(num_experts=2, expert_hidden_dim=32, gating_hidden_dim=16, num_iterations=40,
                         diversity_loss_weight=0.05)
    trainer = moe.make_trainer(mcfg, pcfg, ep)
    rs = trainer.init(jax.random.key(0))
    net = trainer.network

    # Observations of the training split's bars, flat position, grouped by regime (skip each session's
    # first 20 bars so the trailing volatility has left the previous session).
    feats = np.asarray(market.data.features)
    session = np.asarray(market.data.session)
    lo, hi = market.split_bars("train")
    start = np.asarray(market.data.session_start)[session]
    idx = np.arange(lo, hi)
    idx = idx[idx - start[idx] >= 20]
    obs = np.concatenate([feats[idx], np.zeros((len(idx), 2), np.float32)], 1)
    trend = session[idx] % 2 == 0

    def regime_gates(params):
        g = np.asarray(net.apply(params, obs, method="details")["gate_probs"])
        return g[trend].mean(0), g[~trend].mean(0)

    g_trend0, g_calm0 = regime_gates(rs.params)
    rs, metrics = base.Runner()(trainer, rs, mcfg.num_iterations)
    g_trend, g_calm = regime_gates(rs.params)
    tv0 = 0.5 * np.abs(g_trend0 - g_calm0).sum()
    tv = 0.5 * np.abs(g_trend - g_calm).sum()
    d = net.apply(rs.params, obs, method="details")
    assert float(moe.expert_diversity(d["expert_logits"])) > 1e-3  # experts not identical
    assert np.argmax(g_trend) != np.argmax(g_calm), (g_trend, g_calm)
    assert tv > 0.2 and tv > 5 * tv0, (tv, tv0)
