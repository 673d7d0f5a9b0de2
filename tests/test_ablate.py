"""`experiments.ablate` (issue 12): the results table of 2 configurations x 3 seeds x 2 walk-forward folds, resume
that skips finished cells and trains only the new ones, sweeps parsed and grouped into programs, and a
configuration that is pure noise is not reported as significant (the deflated Sharpe and PBO do their job).

The equality of a batched cell with the same run alone is `tests/test_batched.py`'s; the statistics against
hand-worked and published examples are `tests/test_stats.py`'s."""

from __future__ import annotations

import io
import math

import numpy as np
import pyarrow.parquet as pq
import pytest

from experiments.ablate import ablate
from jaxtrade import config as C, metrics as M
from jaxtrade.errors import InputError
from jaxtrade.evaluation import ablation_summary as AS, stats
from jaxtrade.pipeline import ablation as A
from tests.market_fixtures import random_walk_market

TINY = {"ppo.num_envs": 4, "ppo.num_steps": 8, "ppo.minibatch_size": 16, "ppo.update_epochs": 1,
        "ppo.num_iterations": 2, "ppo.hidden_sizes": (8,), "log_every": 1, "stages": ("ppo",),
        "eval.walk_forward": 2, "symbols": ("NIFTY_5",)}


def _cfg(processed, **more):
    return C.apply_overrides(C.default_config(), {**TINY, "processed_data_dir": str(processed), **more})


@pytest.fixture(scope="module")
def processed(tmp_path_factory):
    d = tmp_path_factory.mktemp("processed")
    random_walk_market(d, "NIFTY_5", num_sessions=30, bars_per_session=12, seed=5)
    return d


def test_table_shape_and_resume(processed, tmp_path):
    cfg = _cfg(processed, seeds=3)
    sweeps = [A.parse_sweep("ppo.learning_rate=1e-4,3e-3", cfg)]
    configs = A.configurations(sweeps)
    out = io.StringIO()
    summary = ablate(cfg, sweeps, configs, "c0", tmp_path, out=out)
    text = out.getvalue()
    assert "12 cells" in text and "0 finished earlier" in text and "training 6 run(s) x 2 fold(s) in one program" in text
    rows = pq.read_table(tmp_path / "results.parquet").to_pylist()
    assert len(rows) == 2 * 3 * 2 * 2  # configs x seeds x folds x {val, test}
    keys = {(r["config_id"], r["seed"], r["fold"], r["split"]) for r in rows}
    assert len(keys) == len(rows)
    assert {r["ppo.learning_rate"] for r in rows} == {1e-4, 3e-3}
    for key in M.METRIC_KEYS + ("train_mean_reward",):
        assert key in rows[0]
    # the two folds test on disjoint, later windows
    tests = sorted({(r["fold"], r["start"], r["end"]) for r in rows if r["split"] == "test"})
    assert len(tests) == 2 and tests[0][2] < tests[1][1]
    assert [c["config_id"] for c in summary["configs"]] == ["c0", "c1"]
    for c in summary["configs"]:
        sh = c["test"]["sharpe"]
        assert c["seeds"] == 3 and c["tasks"] == 2 and sh["iqm_ci"][0] <= sh["iqm"] <= sh["iqm_ci"][1]
        mat = np.array([[r["sharpe"] for r in rows if r["config_id"] == c["config_id"] and r["split"] == "test"
                         and r["seed"] == s] for s in (0, 1, 2)])  # [seeds, folds] (rows in fold order)
        assert sh["mean"] == pytest.approx(float(np.nan_to_num(mat, nan=0.0).mean()))
    assert summary["configs"][0]["prob_improvement"]["p"] == 0.5  # c0 against itself
    assert set(summary["baselines"]) == {"flat", "buy_and_hold", "momentum"}
    assert summary["baselines"]["flat"]["total_return"] == 0.0
    assert (tmp_path / "test_sharpe.png").exists() and (tmp_path / "learning_curves.png").exists()
    assert "beats the baselines out of sample" in text

    # a rerun trains nothing; one more seed trains only the new seed's cells, in one program
    out = io.StringIO()
    ablate(cfg, sweeps, configs, "c0", tmp_path, out=out)
    assert "12 finished earlier" in out.getvalue() and "training" not in out.getvalue()
    more = _cfg(processed, seeds=4)
    out = io.StringIO()
    ablate(more, sweeps, configs, "c0", tmp_path, out=out)
    assert "16 cells" in out.getvalue() and "12 finished earlier" in out.getvalue()
    assert "training 2 run(s) x 2 fold(s)" in out.getvalue()
    after = pq.read_table(tmp_path / "results.parquet").to_pylist()
    assert len(after) == 32 and repr(after[:24]) == repr(rows)  # finished cells kept as they were (nan-safe)
    # other settings in the same directory are refused, not mixed in
    with pytest.raises(InputError, match="other settings"):
        ablate(_cfg(processed, seeds=3, **{"ppo.gamma": 0.9}), sweeps, configs, "c0", tmp_path, out=io.StringIO())


def test_sweeps_parse_check_and_group():
    cfg = C.default_config()
    lr = A.parse_sweep("ppo.learning_rate=1e-4,3e-4", cfg)
    lots = A.parse_sweep("env.max_lots=1,2", cfg)
    hidden = A.parse_sweep("ppo.hidden_sizes=32,32;64", cfg)
    assert lr.values == (1e-4, 3e-4) and lr.is_array and not lots.is_array and not hidden.is_array
    assert hidden.values == ((32, 32), (64,))
    grid = A.configurations([lr, lots])
    assert len(grid) == 4 and [c.config_id for c in grid] == ["c0", "c1", "c2", "c3"]
    groups = A.program_groups(grid, [lr, lots])  # learning rates share a program; lot limits set shapes
    assert [(static, [c.index for c in members]) for static, members in groups] == [
        ((("env.max_lots", 1),), [0, 2]), ((("env.max_lots", 2),), [1, 3])]
    assert len(A.configurations([lr, lots], zip_mode=True)) == 2
    for bad, match in [("ppo.learning_rate", "expected group.field"), ("ppo.nope=1", "unknown setting"),
                       ("ppo.learning_rate=-1", "learning_rate"), ("env.cost_model=zero,bogus", "cost model"),
                       ("eval.walk_forward=1,2", "tasks")]:
        with pytest.raises(InputError, match=match):
            A.parse_sweep(bad, cfg)
    with pytest.raises(InputError, match="repeated"):
        A.configurations([A.parse_sweep("ppo.learning_rate=1e-4,1e-4", cfg)])
    with pytest.raises(InputError, match="same number"):
        A.configurations([lr, A.parse_sweep("ppo.ent_coef=0,0.01,0.02", cfg)], zip_mode=True)
    with pytest.raises(InputError, match="ppo stage"):
        A.check_stages(("ppo", "moe"))


def _noise_summary(num_configs: int, seed: int):
    """Rows and daily returns of `num_configs` configurations whose test returns are pure noise (mean 0), 2 seeds
    x 2 folds of 60 sessions each. The validation Sharpe *is* the test Sharpe: the selection sees the very
    sample it is judged on (the worst case of overfitting a choice)."""
    rng = np.random.default_rng(seed)
    rows, daily, dates = [], {}, [[f"2022-{f + 1:02d}-{d:02d}" for d in range(60)] for f in range(2)]
    for c in range(num_configs):
        for s in range(2):
            for f in range(2):
                r = rng.normal(0.0, 0.01, 60)
                daily[(f"c{c}", s, "X", f, "test")] = (dates[f], r)
                for split in ("test", "val"):
                    rows.append({"config_id": f"c{c}", "seed": s, "symbol": "X", "fold": f, "split": split,
                                 "sharpe": float(M.sharpe(r)), "total_return": float(np.prod(1 + r) - 1),
                                 "profit_factor": 1.0, "win_rate": 0.5, "max_drawdown": 0.05})
    base = [{"baseline": "flat", "symbol": "X", "fold": f, "split": "test", "sharpe": float("nan"),
             "total_return": 0.0, "profit_factor": float("nan"), "win_rate": float("nan"), "max_drawdown": 0.0}
            for f in range(2)]
    configs = [{"config_id": f"c{c}", "label": f"noise {c}", "values": {}} for c in range(num_configs)]
    return AS.summarize(rows, base, configs, daily, "c0", reps=500), daily


def test_pure_noise_is_not_reported_as_significant():
    # The best of 20 noise configurations, picked on the sample it is judged on, looks good on its own (its
    # probabilistic Sharpe against 0 is high); deflated by the 20 trials it is not significant, and the table
    # does not say it beats the baselines.
    naive_high, significant, verdicts = 0, 0, 0
    for seed in range(6):
        summary, daily = _noise_summary(20, seed)
        sel = summary["selection"]
        r = AS.session_returns(sel["config_id"], daily, [("X", 0), ("X", 1)])[0]
        naive = stats.probabilistic_sharpe_ratio(stats.sharpe_per_period(r), 0.0, r.size, *stats.skew_kurtosis(r))
        assert sel["num_trials"] == 20 and sel["sessions"] == 120
        assert sel["deflated_sharpe"]["dsr"] < naive
        naive_high += naive > 0.9
        significant += sel["significant"]
        verdicts += summary["beats_baselines_out_of_sample"]["verdict"]
    assert naive_high >= 3  # the selection did find flattering noise: the check below is not vacuous
    assert significant == 0 and verdicts == 0
