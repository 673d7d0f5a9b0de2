"""The backtester's loading priority (`jaxtrade.checkpoints.find_model`, DESIGN section 5): final > maml > moe > ppo,
each rank as its `.pth` file or else its Orbax checkpoint, in the most recent run (or `--run`); partly finished
stages are skipped with a line saying why; and `run_backtest.py` after a PyTorch-free training reports the trained
model (subprocesses)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import jax.numpy as jnp
import pytest

from jaxtrade.checkpoints import PRIORITY, StageCheckpointer, find_model, stage_status
from jaxtrade.errors import InputError
from jaxtrade.export import torch_available

ROOT = Path(__file__).resolve().parents[1]
PTH = {"final": "final_model", "maml": "maml_stage3_final", "moe": "moe_stage2", "ppo": "ppo_stage1"}
SYMBOL = "NIFTY_5"


def _age(path: Path, seconds: float) -> None:
    """Set `path`'s (and, for a stage directory, its step directories') modification time `seconds` ago."""
    t = time.time() - seconds
    for p in [path, *(path.iterdir() if path.is_dir() else ())]:
        os.utime(p, (t, t))


def orbax_stage(run_dir: Path, stage: str, complete: bool = True, iteration: int = 4, age: float = 0.0,
                symbol: str = SYMBOL) -> Path:
    """A stage directory as the sequence writes it: Orbax steps whose meta says whether the stage finished."""
    d = run_dir / symbol / stage
    ckpt = StageCheckpointer(d)
    ckpt.save(iteration, {"params": {"w": jnp.zeros(2)}},
              {"iteration": iteration, "target_iterations": 8 if not complete else iteration, "complete": complete,
               "stage": stage})
    ckpt.close()
    _age(d, age)
    return d


def pth(run_dir: Path, rank: str, age: float = 0.0, symbol: str = SYMBOL) -> Path:
    """A `.pth` where the sequence exports it (find_model only looks; loading is tested end to end)."""
    p = run_dir / "models" / f"{symbol}_{PTH[rank]}.pth"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"not read by find_model")
    _age(p, age)
    return p


def summary(run_dir: Path, final_stage: str | None, symbol: str = SYMBOL) -> None:
    path = run_dir / symbol / "summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"symbol": symbol, "stages": {}}
    if final_stage:
        body["final_model"] = {"stage": final_stage, "file": None,
                               "checkpoint": str(run_dir / symbol / final_stage)}
    path.write_text(json.dumps(body))


def test_each_rank_through_both_formats(tmp_path):
    """Rank by rank, from ppo up to final: the rank's .pth when there is one, else its Orbax checkpoint (for final,
    the stage summary.json records); a higher rank in either format beats every lower one."""
    ck = tmp_path / "ck"
    run = ck / "r"
    assert find_model(ck, SYMBOL, can_read_pth=True).found is None
    stage_dirs = {}
    for rank in reversed(PRIORITY):  # ppo, moe, maml, final
        # Orbax only: the rank loads from its stage directory.
        if rank == "final":
            summary(run, "moe")
        else:
            stage_dirs[rank] = orbax_stage(run, rank)
        got = find_model(ck, SYMBOL, can_read_pth=True)
        want_dir = stage_dirs["moe" if rank == "final" else rank]
        assert (got.found.rank, got.found.path, got.found.run) == (rank, want_dir, "r"), rank
        assert got.found.stage == ("moe" if rank == "final" else rank)
        assert got.notes == ()
        # With its .pth too: the .pth wins at the same rank.
        p = pth(run, rank)
        got = find_model(ck, SYMBOL, can_read_pth=True)
        assert (got.found.rank, got.found.path) == (rank, p), rank
        p.unlink()
    # A lower rank's .pth never beats a higher rank's Orbax checkpoint.
    pth(run, "ppo")
    assert find_model(ck, SYMBOL, can_read_pth=True).found.rank == "final"
    described = find_model(ck, SYMBOL, can_read_pth=True).found.describe()
    assert described == (f"{stage_dirs['moe']} (Orbax checkpoint of the moe stage, the final model as summary.json "
                         f"records it) from run r")
    # Another symbol's files are not this symbol's model.
    assert find_model(ck, "BANKNIFTY_5", can_read_pth=True).found is None


def test_pth_only_runs_and_without_pytorch_the_same_rank_loads_from_orbax(tmp_path):
    ck = tmp_path / "ck"
    run = ck / "r"
    for rank in PRIORITY:
        pth(run, rank)
    assert find_model(ck, SYMBOL, can_read_pth=True).found.path == run / "models" / f"{SYMBOL}_final_model.pth"
    # Without PyTorch a .pth cannot be read: the final model comes from its Orbax checkpoint, said in a line.
    assert find_model(ck, SYMBOL, can_read_pth=False).found is None  # no Orbax checkpoints yet
    ppo = orbax_stage(run, "ppo")
    summary(run, "ppo")
    got = find_model(ck, SYMBOL, can_read_pth=False)
    assert (got.found.rank, got.found.path) == ("final", ppo)
    assert len(got.notes) == 1 and "needs PyTorch" in got.notes[0] and f"{ppo} is loaded instead" in got.notes[0]
    assert got.notes[0].startswith("run r: final (ppo stage, as summary.json records it): ")


def test_the_most_recent_run_is_chosen_and_said_in_one_line(tmp_path):
    ck = tmp_path / "ck"
    pth(ck / "old", "final", age=3600)
    orbax_stage(ck / "new", "ppo", age=60)
    orbax_stage(ck / "other_symbol", "ppo", symbol="BANKNIFTY_5")  # newest, but holds no NIFTY_5 model
    (ck / "README.md").write_text("not a run")
    got = find_model(ck, SYMBOL, can_read_pth=True)
    assert (got.found.run, got.found.rank) == ("new", "ppo")  # the newer run, though its rank is lower
    assert len(got.notes) == 1
    assert re.fullmatch(rf"models for {SYMBOL} in 2 runs: new \(\d{{4}}-\d\d-\d\d \d\d:\d\d\), old \(.+\); using "
                        r"the most recent, new \(--run NAME or --model PATH picks another\)", got.notes[0]), got.notes
    # --run picks another run; no line about the others then.
    got = find_model(ck, SYMBOL, run="old", can_read_pth=True)
    assert (got.found.run, got.found.rank, got.notes) == ("old", "final", ())
    assert find_model(ck, SYMBOL, run="other_symbol").found is None
    with pytest.raises(InputError, match=r"--run: .*nope not found \(runs in .*: new, old, other_symbol\)"):
        find_model(ck, SYMBOL, run="nope")


def test_a_partly_finished_stage_is_skipped_with_the_reason(tmp_path):
    ck = tmp_path / "ck"
    run = ck / "r"
    ppo = orbax_stage(run, "ppo", age=600)
    moe = orbax_stage(run, "moe", complete=False, iteration=2)
    assert stage_status(ppo) == (True, "")
    assert stage_status(moe)[0] is False
    got = find_model(ck, SYMBOL, can_read_pth=True)
    assert (got.found.rank, got.found.path) == ("ppo", ppo)
    assert got.notes == (f"run r: moe skipped: {moe}: its latest checkpoint is at iteration 2 of 8, not finished "
                         f"(training stopped or still running)",)
    # summary.json names the unfinished stage as the final model (it is being retrained): final is skipped too.
    summary(run, "moe")
    notes = find_model(ck, SYMBOL, can_read_pth=True).notes
    assert [n.split(" skipped:")[0] for n in notes] == ["run r: final (moe stage, as summary.json records it)",
                                                        "run r: moe"]
    # A stage directory with no checkpoint yet (training just began) is skipped as well.
    (run / SYMBOL / "maml").mkdir()
    (run / SYMBOL / "maml" / "metrics.jsonl").write_text("{}\n")
    notes = find_model(ck, SYMBOL, can_read_pth=True).notes
    assert "run r: maml skipped: " in notes[1] and "has no checkpoint yet" in notes[1]
    # A newer run still training its first stage does not hide the finished model of an older one, and says so.
    newer = orbax_stage(ck / "s", "ppo", complete=False, iteration=2)
    got = find_model(ck, SYMBOL, can_read_pth=True)
    assert (got.found.run, got.found.path) == ("r", ppo)
    assert f"run s: ppo skipped: {newer}: its latest checkpoint is at iteration 2 of 8" in "\n".join(got.notes)
    # Only unfinished stages: no model at all (the backtester then runs the momentum baseline).
    got = find_model(ck, SYMBOL, run="s", can_read_pth=True)
    assert got.found is None and len(got.notes) == 1 and "ppo skipped" in got.notes[0]


# ------------------------------------------------------------------------------------------ end to end

def _python(args, cwd, block_torch: bool, timeout=600):
    """Run a project script in `cwd`; with `block_torch`, as in a virtualenv without PyTorch."""
    prelude = "import sys; sys.modules['torch'] = None; " if block_torch else "import sys; "
    code = (prelude + f"import runpy; sys.argv = {list(args)!r}; sys.path.insert(0, {str(ROOT)!r}); "
            f"runpy.run_path({str(ROOT / args[0])!r}, run_name='__main__')")
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    r = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    return r


TINY_TRAINING = ["--stages", "ppo", "--ppo.num_iterations", "2", "--ppo.num_envs", "8", "--ppo.num_steps", "16",
                 "--ppo.update_epochs", "1", "--ppo.minibatch_size", "64", "--ppo_gate.min_iterations", "0",
                 "--progression.on_fail", "continue", "--checkpoint_every", "2", "--log_every", "1"]


@pytest.mark.slow
def test_pytorch_free_training_then_the_seed_backtest_command_reports_the_trained_model(tmp_path):
    """The issue's path: `run_training.py` without PyTorch (the embedded synthetic data; Orbax checkpoints only),
    then the seed guide's `run_backtest.py --process-data --initial-capital 500000 --report-file
    detailed_report.txt`: Nifty_2 backtests the trained model, Bank_Nifty_5 (never trained) the momentum baseline."""
    _python(["run_training.py", "--symbols", "Nifty_2", *TINY_TRAINING, "--generate_reports=false"], tmp_path,
            block_torch=True)
    assert not list((tmp_path / "checkpoints" / "default" / "models").glob("*.pth"))
    r = _python(["run_backtest.py", "--process-data", "--initial-capital", "500000", "--report-file",
                 "detailed_report.txt"], tmp_path, block_torch=True)
    model_dir = Path("checkpoints/default/Nifty_2/ppo")
    chosen = (f"Nifty_2: model {model_dir} (Orbax checkpoint of the ppo stage, the final model as summary.json records "
              f"it) from run default (loading priority final > maml > moe > ppo)")
    assert chosen in r.stdout.splitlines(), r.stdout
    assert "Bank_Nifty_5: no trained model (" in r.stdout and "ran the momentum baseline instead" in r.stdout
    assert "Nifty_2: no trained model" not in r.stdout
    report = (tmp_path / "detailed_report.txt").read_text()
    assert chosen in report.splitlines() and f"* = model {model_dir}" in report
    metrics = json.loads((tmp_path / "reports" / "Nifty_2" / "metrics.json").read_text())
    assert metrics["model"] == str(model_dir)
    assert json.loads((tmp_path / "reports" / "Bank_Nifty_5" / "metrics.json").read_text())["model"] == "momentum"


@pytest.mark.slow
@pytest.mark.skipif(not torch_available(), reason="PyTorch is not installed (the `torch` extra): the .pth rank of "
                    "the end-to-end loading test is skipped")
def test_with_pytorch_the_final_pth_is_loaded(tmp_path):
    """With PyTorch the training exports .pth files and the backtest loads `{symbol}_final_model.pth` (that a .pth
    trades as its Orbax checkpoint: tests/test_sequence.py::test_pth_backtest_matches_orbax_checkpoint)."""
    from tests.market_fixtures import random_walk_market

    random_walk_market(tmp_path / "data" / "processed", "NIFTY_5", num_sessions=24, bars_per_session=20)
    _python(["run_training.py", "--symbols", "NIFTY_5", *TINY_TRAINING, "--generate_reports=false"], tmp_path,
            block_torch=False)
    r = _python(["run_backtest.py"], tmp_path, block_torch=False)
    final = Path("checkpoints/default/models/NIFTY_5_final_model.pth")
    assert (f"NIFTY_5: model {final} (final rank) from run default (loading priority final > maml > moe > ppo)"
            in r.stdout.splitlines()), r.stdout
    assert json.loads((tmp_path / "reports" / "NIFTY_5" / "metrics.json").read_text())["model"] == str(final)
