"""`--seeds N`: each stage trained for N seeds, and the ensemble of one stage's members as the final model
(`--final_model=ensemble`, `--ensemble_rule mean|vote`; the seed guide's "ensemble methods for robustness").

Member i (0 <= i < N) of a stage is what `--seed S+i` trains (S = `--seed`): the same keys, the same settings with
that seed. Member 0 is the run's own stage (its usual checkpoint directory and `.pth`); members 1..N-1 are trained
one after another by `train_members`, each in `{run}/{symbol}/seeds/{S+i}/{stage}` (resumable like any stage),
each starting from its own member of the previous stage. (When the sequence runs the N seeds of a stage vmapped in
one program, `train_members` is the one function to replace.)

The ensemble: for every stage trained with N members, `jaxtrade.ensemble.Ensemble` of its members (stacked
parameters) is backtested on validation; with `--final_model=ensemble` the best of these by `--final_metric` is the
final model: `{symbol}_final_model.pth` holds every member (`members.{m}.` names), and its Orbax form is
`{run}/{symbol}/ensemble` (the loading priority's "final" for a run without PyTorch).
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path
from typing import Any

import jax

from jaxtrade import env as E, export
from jaxtrade.checkpoints import StageCheckpointer
from jaxtrade.config import SequenceConfig
from jaxtrade.ensemble import Ensemble, stack_members
from jaxtrade.pipeline.context import SymbolContext
from jaxtrade.pipeline.final import select_final
from jaxtrade.pipeline.train_stage import run_stage
from jaxtrade.policies import network_policy

ENSEMBLE_DIR = "ensemble"


def seeds_of(cfg: SequenceConfig) -> list[int]:
    return [cfg.run.seed + i for i in range(cfg.run.seeds)]


def member_config(cfg: SequenceConfig, i: int) -> SequenceConfig:
    """The run's config with member i's seed (`--seed S+i`)."""
    return dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, seed=cfg.run.seed + i))


def member_dir(cfg: SequenceConfig, symbol: str, stage: str, i: int) -> Path:
    return Path(cfg.run.checkpoint_dir) / cfg.run.run_name / symbol / "seeds" / str(cfg.run.seed + i) / stage


def train_members(cfg: SequenceConfig, ctx: SymbolContext, stage: str, prevs: list, symbol_index: int,
                  stage_index: int) -> list[dict]:
    """Members 1..N-1 of `stage`, one after another (`prevs[i - 1]`: member i's previous-stage parameters, None for
    the first stage). Each is `run_stage` of `member_config(cfg, i)` with the key `--seed S+i` would use."""
    out = []
    for i in range(1, cfg.run.seeds):
        mcfg = member_config(cfg, i)
        key = jax.random.fold_in(jax.random.fold_in(jax.random.key(mcfg.run.seed), symbol_index), stage_index)
        out.append(run_stage(mcfg, ctx, stage, prevs[i - 1], key, directory=member_dir(cfg, ctx.symbol, stage, i)))
    return out


def member_records(cfg: SequenceConfig, results: list[dict]) -> list[dict]:
    """summary.json's `members.{stage}`: each member's seed and record (member 0: the stage's own)."""
    return [dict(r["record"], seed=seed) for seed, r in zip(seeds_of(cfg), results)]


def ensemble_of(cfg: SequenceConfig, results: list[dict]) -> tuple[Ensemble, Any]:
    """(the `Ensemble`, stacked parameters) of one stage's member results."""
    network = results[0]["network"]
    return Ensemble(network, len(results), cfg.run.ensemble_rule), stack_members([r["params"] for r in results])


def choose_ensemble(cfg: SequenceConfig, ctx: SymbolContext, stage_members: dict[str, list[dict]]) -> dict:
    """The ensemble of every stage with N members, judged on validation; the best by `--final_metric`. Returns
    {"stage", "network", "params", "validation", "why", "candidates"}."""
    built = {stage: ensemble_of(cfg, results) for stage, results in stage_members.items()}
    pols = [network_policy(net, params, f"ensemble of {stage}") for stage, (net, params) in built.items()]
    results = ctx.backtest_many(pols, cfg.run.eval_split)
    candidates = {stage: {"validation": r.metrics} for stage, r in zip(built, results)}
    best, why = select_final(candidates, cfg.run.final_metric)
    network, params = built[best]
    return {"stage": best, "network": network, "params": params, "validation": candidates[best]["validation"],
            "why": f"the {cfg.run.seeds}-member ensemble ({cfg.run.ensemble_rule}) of the stage with the " + why,
            "candidates": {s: c["validation"] for s, c in candidates.items()}}


def save_ensemble(cfg: SequenceConfig, ctx: SymbolContext, chosen: dict, record: dict) -> Path:
    """The ensemble's Orbax form, `{run}/{symbol}/ensemble` (one step, marked complete), written beside under a
    temporary name and moved into place."""
    directory = Path(cfg.run.checkpoint_dir) / cfg.run.run_name / ctx.symbol / ENSEMBLE_DIR
    tmp = Path(tempfile.mkdtemp(prefix=f".{ENSEMBLE_DIR}.", dir=directory.parent))
    ckpt = StageCheckpointer(tmp, keep=1)
    try:
        ckpt.save(0, {"params": chosen["params"]}, {
            "iteration": 0, "complete": True, "stage": ENSEMBLE_DIR, "symbol": ctx.symbol, "record": record,
            "network": export.network_config(chosen["network"], obs_dim=len(E.OBS_NAMES)),
            "env_config": cfg.env.to_dict(), "observation": {"obs_names": list(E.OBS_NAMES),
                                                             "obs_dim": len(E.OBS_NAMES)}})
    finally:
        ckpt.close()
    if directory.exists():
        shutil.rmtree(directory)
    tmp.rename(directory)
    return directory


def final_ensemble(cfg: SequenceConfig, ctx: SymbolContext, stage_members: dict[str, list[dict]], models_dir: Path,
                   can_export: bool) -> tuple[dict, dict]:
    """Choose, save (Orbax, and `{symbol}_final_model.pth` with PyTorch) and describe the ensemble final model.
    Returns (the choice, summary.json's `final_model`)."""
    chosen = choose_ensemble(cfg, ctx, stage_members)
    seeds = seeds_of(cfg)
    record = {"stage": ENSEMBLE_DIR, "members_stage": chosen["stage"], "rule": cfg.run.ensemble_rule,
              "seeds": seeds, "validation_split": cfg.run.eval_split, "validation": chosen["validation"],
              "candidates": chosen["candidates"], "why": chosen["why"],
              "members_validation": [r["record"]["validation"] for r in stage_members[chosen["stage"]]]}
    directory = save_ensemble(cfg, ctx, chosen, record)
    path = models_dir / f"{ctx.symbol}_final_model.pth"
    if can_export:
        export.export_pth(path, chosen["params"], chosen["network"], symbol=ctx.symbol, stage="final",
                          obs_names=list(E.OBS_NAMES), scaler=ctx.market.scaler.to_dict(),
                          metrics=chosen["validation"], env_config=cfg.env.to_dict(),
                          extra={"selected_stage": ENSEMBLE_DIR, "members_stage": chosen["stage"],
                                 "rule": cfg.run.ensemble_rule, "seeds": seeds, "why": chosen["why"]})
    entry = {"stage": ENSEMBLE_DIR, "members_stage": chosen["stage"], "rule": cfg.run.ensemble_rule, "seeds": seeds,
             "metric": cfg.run.final_metric, "why": chosen["why"], "file": str(path) if can_export else None,
             "checkpoint": str(directory), "validation": chosen["validation"]}
    return chosen, entry


def report_members(cfg: SequenceConfig, stage: str, results: list[dict]) -> dict:
    """What the report's members section backtests: the ensemble of `stage` and each member with its seed."""
    network, params = ensemble_of(cfg, results)
    return {"stage": stage, "rule": cfg.run.ensemble_rule, "ensemble": (network, params),
            "members": [(seed, r["network"], r["params"]) for seed, r in zip(seeds_of(cfg), results)]}
