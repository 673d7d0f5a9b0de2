"""Scale out (issue 13 items 1-2, DESIGN section 8): the batch axes over a 4-device CPU mesh give the one-device
results (PPO, MoE, MAML, a seed sweep, the backtester: `tests/sharded_check.py` in a subprocess with
`XLA_FLAGS=--xla_force_host_platform_device_count=4`), and a tiny PPO stage run by two local CPU processes
through `jax.distributed` exits 0 in both, leaves one set of outputs and the single-process run's parameters,
and resumes in both processes from the checkpoint process 0's run left."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxtrade import sharding as S
from jaxtrade.errors import InputError
from tests.market_fixtures import random_walk_market

ROOT = Path(__file__).resolve().parents[1]


def _env(devices: int = 1) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


@pytest.mark.slow
def test_four_devices_give_the_one_device_results():
    out = subprocess.run([sys.executable, "-m", "tests.sharded_check"], cwd=ROOT, env=_env(4), capture_output=True,
                         text=True, timeout=1200)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "all ok" in out.stdout
    for name in ("ppo params", "moe params", "maml params", "sweep run 3 params", "backtest equity"):
        assert f"ok {name}" in out.stdout, name


def test_flags_are_checked_before_any_computation():
    with pytest.raises(InputError, match="--num_devices"):
        S.make_mesh(99)
    with pytest.raises(InputError, match="--coordinator_address"):
        S.initialize_distributed(None, 2, 1)
    with pytest.raises(InputError, match="--process_id"):
        S.initialize_distributed("localhost:1234", 2, 2)
    with pytest.raises(InputError, match="host:port"):
        S.initialize_distributed("localhost", 2, 0)
    assert S.initialize_distributed(None, None, None) is False
    mesh = S.make_mesh()
    assert dict(mesh.shape) == {S.SWEEP: 1, S.BATCH: 1} and S.is_writer()


def test_constrain_batch_is_a_no_op_without_a_mesh():
    x = np.arange(8.0)
    assert S.constrain_batch(x) is x


# ------------------------------------------------------------------------------------------------------------
# Two processes


FLAGS = ["--symbols=NIFTY_5", "--stages=ppo", "--run_name=mp", "--checkpoint_every=2", "--log_every=1",
         "--ppo.num_iterations=3", "--ppo.num_envs=8", "--ppo.num_steps=8", "--ppo.update_epochs=1",
         "--ppo.minibatch_size=32", "--ppo.hidden_sizes=8", "--ppo_gate.min_iterations=0",
         "--progression.on_fail=continue", "--tearsheet=false", "--save_stage_models=false"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _command(work: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "experiments.sequence", *FLAGS, f"--processed_data_dir={work.parent / 'data'}",
            f"--checkpoint_dir={work / 'checkpoints'}", f"--output_dir={work / 'reports'}", *extra]


def _two_processes(work: Path) -> list[subprocess.CompletedProcess]:
    port = _free_port()
    procs = [subprocess.Popen(_command(work, f"--coordinator_address=localhost:{port}", "--num_processes=2",
                                       f"--process_id={i}"), cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    out = []
    for p in procs:
        try:
            stdout, stderr = p.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    for i, r in enumerate(out):
        assert r.returncode == 0, f"process {i}: {r.stdout[-2000:]}{r.stderr[-3000:]}"
    return out


def _files(work: Path) -> set[str]:
    """Every file the run wrote, an Orbax step's array store counted as its step directory (each process writes
    its own slice there: Orbax's multi-host protocol)."""
    out = set()
    for p in work.rglob("*"):
        parts = p.relative_to(work).parts
        if p.is_file():
            out.add("/".join(parts[: parts.index("state") + 1] if "state" in parts[:-1] else parts))
    return out


def _params(work: Path, step: int | None = None) -> np.ndarray:
    from jaxtrade.checkpoints import restore_params

    params, _ = restore_params(work / "checkpoints" / "mp" / "NIFTY_5" / "ppo", step)
    import jax
    return np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree.leaves(params)])


@pytest.mark.slow
def test_two_processes_train_like_one_and_resume(tmp_path):
    random_walk_market(tmp_path / "data", "NIFTY_5", num_sessions=12, bars_per_session=20, seed=5)
    single, double = tmp_path / "single", tmp_path / "double"
    one = subprocess.run(_command(single), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]

    runs = _two_processes(double)
    # One set of outputs: the same files as the single-process run, each written once.
    assert _files(double) == _files(single)
    assert {"checkpoints/mp/NIFTY_5/summary.json", "reports/mp_report.txt"} <= _files(double)
    jsonl = double / "checkpoints" / "mp" / "NIFTY_5" / "ppo" / "metrics.jsonl"
    assert [json.loads(line)["iteration"] for line in jsonl.read_text().splitlines()] == [1, 2, 3]
    assert sum("report:" in r.stdout for r in runs) == 1  # process 0 wrote the report
    np.testing.assert_allclose(_params(double), _params(single), rtol=1e-5, atol=1e-6)
    report = json.loads((double / "checkpoints" / "mp" / "NIFTY_5" / "summary.json").read_text())
    assert report["stages"]["ppo"]["iterations"] == 3

    # Both processes resume from the checkpoint at iteration 2 and end where the uninterrupted run did.
    finished = _params(double)
    stage = double / "checkpoints" / "mp" / "NIFTY_5" / "ppo"
    shutil.rmtree(stage / "3")
    runs = _two_processes(double)
    assert all("resuming from checkpoint at iteration 2" in r.stderr for r in runs), [r.stderr[-800:] for r in runs]
    np.testing.assert_allclose(_params(double), finished, rtol=1e-6, atol=1e-7)
