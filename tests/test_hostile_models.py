"""Hostile and wrong models (issue 14 item 4): `.pth` files carry a format version; a file of an unknown version, a
truncated file, one of another architecture or observation layout, and anything `torch.load(weights_only=True)`
refuses are each one `InputError` naming the file (exit 2 on the command line); Orbax directories likewise.
Nothing unpickles arbitrary objects: a pickle that would run code does not run it."""

import pickle
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtrade import export as X, networks as N, policies
from jaxtrade.checkpoints import StageCheckpointer
from jaxtrade.env import OBS_NAMES
from jaxtrade.errors import InputError
from tests.market_fixtures import random_walk_market

ROOT = Path(__file__).resolve().parents[1]
D = len(OBS_NAMES)


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


class RunsCode:
    """Unpickling this runs `exec(code)`: here, writing a marker file."""

    def __init__(self, marker: Path):
        self.code = f"open({str(marker)!r}, 'w').write('ran')"

    def __reduce__(self):
        return exec, (self.code,)


def _network_and_params(hidden=(8, 8)):
    net = N.make_network(3, hidden_sizes=hidden)
    shapes = jax.eval_shape(net.init, jax.random.key(0), jax.ShapeDtypeStruct((1, D), jnp.float32))
    rng = np.random.default_rng(0)
    return net, jax.tree.map(lambda s: jnp.asarray(rng.normal(0, 0.3, s.shape), s.dtype), shapes)


def _exported(tmp_path, torch, name="m.pth"):
    net, params = _network_and_params()
    return X.export_pth(tmp_path / name, params, net, symbol="NIFTY", stage="ppo", obs_names=list(OBS_NAMES))


def _refused(path, match):
    for load in (X.load_pth, lambda p: policies.load_policy(p, backend="jax"), policies.load_policy):
        with pytest.raises(InputError, match=match) as info:
            load(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_a_pickle_that_would_run_code_does_not_run(tmp_path, torch):
    marker = tmp_path / "ran.txt"
    legacy = tmp_path / "legacy.pth"  # a plain pickle, the pre-zip torch format
    legacy.write_bytes(pickle.dumps({"state_dict": {}, "config": RunsCode(marker)}))
    zipped = tmp_path / "zipped.pth"  # torch.save's zip format with the object inside its pickle
    torch.save({"state_dict": {}, "config": {"format": X.FORMAT, "format_version": 1, "x": RunsCode(marker)}},
               zipped)
    for path in (legacy, zipped):
        _refused(path, "not a jaxtrade .pth file")
        assert not marker.exists()
    pickle.loads(legacy.read_bytes())  # the control: an unsafe load does run it
    assert marker.read_text() == "ran"


def test_truncated_file_and_unknown_versions(tmp_path, torch):
    path = _exported(tmp_path, torch)
    data = path.read_bytes()
    for cut in (len(data) // 2, 100):
        short = tmp_path / f"short{cut}.pth"
        short.write_bytes(data[:cut])
        _refused(short, "not a jaxtrade .pth file")
    obj = torch.load(path, weights_only=True)
    for version in (0, -1, "1", None, 1.5, True):
        odd = tmp_path / f"v{version}.pth"
        torch.save(dict(obj, config=dict(obj["config"], format_version=version)), odd)
        _refused(odd, "unknown .pth format version")
    newer = tmp_path / "newer.pth"
    torch.save(dict(obj, config=dict(obj["config"], format_version=X.FORMAT_VERSION + 1)), newer)
    _refused(newer, "newer than this jaxtrade reads")


def test_other_architecture_or_feature_set(tmp_path, torch):
    path = _exported(tmp_path, torch)
    obj = torch.load(path, weights_only=True)
    moe = tmp_path / "moe.pth"  # weights of an actor-critic, config of a mixture of experts
    torch.save(dict(obj, config=dict(obj["config"], network={"architecture": "moe_actor_critic", "num_actions": 3,
                                                              "num_experts": 2, "expert_hidden_dim": 8})), moe)
    with pytest.raises(InputError, match=str(moe)):
        policies.load_policy(moe, backend="jax")
    with pytest.raises(InputError, match="expects .* observations"):
        policies.load_policy(path, backend="jax", obs_names=list(OBS_NAMES[:-1]) + ["tomorrow_close"])


def _orbax_stage(directory: Path, params, network_cfg):
    ck = StageCheckpointer(directory)
    ck.save(4, {"params": params}, {"network": network_cfg, "complete": True, "iteration": 4})
    ck.close()
    return directory


def test_orbax_directories_truncated_or_of_another_architecture(tmp_path):
    net, params = _network_and_params()
    good = _orbax_stage(tmp_path / "good" / "ppo", params, X.network_config(net, D))
    assert policies.load_policy(good).num_actions == 3
    wrong = _orbax_stage(tmp_path / "wrong" / "ppo", params,
                         X.network_config(N.make_network(3, hidden_sizes=(16, 16)), D))
    with pytest.raises(InputError, match="wrong/ppo"):
        policies.load_policy(wrong)
    cut = _orbax_stage(tmp_path / "cut" / "ppo", params, X.network_config(net, D))
    for f in (cut / "4").rglob("*"):
        if f.is_file() and f.stat().st_size:
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(InputError, match="cut/ppo") as info:
        policies.load_policy(cut)
    assert "\n" not in str(info.value)


def test_the_backtest_command_refuses_a_hostile_model_with_exit_2(tmp_path, torch):
    marker = tmp_path / "ran.txt"
    hostile = tmp_path / "hostile.pth"
    torch.save({"state_dict": {}, "config": {"x": RunsCode(marker)}}, hostile)
    random_walk_market(tmp_path / "processed", "NIFTY_5", num_sessions=12, bars_per_session=20)
    r = subprocess.run([sys.executable, str(ROOT / "run_backtest.py"), "--model", str(hostile), "--symbols",
                        "NIFTY_5", "--processed-data-dir", str(tmp_path / "processed"), "--output-dir",
                        str(tmp_path / "out")],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and str(hostile) in lines[0], r.stderr
    assert not marker.exists() and not (tmp_path / "out").exists()
