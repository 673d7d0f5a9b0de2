"""The ablation's two plots: per-configuration test-Sharpe intervals beside the baselines, and learning curves
(mean and 25-75% band across seeds and folds)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxtrade import atomic


def _save(fig, path: Path) -> Path:
    return atomic.save_figure(fig, path, dpi=110, bbox_inches="tight")


def write_plots(summary: dict, curve_rows: list[dict], labels: dict, out_dir: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = summary["configs"]
    fig, ax = plt.subplots(figsize=(7, 0.45 * (len(configs) + len(summary["baselines"])) + 1.5))
    y = np.arange(len(configs))
    iqm = [c["test"]["sharpe"]["iqm"] for c in configs]
    lo = [c["test"]["sharpe"]["iqm_ci"][0] for c in configs]
    hi = [c["test"]["sharpe"]["iqm_ci"][1] for c in configs]
    ax.errorbar(iqm, y, xerr=[np.subtract(iqm, lo), np.subtract(hi, iqm)], fmt="o", capsize=3, color="C0",
                label="configuration: IQM, 95% stratified bootstrap CI")
    names = [f"{c['config_id']} {c['label']}"[:48] for c in configs]
    for j, (name, b) in enumerate(summary["baselines"].items()):
        ax.plot([b["sharpe"]], [len(configs) + j], "s", color="C3")
        names.append(f"baseline: {name}")
    ax.axvline(0.0, color="grey", lw=0.8)
    ax.set_yticks(np.arange(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlabel(f"test Sharpe (annualised) across {configs[0]['seeds']} seed(s) x {configs[0]['tasks']} task(s)")
    ax.legend(loc="best", fontsize=8)
    paths = [_save(fig, out_dir / "test_sharpe.png")]
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    for i, c in enumerate(configs):
        rows = [r for r in curve_rows if r["config"] == c["label"]]
        if not rows:
            continue
        runs: dict = {}
        for r in rows:
            runs.setdefault((r["seed"], r["symbol"], r["fold"]), {})[int(r["iteration"])] = r["mean_reward"]
        its = sorted({int(r["iteration"]) for r in rows})
        mat = np.array([[run.get(t, np.nan) for t in its] for run in runs.values()], np.float64)
        ax.plot(its, np.nanmean(mat, axis=0), color=f"C{i % 10}", label=f"{c['config_id']} {c['label']}"[:40])
        ax.fill_between(its, np.nanpercentile(mat, 25, axis=0), np.nanpercentile(mat, 75, axis=0),
                        color=f"C{i % 10}", alpha=0.2)
    ax.set_xlabel("iteration")
    ax.set_ylabel("mean reward per step (training)")
    ax.legend(fontsize=7)
    paths.append(_save(fig, out_dir / "learning_curves.png"))
    plt.close(fig)
    return paths
