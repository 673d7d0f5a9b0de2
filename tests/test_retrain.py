"""`--seeds N --final_model=ensemble` and `experiments.retrain` (issue 18), on one shared run: the sequence's final
model is the ensemble of the stage's seeds; retraining fine-tunes it on newer sessions, keeps it only if it beats the
old one on the most recent held-out sessions by the margin, records the lineage, and refuses overlapping data."""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxtrade import pipeline as S, policies as P
from jaxtrade.checkpoints import restore_params
from jaxtrade.ensemble import Ensemble
from jaxtrade.errors import InputError
from jaxtrade.pipeline import retrain as R
from tests.market_fixtures import random_walk_market
from tests.test_sequence import HAS_TORCH, ROOT, _params_of_run, tiny_config


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished one-stage run of 2 seeds with the ensemble as final model on 24 sessions, and a processed dir
    with 12 newer sessions appended."""
    tmp = tmp_path_factory.mktemp("retrain")
    random_walk_market(tmp / "processed", "NIFTY_5", num_sessions=24, bars_per_session=20)
    random_walk_market(tmp / "newer", "NIFTY_5", num_sessions=36, bars_per_session=20)
    cfg = tiny_config(tmp, seeds=2, final_model="ensemble", tearsheet=False, compare_stages=False)
    S.run_sequence(cfg, out=open("/dev/null", "w"))
    return tmp


def test_sequence_with_seeds_picks_the_ensemble(finished_run):
    """Member 1 trains as `--seed 1` would, the final model is the ensemble of the stage's two members (Orbax and
    .pth), and the report shows it beside each member."""
    run = finished_run / "ck" / "t"
    summary = json.loads((run / "NIFTY_5" / "summary.json").read_text())
    assert summary["final_model"]["stage"] == "ensemble" and summary["final_model"]["seeds"] == [0, 1]
    assert [m["seed"] for m in summary["members"]["ppo"]] == [0, 1]
    member0, _ = _params_of_run(finished_run / "ck")
    member1, _ = restore_params(run / "NIFTY_5" / "seeds" / "1" / "ppo")
    model = P.load_model(run / "NIFTY_5" / "ensemble")
    assert isinstance(model.network, Ensemble) and model.network.num_members == 2
    for i, member in enumerate((member0, member1)):
        for x, y in zip(jax.tree.leaves(member), jax.tree.leaves(model.network.member_params(model.params, i))):
            np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(member0), jax.tree.leaves(member1)))
    report = (finished_run / "reports" / "t_report.txt").read_text()
    assert "the ppo stage's 2 seeds and their ensemble" in report and "members min .. max" in report
    if HAS_TORCH:
        assert P.load_model(run / "models" / "NIFTY_5_final_model.pth").network == model.network


def test_decide_by_the_margin():
    assert R.decide(1.0, 1.2, 0.1)[0] and not R.decide(1.0, 1.1, 0.1)[0] and not R.decide(1.0, 0.5, 0.0)[0]
    assert not R.decide(1.0, None, 0.1)[0] and R.decide(None, -3.0, 0.1)[0]
    assert "not better by more than the margin 0.1" in R.decide(1.0, 1.05, 0.1)[1]


def test_refuses_overlap_and_no_newer_sessions(finished_run):
    run_dir = finished_run / "ck" / "t"
    summary = json.loads((run_dir / "NIFTY_5" / "summary.json").read_text())
    train_last = summary["data"]["splits"]["train"]["last_session"]
    with pytest.raises(InputError, match=rf"overlaps the run's training data \(its train split ends {train_last}\)"):
        R.retrain(run_dir, "NIFTY_5", finished_run / "newer", since=train_last)
    with pytest.raises(InputError, match="overlaps data the run already used"):
        R.retrain(run_dir, "NIFTY_5", finished_run / "newer", since=summary["data"]["last_session"])
    with pytest.raises(InputError, match="0 session\\(s\\) after"):
        R.retrain(run_dir, "NIFTY_5", finished_run / "processed")
    # The command says it in one line and exits 2.
    out = subprocess.run([sys.executable, "-m", "experiments.retrain", f"--run_dir={run_dir}", "--symbol=NIFTY_5",
                          f"--processed_data_dir={finished_run / 'newer'}", f"--since={train_last}"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2 and "overlaps the run's training data" in out.stderr
    assert len([l for l in out.stderr.splitlines() if l.strip() and not l.startswith("I")]) == 1, out.stderr


def test_keeps_the_old_model_when_the_new_one_is_not_better(finished_run):
    """(The final model here is the ensemble: each member is fine-tuned, the ensemble compared.)"""
    run_dir = finished_run / "ck" / "t"
    summary_path = run_dir / "NIFTY_5" / "summary.json"
    before = json.loads(summary_path.read_text())
    pth = run_dir / "models" / "NIFTY_5_final_model.pth"
    pth_bytes = pth.read_bytes() if pth.exists() else None
    # No fine-tuned model beats the old one by a margin of 1e6 Sharpe.
    entry = R.retrain(run_dir, "NIFTY_5", finished_run / "newer", iterations=1, margin=1e6)
    assert entry["kept"] is False and entry["model"] is None
    after = json.loads(summary_path.read_text())
    assert after["final_model"] == before["final_model"]
    if pth_bytes is not None:
        assert pth.read_bytes() == pth_bytes
    (logged,) = after["lineage"]
    # 12 newer sessions: a third held out (the most recent 4), 8 to fine-tune on, none from the run's data.
    assert logged["data"]["finetune"]["sessions"] == 8 and logged["data"]["holdout"]["sessions"] == 4
    assert logged["data"]["finetune"]["first_session"] > before["data"]["last_session"]
    assert logged["parent"] in (before["final_model"]["file"], before["final_model"]["checkpoint"])
    assert logged["old"]["sharpe"] is not None and "not better" in logged["why"]
    # Held-out sessions seen by a retraining count as seen: the same newer file has nothing new any more.
    with pytest.raises(InputError, match="session\\(s\\) after"):
        R.retrain(run_dir, "NIFTY_5", finished_run / "newer", iterations=1)
