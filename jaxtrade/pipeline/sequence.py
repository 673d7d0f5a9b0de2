"""The training sequence (DESIGN section 4): for each symbol, PPO -> MoE -> MAML with validation gates.

For each symbol and each configured stage, in order, `train_stage.run_stage` trains (or resumes, or skips) the
stage, judges it on validation and applies the progression rule; the stage's `{symbol}_{stage}.pth` is exported
and recorded in `summary.json`. Then the final model (`final.select_final`: the best stage on validation by
`final_metric`; or, with `--seeds N --final_model=ensemble`, the ensemble of one stage's N members, `members`) is
exported as `{symbol}_final_model.pth`, and every symbol is backtested on the test split into one report
(`reporting`). Every file records the run's whole `EnvConfig`; summary.json also records the data the run saw.
"""

from __future__ import annotations

import dataclasses
import io
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import jax
from absl import logging

from jaxtrade import atomic, data as D, env as E, export, sharding
from jaxtrade.config import SequenceConfig
from jaxtrade.errors import GateFailure, InputError, StopRequested
from jaxtrade.jsonio import write_json_atomic
from jaxtrade.pipeline import final, members, preemption, reporting
from jaxtrade.pipeline.context import SymbolContext
from jaxtrade.pipeline.stages import STAGE_FILES
from jaxtrade.pipeline.train_stage import run_stage


def resolve_symbols(cfg: SequenceConfig, out=sys.stdout) -> list[str]:
    run = cfg.run
    processed = Path(run.processed_data_dir)
    wanted = list(run.symbols)
    have = set(D.list_symbols(processed)) if processed.is_dir() else set()
    defaults = {"Nifty_2", "Bank_Nifty_5"}
    if (wanted == ["all"] and not have) or (set(wanted) <= defaults and not set(wanted) <= have):
        from data_tools.synth import ensure_default_data

        raw = Path(run.raw_data_dir)
        if (not raw.is_dir() or not any(raw.iterdir()) or set(wanted) <= defaults) and sharding.is_writer():
            ensure_default_data(raw, processed, out=out)
        sharding.sync("default data ready")
        have = set(D.list_symbols(processed))
    cross = cfg.maml.cross_symbol
    if "maml" in run.stages and cross and have and cross not in have:  # checked now, not after stages 1 and 2
        raise InputError(f"--maml.cross_symbol: no processed data for {cross} in {processed} (available: "
                         f"{', '.join(sorted(have))}); name one of them, or pass --maml.cross_symbol= for the "
                         f"first other symbol")
    if wanted == ["all"]:
        if not have:
            raise InputError(f"{processed}: no processed symbols (run data_tools.process first)")
        return sorted(have)
    missing = [s for s in wanted if s not in have]
    if missing:
        raise InputError(f"--symbols: no processed data for {', '.join(missing)} in {processed} "
                         f"(available: {', '.join(sorted(have)) or 'none'})")
    return wanted


def run_sequence(cfg: SequenceConfig, out=sys.stdout, fold: int | None = None) -> int:
    """Run the configured stages for every symbol, then the test-split report. Returns the exit code. fold: one
    walk-forward fold of `cfg.eval` (`pipeline.walk_forward` runs each), None: the single split. SIGTERM and
    SIGINT stop training at the next checkpointable boundary (`preemption`; raises `StopRequested`)."""
    with preemption.stop_on_signals():
        return _run_sequence(cfg, out, fold)


def _run_sequence(cfg: SequenceConfig, out, fold: int | None) -> int:
    t_start = time.perf_counter()
    atomic.writable_directory(cfg.run.checkpoint_dir, "--checkpoint_dir")
    if cfg.run.generate_reports:
        atomic.writable_directory(cfg.run.output_dir, "--output_dir")
    symbols = resolve_symbols(cfg, out=out)
    # torch is an optional extra: without it the run trains, checkpoints (Orbax) and reports, and says that the
    # PyTorch exports were skipped instead of failing after the first stage.
    writer = sharding.is_writer()  # over several hosts every process trains; process 0 writes the files
    can_export = export.torch_available()
    if not can_export and (cfg.run.save_stage_models or cfg.run.keep_best_models):
        msg = (f"PyTorch is not installed: the .pth exports are skipped (Orbax checkpoints and reports are still "
               f"written; `run_backtest.py --model DIR` reads a stage's checkpoint directory). For the .pth files: "
               f"{export.TORCH_HINT}")
        logging.warning("%s", msg)
        out.write(f"note: {msg}\n")
    run_dir = Path(cfg.run.checkpoint_dir) / cfg.run.run_name
    models_dir = run_dir / "models"
    models_dir.mkdir(parents=True, exist_ok=True)
    key = jax.random.key(cfg.run.seed)
    failed_stop: list[str] = []
    final_models: dict[str, tuple[Any, Any, str]] = {}
    contexts: dict[str, SymbolContext] = {}
    stage_models: dict[str, dict[str, tuple[Any, Any]]] = {}
    member_sections: dict[str, dict] = {}
    seed_models: dict[str, dict[str, list]] = {}  # every seed's policy of each stage (--seeds N)
    for i, symbol in enumerate(symbols):
        ctx = SymbolContext(cfg, symbol, fold)
        contexts[symbol] = ctx
        synthetic = " (SYNTHETIC data)" if ctx.market.synthetic else ""
        out.write(f"== {symbol}{synthetic}: {ctx.market.num_bars:,} bars, {ctx.market.num_sessions} sessions, "
                  f"{ctx.market.bar_minutes}-minute; splits {dict(ctx.market.splits)}; lot size "
                  f"{float(ctx.train_params.lot_size[0]):g}\n")
        out.flush()
        summary_path = run_dir / symbol / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.exists() and not cfg.run.overwrite else {}
        summary.update({"symbol": symbol, "run": cfg.run.run_name, "synthetic": ctx.market.synthetic,
                        "config": cfg.to_dict(), "stages": summary.get("stages", {}), "data": ctx.data_record()})
        prev = None
        stage_members: dict[str, list[dict]] = {}
        records: dict[str, dict] = {}
        stage_models[symbol] = {}
        sym_key = jax.random.fold_in(key, i)
        for j, stage in enumerate(cfg.run.stages):
            if preemption.requested():  # between stages: everything finished so far is saved
                raise StopRequested(message=f"{symbol}: stopped by {preemption.signal_name()} before the {stage} "
                                    f"stage; finished stages are saved; run the same command again to resume",
                                    signum=preemption.signal_number())
            stage_key = jax.random.fold_in(sym_key, j)
            if cfg.run.seeds > 1:  # seed s draws what `--seed s` would: seeds seed .. seed+N-1 in one program
                stage_key = jax.numpy.stack([jax.random.fold_in(jax.random.fold_in(jax.random.key(cfg.run.seed + s), i), j)
                                             for s in range(cfg.run.seeds)])
            result = run_stage(cfg, ctx, stage, prev, stage_key)
            rec = result["record"]
            records[stage] = rec
            summary["stages"][stage] = rec
            stage_models[symbol][stage] = (result["network"], result["params"])
            seed_models.setdefault(symbol, {})[stage] = result.get("seed_params") or [result["params"]]
            if cfg.run.save_stage_models and can_export and writer:
                path = models_dir / f"{symbol}_{STAGE_FILES[stage]}.pth"
                export.export_pth(path, result["params"], result["network"], symbol=symbol, stage=stage,
                                  obs_names=list(E.OBS_NAMES), scaler=ctx.market.scaler.to_dict(),
                                  metrics=rec["validation"], env_config=cfg.env.to_dict(),
                                  extra={"gate_passed": rec["gate_passed"], "iterations": rec["iterations"]})
                rec["model_file"] = str(path)
            if cfg.run.seeds > 1:  # the stage's seeds, trained side by side in one program, as ensemble members
                stage_members[stage] = members.members_of(result)
                summary.setdefault("members", {})[stage] = members.member_records(cfg, stage_members[stage])
            if writer:
                write_json_atomic(summary_path, summary)
            prev = result["params"]
            if not rec["gate_passed"] and cfg.progression.on_fail == "stop":
                failed_stop.append(f"{symbol} {stage}: {'; '.join(rec['gate_failures'])}")
                break
            if not cfg.progression.auto_progression and j + 1 < len(cfg.run.stages):
                out.write(f"{symbol}: auto_progression is off; stopping after {stage}. Run the same command "
                          f"again to go on to {cfg.run.stages[j + 1]}.\n")
                break
        if stage_members and cfg.run.keep_best_models and cfg.run.final_model == "ensemble":
            chosen, summary["final_model"] = members.final_ensemble(cfg, ctx, stage_members, models_dir, can_export)
            final_models[symbol] = (chosen["network"], chosen["params"], f"ensemble of {cfg.run.seeds} {chosen['stage']}")
            member_sections[symbol] = members.report_members(cfg, chosen["stage"], stage_members[chosen["stage"]])
            write_json_atomic(summary_path, summary)
            out.write(f"{symbol}: final model = {chosen['why']} -> {summary['final_model']['file'] or summary['final_model']['checkpoint']}\n")
        elif records and cfg.run.keep_best_models:
            # Stages finished by an earlier command (say `--stages ppo,moe,maml`, then `--stages ppo`) compete too:
            # the final model is the best of every finished stage, not of this command's.
            candidates, earlier = dict(records), {}
            for stage in STAGE_FILES:
                if stage not in candidates:
                    found = final.finished_stage(cfg, symbol, stage)
                    if found is not None:
                        candidates[stage], earlier[stage] = found[0], found[1:]
            best, why = final.select_final(candidates, cfg.run.final_metric)
            network, params = stage_models[symbol][best] if best in stage_models[symbol] else earlier[best]
            path = models_dir / f"{symbol}_final_model.pth"
            if can_export and writer:
                export.export_pth(path, params, network, symbol=symbol, stage="final", obs_names=list(E.OBS_NAMES),
                                  scaler=ctx.market.scaler.to_dict(), metrics=candidates[best]["validation"],
                                  env_config=cfg.env.to_dict(), extra={"selected_stage": best, "why": why})
            summary["final_model"] = {"stage": best, "metric": cfg.run.final_metric, "why": why,
                                      "file": str(path) if can_export else None,
                                      "checkpoint": candidates[best].get("checkpoint")}
            final_models[symbol] = (network, params, best)
            if best in stage_members:
                member_sections[symbol] = members.report_members(cfg, best, stage_members[best])
            if writer:
                write_json_atomic(summary_path, summary)
            where = path if can_export else f"{candidates[best].get('checkpoint')} (Orbax; no .pth without PyTorch)"
            out.write(f"{symbol}: final model = {best} stage ({why}) -> {where}\n")
    if cfg.run.generate_reports and final_models:
        # Every process computes the report (its programs span them all); only process 0's lands in output_dir.
        with tempfile.TemporaryDirectory() as scratch:
            run = cfg.run if writer else dataclasses.replace(cfg.run, output_dir=scratch, report_file="")
            report_path = reporting.write_report(dataclasses.replace(cfg, run=run), contexts, stage_models,
                                                 final_models, out if writer else io.StringIO(),
                                                 member_sections, seed_models=seed_models)
        if writer:
            out.write(f"report: {report_path}\n")
    sharding.sync("outputs written")
    out.write(f"sequence finished in {time.perf_counter() - t_start:.1f} s; models in {models_dir}\n")
    out.flush()
    if failed_stop:
        raise GateFailure("; ".join(failed_stop) + " (on_fail=stop)")
    return 0
