"""Periodic retraining (the seed guide's "retrain periodically with new data"): a finished run's final model
fine-tuned on the sessions that came after the run's data, kept only if it beats the old model out of sample.

    retrain(run_dir, symbol, processed_dir, method="ppo") -> the lineage entry (also appended to summary.json)

1. The run's summary.json says which data the run saw (`data`: file, first/last session, the training split's
   feature scaling) and which model is final (`final_model`). Newer sessions are the processed file's sessions
   after the last session the run (or an earlier retraining of it) saw; `since` may start them later, never
   earlier: a window reaching into the old training data is refused with one line (the old model would be judged
   on data it trained on), as is a file with no newer sessions.
2. The newer sessions are split in time: the fine-tuning window, then the held-out window (the most recent
   `holdout_sessions`; default a third of them, at least one). Observations are scaled with the run's training
   statistics, so the fine-tuned model sees what the old one saw.
3. `method="ppo"`: a PPO continuation from the final model's parameters (fresh optimiser, the run's PPO settings,
   `iterations` iterations on the fine-tuning window). `method="maml"`: MAML's inner loop (`adapt_on_support`: one
   support rollout on the fine-tuning window, `inner_loop_steps` inner steps), what MAML trained the model for.
   An ensemble final model has each member fine-tuned so, and is compared as the ensemble.
4. Old and new are backtested (float64, the run's market rules) on the held-out window; the new model is kept only
   if its `--final_metric` beats the old one's by more than `margin` (absolute, in the metric's units: 0.1 of
   Sharpe by default). A kept model becomes `{symbol}_final_model.pth` (the old file moves beside the new
   model's checkpoint as `parent.pth`) and summary.json's `final_model`. Every attempt, kept or not, is appended to
   summary.json's `lineage`: parent model, data ranges, method, both scores, margin, decision.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxtrade import config as C, env as E, export, features as F
from jaxtrade.errors import InputError
from jaxtrade.jsonio import write_json_atomic

METHODS = ("ppo", "maml")
RETRAIN_DIR = "retrain"


def _read_summary(run_dir: Path, symbol: str) -> tuple[Path, dict]:
    path = run_dir / symbol / "summary.json"
    if not path.is_file():
        raise InputError(f"--run_dir: {path} not found (a run directory is checkpoints/<run_name>, written by "
                         f"experiments.sequence for --symbol {symbol})")
    try:
        summary = json.loads(path.read_text())
    except ValueError as e:
        raise InputError(f"{path}: not valid JSON ({e})") from None
    for key in ("config", "data", "final_model"):
        if not isinstance(summary.get(key), dict):
            raise InputError(f"{path}: no '{key}' entry (the run has no final model, or was written by a jaxtrade "
                             f"without data ranges; rerun the sequence)")
    return path, summary


def config_of(summary: dict) -> C.SequenceConfig:
    """The run's SequenceConfig from summary.json's `config` (`SequenceConfig.to_dict`)."""
    flat: dict[str, Any] = {}
    for group, fields in summary["config"].items():
        for k, v in fields.items():
            flat[k if group == "run" else f"{group}.{k}"] = tuple(v) if isinstance(v, list) else v
    known = {f.name for f in dataclasses.fields(C.RunConfig)}
    groups = C.default_groups()
    flat = {k: v for k, v in flat.items() if ("." not in k and k in known) or
            ("." in k and k.split(".", 1)[0] in groups and k.split(".", 1)[1] in
             {f.name for f in dataclasses.fields(groups[k.split(".", 1)[0]])})}
    return C.apply_overrides(C.default_config(), flat, "summary.json config: ")


def seen_through(summary: dict) -> np.datetime64:
    """The last session the run or any retraining of it saw."""
    days = [summary["data"]["last_session"]] + [e["data"]["holdout"]["last_session"]
                                                for e in summary.get("lineage", [])]
    return max(np.datetime64(d, "D") for d in days)


def plan_windows(market, summary: dict, since: str | None, holdout_sessions: int) -> dict:
    """Session index ranges of the fine-tuning and held-out windows in `market` (refusing overlap)."""
    dates = np.asarray(market.session_dates).astype("datetime64[D]")
    train_last = np.datetime64(summary["data"]["splits"]["train"]["last_session"], "D")
    seen = seen_through(summary)
    start_day = seen + 1
    if since:
        try:
            start_day = np.datetime64(since, "D")
        except ValueError:
            raise InputError(f"--since: expected a date YYYY-MM-DD, got {since!r}") from None
        if start_day <= train_last:
            raise InputError(f"--since {start_day}: overlaps the run's training data (its train split ends "
                             f"{train_last}); retraining needs sessions after it")
        if start_day <= seen:
            raise InputError(f"--since {start_day}: overlaps data the run already used (it saw sessions through "
                             f"{seen}); retraining needs sessions after {seen}")
    lo = int(np.searchsorted(dates, start_day, side="left"))
    n_new = len(dates) - lo
    if n_new < 2:
        raise InputError(f"{market.path}: {n_new} session(s) after {seen} (the run's data ends there: "
                         f"{summary['data']['last_session']}); append at least 2 newer sessions to retrain")
    k = holdout_sessions or max(1, n_new // 3)
    if not 1 <= k < n_new:
        raise InputError(f"--holdout_sessions {k}: must leave at least one of the {n_new} newer sessions to "
                         f"fine-tune on")
    return {"new": (lo, len(dates)), "finetune": (lo, len(dates) - k), "holdout": (len(dates) - k, len(dates))}


def _range_record(market, lo: int, hi: int) -> dict:
    return {"first_session": str(market.session_dates[lo]), "last_session": str(market.session_dates[hi - 1]),
            "sessions": hi - lo}


def windowed_market(market, scaler: F.Scaler, windows: dict):
    """`market` with the run's feature scaling and splits train = fine-tuning window, val = test = held out."""
    if market.raw_features is None:
        raise ValueError("windowed_market: the market carries no raw features")
    scaled = F.apply_scaler(market.raw_features, scaler).astype(np.float32)
    splits = {"train": windows["finetune"], "val": windows["holdout"], "test": windows["holdout"],
              "all": (0, market.num_sessions)}
    data = market.data.replace(features=jnp.asarray(scaled))
    return dataclasses.replace(market, data=data, splits=splits, scaler=scaler)


def finetune(method: str, cfg: C.SequenceConfig, network, params, market, iterations: int, seed: int):
    """New parameters: a PPO continuation (`iterations`) or MAML's inner loop on the market's train split."""
    from jaxtrade.agents import maml, ppo
    from jaxtrade.agents.base import Runner
    from jaxtrade.ensemble import Ensemble, stack_members

    if isinstance(network, Ensemble):  # each member fine-tuned alone (its own key), then stacked again
        return stack_members([finetune(method, cfg, network.member, network.member_params(params, i), market,
                                       iterations, seed + i) for i in range(network.num_members)])
    env_params = E.env_params(cfg.env, market, "train")
    key = jax.random.key(seed)
    if method == "ppo":
        trainer = ppo.make_trainer(cfg.ppo, env_params, network=network)
        state = jax.jit(lambda t, k, p: t.init(k, p))(trainer, key, params)
        state, _ = Runner(log_every=0)(trainer, state, iterations)
        return trainer.params_of(state)
    (adapted, _), _ = maml.adapt_on_support(network.apply, params, env_params, key, cfg.maml, cfg.ppo)
    return adapted


def decide(old_v, new_v, margin: float, metric: str = "sharpe") -> tuple[bool, str]:
    """(keep the new model, why): only when its held-out metric beats the old one's by more than `margin` (an
    undefined new value never wins; a defined one beats an undefined old one)."""
    if new_v is None:
        return False, f"the new model's held-out {metric} is undefined"
    if old_v is None:
        return True, f"the old model's held-out {metric} is undefined and the new one's is {new_v:.4g}"
    keep = new_v > old_v + margin
    return keep, (f"held-out {metric} new {new_v:.4g} vs old {old_v:.4g}: "
                  + (f"better by {new_v - old_v:.4g} > margin {margin:g}" if keep else
                     f"not better by more than the margin {margin:g}"))


def retrain(run_dir, symbol: str, processed_dir, *, method: str = "ppo", iterations: int | None = None,
            margin: float = 0.1, holdout_sessions: int = 0, since: str | None = None, seed: int = 0,
            out=None) -> dict:
    """See the module docstring. Returns the lineage entry appended to summary.json."""
    from jaxtrade import backtest as B
    from jaxtrade.policies import load_model, network_policy

    say = (lambda s: out.write(s + "\n")) if out is not None else (lambda s: None)
    if method not in METHODS:
        raise InputError(f"--method: {method!r} is not one of {', '.join(METHODS)}")
    if not margin >= 0:
        raise InputError(f"--margin must be >= 0, got {margin}")
    run_dir = Path(run_dir)
    summary_path, summary = _read_summary(run_dir, symbol)
    cfg = config_of(summary)
    metric = cfg.run.final_metric
    final = summary["final_model"]
    parent = final.get("file") if final.get("file") and Path(final["file"]).is_file() else final.get("checkpoint")
    if not parent or not Path(parent).exists():
        raise InputError(f"{summary_path}: the final model ({final.get('file') or final.get('checkpoint')}) is gone")
    model = load_model(parent)
    scaler = F.Scaler.from_dict(summary["data"]["scaler"])

    market = E.market_for(cfg.env, processed_dir, symbol)
    windows = plan_windows(market, summary, since, holdout_sessions)
    view = windowed_market(market, scaler, windows)
    iterations = max(1, cfg.ppo.num_iterations // 10) if iterations is None else int(iterations)
    if iterations < 1:
        raise InputError(f"--iterations must be >= 1, got {iterations}")
    ft, ho = (_range_record(market, *windows[k]) for k in ("finetune", "holdout"))
    say(f"{symbol}: fine-tuning {Path(parent).name} ({method}) on {ft['sessions']} newer sessions "
        f"{ft['first_session']} .. {ft['last_session']}; held out: {ho['sessions']} sessions {ho['first_session']} "
        f".. {ho['last_session']}")
    old_params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), model.params)
    new_params = finetune(method, cfg, model.network, old_params, view, iterations, seed)

    with jax.enable_x64(True):
        market64 = E.market_for(cfg.env, processed_dir, symbol, price_dtype=jnp.float64)
        view64 = windowed_market(market64, scaler, windows)
        bt = B.BacktestConfig(env=cfg.env, split="test", seed=cfg.run.seed, risk_free_rate=cfg.run.risk_free_rate)
        old_r, new_r = B.backtest_many(view64, [network_policy(model.network, old_params, "old"),
                                                network_policy(model.network, new_params, "new")], bt)
    keep, why = decide(old_r.metrics.get(metric), new_r.metrics.get(metric), margin, metric)
    lineage = summary.setdefault("lineage", [])
    directory = run_dir / symbol / RETRAIN_DIR / f"r{len(lineage) + 1}"
    entry = {"index": len(lineage) + 1, "parent": str(parent), "method": method, "iterations": iterations
             if method == "ppo" else cfg.maml.inner_loop_steps, "processed_file": str(market.path),
             "data": {"finetune": ft, "holdout": ho}, "metric": metric, "margin": margin,
             "old": old_r.metrics, "new": new_r.metrics, "kept": bool(keep), "why": why, "model": None}
    if keep:
        entry["model"] = str(_install(run_dir, symbol, summary, cfg, model, new_params, entry, directory))
        summary["final_model"] = dict(final, file=entry["model"] if entry["model"].endswith(".pth") else None,
                                      checkpoint=str(directory), why=f"retrained (lineage {entry['index']}): {why}",
                                      validation=new_r.metrics, retrained=entry["index"])
    lineage.append(entry)
    write_json_atomic(summary_path, summary)
    say(f"{symbol}: {'KEPT the new model' if keep else 'kept the old model'}: {why}"
        + (f" -> {entry['model']}" if keep else ""))
    return entry


def _install(run_dir: Path, symbol: str, summary: dict, cfg, model, params, entry: dict, directory: Path) -> Path:
    """Save the kept model (Orbax in `directory`, and the final .pth when PyTorch is there, the parent moving
    beside it as parent.pth). Returns the final model's path."""
    from jaxtrade.checkpoints import StageCheckpointer

    if directory.exists():
        shutil.rmtree(directory)
    ckpt = StageCheckpointer(directory, keep=1)
    try:
        ckpt.save(0, {"params": params}, {"iteration": 0, "complete": True, "stage": RETRAIN_DIR, "symbol": symbol,
                                         "record": {k: v for k, v in entry.items() if k != "model"},
                                         "network": export.network_config(model.network, obs_dim=len(E.OBS_NAMES)),
                                         "env_config": cfg.env.to_dict()})
    finally:
        ckpt.close()
    if not export.torch_available():
        return directory
    pth = run_dir / "models" / f"{symbol}_final_model.pth"
    if pth.is_file():
        shutil.copy2(pth, directory / "parent.pth")  # the final .pth is replaced: the lineage keeps its parent
        entry["parent"], entry["parent_was"] = str(directory / "parent.pth"), entry["parent"]
    return export.export_pth(pth, params, model.network, symbol=symbol, stage="final", obs_names=list(E.OBS_NAMES),
                             scaler=summary["data"]["scaler"], metrics=entry["new"], env_config=cfg.env.to_dict(),
                             extra={"selected_stage": RETRAIN_DIR, "lineage": entry["index"],
                                    "parent": entry["parent"]})
