"""What an ablation's cells say (DESIGN section 8): per configuration, the test metrics across seeds and tasks
(tasks = (symbol, fold) pairs) as mean and interquartile mean with 95% stratified bootstrap intervals,
the probability of improvement over the baseline configuration, the built-in baselines on the same tasks, and
for the configuration with the best validation Sharpe its deflated Sharpe ratio and the probability of backtest
overfitting of the selection (`evaluation.stats`, where the references are).

Input rows are plain dicts (results.parquet's rows: config_id, seed, symbol, fold, split and the section-7
metrics); daily returns are `{(config_id, seed, symbol, fold, split): (dates [T], returns [T])}`.

Null metrics (a run that never traded has no Sharpe, win rate or profit factor) are scored as a flat account
would be: Sharpe 0, win rate 0, profit factor 1; a profit factor without a losing trade is capped at
PF_CAP. The table says how many cells were null.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from jaxtrade import metrics as M
from jaxtrade.evaluation import stats

TABLE_METRICS = ("sharpe", "total_return", "profit_factor", "win_rate", "max_drawdown")
NULL_AS = {"sharpe": 0.0, "win_rate": 0.0, "profit_factor": 1.0, "total_return": 0.0, "max_drawdown": 0.0}
PF_CAP = 10.0
SIGNIFICANT_DSR = 0.95


def score_matrix(rows: Sequence[dict], config_id: str, metric: str, split: str = "test",
                 tasks: Sequence[tuple] | None = None) -> tuple[np.ndarray, int, list[tuple]]:
    """`[seeds, tasks]` scores of one configuration (nulls replaced, see the module docstring), the number of
    null cells, and the tasks (symbol, fold) in column order. Seeds missing from a task are an error."""
    mine = [r for r in rows if r["config_id"] == config_id and r["split"] == split]
    if tasks is None:
        tasks = sorted({(r["symbol"], int(r["fold"])) for r in mine})
    seeds = sorted({int(r["seed"]) for r in mine})
    table = {(int(r["seed"]), r["symbol"], int(r["fold"])): r[metric] for r in mine}
    out = np.empty((len(seeds), len(tasks)))
    nulls = 0
    for i, s in enumerate(seeds):
        for j, t in enumerate(tasks):
            if (s, *t) not in table:
                raise ValueError(f"{config_id}: no {split} result for seed {s} on {t[0]} fold {t[1]}")
            v = table[(s, *t)]
            if v is None or not math.isfinite(float(v)):
                nulls += 1
                v = PF_CAP if metric == "profit_factor" and v is not None and float(v) > 0 else NULL_AS.get(metric, 0.0)
            out[i, j] = min(float(v), PF_CAP) if metric == "profit_factor" else float(v)
    return out, nulls, list(tasks)


def _baseline_scores(baseline_rows: Sequence[dict], name: str, metric: str, tasks, split="test") -> np.ndarray:
    table = {(r["symbol"], int(r["fold"])): r[metric] for r in baseline_rows
             if r["baseline"] == name and r["split"] == split}
    vals = []
    for t in tasks:
        v = table.get(t)
        v = NULL_AS.get(metric, 0.0) if v is None or not math.isfinite(float(v)) else float(v)
        vals.append(min(v, PF_CAP) if metric == "profit_factor" else v)
    return np.asarray(vals)[None, :]


def summarize(rows: Sequence[dict], baseline_rows: Sequence[dict], configs: Sequence[dict],
              daily: dict, baseline_config: str, *, reps: int = 5000, seed: int = 0) -> dict:
    """summary.json's body. configs: `[{"config_id", "label", "values"}]` in order."""
    ids = [c["config_id"] for c in configs]
    if baseline_config not in ids:
        raise ValueError(f"baseline configuration {baseline_config!r} is not one of {', '.join(ids)}")
    _, _, tasks = score_matrix(rows, ids[0], "sharpe")
    out_configs = []
    for c in configs:
        entry: dict[str, Any] = {**c, "test": {}, "validation": {}}
        for metric in TABLE_METRICS:
            s, nulls, _ = score_matrix(rows, c["config_id"], metric, "test", tasks)
            agg = stats.aggregate(s, reps=reps, seed=seed)
            entry["test"][metric] = {**agg.to_dict(), "nulls": nulls}
        v, _, _ = score_matrix(rows, c["config_id"], "sharpe", "val", tasks)
        entry["validation"]["sharpe"] = {"mean": float(v.mean()), "iqm": stats.iqm(v)}
        entry["seeds"], entry["tasks"] = int(s.shape[0]), int(s.shape[1])
        sharpe, _, _ = score_matrix(rows, c["config_id"], "sharpe", "test", tasks)
        entry["test_sharpe_by_symbol"] = {  # mean over seeds and the symbol's folds
            sym: float(sharpe[:, [j for j, t in enumerate(tasks) if t[0] == sym]].mean())
            for sym in sorted({t[0] for t in tasks})}
        mine, _, _ = score_matrix(rows, c["config_id"], "sharpe", "test", tasks)
        base, _, _ = score_matrix(rows, baseline_config, "sharpe", "test", tasks)
        entry["prob_improvement"] = _prob_improvement(mine, base, reps, seed)
        out_configs.append(entry)
    baselines = {}
    for name in sorted({r["baseline"] for r in baseline_rows}):
        baselines[name] = {m: float(_baseline_scores(baseline_rows, name, m, tasks).mean()) for m in TABLE_METRICS}
        per_task = _baseline_scores(baseline_rows, name, "sharpe", tasks)[0]
        baselines[name]["sharpe_per_task"] = per_task.tolist()
        baselines[name]["test_sharpe_by_symbol"] = {
            sym: float(per_task[[j for j, t in enumerate(tasks) if t[0] == sym]].mean())
            for sym in sorted({t[0] for t in tasks})}
    best = max(out_configs, key=lambda e: e["validation"]["sharpe"]["mean"])
    selection = selection_figures(best["config_id"], ids, daily, tasks)
    beats = _beats_baselines(best, baselines, bool(selection.get("significant")))
    return {"tasks": [f"{s} fold {f}" for s, f in tasks], "baseline_config": baseline_config,
            "metric_nulls": "a null metric (no trades) scores as a flat account: Sharpe 0, win rate 0, profit "
                            f"factor 1; profit factor capped at {PF_CAP:g}",
            "configs": out_configs, "baselines": baselines, "best_validation_config": best["config_id"],
            "selection": selection, "beats_baselines_out_of_sample": beats}


def _prob_improvement(x: np.ndarray, y: np.ndarray, reps: int, seed: int) -> dict:
    dist = stats.stratified_bootstrap(stats.probability_of_improvement, x, y, reps=min(reps, 2000), seed=seed)
    lo, hi = stats.percentile_interval(dist)
    return {"p": stats.probability_of_improvement(x, y), "ci": [lo, hi]}


def _beats_baselines(best: dict, baselines: dict, significant: bool) -> dict:
    """Whether the best-validation configuration beats the baselines out of sample: its test Sharpe interval
    (IQM, 95%) lies above every baseline's test Sharpe *and* its Sharpe survives deflation for the number of
    configurations tried (a bootstrap interval alone ignores that the configuration was picked among many)."""
    lo = best["test"]["sharpe"]["iqm_ci"][0]
    top = max((b["sharpe"] for b in baselines.values()), default=float("nan"))
    above = bool(baselines) and lo > top
    return {"config_id": best["config_id"], "iqm_ci_low": lo, "best_baseline_sharpe": top,
            "interval_above_baselines": above, "significant_after_deflation": significant,
            "verdict": above and significant}


def session_returns(config_id: str, daily: dict, tasks) -> tuple[np.ndarray, list[str]]:
    """`[T]` daily test returns of a configuration, the mean over its seeds per session, concatenated over the
    tasks' test windows (disjoint and in time order within a symbol), and their labels."""
    out, labels = [], []
    for symbol, fold in tasks:
        runs = [v for k, v in daily.items() if k[0] == config_id and k[2] == symbol and int(k[3]) == fold
                and k[4] == "test"]
        if not runs:
            raise ValueError(f"{config_id}: no daily test returns on {symbol} fold {fold}")
        n = min(len(r[1]) for r in runs)
        out.append(np.mean([np.asarray(r[1][:n], np.float64) for r in runs], axis=0))
        labels += [f"{symbol} {d}" for d in runs[0][0][:n]]
    return np.concatenate(out), labels


def selection_figures(best_id: str, ids: Sequence[str], daily: dict, tasks) -> dict:
    """Deflated Sharpe of the selected configuration (N = configurations tried, V = variance of their test
    Sharpe ratios) and the CSCV probability of backtest overfitting over the tasks' test sessions."""
    returns = {c: session_returns(c, daily, tasks)[0] for c in ids}
    n = min(len(r) for r in returns.values())
    matrix = np.stack([returns[c][:n] for c in ids], axis=1)  # [T, N]
    trial_sharpes = [float(M.sharpe(matrix[:, i])) for i in range(len(ids))]
    out: dict[str, Any] = {"config_id": best_id, "num_trials": len(ids), "sessions": int(n),
                           "trial_test_sharpes": trial_sharpes}
    try:
        dsr = stats.deflated_sharpe_ratio(matrix[:, ids.index(best_id)], trial_sharpes,
                                          periods_per_year=M.TRADING_DAYS)
        out["deflated_sharpe"] = dsr.to_dict()
        out["significant"] = bool(dsr.dsr >= SIGNIFICANT_DSR)
    except ValueError as e:
        out["deflated_sharpe"], out["significant"] = {"error": str(e)}, False
    blocks = _num_blocks(n)
    if len(ids) < 2 or blocks is None:
        out["pbo"] = {"error": f"CSCV needs >= 2 configurations and >= 4 sessions (have {len(ids)} and {n})"}
    else:
        pbo = stats.probability_of_backtest_overfitting(matrix, num_blocks=blocks)
        out["pbo"] = {"pbo": pbo.pbo, "num_blocks": blocks, "combinations": int(len(pbo.logits)),
                      "prob_oos_loss": pbo.prob_oos_loss}
    return out


def _num_blocks(n: int) -> int | None:
    """CSCV's S: 16 blocks (the paper's choice) when there are >= 2 sessions per half-block, fewer otherwise."""
    for s in (16, 14, 12, 10, 8, 6, 4):
        if n >= 2 * s:
            return s
    return None


def format_table(summary: dict, configs: Sequence[dict]) -> str:
    """The printed table: one line per configuration and per baseline."""
    head = (f"{'config':<6} {'setting':<34} {'val Sh':>7} {'test Sharpe IQM [95% CI]':>27} {'mean':>6} "
            f"{'return':>8} {'PF':>5} {'win':>5} {'maxDD':>6} {'P(>base)':>8}")
    lines = [head, "-" * len(head)]
    for e in summary["configs"]:
        t = e["test"]
        sh = t["sharpe"]
        lines.append(f"{e['config_id']:<6} {e['label'][:34]:<34} {e['validation']['sharpe']['mean']:>7.2f} "
                     f"{sh['iqm']:>8.2f} [{sh['iqm_ci'][0]:>6.2f}, {sh['iqm_ci'][1]:>6.2f}]   {sh['mean']:>6.2f} "
                     f"{t['total_return']['mean']:>8.2%} {t['profit_factor']['iqm']:>5.2f} "
                     f"{t['win_rate']['mean']:>5.2f} {t['max_drawdown']['mean']:>6.2%} "
                     f"{e['prob_improvement']['p']:>8.2f}")
    for name, b in summary["baselines"].items():
        lines.append(f"{'base':<6} {name:<34} {'':>7} {b['sharpe']:>8.2f} {'':>18} {b['sharpe']:>6.2f} "
                     f"{b['total_return']:>8.2%} {b['profit_factor']:>5.2f} {b['win_rate']:>5.2f} "
                     f"{b['max_drawdown']:>6.2%}")
    sel = summary["selection"]
    dsr = sel.get("deflated_sharpe", {})
    pbo = sel.get("pbo", {})
    lines.append("")
    lines.append(f"best on validation: {sel['config_id']} of {sel['num_trials']} configuration(s); test Sharpe of "
                 f"its seed-mean returns over {sel['sessions']} sessions "
                 + (f"{dsr['sharpe_annual']:.2f}, deflated Sharpe ratio {dsr['dsr']:.3f} (expected max of "
                    f"{sel['num_trials']} null trials {dsr['expected_max_sharpe_annual']:.2f}); "
                    if "dsr" in dsr else f"(deflated Sharpe: {dsr.get('error')}); ")
                 + (f"PBO {pbo['pbo']:.2f} (CSCV, {pbo['num_blocks']} blocks)" if "pbo" in pbo
                    else f"PBO: {pbo.get('error')}"))
    b = summary["beats_baselines_out_of_sample"]
    lines.append(f"beats the baselines out of sample: {'YES' if b['verdict'] else 'no'} (IQM test Sharpe 95% CI "
                 f"low {b['iqm_ci_low']:.2f} vs best baseline {b['best_baseline_sharpe']:.2f}: "
                 f"{'above' if b['interval_above_baselines'] else 'not above'}; significant after deflation: "
                 f"{'yes' if sel.get('significant') else 'no'})")
    return "\n".join(lines)
