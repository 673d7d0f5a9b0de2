"""The sequence over walk-forward folds (`--eval.walk_forward=K`, `--eval.train_sessions/val_sessions/
test_sessions`, `--eval.anchored`; `evaluation.folds` has the geometry).

Each fold is the whole sequence (stages, gates, final model, test report) on the fold's windows, with the
feature scaler of the fold's training window: run name `{run_name}_fold{i}` (its checkpoints and models) and
reports in `{output_dir}/fold{i}/`. Then one table of every fold's final model on its test window, written
to `{output_dir}/{run_name}_walk_forward.json`. `K=1` without window flags is the plain sequence, unchanged;
`K=1` with window flags is one fold in the run's own directories.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

from jaxtrade.config import SequenceConfig
from jaxtrade.errors import GateFailure
from jaxtrade.evaluation import folds as W
from jaxtrade.jsonio import write_json_atomic
from jaxtrade.pipeline.sequence import resolve_symbols, run_sequence

FOLD_METRICS = ("sharpe", "total_return", "profit_factor", "win_rate", "max_drawdown", "num_trades")


def active(cfg: SequenceConfig) -> bool:
    """Whether any `--eval.*` flag moves the run off the single split."""
    return cfg.eval != W.WalkForwardConfig()


def fold_config(cfg: SequenceConfig, fold: int) -> SequenceConfig:
    """The run settings of fold `fold`: its own run name and report directory when there are several folds."""
    if cfg.eval.walk_forward == 1:
        return cfg
    run = cfg.run
    report_file = run.report_file
    if report_file:
        p = Path(report_file)
        report_file = str(p.with_name(f"{p.stem}_fold{fold}{p.suffix}"))
    run = dataclasses.replace(run, run_name=f"{run.run_name}_fold{fold}", report_file=report_file,
                              output_dir=str(Path(run.output_dir) / f"fold{fold}"))
    return SequenceConfig(run=run, groups=cfg.groups)


def run_walk_forward(cfg: SequenceConfig, out=sys.stdout) -> int:
    """The sequence on each fold in turn, then the folds' test table. Returns the exit code (a gate failure with
    on_fail=stop in any fold is raised after every fold has run)."""
    from jaxtrade import env as E

    symbols = resolve_symbols(cfg, out=out)
    k = cfg.eval.walk_forward
    for symbol in symbols:
        market = E.market_for(cfg.env, cfg.run.processed_data_dir, symbol)
        plan = W.plan_folds(market.num_sessions, cfg.eval, cfg.env.split_fractions, where=symbol)
        out.write(f"{symbol}: {plan.describe(market)}\n")
    failures = []
    for i in range(k):
        out.write(f"=== walk-forward fold {i + 1}/{k}\n")
        out.flush()
        try:
            run_sequence(fold_config(cfg, i), out=out, fold=i)
        except GateFailure as e:
            failures.append(f"fold {i}: {e}")
    table = fold_table(cfg, symbols)
    if table["rows"]:
        path = Path(cfg.run.output_dir) / f"{cfg.run.run_name}_walk_forward.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, table)
        out.write(format_fold_table(table) + f"\nwalk-forward table: {path}\n")
    if failures:
        raise GateFailure("; ".join(failures))
    return 0


def fold_table(cfg: SequenceConfig, symbols) -> dict:
    """Every fold's final model on its test window (from each fold's report `metrics.json`), with the mean and
    range across folds per symbol."""
    rows = []
    for i in range(cfg.eval.walk_forward):
        fcfg = fold_config(cfg, i)
        for symbol in symbols:
            path = Path(fcfg.run.output_dir) / symbol / "metrics.json"
            if not path.exists():
                continue
            rec = json.loads(path.read_text())
            rows.append({"symbol": symbol, "fold": i, "model": rec.get("model"), "start": rec.get("start"),
                         "end": rec.get("end"), **{m: rec.get(m) for m in FOLD_METRICS}})
    summary = {}
    for symbol in symbols:
        mine = [r for r in rows if r["symbol"] == symbol]
        if mine:
            summary[symbol] = {m: _across([r[m] for r in mine]) for m in FOLD_METRICS}
    return {"split": cfg.run.report_split, "folds": cfg.eval.walk_forward, "rows": rows, "across_folds": summary}


def _across(values) -> dict:
    v = np.array([np.nan if x is None else float(x) for x in values], np.float64)
    ok = v[np.isfinite(v)]
    if not ok.size:
        return {"mean": None, "min": None, "max": None, "nulls": int(v.size)}
    return {"mean": float(ok.mean()), "min": float(ok.min()), "max": float(ok.max()), "nulls": int(v.size - ok.size)}


def format_fold_table(table: dict) -> str:
    def f(x, pct=False):
        return "n/a" if x is None else (f"{x:.2%}" if pct else f"{x:.2f}")

    lines = [f"walk-forward: final model per fold on its {table['split']} window",
             f"{'symbol':<12} {'fold':>4} {'window':<35} {'sharpe':>7} {'return':>8} {'PF':>5} {'win':>5} {'maxDD':>7}"]
    for r in table["rows"]:
        lines.append(f"{r['symbol']:<12} {r['fold']:>4} {str(r['start'])[:16] + '..' + str(r['end'])[:10]:<35} "
                     f"{f(r['sharpe']):>7} {f(r['total_return'], True):>8} {f(r['profit_factor']):>5} "
                     f"{f(r['win_rate']):>5} {f(r['max_drawdown'], True):>7}")
    for symbol, s in table["across_folds"].items():
        lines.append(f"{symbol:<12} mean {f(s['sharpe']['mean']):>7} (range {f(s['sharpe']['min'])} .. "
                     f"{f(s['sharpe']['max'])}); return {f(s['total_return']['mean'], True)}")
    return "\n".join(lines)
