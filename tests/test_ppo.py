"""PPO and the shared rollout machinery: GAE, the clipped loss, seeds under vmap, determinism, chunked runs,
a tiny synthetic market, greedy evaluation, and (slow) CartPole-v1 to a return of 475."""

import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtrade import env as trading_env
from jaxtrade.agents import base, ppo
from jaxtrade.agents import rollout as R
from jaxtrade.data import load_market
from jaxtrade.networks import ActorCritic
from tests.market_fixtures import random_walk_market

TINY = ppo.PPOConfig(num_envs=8, num_steps=16, minibatch_size=32, update_epochs=2, num_iterations=4,
                     learning_rate=1e-3)


@pytest.fixture(scope="module")
def env_params(tmp_path_factory):
    d = tmp_path_factory.mktemp("market")
    random_walk_market(d, "NIFTY_5", num_sessions=12, bars_per_session=20, bar_minutes=5, seed=3)
    market = load_market(d, "NIFTY_5")
    return trading_env.make_params(market, "train", lot_size=1)


def _tree_equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# ---------------------------------------------------------------------------------------------------------
# GAE


def _gae_reference(rewards, values, dones, last_value, gamma, lam):
    T, N = rewards.shape
    adv = np.zeros((T, N), np.float64)
    gae = np.zeros(N)
    next_v = np.asarray(last_value, np.float64)
    for t in reversed(range(T)):
        nd = 1.0 - dones[t]
        delta = rewards[t] + gamma * next_v * nd - values[t]
        gae = delta + gamma * lam * nd * gae
        adv[t] = gae
        next_v = values[t]
    return adv, adv + values


def _transitions(rewards, values, dones):
    z = jnp.zeros(rewards.shape)
    return R.Transition(obs=z[..., None], action=z.astype(jnp.int32), log_prob=z, value=jnp.asarray(values),
                        reward=jnp.asarray(rewards), done=jnp.asarray(dones, bool), episode_return=z,
                        episode_length=z.astype(jnp.int32), num_trades=z.astype(jnp.int32),
                        wins=z.astype(jnp.int32), gross_profit=z, gross_loss=z, max_drawdown=z)


def test_gae_hand_worked():
    # One env, 3 steps, episode ends at step 1: gamma 0.5, lambda 0.5.
    r = np.array([[1.0], [2.0], [3.0]], np.float32)
    v = np.array([[0.5], [1.0], [2.0]], np.float32)
    d = np.array([[0], [1], [0]], np.float32)
    adv, targ = R.compute_gae(_transitions(r, v, d), jnp.array([4.0]), 0.5, 0.5)
    # t=2: delta = 3 + 0.5*4 - 2 = 3;                        A2 = 3
    # t=1: done -> delta = 2 - 1 = 1, no carry;               A1 = 1
    # t=0: delta = 1 + 0.5*1.0 - 0.5 = 1; A0 = 1 + 0.25*1 = 1.25
    np.testing.assert_allclose(np.asarray(adv)[:, 0], [1.25, 1.0, 3.0], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(targ)[:, 0], [1.75, 2.0, 5.0], rtol=1e-6)


def test_gae_matches_float64_reference():
    rng = np.random.default_rng(0)
    T, N = 37, 5
    r = rng.normal(size=(T, N)).astype(np.float32)
    v = rng.normal(size=(T, N)).astype(np.float32)
    d = (rng.random((T, N)) < 0.15).astype(np.float32)
    last = rng.normal(size=N).astype(np.float32)
    adv, targ = R.compute_gae(_transitions(r, v, d), jnp.asarray(last), 0.995, 0.95)
    ref_adv, ref_targ = _gae_reference(r.astype(np.float64), v.astype(np.float64), d, last, 0.995, 0.95)
    np.testing.assert_allclose(np.asarray(adv), ref_adv, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(targ), ref_targ, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------
# The loss


def test_clipped_surrogate_by_hand():
    cfg = ppo.PPOConfig(clip_epsilon=0.2, normalize_advantages=False, vf_coef=0.5, ent_coef=0.01)
    ratios = np.array([0.5, 1.0, 1.5, 0.5])
    adv = np.array([1.0, -1.0, 2.0, -2.0])
    logits = jnp.zeros((4, 3))  # uniform: new log prob = -ln 3 for every action
    new_lp = -np.log(3.0)
    batch = ppo.PPOBatch(obs=jnp.zeros((4, 1)), action=jnp.array([0, 1, 2, 1]),
                         log_prob=jnp.asarray(new_lp - np.log(ratios), jnp.float32),
                         value=jnp.array([0.5, 0.0, 0.0, 0.0]), advantages=jnp.asarray(adv, jnp.float32),
                         targets=jnp.array([2.0, 0.1, -0.5, 0.0]))
    values = jnp.array([1.0, 0.0, -0.1, 0.3])
    loss, aux = ppo.ppo_loss_from_outputs(logits, values, batch, cfg)
    # surrogate terms: min(0.5*1, 0.8*1)=0.5; min(-1, -1)=-1; min(3, 2.4)=2.4; min(-1, -1.6)=-1.6
    policy = -(0.5 - 1.0 + 2.4 - 1.6) / 4
    # value: v=1 vs old .5 -> clipped .7: max(1, 1.69)=1.69; (0-.1)^2=.01; v=-.1 (within clip): (.4)^2=.16;
    # v=.3 vs old 0 -> clipped .2: max(.09, .04)=.09
    value = 0.5 * (1.69 + 0.01 + 0.16 + 0.09) / 4
    entropy = np.log(3.0)
    np.testing.assert_allclose(float(aux["policy_loss"]), policy, rtol=1e-5)
    np.testing.assert_allclose(float(aux["value_loss"]), value, rtol=1e-5)
    np.testing.assert_allclose(float(aux["entropy"]), entropy, rtol=1e-5)
    np.testing.assert_allclose(float(aux["clip_frac"]), 0.75)
    np.testing.assert_allclose(float(aux["approx_kl"]), np.mean((ratios - 1) - np.log(ratios)), rtol=1e-5)
    np.testing.assert_allclose(float(loss), policy + 0.5 * value - 0.01 * entropy, rtol=1e-5)


def test_ppo_loss_calls_network():
    net = ActorCritic(num_actions=3, hidden_sizes=(8,))
    params = net.init(jax.random.key(0), jnp.zeros((4,)))
    obs = jax.random.normal(jax.random.key(1), (6, 4))
    logits, value = net.apply(params, obs)
    logp = jax.nn.log_softmax(logits)[jnp.arange(6), 1]
    batch = ppo.PPOBatch(obs=obs, action=jnp.ones(6, jnp.int32), log_prob=logp, value=value,
                         advantages=jnp.linspace(-1, 1, 6), targets=value + 1.0)
    loss, aux = ppo.ppo_loss(params, net.apply, batch, ppo.PPOConfig())
    # ratio 1 everywhere: no clipping, approx_kl 0, policy loss = -mean(normalised adv) = 0
    assert float(aux["clip_frac"]) == 0.0
    np.testing.assert_allclose(float(aux["approx_kl"]), 0.0, atol=1e-6)
    np.testing.assert_allclose(float(aux["policy_loss"]), 0.0, atol=1e-6)
    np.testing.assert_allclose(float(aux["value_loss"]), 0.5, rtol=1e-5)
    grads = jax.grad(lambda p: ppo.ppo_loss(p, net.apply, batch, ppo.PPOConfig())[0])(params)
    assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree.leaves(grads))


def test_config_validation():
    with pytest.raises(ValueError, match="minibatch_size"):
        ppo.PPOConfig(num_envs=2, num_steps=4, minibatch_size=16)
    cfg = ppo.PPOConfig()
    assert (cfg.learning_rate, cfg.minibatch_size, cfg.gamma, cfg.gae_lambda, cfg.clip_epsilon,
            cfg.update_epochs, cfg.num_iterations) == (1e-4, 128, 0.995, 0.95, 0.15, 6, 500)
    assert cfg.batch_size == cfg.num_envs * cfg.num_steps


# ---------------------------------------------------------------------------------------------------------
# Training on the trading env


@pytest.fixture(scope="module")
def trainer(env_params):
    return ppo.make_trainer(TINY, env_params)


@pytest.fixture(scope="module")
def train_jit():
    # the trainer (env params and hyperparameters as leaves) is an argument, not a closed-over constant
    return jax.jit(lambda t, k: t.train(k))


def test_train_runs_vmap_over_seeds_and_is_deterministic(trainer, train_jit):
    s0, m0 = train_jit(trainer, jax.random.key(0))
    s0b, m0b = train_jit(trainer, jax.random.key(0))
    _tree_equal(s0.params, s0b.params)  # same seed, same params
    _tree_equal(m0, m0b)
    s1, _ = train_jit(trainer, jax.random.key(1))
    assert not np.allclose(np.asarray(s0.params["params"]["actor_0"]["kernel"]),
                           np.asarray(s1.params["params"]["actor_0"]["kernel"]))
    # vmap over 2 seeds = two single runs (batched matmuls may round differently: allclose)
    sv, mv = jax.jit(jax.vmap(lambda t, k: t.train(k), in_axes=(None, 0)))(
        trainer, jnp.stack([jax.random.key(0), jax.random.key(1)]))
    for i, single in enumerate((s0, s1)):
        for a, b in zip(jax.tree.leaves(single.params), jax.tree.leaves(sv.params)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b)[i], rtol=2e-4, atol=2e-6)
    np.testing.assert_allclose(np.asarray(mv["value_loss"][0]), np.asarray(m0["value_loss"]), rtol=1e-3)
    assert m0["iteration"].tolist() == [1, 2, 3, 4]
    assert m0["env_steps"].tolist() == [128, 256, 384, 512]


def test_chunked_run_equals_whole_run(trainer, train_jit):
    whole_state, whole_metrics = train_jit(trainer, jax.random.key(7))
    init = jax.jit(lambda t, k: t.init(k))(trainer, jax.random.key(7))
    runner = base.Runner()
    rs, m1 = runner(trainer, init, 2)
    rs, m2 = runner(trainer, rs, 2)  # same chunk length: no recompilation
    _tree_equal(rs.params, whole_state.params)
    _tree_equal(rs.opt_state, whole_state.opt_state)
    for k in whole_metrics:
        np.testing.assert_array_equal(np.concatenate([m1[k], m2[k]]), np.asarray(whole_metrics[k]), err_msg=k)
    assert int(rs.iteration) == 4
    assert runner.cache_size() == 1
    # the runner's own chunking (checkpoints between chunks) gives the same run
    saved = []
    chunked, m = runner(trainer, init, 4, chunk=2, on_chunk=lambda s, n: saved.append(n))
    _tree_equal(chunked.params, whole_state.params)
    assert saved == [2] and m["iteration"].tolist() == [1, 2, 3, 4]


def test_init_from_given_params(trainer):
    params = trainer.init_params(jax.random.key(3))
    params = jax.tree.map(lambda x: x + 0.5, params)
    rs = trainer.init(jax.random.key(0), params)
    _tree_equal(rs.params, params)
    rs, m = base.Runner()(trainer, rs, 2)
    assert np.isfinite(np.asarray(m["total_loss"])).all()


def test_training_on_tiny_market_is_finite_and_logs(env_params):
    calls = []
    trainer = ppo.make_trainer(TINY.replace(num_iterations=12), env_params)
    rs = trainer.init(jax.random.key(0))
    rs, m = base.Runner(callback=calls.append, log_every=5)(trainer, rs, 12)
    jax.effects_barrier()
    # every 5 iterations plus the chunk's last
    assert [int(c["iteration"]) for c in calls] == [5, 10, 12]
    assert set(calls[0]) >= {"iteration", "env_steps", "mean_episode_return", "win_rate", "profit_factor",
                             "policy_loss", "value_loss", "entropy", "approx_kl", "clip_frac"}
    for k in ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_frac", "mean_reward"):
        assert np.isfinite(np.asarray(m[k])).all(), k
    finished = np.asarray(m["episodes"]) > 0
    assert finished.any()
    assert np.isfinite(np.asarray(m["mean_episode_return"])[finished]).all()
    assert np.isnan(np.asarray(m["mean_episode_return"])[~finished]).all()
    traded = np.asarray(m["num_trades"]) > 0
    wr = np.asarray(m["win_rate"])[traded]
    assert ((wr >= 0) & (wr <= 1)).all()
    # greedy evaluation of the trained policy over parallel episodes
    per_ep, summary = jax.jit(lambda p, k: R.evaluate(trainer.apply, p, trading_env.reset, trading_env.step,
                                                      env_params, k, 16))(rs.params, jax.random.key(5))
    assert bool(per_ep["finished"].all())
    assert int(summary["episodes"]) == 16
    np.testing.assert_allclose(float(summary["mean_episode_return"]),
                               float(np.mean(np.asarray(per_ep["episode_return"]))), rtol=1e-5)
    assert (np.asarray(per_ep["episode_length"]) == 19).all()  # one 20-bar session: 19 decisions


def test_summarise_episodes():
    ep = {"done": jnp.array([[True, False], [True, True]]),
          "episode_return": jnp.array([[1.0, 100.0], [2.0, 3.0]]),
          "episode_length": jnp.array([[10, 0], [20, 30]]),
          "num_trades": jnp.array([[2, 50], [0, 4]]), "wins": jnp.array([[1, 50], [0, 2]]),
          "gross_profit": jnp.array([[3.0, 99.0], [0.0, 1.0]]),
          "gross_loss": jnp.array([[1.0, 0.0], [0.0, 1.0]]),
          "max_drawdown": jnp.array([[0.1, 0.9], [0.2, 0.3]])}
    s = R.summarise_episodes(ep)
    assert int(s["episodes"]) == 3
    np.testing.assert_allclose(float(s["mean_episode_return"]), 2.0)
    np.testing.assert_allclose(float(s["win_rate"]), 3 / 6)
    np.testing.assert_allclose(float(s["profit_factor"]), 4.0 / 2.0)
    np.testing.assert_allclose(float(s["mean_max_drawdown"]), 0.2, rtol=1e-6)
    none = R.summarise_episodes(dict(ep, done=jnp.zeros((2, 2), bool)))
    assert int(none["episodes"]) == 0 and np.isnan(float(none["mean_episode_return"]))


# ---------------------------------------------------------------------------------------------------------
# gymnax


def _cartpole():
    gymnax = pytest.importorskip("gymnax")
    env, params = gymnax.make("CartPole-v1")
    return R.gymnax_env(env), params, env.num_actions


def test_gymnax_rollout_shapes():
    genv, gparams, num_actions = _cartpole()
    net = ActorCritic(num_actions)
    params = net.init(jax.random.key(0), jnp.zeros((4,)))
    rs = R.reset_envs(genv.reset, gparams, jax.random.key(1), 3)
    rs, tr = jax.jit(lambda p, s: R.rollout(net.apply, p, genv.step, gparams, s, 40, per_env_keys=True))(
        params, rs)
    assert tr.obs.shape == (40, 3, 4) and tr.action.shape == (40, 3) and tr.done.dtype == jnp.bool_
    ended = np.asarray(tr.done)
    # a finished episode's return is its length for CartPole (reward 1 per step)
    np.testing.assert_array_equal(np.asarray(tr.episode_return)[ended],
                                  np.asarray(tr.episode_length)[ended].astype(np.float32))


@pytest.mark.slow
def test_cartpole_reaches_475():
    genv, gparams, num_actions = _cartpole()
    # purejaxrl's CartPole-v1 hyperparameters (5e5 env steps)
    cfg = ppo.PPOConfig(learning_rate=2.5e-4, num_envs=4, num_steps=128, num_iterations=976, update_epochs=4,
                        minibatch_size=128, gamma=0.99, gae_lambda=0.95, clip_epsilon=0.2, ent_coef=0.01,
                        vf_coef=0.5, max_grad_norm=0.5, anneal_lr=True)
    net = ActorCritic(num_actions, cfg.hidden_sizes, cfg.activation)
    t0 = time.perf_counter()
    trainer = ppo.make_trainer(cfg, gparams, net, env_reset=genv.reset, env_step=genv.step, per_env_keys=True)
    state, metrics = jax.block_until_ready(jax.jit(lambda t, k: t.train(k))(trainer, jax.random.key(42)))
    elapsed = time.perf_counter() - t0
    per_ep, summary = jax.jit(lambda p, k: R.evaluate(net.apply, p, genv.reset, genv.step, gparams, k, 64,
                                                      max_steps=600, per_env_keys=True))(
        state.params, jax.random.key(0))
    recent = np.asarray(metrics["mean_episode_return"])[-20:]
    print(f"CartPole: {elapsed:.1f}s; training return (last 20 it) {np.nanmean(recent):.1f}; "
          f"greedy {float(summary['mean_episode_return']):.1f}")
    assert float(summary["mean_episode_return"]) >= 475


def test_env_steps_do_not_wrap_past_int32():
    # 20,000 iterations of a 131,072-step batch is 2.6e9 steps: an int32 product would wrap negative.
    it = jnp.int32(20_000)
    assert float(R.env_steps(it, 131_072)) == pytest.approx(2_621_440_000, rel=1e-6)
    got = {}
    base.host_call(got.update)({"iteration": it, "batch_size": jnp.int32(131_072), "env_steps": R.env_steps(it, 131_072)})
    assert got["env_steps"] == 2_621_440_000 and got["env_steps"].dtype == np.int64
