"""Train (or resume, or skip) one stage of one symbol (DESIGN section 4):

  1. build the stage's trainer (`stages.build_stage`); a finished stage in the run directory is skipped, an
     unfinished one resumes from its latest Orbax checkpoint (refused when it was trained with other settings);
  2. train through the shared `agents.base.Runner` in chunks of `checkpoint_every` iterations, saving a
     checkpoint after each, with the progress line and the training curves (`metrics.jsonl`, and TensorBoard or
     W&B with `--log_backend`) every `log_every` iterations; with
     `--eval_every K`, also evaluate on validation every K iterations and stop early after
     `--{stage}.early_stopping_patience` evaluations without improvement (`early_stop`);
  3. judge the stage on validation (`stages.judge`); on a failed gate apply the progression rule (`continue`,
     `extend` by `extension_chunk` iterations up to `max_extension_iterations`, optionally halving the learning
     rate, a hyperparameter leaf, or `stop`, which the sequence reports);
  4. save the finished stage with its record (summary.json's entry) and the whole `EnvConfig` it trained under;
     its `params` item is the policy the stage keeps (with early stopping, the best evaluated, not the last).
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

from absl import logging

from jaxtrade import sharding
from jaxtrade.agents.base import Runner
from jaxtrade.agents.batched import batched, unstack
from jaxtrade.checkpoints import StageCheckpointer
from jaxtrade.config import SequenceConfig
from jaxtrade.errors import InputError, NumericalFault, StopRequested
from jaxtrade.evaluation.on_device import SplitEvaluator
from jaxtrade.export import network_config
from jaxtrade.metric_log import open_writer
from jaxtrade.pipeline import preemption, stages as S
from jaxtrade.pipeline.context import SymbolContext
from jaxtrade.pipeline.early_stop import EarlyStopping
from jaxtrade.pipeline.progress import StageLogger


def early_stopping_for(cfg: SequenceConfig, ctx: SymbolContext, stage: str, network) -> EarlyStopping | None:
    """The stage's early-stopping tracker (None without `--eval_every`)."""
    if not cfg.run.eval_every:
        return None
    evaluator = SplitEvaluator.for_split(cfg.env, ctx.market, cfg.run.eval_split, cfg.run.risk_free_rate)
    return EarlyStopping(cfg.run.eval_every, cfg.groups[stage].early_stopping_patience, cfg.run.final_metric,
                         evaluator, network, stage, f"{ctx.symbol} {stage}")


def run_stage(cfg: SequenceConfig, ctx: SymbolContext, stage: str, prev_params, key, directory: Path | None = None
              ) -> dict:
    """Returns {"record": summary.json's entry, "params": the stage's policy parameters, "network": its module}.
    `directory`: the stage's checkpoint directory (default `stages.stage_dir`; another seed's member has its own)."""
    import jax

    symbol = ctx.symbol
    directory = S.stage_dir(cfg, symbol, stage) if directory is None else Path(directory)
    writes = sharding.is_writer()  # over several hosts, process 0 writes (Orbax coordinates its own saves)
    if cfg.run.overwrite and directory.exists() and writes:
        shutil.rmtree(directory)
    sharding.sync(f"{directory} cleared")
    directory.mkdir(parents=True, exist_ok=True)
    jsonl = directory / "metrics.jsonl"
    prog = cfg.progression
    spec = S.build_stage(cfg, ctx, stage, prev_params)
    seeds = cfg.run.seeds
    if seeds > 1:  # N seeds side by side in one program (keys: [N], one per seed; shared starting policy)
        spec.trainer = batched(spec.trainer, seeds)
        if spec.init_params is not None:
            spec.init_params = jax.tree.map(lambda x: jax.numpy.broadcast_to(x, (seeds,) + jax.numpy.shape(x)),
                                            spec.init_params)
    trainer = spec.trainer
    ckpt = StageCheckpointer(directory, keep=cfg.run.keep_checkpoints) if cfg.run.save_checkpoints else None
    es = early_stopping_for(cfg, ctx, stage, trainer.network)
    writer = None
    try:
        # the stream earlier versions drew (runs stay reproducible); with seeds, each seed's as --seed would
        k_stage = jax.vmap(lambda k: jax.random.split(k)[1])(key) if seeds > 1 else jax.random.split(key)[1]
        state = jax.jit(lambda t, k, p: t.init(k, p))(trainer, k_stage, spec.init_params)
        target, done, lr_scale, extended, wall = spec.iterations, 0, 1.0, 0, 0.0
        meta: dict[str, Any] = {}
        settings = S.stage_settings(cfg, stage)

        def same_settings(meta):
            if meta.get("settings") is not None and meta["settings"] != settings:
                diffs = S.settings_diff(meta["settings"], settings)
                raise InputError(f"{symbol} {stage}: {directory} was trained with other settings "
                                 f"({'; '.join(diffs[:4])}{'; ...' if len(diffs) > 4 else ''}); pass --overwrite to "
                                 f"retrain it, or use another --run_name")

        # The newest checkpoint that reads back whole (an unreadable one is set aside with a warning naming it). A
        # finished multi-seed stage stores its best seed as "params" (what tools load); until then, every seed.
        def template(meta):
            t = {"params": unstack(trainer.params_of(state), 0) if seeds > 1 and meta.get("complete")
                 else trainer.params_of(state), "runner": state}
            if (meta.get("early_stopping") or {}).get("best_iteration") is not None:
                t["best_params"] = trainer.params_of(state)
            return t

        found = ckpt.restore_latest(template, same_settings) if ckpt else None
        latest = None if found is None else found[0]
        if found is not None:
            _, restored, meta = found
            lr_scale = float(meta.get("lr_scale", 1.0))
            state = restored["runner"]
            done, target = int(meta["iteration"]), int(meta["target_iterations"])
            extended, wall = int(meta.get("extended", 0)), float(meta.get("wall_s", 0.0))
            if spec.iterations != int(meta.get("planned_iterations", spec.iterations)):
                logging.warning("%s %s: the checkpoint was planned for %s iterations; --%s.num_iterations=%d is "
                                "not applied to it (--overwrite retrains)", symbol, stage,
                                meta.get("planned_iterations"), stage, spec.iterations)
            if meta.get("complete"):
                logging.info("%s %s: finished earlier (%d iterations); skipping (--overwrite retrains)", symbol,
                             stage, done)
                record = dict(meta["record"])
                record["resumed"] = "skipped (finished earlier)"
                every = sharding.fetch(restored["params"])  # host copies: judging runs on each process
                if seeds > 1:  # the finished stage's checkpoint holds its best seed; every seed is in the runner
                    stacked = sharding.fetch(trainer.params_of(state))
                    return {"record": record, "params": every, "network": trainer.network,
                            "seed_params": [unstack(stacked, i) for i in range(seeds)]}
                return {"record": record, "params": every, "network": trainer.network, "seed_params": [every]}
            if es is not None and meta.get("early_stopping"):
                es.restore(meta["early_stopping"], restored.get("best_params"))
            logging.info("%s %s: resuming from checkpoint at iteration %d of %d", symbol, stage, done, target)
        planned = int(meta.get("planned_iterations", spec.iterations)) if meta else spec.iterations
        # A fresh start drops the curves of a run that never checkpointed; a resumed one keeps them up to its
        # checkpoint and appends.
        writer = None if not writes else open_writer(  # over several hosts, process 0 logs
            cfg.run.log_backend, directory.parent.parent, f"{symbol}/{stage}", jsonl_path=jsonl,
            extra={"symbol": symbol, "stage": stage}, config=cfg.to_dict(), resume_at=None if latest is None else done)
        logger = StageLogger(symbol, stage, target, writer)
        runner = Runner(callback=logger, log_every=cfg.run.log_every)

        def save(state, iterations: int, complete: bool = False, record: dict | None = None, params=None):
            if ckpt is None:
                return
            # The policy parameters are stored beside the whole runner state so that tools that only need the
            # policy (run_backtest.py --model DIR, experiments.adapt) restore them without a template.
            tree = {"params": trainer.params_of(state) if params is None else params, "runner": state}
            meta = {
                "iteration": iterations, "target_iterations": target, "complete": complete, "lr_scale": lr_scale,
                "extended": extended, "wall_s": wall + runner.wall_s, "stage": stage, "symbol": symbol,
                "network": network_config(trainer.network), "record": record, "settings": settings,
                "planned_iterations": planned, "env_config": cfg.env.to_dict()}
            if es is not None:  # the evaluations so far and the best parameters: a resumed stage continues them
                meta["early_stopping"] = es.to_meta()
                if es.best_params is not None:
                    tree["best_params"] = es.best_params
            ckpt.save(iterations, tree, meta)

        trainer = spec.with_lr_scale(lr_scale)
        stopped = es is not None and es.should_stop
        while True:
            try:
                if es is None:
                    state, _ = runner(trainer, state, target - done, chunk=cfg.run.checkpoint_every, done=done,
                                      on_chunk=lambda s, n: save(s, n), should_stop=preemption.requested)
                    done = target
                while es is not None and done < target and not stopped:
                    upto = es.next_evaluation(done, target)
                    state, _ = runner(trainer, state, upto - done, chunk=cfg.run.checkpoint_every, done=done,
                                      on_chunk=lambda s, n: save(s, n), should_stop=preemption.requested)
                    done = upto
                    es.evaluate(done, trainer.params_of(state))
                    stopped = es.should_stop
                    if done % cfg.run.checkpoint_every == 0 and done < target and not stopped:
                        save(state, done)
            except (NumericalFault, StopRequested) as e:
                raise _stopped(e, symbol, stage, directory, ckpt) from None
            every = sharding.fetch(trainer.params_of(state))  # host copies: judging runs on each process
            if es is not None:  # one seed (SequenceConfig refuses early stopping with --seeds N)
                every = es.kept(every)
            seed_params = [unstack(every, i) for i in range(seeds)] if seeds > 1 else [every]
            validation, reasons, extras, seed_info = S.judge_seeds(cfg, ctx, stage, trainer.network, seed_params,
                                                                   done)
            params = seed_params[seed_info["best_seed_index"]]
            if stopped and reasons and prog.on_fail == "extend":
                logging.info("%s %s: gate failed (%s); not extended: early stopping found no improvement", symbol,
                             stage, "; ".join(reasons))
            if not reasons or prog.on_fail != "extend" or extended >= prog.max_extension_iterations or stopped:
                break
            chunk = min(prog.extension_chunk, prog.max_extension_iterations - extended)
            extended += chunk
            target += chunk
            logger.total = target
            if prog.hyperparameter_tuning:
                lr_scale *= 0.5
                trainer = spec.with_lr_scale(lr_scale)
            logging.info("%s %s: gate failed (%s); extending by %d iterations%s", symbol, stage, "; ".join(reasons),
                         chunk, f" at learning rate x{lr_scale:g}" if prog.hyperparameter_tuning else "")
            save(state, done)

        wall += runner.wall_s
        gate = cfg.groups.get(f"{stage}_gate")
        record = {
            "stage": stage, "iterations": done, "extended_iterations": extended, "wall_s": round(wall, 3),
            "env_steps": int(done * trainer.env_steps_per_iteration), "validation_split": cfg.run.eval_split,
            "validation": validation, "gate": dataclasses.asdict(gate) if gate is not None else None,
            "gate_passed": not reasons, "gate_failures": reasons, "learning_rate_scale": lr_scale,
            "checkpoint": str(directory), "settings": settings, **extras, **seed_info,
        }
        if es is not None:
            record["early_stopping"] = es.record(done, target, stopped)
        if stage == "moe":
            record["expert_regimes"] = S.expert_regimes(trainer.network, params, ctx, cfg.run.eval_split,
                                                        directory / "expert_regimes.png")
        save(state, done, True, record, params)
        S.log_result(symbol, stage, done, wall, validation, not reasons, reasons)
        return {"record": record, "params": params, "network": trainer.network, "seed_params": seed_params}
    finally:
        if writer is not None:
            writer.close()
        if ckpt is not None:
            ckpt.close()


def _stopped(e: Exception, symbol: str, stage: str, directory, ckpt) -> Exception:
    """The one line a stopped stage ends the command with: a numerical fault (the last good checkpoint is kept;
    nothing after it is saved) or a stop request (its checkpoint was just written)."""
    if ckpt is not None:
        ckpt.wait()
    latest = ckpt.latest_step() if ckpt is not None else None
    kept = f"the last good checkpoint ({directory}, iteration {latest}) is kept" if latest is not None else \
        "no checkpoint was written"
    if isinstance(e, NumericalFault):
        return NumericalFault(e.iteration, e.what, message=(
            f"{symbol} {stage}: non-finite {e.what} at iteration {e.iteration}; training stopped, {kept}, and no "
            f"model or summary entry was written for this stage (a lower learning rate usually helps)"))
    where = f"checkpoint saved at iteration {latest} in {directory}" if latest is not None else \
        "no checkpoint (--save_checkpoints=false)"
    return StopRequested(e.iteration, signum=preemption.signal_number(), message=(
        f"{symbol} {stage}: stopped by {preemption.signal_name()} at iteration {e.iteration}; {where}; run the same "
        f"command again to resume"))
