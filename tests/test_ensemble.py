"""The `Ensemble` policy (issue 18): N members with stacked parameters in one vmap, acting on the mean of their action
probabilities or by majority vote; identical members equal one member; its `.pth` holds every member and the PyTorch
reference module reproduces its probabilities."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtrade import backtest as B, env as E, export, networks as N, policies as P
from jaxtrade.data import load_market
from jaxtrade.ensemble import Ensemble, stack_members
from jaxtrade.errors import InputError
from tests.market_fixtures import random_walk_market

OBS_DIM = len(E.OBS_NAMES)
NUM_ACTIONS = 3


def _members(network, n, seed=0):
    obs = jnp.zeros((1, OBS_DIM))
    return [network.init(jax.random.key(seed + i), obs) for i in range(n)]


def _obs(n=257, seed=1):
    return jax.random.normal(jax.random.key(seed), (n, OBS_DIM), jnp.float32) * 2.0


def _softmax64(logits):
    z = np.asarray(logits, np.float64)
    z = np.exp(z - z.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def test_identical_members_equal_one_member(tmp_path):
    net = N.ActorCritic(NUM_ACTIONS, hidden_sizes=(16, 16))
    (p,) = _members(net, 1)
    stacked = stack_members([p] * 4)
    obs = _obs()
    logits, value = net.apply(p, obs)
    for rule in ("mean", "vote"):
        ens = Ensemble(net, 4, rule)
        scores, ens_value = jax.jit(ens.apply)(stacked, obs)
        np.testing.assert_array_equal(jnp.argmax(scores, -1), jnp.argmax(logits, -1))
        np.testing.assert_allclose(ens_value, value, rtol=1e-6, atol=1e-6)
        probs = jax.jit(ens.action_probs)(stacked, obs)
        if rule == "mean":
            np.testing.assert_allclose(probs, jax.nn.softmax(logits), rtol=1e-6, atol=1e-7)
        else:
            np.testing.assert_array_equal(probs, jax.nn.one_hot(jnp.argmax(logits, -1), NUM_ACTIONS))
    ens = Ensemble(net, 4, "mean")
    # In the backtester: the ensemble of copies trades exactly as the one member.
    random_walk_market(tmp_path, "NIFTY_5", num_sessions=12, bars_per_session=30)
    with jax.enable_x64(True):  # scoped: a global switch would change every later test in this process
        market = load_market(tmp_path, "NIFTY_5", price_dtype=jnp.float64)
        one, many = B.backtest_many(market, [P.network_policy(net, p, "one"),
                                             P.network_policy(ens, stacked, "ens")], split="all")
    assert one.metrics["num_trades"] > 0
    np.testing.assert_array_equal(one.target, many.target)
    for k, v in one.metrics.items():
        assert many.metrics[k] == v, k


def test_mean_and_vote_rules_against_numpy():
    """Different members: the mean rule is the mean of their softmax probabilities (float64 numpy), the vote rule
    counts their argmax actions, ties going to the higher mean probability and then to the lowest index."""
    net = N.ActorCritic(NUM_ACTIONS, hidden_sizes=(8,))
    members = _members(net, 5, seed=3)
    obs = _obs(400, seed=4)
    stacked = stack_members(members)
    logits, values = (np.asarray(x) for x in jax.jit(jax.vmap(net.apply, (0, None)))(stacked, obs))  # [M, B, A]
    probs = _softmax64(logits)
    mean = Ensemble(net, 5, "mean")
    np.testing.assert_allclose(jax.jit(mean.action_probs)(stacked, obs), probs.mean(0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(jax.jit(mean.apply)(stacked, obs)[1], values.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(jnp.argmax(jax.jit(mean.apply)(stacked, obs)[0], -1), probs.mean(0).argmax(-1))

    vote = Ensemble(net, 5, "vote")
    votes = np.zeros((obs.shape[0], NUM_ACTIONS))
    for m in range(5):
        votes[np.arange(obs.shape[0]), logits[m].argmax(-1)] += 1
    expected = []
    for b in range(obs.shape[0]):
        tied = np.flatnonzero(votes[b] == votes[b].max())
        expected.append(tied[np.argmax(probs.mean(0)[b, tied])])
    np.testing.assert_allclose(jax.jit(vote.action_probs)(stacked, obs), votes / 5)
    got = np.asarray(jnp.argmax(jax.jit(vote.apply)(stacked, obs)[0], -1))
    np.testing.assert_array_equal(got, expected)


def test_vote_tie_worked_by_hand():
    """Two members, three actions: member 0 votes for action 2, member 1 for action 0; one vote each, so the mean
    probability decides between actions 0 and 2."""

    class Fixed:  # a stand-in Flax module: logits are the parameters themselves
        num_actions = 3

        def apply(self, params, obs):
            return jnp.broadcast_to(params["logits"], obs.shape[:-1] + (3,)), jnp.zeros(obs.shape[:-1])

    p0 = {"logits": jnp.log(jnp.array([0.30, 0.30, 0.40]))}  # votes 2
    p1 = {"logits": jnp.log(jnp.array([0.34, 0.33, 0.33]))}  # votes 0
    ens = Ensemble(Fixed(), 2, "vote")
    stacked = stack_members([p0, p1])
    obs = jnp.zeros((1, 4))
    # Mean probabilities: action 0 .32, action 1 .315, action 2 .365 -> the tie between 0 and 2 goes to 2.
    assert int(jnp.argmax(jax.jit(ens.apply)(stacked, obs)[0], -1)[0]) == 2
    np.testing.assert_allclose(jax.jit(ens.action_probs)(stacked, obs)[0], [0.5, 0.0, 0.5])
    # With the mean rule too it is 2; with member 1 more sure of 0, the tie goes to 0.
    p1 = {"logits": jnp.log(jnp.array([0.60, 0.20, 0.20]))}
    assert int(jnp.argmax(jax.jit(ens.apply)(stack_members([p0, p1]), obs)[0], -1)[0]) == 0


def test_stack_members_refuses_other_architectures():
    a = _members(N.ActorCritic(NUM_ACTIONS, hidden_sizes=(8,)), 1)[0]
    b = _members(N.ActorCritic(NUM_ACTIONS, hidden_sizes=(8, 8)), 1)[0]
    with pytest.raises(ValueError, match="one architecture"):
        stack_members([a, b])
    with pytest.raises(ValueError, match="rule"):
        Ensemble(N.ActorCritic(NUM_ACTIONS), 2, "median")


@pytest.mark.parametrize("kind,rule", [("actor_critic", "mean"), ("moe", "vote")])
def test_ensemble_pth_parity(tmp_path, rule, kind):
    """The .pth holds every member (`members.{m}.` names); the PyTorch reference module reproduces the ensemble's
    probabilities within 1e-5 and its actions; loading it back gives the same JAX ensemble."""
    torch = pytest.importorskip("torch")
    if kind == "moe":
        net = N.MoEActorCritic(NUM_ACTIONS, num_experts=2, expert_hidden_dim=8, gating_hidden_dim=8)
    else:
        net = N.ActorCritic(NUM_ACTIONS, hidden_sizes=(16, 8))
    members = _members(net, 3, seed=7)
    ens = Ensemble(net, 3, rule)
    stacked = stack_members(members)
    path = export.export_pth(tmp_path / "e.pth", stacked, ens, symbol="NIFTY_5", stage="final",
                             obs_names=list(E.OBS_NAMES))
    sd, config = export.load_pth(path)
    assert config["architecture"] == "ensemble" and config["network"]["num_members"] == 3
    assert config["network"]["rule"] == rule and config["network"]["member"]["architecture"] == \
        export.network_config(net)["architecture"]
    assert {k.split(".")[1] for k in sd} == {"0", "1", "2"} and all(k.startswith("members.") for k in sd)
    # Member 1's tensors are member 1's own parameters.
    one = export.state_dict_from_params(members[1], net)
    for k, v in one.items():
        np.testing.assert_array_equal(sd[f"members.1.{k}"], v)

    obs = _obs(300, seed=9)
    module = export.torch_policy(path)
    with torch.no_grad():
        t_probs = module.action_probs(torch.from_numpy(np.asarray(obs))).numpy()
        t_scores = module(torch.from_numpy(np.asarray(obs)))[0].numpy()
    j_probs = np.asarray(jax.jit(ens.action_probs)(stacked, obs))
    np.testing.assert_allclose(t_probs, j_probs, atol=1e-5)
    actions = np.asarray(jnp.argmax(jax.jit(ens.apply)(stacked, obs)[0], -1))
    np.testing.assert_array_equal(t_scores.argmax(-1), actions)

    params, network, _ = export.params_from_pth(path)
    assert network == ens
    np.testing.assert_allclose(jax.jit(network.action_probs)(params, obs), j_probs, atol=1e-6)


def test_bad_ensemble_configs_are_one_line_errors():
    member = export.network_config(N.ActorCritic(NUM_ACTIONS))
    with pytest.raises(InputError, match="needs 'member'"):
        export.network_from_config({"architecture": "ensemble", "num_members": 2, "rule": "mean"})
    with pytest.raises(InputError, match="rule"):
        export.network_from_config({"architecture": "ensemble", "num_members": 2, "rule": "median",
                                    "member": member})
    with pytest.raises(InputError, match="cannot be ensembles"):
        export.network_from_config({"architecture": "ensemble", "num_members": 2, "rule": "mean",
                                    "member": {"architecture": "ensemble", "num_members": 2, "member": member}})
    with pytest.raises(InputError, match="not 0..M-1"):
        export.params_from_state_dict({"members.0.actor_out.weight": np.zeros((3, 4)),
                                       "members.2.actor_out.weight": np.zeros((3, 4))})

