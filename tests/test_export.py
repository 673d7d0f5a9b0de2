"""jaxtrade.export: .pth files (weights_only), the PyTorch policy matches the JAX policy, round trips,
the one model loader (`policies.load_policy`) through pure_callback / JAX / Orbax directories, and the one-line
errors."""

import os
import subprocess
import sys
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtrade import export as X
from jaxtrade import networks as N
from jaxtrade import policies
from jaxtrade.env import OBS_NAMES
from jaxtrade.errors import InputError
from jaxtrade.features import FEATURE_NAMES, Scaler

D = len(OBS_NAMES)
HAS_MOE = hasattr(N, "MoEActorCritic")
needs_moe = pytest.mark.skipif(not HAS_MOE, reason="jaxtrade.networks has no MoEActorCritic yet")


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


_PARAMS: dict = {}
_APPLY: dict = {}


def _params(network, seed=0, noise=0.3):
    """Random parameters in the network's structure (from `jax.eval_shape`, no compilation: XLA compiles of
    `init` are slow on a busy CPU): kernels ~ N(0, 1.5^2 / fan_in), biases ~ N(0, noise^2), so every layer
    (the gate and the actor output too) matters. Cached per (network, seed)."""
    key = (repr(network), seed, noise)
    if key not in _PARAMS:
        shapes = jax.eval_shape(network.init, jax.random.key(0), jax.ShapeDtypeStruct((1, D), jnp.float32))
        rng = np.random.default_rng(seed)

        def draw(path, s):
            if path[-1].key == "kernel":
                return (rng.normal(size=s.shape) * 1.5 / np.sqrt(s.shape[-2])).astype(np.float32)
            return (rng.normal(size=s.shape) * noise).astype(np.float32)

        _PARAMS[key] = jax.tree_util.tree_map_with_path(draw, shapes)
    return _PARAMS[key]


def _apply(network, params, obs, method=None):
    """`network.apply` jitted (cached per network), at the highest matmul precision (pinned for the
    comparisons with PyTorch)."""
    key = (repr(network), getattr(method, "__name__", None))
    if key not in _APPLY:
        _APPLY[key] = jax.jit(lambda p, o: network.apply(p, o, method=method))
    with jax.default_matmul_precision("highest"):
        return _APPLY[key](params, jnp.asarray(obs))


def _obs(n=256, seed=0):
    return (np.random.default_rng(seed).normal(size=(n, D)) * 2.0).astype(np.float32)


def _moe(**kw):
    base = dict(num_actions=3, num_experts=4, expert_hidden_dim=32, gating_hidden_dim=16, gating_temperature=0.8)
    base.update(kw)
    return N.MoEActorCritic(**base)


def _export(tmp_path, network, params, name="m.pth", **kw):
    kw.setdefault("symbol", "NIFTY")
    kw.setdefault("stage", "ppo")
    kw.setdefault("obs_names", OBS_NAMES)
    return X.export_pth(tmp_path / name, params, network, **kw)


def _is_plain(obj):
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return True
    if isinstance(obj, list):
        return all(_is_plain(v) for v in obj)
    if isinstance(obj, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in obj.items())
    return False


# ------------------------------------------------------------------------------------- the file


def test_pth_loads_weights_only_with_plain_config(tmp_path, torch):
    net = N.make_network(3)
    params = _params(net)
    scaler = Scaler(mean=np.zeros(len(FEATURE_NAMES)), std=np.ones(len(FEATURE_NAMES)))
    path = _export(tmp_path, net, params, scaler=scaler, stage="ppo",
                   metrics={"sharpe": np.float32(1.25), "win_rate": jnp.asarray(0.5), "trades": np.int64(7),
                            "curve": np.arange(3.0)},
                   extra={"iterations": (1, 2), "path": tmp_path})
    with open(path, "rb") as f:
        obj = torch.load(f, weights_only=True)
    assert set(obj) == {"state_dict", "config"}
    assert all(isinstance(v, torch.Tensor) and v.dtype == torch.float32 for v in obj["state_dict"].values())
    assert sorted(obj["state_dict"]) == sorted(
        f"{layer}.{kind}" for layer in ("actor_0", "actor_1", "actor_out", "critic_0", "critic_1", "critic_out")
        for kind in ("weight", "bias"))
    np.testing.assert_array_equal(obj["state_dict"]["actor_0.weight"].numpy(),
                                  np.asarray(params["params"]["actor_0"]["kernel"]).T)
    cfg = obj["config"]
    assert _is_plain(cfg), cfg
    assert cfg["format"] == X.FORMAT and cfg["format_version"] == X.FORMAT_VERSION
    assert cfg["architecture"] == "actor_critic"
    assert cfg["network"] == {"architecture": "actor_critic", "num_actions": 3, "hidden_sizes": [64, 64],
                              "activation": "tanh", "obs_dim": D}
    assert cfg["observation"] == {"obs_names": list(OBS_NAMES), "obs_dim": D}
    assert cfg["scaler"] == scaler.to_dict()
    assert cfg["symbol"] == "NIFTY" and cfg["stage"] == "ppo"
    assert cfg["metrics"] == {"sharpe": 1.25, "win_rate": 0.5, "trades": 7, "curve": [0.0, 1.0, 2.0]}
    assert cfg["extra"] == {"iterations": [1, 2], "path": str(tmp_path)}
    assert isinstance(cfg["jaxtrade_version"], str)


def test_export_is_atomic_and_overwrites(tmp_path, torch):
    net = N.make_network(3, (8,))
    _export(tmp_path, net, _params(net, 0), name="sub/m.pth")
    path = _export(tmp_path, net, _params(net, 5), name="sub/m.pth")
    assert os.listdir(tmp_path / "sub") == ["m.pth"]  # no temporary file left behind
    sd, _ = X.load_pth(path)
    np.testing.assert_array_equal(sd["actor_0.weight"], np.asarray(_params(net, 5)["params"]["actor_0"]["kernel"]).T)


def test_export_rejects_bad_input(tmp_path, torch):
    net = N.make_network(3)
    params = _params(net)
    with pytest.raises(ValueError, match="obs_names"):
        _export(tmp_path, net, params, obs_names=OBS_NAMES[:-1])
    with pytest.raises(InputError, match="do not match"):
        _export(tmp_path, N.make_network(3, (32, 32)), params)
    with pytest.raises(TypeError, match="metrics.bad"):
        _export(tmp_path, net, params, metrics={"bad": object()})
    assert not any(tmp_path.iterdir())


# ------------------------------------------------------------------------------------- torch == jax

AC_CASES = [((64, 64), "tanh", 3), ((32,), "relu", 5), ((128, 64, 32), "gelu", 3), ((16, 16), "silu", 7),
            ((48,), "elu", 3), ((), "tanh", 3)]


def _compare(torch, network, params, module, obs):
    logits, value = _apply(network, params, obs)
    probs = jax.nn.softmax(logits, axis=-1)
    x = torch.from_numpy(obs)
    with torch.no_grad():
        t_logits, t_value = module(x)
        t_probs = module.action_probs(x)
        t_act = module.act(x)
    assert t_logits.shape == logits.shape and t_value.shape == value.shape
    np.testing.assert_allclose(t_probs.numpy(), np.asarray(probs), atol=1e-5, rtol=0)
    np.testing.assert_allclose(t_value.numpy(), np.asarray(value), atol=1e-4, rtol=1e-5)
    # greedy actions agree wherever the top two probabilities are not within float noise of each other
    top2 = np.sort(np.asarray(probs), axis=-1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 1e-5
    np.testing.assert_array_equal(t_act.numpy()[clear], np.argmax(np.asarray(logits), -1)[clear])


@pytest.mark.parametrize("hidden,activation,num_actions", AC_CASES)
def test_torch_matches_jax_actor_critic(tmp_path, torch, hidden, activation, num_actions):
    net = N.make_network(num_actions, hidden, activation)
    params = _params(net)
    path = _export(tmp_path, net, params)
    module = X.torch_policy(path)
    assert not module.training
    assert module.obs_names == list(OBS_NAMES)
    _compare(torch, net, params, module, _obs())
    # also from the loaded dict
    with open(path, "rb") as f:
        module2 = X.torch_policy(torch.load(f, weights_only=True))
    _compare(torch, net, params, module2, _obs(seed=1))


@needs_moe
@pytest.mark.parametrize("kw", [{}, {"num_experts": 1}, {"gating_temperature": 0.3, "activation": "relu"},
                                {"expert_num_layers": 3, "num_actions": 5, "activation": "gelu"},
                                {"num_experts": 2, "expert_num_layers": 1, "gating_temperature": 2.0}])
def test_torch_matches_jax_moe(tmp_path, torch, kw):
    net = _moe(**kw)
    params = _params(net, noise=0.5)
    path = _export(tmp_path, net, params, stage="moe")
    sd, cfg = X.load_pth(path)
    assert cfg["architecture"] == "moe_actor_critic"
    for key in ("num_experts", "expert_hidden_dim", "gating_hidden_dim", "gating_temperature", "num_actions",
                "activation", "expert_num_layers"):
        assert cfg["network"][key] == getattr(net, key)
    e = net.num_experts
    assert {k.split(".")[1] for k in sd if k.startswith("experts.")} == {str(i) for i in range(e)}
    assert {"gate_0.weight", "gate_0.bias", "gate_out.weight", "gate_out.bias"} <= set(sd)
    np.testing.assert_array_equal(sd[f"experts.{e - 1}.critic_out.weight"],
                                  np.asarray(params["params"]["experts"]["critic_out"]["kernel"][e - 1]).T)
    module = X.torch_policy(path)
    obs = _obs()
    _compare(torch, net, params, module, obs)
    # the gate and the experts themselves match too
    d = _apply(net, params, obs, method=N.MoEActorCritic.details)
    with torch.no_grad():
        td = module.details(torch.from_numpy(obs))
    np.testing.assert_allclose(td["gate_probs"].numpy(), np.asarray(d["gate_probs"]), atol=1e-5, rtol=0)
    np.testing.assert_allclose(td["expert_values"].numpy(), np.asarray(d["expert_values"]), atol=1e-4, rtol=1e-5)


# ------------------------------------------------------------------------------------- round trips

def _tree_equal(a, b):
    la, ta = jax.tree.flatten(a)
    lb, tb = jax.tree.flatten(b)
    return ta == tb and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


@pytest.mark.parametrize("which", ["ac", "ac_small", "moe"])
def test_round_trip_params(tmp_path, torch, which):
    if which == "moe" and not HAS_MOE:
        pytest.skip("jaxtrade.networks has no MoEActorCritic yet")
    net = {"ac": lambda: N.make_network(3), "ac_small": lambda: N.make_network(5, (7, 9), "relu"),
           "moe": lambda: _moe()}[which]()
    params = _params(net)
    path = _export(tmp_path, net, params)
    params2, net2, cfg = X.params_from_pth(path)
    assert net2 == net
    assert _tree_equal(params, params2)
    assert cfg["symbol"] == "NIFTY"
    # and the rebuilt network gives the same outputs (it is trainable: gradients flow)
    obs = jnp.asarray(_obs(8))
    np.testing.assert_array_equal(np.asarray(_apply(net2, params2, obs)[0]), np.asarray(_apply(net, params, obs)[0]))
    g = jax.jit(jax.grad(lambda p: net2.apply(p, obs)[1].sum()))(params2)
    assert jax.tree.structure(g) == jax.tree.structure(params2)
    # state dict <-> params without files
    assert _tree_equal(X.params_from_state_dict(X.state_dict_from_params(params, net)), params)


def test_network_config_round_trip():
    for net in [N.make_network(3), N.make_network(4, (8, 8, 8), "silu")] + ([_moe(num_experts=2)] if HAS_MOE
                                                                            else []):
        cfg = X.network_config(net, obs_dim=D)
        assert _is_plain(cfg) and cfg["obs_dim"] == D
        assert X.network_from_config(cfg) == net
        assert X.network_from_config({"network": cfg, "other": 1}) == net
    with pytest.raises(InputError, match="unknown network architecture"):
        X.network_from_config({"architecture": "transformer", "num_actions": 3})
    with pytest.raises(InputError, match="no field 'width'"):
        X.network_from_config({"architecture": "actor_critic", "num_actions": 3, "width": 4})
    with pytest.raises(InputError, match="num_actions"):
        X.network_from_config({"architecture": "actor_critic"})


# ------------------------------------------------------------------------------------- load_policy

def _greedy(net, params, obs):
    logits = np.asarray(_apply(net, params, obs)[0])
    top2 = np.sort(logits, axis=-1)[:, -2:]
    return np.argmax(logits, -1), (top2[:, 1] - top2[:, 0]) > 1e-5


@pytest.mark.parametrize("which", ["ac", "moe"])
@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_load_policy_pth(tmp_path, torch, which, backend):
    if which == "moe" and not HAS_MOE:
        pytest.skip("jaxtrade.networks has no MoEActorCritic yet")
    net = N.make_network(3, (32, 32)) if which == "ac" else _moe()
    params = _params(net)
    path = _export(tmp_path, net, params, name="NIFTY_ppo_stage1.pth")
    pol = policies.load_policy(path, backend=backend, obs_names=OBS_NAMES)
    act, name, config = pol.act, pol.name, pol.config
    assert name == "NIFTY_ppo_stage1" and config["stage"] == "ppo" and pol.num_actions == 3
    obs = _obs(200, seed=3)
    want, clear = _greedy(net, params, obs)
    key = jax.random.key(0)
    batched = jax.jit(jax.vmap(act, in_axes=(None, 0)))(key, jnp.asarray(obs))
    assert batched.dtype == jnp.int32 and batched.shape == (200,)
    np.testing.assert_array_equal(np.asarray(batched)[clear], want[clear])
    # one observation at a time inside a jitted scan (the backtester's shape)
    _, scanned = jax.lax.scan(lambda c, o: (c, act(key, o)), 0, jnp.asarray(obs[:20]))
    np.testing.assert_array_equal(np.asarray(scanned)[clear[:20]], want[:20][clear[:20]])
    single = act(key, jnp.asarray(obs[0]))
    assert single.shape == () and single.dtype == jnp.int32


def test_load_policy_float64_observations(tmp_path, torch):
    net = N.make_network(3)
    params = _params(net)
    path = _export(tmp_path, net, params)
    obs = _obs(50, seed=4)
    want, clear = _greedy(net, params, obs)
    with jax.enable_x64(True):
        for backend in ("torch", "jax"):
            act = policies.load_policy(path, backend=backend).act
            got = jax.jit(jax.vmap(act, in_axes=(None, 0)))(jax.random.key(0), jnp.asarray(obs, jnp.float64))
            np.testing.assert_array_equal(np.asarray(got)[clear], want[clear])


def test_policies_load_policy_uses_export(tmp_path, torch):
    from jaxtrade import policies
    net = N.make_network(3)
    params = _params(net)
    path = _export(tmp_path, net, params, name="NIFTY_final_model.pth")
    pol = policies.load_policy(path)
    assert pol.name == "NIFTY_final_model"
    hash(pol)  # a frozen dataclass holding the loaded act: must stay hashable
    obs = _obs(30, seed=5)
    want, clear = _greedy(net, params, obs)
    got = jax.jit(jax.vmap(pol.act, in_axes=(None, 0)))(jax.random.key(0), jnp.asarray(obs))
    np.testing.assert_array_equal(np.asarray(got)[clear], want[clear])


@pytest.mark.parametrize("which", ["ac", "moe"])
def test_load_policy_orbax_directory(tmp_path, monkeypatch, which):
    if which == "moe" and not HAS_MOE:
        pytest.skip("jaxtrade.networks has no MoEActorCritic yet")
    from jaxtrade.checkpoints import StageCheckpointer
    net = N.make_network(3, (16, 16), "relu") if which == "ac" else _moe()
    params = _params(net)
    stage_dir = tmp_path / "run" / "NIFTY" / which
    ckpt = StageCheckpointer(stage_dir)
    ckpt.save(3, {"params": params, "step": jnp.int32(3)},
              {"iteration": 3, "network": X.network_config(net, obs_dim=D),
               "observation": {"obs_names": list(OBS_NAMES), "obs_dim": D}})
    ckpt.close()
    monkeypatch.setitem(sys.modules, "torch", None)  # an Orbax directory needs no PyTorch
    pol = policies.load_policy(stage_dir, obs_names=OBS_NAMES)
    act, name, meta = pol.act, pol.name, pol.config
    assert name == f"NIFTY_{which}" and meta["iteration"] == 3
    obs = _obs(64, seed=6)
    want, clear = _greedy(net, params, obs)
    got = jax.jit(jax.vmap(act, in_axes=(None, 0)))(jax.random.key(0), jnp.asarray(obs))
    np.testing.assert_array_equal(np.asarray(got)[clear], want[clear])
    with pytest.raises(InputError, match="expects"):
        policies.load_policy(stage_dir, obs_names=OBS_NAMES[:-1])

    bare = tmp_path / "run" / "NIFTY" / "bare"
    ckpt = StageCheckpointer(bare)
    ckpt.save(1, {"params": params}, {"iteration": 1})
    ckpt.close()
    with pytest.raises(InputError, match="no 'network' entry"):
        policies.load_policy(bare)


# ------------------------------------------------------------------------------------- errors

def test_errors(tmp_path, torch):
    with pytest.raises(InputError, match="not found"):
        X.load_pth(tmp_path / "missing.pth")
    with pytest.raises(InputError, match="not found"):
        policies.load_policy(tmp_path / "missing.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"this is not a torch file")
    with pytest.raises(InputError, match="not a jaxtrade .pth"):
        X.load_pth(junk)
    with pytest.raises(InputError, match="not a jaxtrade .pth"):
        policies.load_policy(junk)
    other = tmp_path / "other.pth"
    torch.save({"model": torch.zeros(3)}, other)
    with pytest.raises(InputError, match="not a jaxtrade .pth"):
        X.torch_policy(other)
    foreign = tmp_path / "foreign.pth"
    torch.save({"state_dict": {}, "config": {"format": "something_else"}}, foreign)
    with pytest.raises(InputError, match="format"):
        X.params_from_pth(foreign)
    pickled = tmp_path / "pickled.pth"  # arbitrary objects are refused by weights_only loading
    torch.save({"state_dict": {}, "config": {"x": object.__new__(Scaler)}}, pickled)
    with pytest.raises(InputError, match="not a jaxtrade .pth"):
        X.load_pth(pickled)
    txt = tmp_path / "model.txt"
    txt.write_text("x")
    with pytest.raises(InputError, match="neither a .pth"):
        policies.load_policy(txt)
    with pytest.raises(ValueError, match="backend"):
        policies.load_policy(junk, backend="onnx")

    net = N.make_network(3)
    path = _export(tmp_path, net, _params(net))
    obj = torch.load(path, weights_only=True)
    newer = dict(obj, config=dict(obj["config"], format_version=X.FORMAT_VERSION + 1))
    with pytest.raises(InputError, match="newer"):
        X.torch_policy(newer)
    broken = dict(obj, state_dict={k: v for k, v in obj["state_dict"].items() if k != "critic_out.bias"})
    with pytest.raises(InputError, match="does not match"):
        X.torch_policy(broken)
    bad_shape = dict(obj, config=dict(obj["config"], network=dict(obj["config"]["network"], hidden_sizes=[8, 8])))
    torch.save(bad_shape, tmp_path / "bad_shape.pth")
    with pytest.raises(InputError, match="do not match"):
        X.params_from_pth(tmp_path / "bad_shape.pth")
    with pytest.raises(InputError, match="expects"):
        policies.load_policy(path, obs_names=OBS_NAMES[:-1])
    assert zipfile.is_zipfile(path)


def test_torch_missing_gives_install_hint(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    net = N.make_network(3)
    f = tmp_path / "m.pth"
    f.write_bytes(b"x")
    for call in (lambda: X.load_pth(f), lambda: X.torch_policy(f), lambda: policies.load_policy(f),
                 lambda: X.export_pth(tmp_path / "n.pth", _params(net), net, symbol="A", stage="ppo",
                                      obs_names=OBS_NAMES)):
        with pytest.raises(InputError, match=r"pip install torch==2\.13\.0"):
            call()
    # the JAX backend still needs torch to read the file; Orbax directories do not need it at all


def test_jaxtrade_imports_without_torch():
    code = ("import sys; sys.modules['torch'] = None; import jaxtrade.export, jaxtrade.policies; "
            "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]")
    subprocess.run([sys.executable, "-c", code], check=True)
