"""`python -m experiments.ablate`: seeds x configurations x walk-forward folds of the PPO stage, with statistics
that survive many trials (DESIGN section 8).

    python -m experiments.ablate --flagfile=experiments/smoke.flags --symbols NIFTY_5 --seeds 3 \\
        --sweep ppo.learning_rate=1e-4,3e-4 --eval.walk_forward=2

Flags: every flag of `experiments.sequence` (`--ppo.*`, `--env.*`, `--eval.walk_forward`, `--eval.train_sessions`,
`--eval.val_sessions`, `--eval.test_sessions`, `--eval.anchored`, `--seed`, `--seeds N`, `--symbols`, ...) plus
  --sweep group.field=v1,v2,...   repeatable; a list-valued field separates its values with ';'
  --grid (default) | --zip        cartesian product of the sweeps, or their values side by side
  --stages                        default ppo (the stage ablated)
  --output_dir                    default reports/ablations/<run_name>
  --baseline_config               the configuration the others are compared with (c0, c1, ... or its label)
  --overwrite                     start again instead of resuming
Swept PPO hyperparameters (learning_rate, ent_coef, gamma, clip_epsilon, ...) are arrays: all their
configurations x seeds x folds train in one compiled program; any other swept setting (env.max_lots,
env.cost_model, ppo.hidden_sizes, ...) loops over programs.

Writes to the output directory: results.parquet (one row per configuration, seed, symbol, fold and split, with
every section-7 metric and the last training figures), baselines.parquet, returns.parquet (daily returns),
curves.parquet (learning curves), summary.json, test_sharpe.png, learning_curves.png. A rerun skips the
(configuration, seed, symbol, fold) cells already in results.parquet.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
from absl import flags, logging

from experiments import sequence as seq_cli
from jaxtrade import atomic
from jaxtrade.cli import run
from jaxtrade.errors import InputError

FLAGS = flags.FLAGS
RESUME_GROUPS = ("env", "ppo", "eval")  # settings that must match for finished cells to be reused


def define_flags() -> None:
    seq_cli.define_flags()
    if "sweep" in FLAGS:
        return
    flags.DEFINE_multi_string("sweep", [], "A swept setting, group.field=v1,v2,... (repeatable: one flag per setting).")
    flags.DEFINE_bool("grid", True, "Cartesian product of the sweeps (default).")
    flags.DEFINE_bool("zip", False, "Value i of every sweep together (all sweeps of equal length).")
    flags.DEFINE_string("baseline_config", None, "Configuration the others are compared with (default: the first).")


def _read(path: Path) -> list[dict]:
    if not path.exists():
        return []
    import pyarrow.parquet as pq
    return pq.read_table(path).to_pylist()


def _write(path: Path, rows: list[dict]) -> None:
    import pyarrow as pa

    atomic.write_parquet(pa.Table.from_pylist(rows), path)


def _resume_settings(cfg) -> dict:
    d = cfg.to_dict()
    return {"seed": d["run"]["seed"], "risk_free_rate": d["run"]["risk_free_rate"],
            "processed_data_dir": str(Path(d["run"]["processed_data_dir"]).resolve()),
            **{g: d[g] for g in RESUME_GROUPS}}


class Store:
    """The output directory's tables, loaded for resuming and rewritten (atomically) after every group."""

    NAMES = ("results", "baselines", "returns", "curves")

    def __init__(self, directory: Path, settings: dict, overwrite: bool):
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        plan = directory / "plan.json"
        if plan.exists() and not overwrite:
            old = json.loads(plan.read_text())
            if old != json.loads(json.dumps(settings)):
                from jaxtrade.pipeline.stages import settings_diff
                diffs = settings_diff(old, json.loads(json.dumps(settings)))
                raise InputError(f"{directory}: its finished cells were trained with other settings "
                                 f"({'; '.join(diffs[:4])}); pass --overwrite or another --output_dir")
        if overwrite:
            for name in self.NAMES:
                (directory / f"{name}.parquet").unlink(missing_ok=True)
        from jaxtrade.jsonio import write_json_atomic
        write_json_atomic(plan, settings)
        self.tables = {name: _read(directory / f"{name}.parquet") for name in self.NAMES}

    def done(self) -> set[tuple]:
        have = {}
        for r in self.tables["results"]:
            have.setdefault((r["config"], int(r["seed"]), r["symbol"], int(r["fold"])), set()).add(r["split"])
        return {k for k, v in have.items() if {"val", "test"} <= v}

    def baselines_done(self) -> set[tuple]:
        return {(r["rules"], r["symbol"], int(r["fold"])) for r in self.tables["baselines"]}

    def save(self) -> None:
        for name in self.NAMES:
            if self.tables[name]:
                _write(self.dir / f"{name}.parquet", self.tables[name])


def _cell_rows(cfg, A, conf, seed, symbol, folds, fold, policy, extra) -> tuple[list, list]:
    rows, returns = [], []
    for split in A.EVAL_SPLITS:
        result = A.backtest_split(cfg, folds.markets64[fold], policy, split)
        rows.append({"config_id": conf.config_id, "config": conf.label, **{k: _cell(v) for k, v in conf.values},
                     "seed": seed, "symbol": symbol, "fold": fold, "split": split, **A.result_row(result), **extra})
        dates, r = A.daily_rows(result, folds.markets64[fold], split)
        returns += [{"config": conf.label, "seed": seed, "symbol": symbol, "fold": fold, "split": split,
                     "date": d, "return": float(x)} for d, x in zip(dates, r)]
    return rows, returns


def _cell(v):
    return ",".join(map(str, v)) if isinstance(v, tuple) else v


def ablate(cfg, sweeps, configs, baseline_config: str, out_dir: Path, out=sys.stdout) -> dict:
    """Train and evaluate every missing cell, then summarise. Returns summary.json's body."""
    from jaxtrade.evaluation import ablation_summary as AS
    from jaxtrade.pipeline import ablation as A
    from jaxtrade.pipeline.sequence import resolve_symbols

    A.check_stages(cfg.run.stages)
    symbols = resolve_symbols(cfg, out=out)
    store = Store(out_dir, _resume_settings(cfg), cfg.run.overwrite)
    seeds = [cfg.run.seed + i for i in range(cfg.run.seeds)]
    groups = A.program_groups(configs, sweeps)
    array_keys = [s.key for s in sweeps if s.is_array]
    done = store.done()
    k = cfg.eval.walk_forward
    total = len(configs) * len(seeds) * len(symbols) * k
    finished = sum(1 for c in configs for s in seeds for sym in symbols for f in range(k)
                   if (c.label, s, sym, f) in done)
    t0 = time.perf_counter()
    out.write(f"ablation: {len(configs)} configuration(s) x {len(seeds)} seed(s) x {len(symbols)} symbol(s) x {k} "
              f"fold(s) = {total} cells in {len(groups)} program(s) per symbol; {finished} finished earlier "
              f"(skipped); output {out_dir}\n")
    out.flush()
    for si, symbol in enumerate(symbols):
        for gi, (static, members) in enumerate(groups):
            gcfg = Configuration_apply(cfg, static)
            todo = [(c, s, f) for c in members for s in seeds for f in range(k) if (c.label, s, symbol, f) not in done]
            rules = json.dumps(gcfg.env.to_dict(), sort_keys=True)
            need_base = any((rules, symbol, f) not in store.baselines_done() for f in range(k))
            if not todo and not need_base:
                continue
            folds = A.SymbolFolds.load(gcfg, symbol)
            if si == 0 and gi == 0:
                out.write(folds.plan.describe(folds.markets[0]) + "\n")
            if need_base:
                for f in range(k):
                    for policy in A.baseline_policies(gcfg, folds.markets64[f]):
                        for split in A.EVAL_SPLITS:
                            res = A.backtest_split(gcfg, folds.markets64[f], policy, split)
                            store.tables["baselines"].append({"rules": rules, "baseline": policy.name,
                                                              "symbol": symbol, "fold": f, "split": split,
                                                              **A.result_row(res)})
            if todo:
                runs = sorted({(c.index, s) for c, s, _ in todo})
                fold_ids = sorted({f for _, _, f in todo})
                by_index = {c.index: c for c in members}
                hp = {key.split(".", 1)[1]: np.asarray([dict(by_index[ci].values)[key] for ci, _ in runs], np.float32)
                      for key in array_keys}
                label = ", ".join(f"{a}={b}" for a, b in static) or "one program"
                out.write(f"{symbol} [{label}]: training {len(runs)} run(s) x {len(fold_ids)} fold(s) in one program "
                          f"({gcfg.ppo.num_iterations} iterations)\n")
                out.flush()
                group = A.train_group(gcfg, folds, hp, [s for _, s in runs], si, fold_ids,
                                      progress=_progress(out, symbol, gcfg.ppo.num_iterations))
                for fi, f in enumerate(fold_ids):
                    for ri, (ci, s) in enumerate(runs):
                        conf = by_index[ci]
                        if (conf, s, f) not in todo:
                            continue
                        policy = A.trained_policy(group.network, A.cell_params(group, fi, ri),
                                                  f"{conf.config_id} seed {s} fold {f}")
                        extra = {**A.training_figures(group.metrics, fi, ri), "iterations": gcfg.ppo.num_iterations,
                                 "group_wall_s": round(group.wall_s, 3), "group_runs": len(runs) * len(fold_ids)}
                        rows, rets = _cell_rows(gcfg, A, conf, s, symbol, folds, f, policy, extra)
                        store.tables["results"] += rows
                        store.tables["returns"] += rets
                        curve = A.learning_curve(group.metrics, fi, ri)
                        store.tables["curves"] += [{"config": conf.label, "seed": s, "symbol": symbol, "fold": f,
                                                    "iteration": i + 1, "mean_reward": float(v)}
                                                   for i, v in enumerate(curve)]
                        finished += 1
                out.write(f"[ablate] {finished}/{total} cells done ({time.perf_counter() - t0:.0f} s; training "
                          f"{group.wall_s:.1f} s for {len(runs) * len(fold_ids)} runs)\n")
                out.flush()
            store.save()
    return _summarise(cfg, AS, store, configs, seeds, symbols, k, baseline_config, out_dir, out)


def Configuration_apply(cfg, static):  # noqa: N802 - a Configuration's shape-setting values on the base config
    from jaxtrade import config as C
    return C.apply_overrides(cfg, dict(static), where="--sweep: ") if static else cfg


def _progress(out, symbol: str, total: int):
    def callback(m):
        it = int(np.max(m["iteration"]))
        reward = float(np.nanmean(m["mean_reward"])) if "mean_reward" in m else float("nan")
        out.write(f"  {symbol} iteration {it}/{total}: mean reward {reward:+.3e} (all runs)\n")
        out.flush()
    return callback


def _summarise(cfg, AS, store, configs, seeds, symbols, k, baseline_config, out_dir, out) -> dict:
    from jaxtrade.jsonio import write_json_atomic
    from jaxtrade.pipeline import ablation as A

    labels = {c.label: c for c in configs}
    keep = lambda r: (r["config"] in labels and int(r["seed"]) in seeds and r["symbol"] in symbols  # noqa: E731
                      and int(r["fold"]) < k)
    rows = [dict(r, config_id=labels[r["config"]].config_id) for r in store.tables["results"] if keep(r)]
    daily: dict = {}
    for r in store.tables["returns"]:
        if keep(r):
            key = (labels[r["config"]].config_id, int(r["seed"]), r["symbol"], int(r["fold"]), r["split"])
            daily.setdefault(key, ([], []))
            daily[key][0].append(r["date"])
            daily[key][1].append(r["return"])
    base_rules = json.dumps(Configuration_apply(cfg, ()).env.to_dict(), sort_keys=True)
    baseline_rows = [r for r in store.tables["baselines"] if r["rules"] == base_rules and r["symbol"] in symbols
                     and int(r["fold"]) < k]
    if not baseline_rows:  # every configuration changes the market rules: the first one's
        first = sorted({r["rules"] for r in store.tables["baselines"]})[0]
        baseline_rows = [r for r in store.tables["baselines"] if r["rules"] == first]
    conf_dicts = [{"config_id": c.config_id, "label": c.label, "values": {a: _cell(b) for a, b in c.values}}
                  for c in configs]
    summary = AS.summarize(rows, baseline_rows, conf_dicts, daily, baseline_config)
    summary.update(seeds=seeds, symbols=list(symbols), walk_forward=k, stages=list(cfg.run.stages),
                   cells=len(rows) // 2, command=" ".join(sys.argv))
    write_json_atomic(out_dir / "summary.json", summary)
    table = AS.format_table(summary, conf_dicts)
    out.write(table + "\n")
    try:
        from experiments import ablate_plots
        paths = ablate_plots.write_plots(summary, [r for r in store.tables["curves"] if keep(r)], labels, out_dir)
        out.write(f"plots: {', '.join(map(str, paths))}\n")
    except ImportError as e:
        out.write(f"note: plots skipped ({e}; pip install matplotlib)\n")
    out.write(f"results: {out_dir / 'results.parquet'}; summary: {out_dir / 'summary.json'}\n")
    del A
    return summary


def main(argv) -> int:
    del argv
    from jaxtrade.pipeline import ablation as A

    logging.set_verbosity(logging.WARNING)
    cfg = seq_cli.config_from_flags()
    if not FLAGS["stages"].present:  # the ablation's default stage
        from jaxtrade import config as C
        cfg = C.apply_overrides(cfg, {"stages": ("ppo",)})
    if FLAGS.zip and FLAGS["grid"].present and FLAGS.grid:
        raise InputError("--grid and --zip: choose one")
    sweeps = [A.parse_sweep(s, cfg) for s in FLAGS.sweep]
    configs = A.configurations(sweeps, zip_mode=FLAGS.zip)
    baseline = FLAGS.baseline_config or configs[0].config_id
    match = [c for c in configs if baseline in (c.config_id, c.label)]
    if not match:
        raise InputError(f"--baseline_config {baseline!r}: not one of "
                         f"{', '.join(f'{c.config_id} ({c.label})' for c in configs)}")
    # --output_dir (a run flag: the sequence's reports) names the ablation's directory itself when given
    out_dir = Path(cfg.run.output_dir) if FLAGS["output_dir"].present else (
        Path(cfg.run.output_dir) / "ablations" / cfg.run.run_name)
    ablate(cfg, sweeps, configs, match[0].config_id, out_dir, out=sys.stdout)
    return 0


def run_main(argv=None) -> None:
    define_flags()
    run(main, argv, list_flags=["symbols", "stages"])


if __name__ == "__main__":
    run_main()
