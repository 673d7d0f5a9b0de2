"""Preemption (issue 14 item 1): SIGINT/SIGTERM write a checkpoint at the next iteration boundary and stop with one
line and exit 128 + signal; SIGKILL loses at most the iterations since the last checkpoint; an unreadable latest
checkpoint is set aside with a warning naming it. In every case the same command run again ends with the
parameters of an uninterrupted run."""

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxtrade import pipeline as S
from jaxtrade.checkpoints import StageCheckpointer, restore_params
from jaxtrade.errors import StopRequested
from jaxtrade.pipeline import preemption
from tests.market_fixtures import random_walk_market
from tests.test_sequence import tiny_config

ROOT = Path(__file__).resolve().parents[1]
DEVNULL = open(os.devnull, "w")


FAST = {"generate_reports": False, "save_stage_models": False, "keep_best_models": False, "ppo.num_iterations": 6}


def _params(ck: Path):
    return restore_params(ck / "t" / "NIFTY_5" / "ppo")


def _assert_same_params(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 6-iteration run (checkpoints every 2): (market dir, its final params)."""
    tmp = tmp_path_factory.mktemp("pre")
    random_walk_market(tmp / "processed", "NIFTY_5", num_sessions=24, bars_per_session=20)
    cfg = tiny_config(tmp, checkpoint_dir=str(tmp / "ref"), **FAST)
    S.run_sequence(cfg, out=DEVNULL)
    params, meta = _params(tmp / "ref")
    assert meta["complete"] and meta["iteration"] == 6
    return tmp, params


def _signal_after_save(monkeypatch, at_step: int, signum=signal.SIGINT):
    """Send `signum` to this process right after the checkpoint of `at_step` is saved (a signal arriving while
    the next chunk trains)."""
    real_save = StageCheckpointer.save

    def save(self, step, state, meta):
        real_save(self, step, state, meta)
        if step == at_step and not meta["complete"]:
            os.kill(os.getpid(), signum)

    monkeypatch.setattr(StageCheckpointer, "save", save)


def test_sigint_checkpoints_then_an_unreadable_latest_checkpoint_is_set_aside(reference, monkeypatch, caplog):
    """Ctrl-C while the chunk after iteration 4 trains: the run stops at the next boundary (a checkpoint is
    there already) with one line, the handlers are restored. Then the newest checkpoint is cut to half its size
    (half-written): the rerun warns naming it, sets it aside, resumes from iteration 2 and ends where an
    uninterrupted run ends."""
    tmp, expected = reference
    cfg = tiny_config(tmp, checkpoint_dir=str(tmp / "int"), **FAST)
    _signal_after_save(monkeypatch, 4)
    handler = signal.getsignal(signal.SIGINT)  # Python's default_int_handler; SIG_IGN in a pytest-xdist worker
    with pytest.raises(StopRequested) as info:
        S.run_sequence(cfg, out=DEVNULL)
    monkeypatch.undo()
    stop = info.value
    assert stop.signum == signal.SIGINT and "\n" not in str(stop)
    assert "NIFTY_5 ppo: stopped by SIGINT at iteration 4" in str(stop) and "again to resume" in str(stop)
    assert signal.getsignal(signal.SIGINT) is handler  # handlers restored after the run
    stage = tmp / "int" / "t" / "NIFTY_5" / "ppo"
    ck = StageCheckpointer(stage)
    assert ck.all_steps() == [2, 4]
    ck.close()
    assert not (tmp / "int" / "t" / "NIFTY_5" / "summary.json").exists()

    for f in (stage / "4").rglob("*"):
        if f.is_file() and f.stat().st_size:
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with caplog.at_level(logging.WARNING):
        S.run_sequence(cfg, out=DEVNULL)
    warned = [r.getMessage() for r in caplog.records if "cannot be read" in r.getMessage()]
    assert len(warned) == 1 and f"{stage / '4'} cannot be read" in warned[0], warned
    assert (stage / "4.unreadable").is_dir()
    params, meta = _params(tmp / "int")
    assert meta["complete"] and meta["iteration"] == 6
    _assert_same_params(expected, params)
    lines = [json.loads(l)["iteration"] for l in (stage / "metrics.jsonl").read_text().splitlines()]
    assert lines == [1, 2, 3, 4, 5, 6]  # iterations 3-4 logged once, though trained twice


def test_stop_on_signals_second_ctrl_c_interrupts_at_once():
    with preemption.stop_on_signals():
        os.kill(os.getpid(), signal.SIGTERM)
        assert preemption.requested() and preemption.signal_name() == "SIGTERM"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    assert not preemption.requested()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


# ------------------------------------------------------------------------------ the command line, killed


def _wait_for_step(stage: Path, above: int, proc, timeout=240.0) -> int:
    """The first finished checkpoint step > `above` to appear in `stage` (Orbax renames a step into place once
    it is whole)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        steps = [int(p.name) for p in stage.glob("*") if p.name.isdigit()] if stage.is_dir() else []
        if steps and max(steps) > above:
            return max(steps)
        assert proc.poll() is None, f"exited {proc.returncode} before a checkpoint: {proc.stderr.read()[-2000:]}"
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint after step {above} in {stage} within {timeout} s")


@pytest.mark.slow
def test_sigkill_then_sigterm_then_rerun_equals_uninterrupted(tmp_path):
    """`python -m experiments.sequence` killed (SIGKILL) after its first checkpoint, rerun and stopped (SIGTERM)
    after a later one (exit 143, one line), rerun to the end: the parameters equal an uninterrupted run's."""
    random_walk_market(tmp_path / "processed", "NIFTY_5", num_sessions=24, bars_per_session=20)
    overrides = {"ppo.num_iterations": 300, "checkpoint_every": 10, "log_every": 50, "generate_reports": False,
                 "save_stage_models": False, "keep_best_models": False}
    flags = [f"--symbols=NIFTY_5", "--stages=ppo", f"--processed_data_dir={tmp_path / 'processed'}",
             f"--checkpoint_dir={tmp_path / 'ck'}", f"--output_dir={tmp_path / 'reports'}", "--run_name=t",
             "--ppo.num_envs=8", "--ppo.num_steps=16", "--ppo.minibatch_size=64", "--ppo.update_epochs=1",
             "--ppo_gate.min_iterations=0", "--progression.on_fail=continue"]
    flags += [f"--{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in overrides.items()]
    stage = tmp_path / "ck" / "t" / "NIFTY_5" / "ppo"

    def start():
        return subprocess.Popen([sys.executable, "-m", "experiments.sequence", *flags], cwd=ROOT, text=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    p = start()
    first = _wait_for_step(stage, 0, p)
    p.kill()
    p.wait(60)
    assert p.returncode == -signal.SIGKILL
    assert not (tmp_path / "ck" / "t" / "NIFTY_5" / "summary.json").exists()

    p = start()
    _wait_for_step(stage, first + 10, p)  # resumed and trained on
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 128 + signal.SIGTERM, err[-2000:]
    errors = [l for l in err.splitlines() if l.startswith("error:")]
    assert len(errors) == 1 and "NIFTY_5 ppo: stopped by SIGTERM at iteration" in errors[0], err[-2000:]
    assert "resuming from checkpoint" in err and "Traceback" not in err
    stopped_at = int(errors[0].split("at iteration ")[1].split(";")[0])
    assert stopped_at > first and stopped_at % 10 == 0  # chunk ends and polls both fall on multiples of 10
    assert StageCheckpointer(stage).latest_step() == stopped_at

    p = start()
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-2000:]
    params, meta = _params(tmp_path / "ck")
    assert meta["complete"] and meta["iteration"] == 300

    # The uninterrupted run: the same command in a fresh process (in this process, earlier tests may have
    # changed JAX's global settings).
    ref = subprocess.run([sys.executable, "-m", "experiments.sequence", *flags,
                          f"--checkpoint_dir={tmp_path / 'ref'}"], cwd=ROOT, text=True, capture_output=True,
                         timeout=300)
    assert ref.returncode == 0, ref.stderr[-2000:]
    _assert_same_params(_params(tmp_path / "ref")[0], params)
