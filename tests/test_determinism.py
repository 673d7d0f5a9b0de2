"""Determinism on the CPU: the same training command run twice, in two fresh processes, writes identical
summary.json metrics, identical parameters for every stage (Orbax and .pth), identical per-iteration logs and
an identical backtest report. Only wall-clock times and the run directory differ. (BUILD.md, "Guarantees",
says what holds on GPU.)"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.market_fixtures import random_walk_market

ROOT = Path(__file__).resolve().parents[1]
TIMING_KEYS = {"wall_s", "steps_per_s"}
STAGES = ("ppo", "moe", "maml")
SMOKE_FLAGS = [  # every stage, tiny budgets: seconds of training, the same code paths as the default job
    "--symbols=NIFTY_5", "--run_name=det", "--seed=3", f"--stages={','.join(STAGES)}", "--checkpoint_every=2",
    "--ppo.num_iterations=4", "--ppo.num_envs=8", "--ppo.num_steps=16", "--ppo.minibatch_size=64",
    "--ppo.update_epochs=1", "--ppo.hidden_sizes=16,16", "--ppo_gate.min_iterations=0",
    "--moe.num_iterations=2", "--moe.num_experts=2", "--moe.expert_hidden_dim=16", "--moe_gate.min_iterations=0",
    "--maml.num_iterations=2", "--maml.support_num_envs=4", "--maml.support_num_steps=16",
    "--maml.query_num_envs=4", "--maml.query_num_steps=16", "--maml.evaluation_steps=1", "--maml.eval_episodes=4",
    "--maml.window_sessions=4", "--maml.bootstrap_resamples=200", "--maml.cross_symbol=NIFTY_5",
    "--progression.on_fail=continue",
]


def _without_timings(obj, run_dir: Path):
    """`obj` with wall-clock keys dropped and the run's own directory replaced by a placeholder."""
    if isinstance(obj, dict):
        return {k: _without_timings(v, run_dir) for k, v in obj.items() if k not in TIMING_KEYS}
    if isinstance(obj, list):
        return [_without_timings(v, run_dir) for v in obj]
    if isinstance(obj, str):
        return obj.replace(str(run_dir), "<run>")
    return obj


def _run(tmp_path: Path, name: str) -> Path:
    out = tmp_path / name
    env = dict(os.environ, JAX_PLATFORMS="cpu")  # the CPU promise, whatever accelerator the machine has
    # The two processes share a compilation cache of their own: the second loads the executables the first
    # compiled, so it is the run, not XLA's compiler, whose determinism is tested here (a program traced
    # differently would miss the cache and compile anew). It halves the test's time.
    env["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path / "xla_cache")
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.sequence", *SMOKE_FLAGS, f"--processed_data_dir={tmp_path / 'processed'}",
         f"--checkpoint_dir={out}", f"--output_dir={out / 'reports'}"],
        capture_output=True, text=True, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def assert_same_run(a: Path, b: Path) -> None:
    """Everything a run leaves that is not a wall-clock time, equal between run directories a and b."""
    from jaxtrade.checkpoints import restore_params

    def load_json(root, rel):
        return _without_timings(json.loads((root / rel).read_text()), root)

    def load_jsonl(root, rel):
        return [_without_timings(json.loads(line), root) for line in (root / rel).read_text().splitlines()]

    summary = "det/NIFTY_5/summary.json"
    assert load_json(a, summary) == load_json(b, summary)
    assert set(load_json(a, summary)["stages"]) == set(STAGES)
    for stage in STAGES:
        log = f"det/NIFTY_5/{stage}/metrics.jsonl"
        assert load_jsonl(a, log) == load_jsonl(b, log)
        pa, meta_a = restore_params(a / "det" / "NIFTY_5" / stage)
        pb, meta_b = restore_params(b / "det" / "NIFTY_5" / stage)
        assert _without_timings(meta_a, a) == _without_timings(meta_b, b)
        assert jax.tree.structure(pa) == jax.tree.structure(pb)
        for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb)):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=stage)
    if importlib.util.find_spec("torch") is not None:
        from jaxtrade import export
        files = sorted(p.name for p in (a / "det" / "models").glob("*.pth"))
        assert len(files) == 4 and files == sorted(p.name for p in (b / "det" / "models").glob("*.pth"))
        for name in files:
            sa, _ = export.load_pth(a / "det" / "models" / name)
            sb, _ = export.load_pth(b / "det" / "models" / name)
            assert sa.keys() == sb.keys()
            for k in sa:
                np.testing.assert_array_equal(sa[k], sb[k], err_msg=f"{name} {k}")
    assert load_json(a, "reports/NIFTY_5/metrics.json") == load_json(b, "reports/NIFTY_5/metrics.json")
    for table in ("equity.parquet", "trades.parquet"):
        assert pq.read_table(a / "reports" / "NIFTY_5" / table).equals(pq.read_table(b / "reports" / "NIFTY_5" / table))
    report_a = (a / "reports" / "det_report.txt").read_text().replace(str(a), "<run>")
    report_b = (b / "reports" / "det_report.txt").read_text().replace(str(b), "<run>")
    assert report_a == report_b


@pytest.mark.slow
def test_same_command_twice_gives_identical_results_on_cpu(tmp_path):
    random_walk_market(tmp_path / "processed", "NIFTY_5", num_sessions=24, bars_per_session=20)
    assert_same_run(_run(tmp_path, "a"), _run(tmp_path, "b"))
