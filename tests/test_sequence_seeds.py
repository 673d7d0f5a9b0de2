"""The sequence with `--seeds N` (N seeds of a stage in one program: seed s trains what `--seed s` trains alone,
the gate reads the median seed, the final model is the best seed, the report shows the across-seed interval and
how many models were tried) and with `--eval.walk_forward=K` (each fold a whole sequence on its windows, one
table of the folds' test results)."""

from __future__ import annotations

import io
import json

import jax
import numpy as np
import pytest

from jaxtrade.checkpoints import restore_params
from jaxtrade.pipeline import run_sequence, walk_forward
from tests.test_sequence import market_dir, tiny_config  # noqa: F401 - the fixture

NULL = open("/dev/null", "w")  # noqa: SIM115


@pytest.mark.slow
def test_seeds_in_one_program_equal_single_seed_runs(market_dir):  # noqa: F811
    tmp = market_dir
    cfg = tiny_config(tmp, seeds=3, tearsheet=False, save_stage_models=False, keep_best_models=True)
    run_sequence(cfg, out=NULL)
    summary = json.loads((tmp / "ck" / "t" / "NIFTY_5" / "summary.json").read_text())
    rec = summary["stages"]["ppo"]
    sharpes = [s["validation"]["sharpe"] for s in rec["seeds"]]
    assert [s["seed"] for s in rec["seeds"]] == [0, 1, 2]
    ranked = sorted(range(3), key=lambda i: -np.inf if sharpes[i] is None else sharpes[i])
    assert rec["gate_seed"] == ranked[1] and rec["best_seed"] == ranked[2]  # median gates, best is exported
    assert rec["validation"] == rec["seeds"][ranked[1]]["validation"]
    assert rec["env_steps"] == 4 * 8 * 16 * 3
    # The finished stage's checkpoint holds the exported (best) seed: it is what `--seed s` trains alone.
    batched, _ = restore_params(tmp / "ck" / "t" / "NIFTY_5" / "ppo")
    for seed in (rec["best_seed_index"],):
        alone = tiny_config(tmp, seed=seed, run_name=f"alone{seed}", generate_reports=False,
                            save_stage_models=False, keep_best_models=False)
        run_sequence(alone, out=NULL)
        single, _ = restore_params(tmp / "ck" / f"alone{seed}" / "NIFTY_5" / "ppo")
        for a, b in zip(jax.tree.leaves(batched), jax.tree.leaves(single)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-6)
    report = (tmp / "reports" / "t_report.txt").read_text()
    assert "Across seeds" in report and "models tried: 3 (1 stage(s) x 3 seeds)" in report


@pytest.mark.slow
def test_walk_forward_runs_each_fold_and_tables_the_tests(market_dir):  # noqa: F811
    tmp = market_dir
    cfg = tiny_config(tmp, tearsheet=False, save_stage_models=False, keep_best_models=True,
                      **{"eval.walk_forward": 2, "ppo.num_iterations": 2})
    assert walk_forward.active(cfg) and not walk_forward.active(tiny_config(tmp))
    out = io.StringIO()
    walk_forward.run_walk_forward(cfg, out=out)
    table = json.loads((tmp / "reports" / "t_walk_forward.json").read_text())
    assert [r["fold"] for r in table["rows"]] == [0, 1]
    first, second = table["rows"]
    assert first["end"] < second["start"]  # the folds' test windows are disjoint and in time order
    for i in (0, 1):  # each fold is its own run, its report on its own test window
        metrics = json.loads((tmp / "reports" / f"fold{i}" / "NIFTY_5" / "metrics.json").read_text())
        assert metrics["start"] == table["rows"][i]["start"] and metrics["sharpe"] == table["rows"][i]["sharpe"]
        assert (tmp / "ck" / f"t_fold{i}" / "NIFTY_5" / "ppo").is_dir()
    assert "walk-forward fold 2/2" in out.getvalue() and "2 rolling walk-forward fold(s)" in out.getvalue()
