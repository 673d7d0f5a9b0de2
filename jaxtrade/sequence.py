"""The training sequence (DESIGN section 4): for each symbol, PPO -> MoE -> MAML with validation gates.

For each symbol and each configured stage, in order:
  1. build the stage's trainer (starting from the previous stage's policy when transfer learning is on),
  2. train in chunks of `checkpoint_every` iterations, saving an Orbax checkpoint after each chunk (a rerun of
     the same command resumes an unfinished stage from its latest checkpoint and skips finished stages unless
     `overwrite`), with a progress line and `metrics.jsonl` every `log_every` iterations,
  3. backtest the stage's greedy policy on the validation split and check the stage's gate; on failure apply
     the progression rule (`continue`, `extend` by `extension_chunk` iterations up to
     `max_extension_iterations`, optionally halving the learning rate, or `stop`),
  4. export `{symbol}_{stage}.pth` and record the stage in `summary.json`.
Then the final model (the best stage on validation by `final_metric`) is exported as
`{symbol}_final_model.pth`, and every symbol is backtested on the test split into one report.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from jaxtrade import data as D, env as E
from jaxtrade.config import GateConfig, SequenceConfig
from jaxtrade.costs import cost_model
from jaxtrade.errors import GateFailure, InputError

STAGE_FILES = {"ppo": "ppo_stage1", "moe": "moe_stage2", "maml": "maml_stage3_final"}
SEED_TARGETS = {"win_rate": (0.40, 0.50), "profit_factor": (1.2, 1.8), "max_drawdown": 0.25, "sharpe": 1.0}


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _json_safe(x):
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(float(x)) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


# ------------------------------------------------------------------------------------------------------------
# Progress output


class StageLogger:
    """Host callback for a trainer: a progress bar on a terminal (a log line otherwise) and `metrics.jsonl`."""

    def __init__(self, symbol: str, stage: str, total: int, jsonl_path: Path, stream=None):
        self.symbol, self.stage, self.total = symbol, stage, total
        self.jsonl_path = jsonl_path
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._last: tuple[float, float] | None = None
        self._start = time.perf_counter()
        self._start_steps: float | None = None

    def __call__(self, metrics: dict[str, np.ndarray]) -> None:
        m = {k: float(np.mean(np.asarray(v))) for k, v in metrics.items()}
        now = time.perf_counter()
        steps = m.get("env_steps", 0.0)
        if self._start_steps is None:
            self._start_steps = steps - m.get("batch_size", 0.0)
        rate = 0.0
        if self._last is not None and now > self._last[0] and steps > self._last[1]:
            rate = (steps - self._last[1]) / (now - self._last[0])
        self._last = (now, steps)
        m["steps_per_s"] = rate
        m["wall_s"] = now - self._start
        m.update(symbol=self.symbol, stage=self.stage)
        with open(self.jsonl_path, "a") as f:
            f.write(json.dumps({k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                                for k, v in m.items()}) + "\n")
        it = int(m.get("iteration", 0))
        frac = min(it / max(self.total, 1), 1.0)
        bar = "#" * int(frac * 20) + "." * (20 - int(frac * 20))
        def f(name, spec):
            v = m.get(name, math.nan)
            return "n/a" if not math.isfinite(v) else format(v, spec)

        line = (f"{self.stage:4s} {self.symbol} [{bar}] {it}/{self.total} | {steps:,.0f} steps"
                f"{f' | {rate:,.0f}/s' if rate else ''} | return {f('mean_episode_return', '+.4f')}"
                f" | win {f('win_rate', '.3f')} pf {f('profit_factor', '.3f')}"
                f" | pi {f('policy_loss', '+.4f')} v {f('value_loss', '.4f')}"
                f" ent {f('entropy', '.3f')} kl {f('approx_kl', '.4f')}")
        extra = [f"{k} {v:.2f}" for k, v in m.items() if k.startswith("expert_usage") or k == "gate_entropy"]
        if extra:
            line += " | " + " ".join(extra)
        if self.tty:
            self.stream.write("\r" + line[:200].ljust(200) + ("\n" if it >= self.total else ""))
            self.stream.flush()
        else:
            logging.info("%s", line)


# ------------------------------------------------------------------------------------------------------------
# Stages


@dataclasses.dataclass
class StageRunner:
    """What the sequence needs from a stage's trainer."""

    trainer: Any  # init(key, params=None) -> rs; run(rs, n) -> (rs, metrics)
    init_params: Any  # starting parameters (None: fresh init)
    params_of: Callable[[Any], Any]  # runner state -> policy parameters
    network: Any  # the Flax module of the policy (apply for evaluation, export)
    iterations: int  # the stage's configured iterations
    env_steps_per_iteration: int
    rebuild: Callable[[float], Any]  # lr_scale -> a new trainer with the same state layout


def _ppo_stage(cfg: SequenceConfig, env_params, prev, key, callback, lr_scale: float = 1.0) -> StageRunner:
    from jaxtrade.agents import ppo

    def build(scale):
        conf = cfg.ppo.replace(learning_rate=cfg.ppo.learning_rate * scale, log_every=cfg.run.log_every)
        return ppo.make_trainer(conf, env_params, callback=callback)

    trainer = build(lr_scale)
    return StageRunner(trainer=trainer, init_params=None, params_of=lambda rs: rs.train_state.params,
                       network=trainer.network, iterations=cfg.ppo.num_iterations,
                       env_steps_per_iteration=cfg.ppo.batch_size, rebuild=build)


def _moe_stage(cfg: SequenceConfig, env_params, prev, key, callback, lr_scale: float = 1.0) -> StageRunner:
    from jaxtrade.agents import moe

    # Every expert starts as the stage-1 policy (symmetry broken by per-expert noise) unless transfer
    # learning is off or stage 1 did not run.
    init_from = prev["params"] if (prev is not None and cfg.run.transfer_learning) else None
    ppo_hidden = tuple(cfg.ppo.hidden_sizes)
    if init_from is not None and (cfg.moe.expert_hidden_dim < max(ppo_hidden, default=0)
                                  or cfg.moe.expert_num_layers != len(ppo_hidden)):
        raise InputError(
            f"--moe.expert_hidden_dim={cfg.moe.expert_hidden_dim} with --moe.expert_num_layers="
            f"{cfg.moe.expert_num_layers} cannot hold the stage-1 network (--ppo.hidden_sizes="
            f"{','.join(map(str, ppo_hidden))}) that every expert starts from; widen the experts, match the layer "
            f"count, or pass --transfer_learning=false")

    def build(scale):
        conf = cfg.ppo.replace(learning_rate=cfg.ppo.learning_rate * scale, log_every=cfg.run.log_every)
        return moe.make_trainer(cfg.moe, conf, env_params, init_from=init_from, callback=callback)

    trainer = build(lr_scale)
    return StageRunner(trainer=trainer, init_params=None, params_of=lambda rs: rs.train_state.params,
                       network=trainer.network, iterations=cfg.moe.num_iterations,
                       env_steps_per_iteration=cfg.ppo.batch_size, rebuild=build)


def _maml_stage(cfg: SequenceConfig, env_params, prev, key, callback, lr_scale: float = 1.0) -> StageRunner:
    from jaxtrade.agents import maml

    def build(scale):
        conf = cfg.maml.replace(meta_learning_rate=cfg.maml.meta_learning_rate * scale,
                                log_every=cfg.run.log_every)
        return maml.make_trainer(conf, cfg.ppo, env_params, moe_config=cfg.moe, callback=callback)

    trainer = build(lr_scale)
    init = prev["params"] if (prev is not None and cfg.run.transfer_learning) else None
    return StageRunner(trainer=trainer, init_params=init, params_of=trainer.params_of, network=trainer.network,
                       iterations=cfg.maml.num_iterations, env_steps_per_iteration=trainer.env_steps_per_iteration,
                       rebuild=build)


STAGE_BUILDERS = {"ppo": _ppo_stage, "moe": _moe_stage, "maml": _maml_stage}


# ------------------------------------------------------------------------------------------------------------
# Gates and validation


def check_gate(metrics: dict, gate: GateConfig, iterations: int) -> tuple[bool, list[str]]:
    """(passed, reasons it failed). A null metric (no trades, no losing trade) fails a minimum unless it
    is a profit factor with winning trades only."""
    reasons = []

    def need_min(name, threshold):
        if threshold is None:
            return
        value = metrics.get(name)
        if name == "profit_factor" and value is None and (metrics.get("num_trades") or 0) > 0 \
                and (metrics.get("win_rate") or 0) > 0:
            return  # no losing trade: profit factor is unbounded
        if value is None or not value >= threshold:
            reasons.append(f"{name} {_fmt(value)} < {threshold:g}")

    need_min("win_rate", gate.min_win_rate)
    need_min("profit_factor", gate.min_profit_factor)
    if gate.max_drawdown is not None:
        dd = metrics.get("max_drawdown")
        if dd is None or dd > gate.max_drawdown:
            reasons.append(f"max_drawdown {_fmt(dd)} > {gate.max_drawdown:g}")
    if iterations < gate.min_iterations:
        reasons.append(f"iterations {iterations} < {gate.min_iterations}")
    return not reasons, reasons


class SymbolContext:
    """One symbol's data and environments: float32 for training, float64 for validation/test backtests."""

    def __init__(self, cfg: SequenceConfig, symbol: str):
        from jaxtrade import backtest as B

        self.cfg = cfg
        self.symbol = symbol
        env_cfg = cfg.env
        self.market = D.load_market(cfg.run.processed_data_dir, symbol, split_fractions=env_cfg.split_fractions)
        lo, _ = self.market.splits["train"]
        as_of = self.market.session_dates[lo].astype(object)
        costs = cost_model(env_cfg.cost_model, bps=env_cfg.cost_bps, as_of=as_of).params
        self.lot_size = env_cfg.lot_size or None
        self.train_params = E.make_params(
            self.market, "train", cost_params=costs, lot_size=self.lot_size, dated_lots=env_cfg.dated_lots,
            slippage_ticks=env_cfg.slippage_ticks, max_lots=env_cfg.max_lots,
            initial_capital=env_cfg.initial_capital, episode_sessions=env_cfg.episode_sessions,
            allow_overnight=env_cfg.allow_overnight, square_off_time=env_cfg.square_off_time or None)
        with jax.enable_x64(True):
            self.market64 = D.load_market(cfg.run.processed_data_dir, symbol, split_fractions=env_cfg.split_fractions,
                                          price_dtype=jnp.float64)
        self.backtest_config = B.BacktestConfig(
            cost_model=env_cfg.cost_model, slippage_ticks=env_cfg.slippage_ticks, lot_size=self.lot_size,
            allow_overnight=env_cfg.allow_overnight, initial_capital=env_cfg.initial_capital,
            max_lots=env_cfg.max_lots, seed=cfg.run.seed, risk_free_rate=cfg.run.risk_free_rate)

    def eval_params(self, split: str):
        """float32 env params over `split` as one episode (for on-device evaluation traces)."""
        return E.make_params(self.market, split, cost_params=self.train_params.costs, lot_size=self.lot_size,
                             dated_lots=self.cfg.env.dated_lots, slippage_ticks=self.cfg.env.slippage_ticks,
                             max_lots=self.cfg.env.max_lots, initial_capital=self.cfg.env.initial_capital,
                             episode_sessions=None, allow_overnight=self.cfg.env.allow_overnight,
                             square_off_time=self.cfg.env.square_off_time or None)

    def backtest_many(self, policies, split: str):
        from jaxtrade import backtest as B

        with jax.enable_x64(True):
            return B.backtest_many(self.market64, policies, self.backtest_config, split=split)

    def backtest(self, policy, split: str):
        from jaxtrade import backtest as B

        with jax.enable_x64(True):
            return B.backtest(self.market64, policy, self.backtest_config, split=split)


def policy_of(network, params, name: str, source: str | None = None):
    from jaxtrade import policies

    params = jax.tree.map(jnp.asarray, params)
    return policies.policy_from_logits(network.apply, params, name, source=source)


# ------------------------------------------------------------------------------------------------------------
# Running a stage


def _stage_dir(cfg: SequenceConfig, symbol: str, stage: str) -> Path:
    return Path(cfg.run.checkpoint_dir) / cfg.run.run_name / symbol / stage


# The config groups a stage's training depends on (its gate is judged afresh from the record, not stored here).
STAGE_SETTINGS = {"ppo": ("env", "ppo"), "moe": ("env", "ppo", "moe"), "maml": ("env", "ppo", "moe", "maml")}


def stage_settings(cfg: SequenceConfig, stage: str) -> dict:
    """What trained `stage`, JSON-normalised: its config groups less `num_iterations` (a larger budget is not a
    different run), the seed and, after stage 1, transfer_learning."""
    settings: dict[str, Any] = {"seed": cfg.run.seed}
    if stage != "ppo":
        settings["transfer_learning"] = cfg.run.transfer_learning
    for group in STAGE_SETTINGS[stage]:
        fields = dataclasses.asdict(cfg.groups[group])
        fields.pop("num_iterations", None)
        settings[group] = fields
    return json.loads(json.dumps(_json_safe(settings)))


def _training_env(record: Mapping[str, Any]) -> dict | None:
    """The `--env.*` settings a stage trained under, for the `.pth` file: a backtest of the model needs the same
    initial capital (the position features are scaled by it) to act as it did in training."""
    return (record.get("settings") or {}).get("env")


def _settings_diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _settings_diff(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"--{prefix}{k} {a!r} -> {b!r}")
    return out


def run_stage(cfg: SequenceConfig, ctx: SymbolContext, stage: str, prev: dict | None, key) -> dict:
    """Train (or resume, or skip) one stage; returns its record for summary.json plus params/network."""
    from jaxtrade.checkpoints import StageCheckpointer

    symbol = ctx.symbol
    directory = _stage_dir(cfg, symbol, stage)
    if cfg.run.overwrite and directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    jsonl = directory / "metrics.jsonl"
    gate = cfg.groups.get(f"{stage}_gate")
    prog = cfg.progression
    k_init, k_stage = jax.random.split(key)

    logger_box: dict[str, StageLogger] = {}

    def callback(metrics):
        logger_box["logger"](metrics)

    runner = STAGE_BUILDERS[stage](cfg, ctx.train_params, prev, k_init, callback)
    ckpt = StageCheckpointer(directory, keep=cfg.run.keep_checkpoints) if cfg.run.save_checkpoints else None
    try:
        rs = runner.trainer.init(k_stage, runner.init_params)
        target, done, lr_scale, extended, wall = runner.iterations, 0, 1.0, 0, 0.0
        meta: dict[str, Any] = {}
        latest = ckpt.latest_step() if ckpt else None
        settings = stage_settings(cfg, stage)
        if latest is not None:
            meta = ckpt.restore_meta(latest)
            if meta.get("settings") is not None and meta["settings"] != settings:
                diffs = _settings_diff(meta["settings"], settings)
                raise InputError(f"{symbol} {stage}: {directory} was trained with other settings "
                                 f"({'; '.join(diffs[:4])}{'; ...' if len(diffs) > 4 else ''}); pass --overwrite to "
                                 f"retrain it, or use another --run_name")
            lr_scale = float(meta.get("lr_scale", 1.0))
            if lr_scale != 1.0:
                runner = dataclasses.replace(runner, trainer=runner.rebuild(lr_scale))
            restored, meta = ckpt.restore({"params": runner.params_of(rs), "runner": rs}, latest)
            rs = restored["runner"]
            done, target = int(meta["iteration"]), int(meta["target_iterations"])
            extended, wall = int(meta.get("extended", 0)), float(meta.get("wall_s", 0.0))
            if runner.iterations != int(meta.get("planned_iterations", runner.iterations)):
                logging.warning("%s %s: the checkpoint was planned for %s iterations; --%s.num_iterations=%d is "
                                "not applied to it (--overwrite retrains)", symbol, stage,
                                meta.get("planned_iterations"), stage, runner.iterations)
            if meta.get("complete"):
                logging.info("%s %s: finished earlier (%d iterations); skipping (--overwrite retrains)", symbol, stage,
                             done)
                record = dict(meta["record"])
                record["resumed"] = "skipped (finished earlier)"
                return {"record": record, "params": runner.params_of(rs), "network": runner.network}
            logging.info("%s %s: resuming from checkpoint at iteration %d of %d", symbol, stage, done, target)
        elif not cfg.run.overwrite and jsonl.exists():
            jsonl.unlink()  # a stale log from a run that never checkpointed
        planned = int(meta.get("planned_iterations", runner.iterations)) if meta else runner.iterations
        logger_box["logger"] = StageLogger(symbol, stage, target, jsonl)

        def save(complete: bool, record: dict | None = None):
            if ckpt is None:
                return
            # The policy parameters are stored beside the whole runner state so that tools that only need the
            # policy (run_backtest.py --model DIR, experiments.adapt) restore them without a template.
            ckpt.save(done, {"params": runner.params_of(rs), "runner": rs}, {"iteration": done, "target_iterations": target, "complete": complete,
                                 "lr_scale": lr_scale, "extended": extended, "wall_s": wall, "stage": stage,
                                 "symbol": symbol, "network": network_config(runner.network), "record": record,
                                 "settings": settings, "planned_iterations": planned})

        while True:
            while done < target:
                n = min(cfg.run.checkpoint_every - done % cfg.run.checkpoint_every, target - done)
                t0 = time.perf_counter()
                rs, _ = runner.trainer.run(rs, n)
                jax.block_until_ready(rs)
                wall += time.perf_counter() - t0
                done += n
                if done < target:
                    save(False)
            params = runner.params_of(rs)
            validation = ctx.backtest(policy_of(runner.network, params, f"{stage} (validation)"), cfg.run.eval_split)
            vmetrics = validation.metrics
            if stage == "maml":
                passed, reasons = runner.trainer.gate(ctx, params, cfg)
            else:
                passed, reasons = check_gate(vmetrics, gate, done)
            if passed or prog.on_fail != "extend" or extended >= prog.max_extension_iterations:
                break
            chunk = min(prog.extension_chunk, prog.max_extension_iterations - extended)
            extended += chunk
            target += chunk
            logger_box["logger"].total = target
            if prog.hyperparameter_tuning:
                lr_scale *= 0.5
                runner = dataclasses.replace(runner, trainer=runner.rebuild(lr_scale))
            logging.info("%s %s: gate failed (%s); extending by %d iterations%s", symbol, stage, "; ".join(reasons),
                         chunk, f" at learning rate x{lr_scale:g}" if prog.hyperparameter_tuning else "")
            save(False)

        record = {
            "stage": stage, "iterations": done, "extended_iterations": extended, "wall_s": round(wall, 3),
            "env_steps": int(done * runner.env_steps_per_iteration), "validation_split": cfg.run.eval_split,
            "validation": vmetrics, "gate": dataclasses.asdict(gate) if gate is not None else None,
            "gate_passed": bool(passed), "gate_failures": reasons, "learning_rate_scale": lr_scale,
            "checkpoint": str(directory), "settings": settings,
        }
        extra = getattr(runner.trainer, "summary_extras", None)
        if extra is not None:
            record.update(extra(ctx, params))
        if stage == "moe":
            record["expert_regimes"] = expert_regimes(runner.network, params, ctx, cfg.run.eval_split,
                                                      directory / "expert_regimes.png")
        save(True, record)
        status = "passed" if passed else f"FAILED ({'; '.join(reasons)})"
        logging.info("%s %s: %d iterations in %.1f s; validation win %s pf %s dd %s sharpe %s; gate %s", symbol, stage,
                     done, wall, *(_fmt(vmetrics.get(k)) for k in ("win_rate", "profit_factor", "max_drawdown",
                                                                           "sharpe")), status)
        return {"record": record, "params": params, "network": runner.network}
    finally:
        if ckpt is not None:
            ckpt.close()




def expert_regimes(network, params, ctx: "SymbolContext", split: str, png_path: Path) -> dict:
    """Which expert leads in which market condition (volatility terciles x trend) on `split`, with a
    heat-map PNG beside the MoE checkpoints."""
    from jaxtrade.agents import moe

    table = moe.expert_regime_table(network, params, ctx.market, split=split, env_params=ctx.eval_params(split))
    notice = moe.plot_expert_regimes(table, png_path)
    table["heatmap"] = str(png_path) if png_path.exists() else None
    if notice:
        logging.info("%s", notice)
    return table


def render_expert_regimes(table: dict) -> str:
    """A text table: rows volatility terciles, columns trend; each cell the leading expert and its gate share."""
    vols, trends = table["vol_buckets"], table["trend_buckets"]
    lines = [f"Expert leading each market condition ({table['symbol']}, {table['split']} split, "
             f"{table['num_experts']} experts; cell = leader (mean gate prob, bars)); overall usage "
             + ", ".join(f"e{i} {_fmt(u)}" for i, u in enumerate(table["usage"])) + ":",
             "  " + "vol / trend".ljust(14) + "".join(f"{t:>22}" for t in trends)]
    for vi, vname in enumerate(vols):
        cells = []
        for ti in range(len(trends)):
            lead, bars = table["leader"][vi][ti], table["bars"][vi][ti]
            if lead is None:
                cells.append(f"{'-':>22}")
            else:
                share = table["mean_gate"][vi][ti][lead]
                cells.append(f"{f'e{lead} ({share:.2f}, {bars})':>22}")
        lines.append(f"  {vname + ' vol':<14}" + "".join(cells))
    return "\n".join(lines)


def network_config(network) -> dict:
    """The architecture of a policy network as plain JSON (the `.pth` config and the Orbax meta agree)."""
    from jaxtrade import export

    return export.network_config(network)


# ------------------------------------------------------------------------------------------------------------
# The whole sequence


def resolve_symbols(cfg: SequenceConfig, out=sys.stdout) -> list[str]:
    run = cfg.run
    processed = Path(run.processed_data_dir)
    wanted = list(run.symbols)
    have = set(D.list_symbols(processed)) if processed.is_dir() else set()
    defaults = {"Nifty_2", "Bank_Nifty_5"}
    if (wanted == ["all"] and not have) or (set(wanted) <= defaults and not set(wanted) <= have):
        from data_tools.synth import ensure_default_data

        raw = Path(run.raw_data_dir)
        if not raw.is_dir() or not any(raw.iterdir()) or set(wanted) <= defaults:
            ensure_default_data(raw, processed, out=out)
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


def _finished_stage(cfg: SequenceConfig, symbol: str, stage: str):
    """(record, network, params) of a stage an earlier command finished in this run directory, else None."""
    from jaxtrade.checkpoints import restore_params
    from jaxtrade.export import network_from_config

    directory = _stage_dir(cfg, symbol, stage)
    if not directory.is_dir() or not any(directory.iterdir()):
        return None
    try:
        params, meta = restore_params(directory)
        if not meta.get("complete") or not meta.get("record") or not meta.get("network"):
            return None
        if meta.get("settings") is not None and meta["settings"] != stage_settings(cfg, stage):
            logging.info("%s %s: the finished stage in %s was trained with other settings; it is not considered "
                         "for the final model", symbol, stage, directory)
            return None
        return dict(meta["record"]), network_from_config(meta["network"]), params
    except Exception as e:  # an unreadable old checkpoint must not stop this run; it just does not compete
        logging.warning("%s %s: cannot read the earlier checkpoint in %s (%s); it is not considered for the "
                        "final model", symbol, stage, directory, e)
        return None


def select_final(records: dict[str, dict], metric: str) -> tuple[str, str]:
    """The best stage on validation by `metric` (higher is better; null ranks last). Returns (stage, why)."""
    def value(stage):
        v = records[stage]["validation"].get(metric)
        return -math.inf if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)

    ranked = sorted(records, key=lambda s: (value(s), list(STAGE_FILES).index(s)), reverse=True)
    best = ranked[0]
    parts = [f"{s} {_fmt(records[s]['validation'].get(metric))}" for s in ranked]
    why = f"highest validation {metric} ({', '.join(parts)})"
    return best, why


def _write_json_atomic(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_json_safe(obj), indent=2) + "\n")
    os.replace(tmp, path)


def run_sequence(cfg: SequenceConfig, out=sys.stdout) -> int:
    """Run the configured stages for every symbol, then the test-split report. Returns the exit code."""
    from jaxtrade import export

    t_start = time.perf_counter()
    symbols = resolve_symbols(cfg, out=out)
    # torch is an optional extra: without it the run trains, checkpoints (Orbax) and reports, and says that the
    # PyTorch exports were skipped instead of failing after the first stage.
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
    for i, symbol in enumerate(symbols):
        ctx = SymbolContext(cfg, symbol)
        contexts[symbol] = ctx
        synthetic = " (SYNTHETIC data)" if ctx.market.synthetic else ""
        out.write(f"== {symbol}{synthetic}: {ctx.market.num_bars:,} bars, {ctx.market.num_sessions} sessions, "
                  f"{ctx.market.bar_minutes}-minute; splits {dict(ctx.market.splits)}; lot size "
                  f"{float(ctx.train_params.lot_size[0]):g}\n")
        out.flush()
        summary_path = run_dir / symbol / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.exists() and not cfg.run.overwrite else {}
        summary.update({"symbol": symbol, "run": cfg.run.run_name, "synthetic": ctx.market.synthetic,
                        "config": cfg.to_dict(), "stages": summary.get("stages", {})})
        prev = None
        records: dict[str, dict] = {}
        stage_models[symbol] = {}
        sym_key = jax.random.fold_in(key, i)
        for j, stage in enumerate(cfg.run.stages):
            result = run_stage(cfg, ctx, stage, prev, jax.random.fold_in(sym_key, j))
            rec = result["record"]
            records[stage] = rec
            summary["stages"][stage] = rec
            stage_models[symbol][stage] = (result["network"], result["params"])
            if cfg.run.save_stage_models and can_export:
                path = models_dir / f"{symbol}_{STAGE_FILES[stage]}.pth"
                export.export_pth(path, result["params"], result["network"], symbol=symbol, stage=stage,
                                  obs_names=list(E.OBS_NAMES), scaler=ctx.market.scaler.to_dict(),
                                  metrics=rec["validation"], extra={"gate_passed": rec["gate_passed"],
                                                                    "iterations": rec["iterations"],
                                                                    "training_env": _training_env(rec)})
                rec["model_file"] = str(path)
            _write_json_atomic(summary_path, summary)
            prev = result
            if not rec["gate_passed"] and cfg.progression.on_fail == "stop":
                failed_stop.append(f"{symbol} {stage}: {'; '.join(rec['gate_failures'])}")
                break
            if not cfg.progression.auto_progression and j + 1 < len(cfg.run.stages):
                out.write(f"{symbol}: auto_progression is off; stopping after {stage}. Run the same command "
                          f"again to go on to {cfg.run.stages[j + 1]}.\n")
                break
        if records and cfg.run.keep_best_models:
            # Stages finished by an earlier command (say `--stages ppo,moe,maml`, then `--stages ppo`) compete too:
            # the final model is the best of every finished stage, not of this command's.
            candidates, earlier = dict(records), {}
            for stage in STAGE_FILES:
                if stage not in candidates:
                    found = _finished_stage(cfg, symbol, stage)
                    if found is not None:
                        candidates[stage], earlier[stage] = found[0], found[1:]
            best, why = select_final(candidates, cfg.run.final_metric)
            network, params = stage_models[symbol][best] if best in stage_models[symbol] else earlier[best]
            path = models_dir / f"{symbol}_final_model.pth"
            if can_export:
                export.export_pth(path, params, network, symbol=symbol, stage="final", obs_names=list(E.OBS_NAMES),
                                  scaler=ctx.market.scaler.to_dict(), metrics=candidates[best]["validation"],
                                  extra={"selected_stage": best, "why": why,
                                         "training_env": _training_env(candidates[best])})
            summary["final_model"] = {"stage": best, "metric": cfg.run.final_metric, "why": why,
                                      "file": str(path) if can_export else None,
                                      "checkpoint": candidates[best].get("checkpoint")}
            final_models[symbol] = (network, params, best)
            _write_json_atomic(summary_path, summary)
            where = path if can_export else f"{candidates[best].get('checkpoint')} (Orbax; no .pth without PyTorch)"
            out.write(f"{symbol}: final model = {best} stage ({why}) -> {where}\n")
    if cfg.run.generate_reports and final_models:
        report_path = write_report(cfg, contexts, stage_models, final_models, out)
        out.write(f"report: {report_path}\n")
    out.write(f"sequence finished in {time.perf_counter() - t_start:.1f} s; models in {models_dir}\n")
    out.flush()
    if failed_stop:
        raise GateFailure("; ".join(failed_stop) + " (on_fail=stop)")
    return 0


def write_report(cfg: SequenceConfig, contexts, stage_models, final_models, out) -> Path:
    """Backtest the final model (and each stage, and the baselines) on the report split of every symbol."""
    from jaxtrade import policies, report

    out_dir = Path(cfg.run.output_dir)
    per_symbol = []
    regime_sections = []
    for symbol, (network, params, best) in final_models.items():
        ctx = contexts[symbol]
        split = cfg.run.report_split
        pols = [policy_of(network, params, f"final ({best})", source=f"{symbol}_final_model.pth ({best})")]
        if cfg.run.compare_stages:
            pols += [policy_of(net, prm, stage, source=stage) for stage, (net, prm) in stage_models[symbol].items()]
        pols += [policies.make_baseline(name, max_lots=cfg.env.max_lots, scaler=ctx.market.scaler)
                 for name in policies.BASELINES]
        results = ctx.backtest_many(pols, split)
        main, others = results[0], results[1:]
        report.write_symbol_outputs(main, others, out_dir / symbol)
        per_symbol.append((main, others))
        regimes = None
        if "moe" in stage_models[symbol]:
            net, prm = stage_models[symbol]["moe"]
            png = out_dir / symbol / "expert_regimes.png"
            regimes = dict(expert_regimes(net, prm, ctx, split, png), stage="moe")
            regime_sections.append(render_expert_regimes(regimes))
        if cfg.run.tearsheet:
            from jaxtrade import tearsheet
            summary = Path(cfg.run.checkpoint_dir) / cfg.run.run_name / symbol / "summary.json"
            for notice in tearsheet.write_tearsheet(main, others, out_dir / symbol / "tearsheet.html",
                                                    expert_regimes=regimes,
                                                    adaptation=tearsheet.summary_adaptation(summary)):
                out.write(f"note: {notice}\n")
    header = [f"run {cfg.run.run_name}; split {cfg.run.report_split}; stages {','.join(cfg.run.stages)}",
              seed_targets_section(per_symbol)]
    text = report.render_report(per_symbol, header_lines=header)
    if regime_sections:
        text += "\n" + "\n\n".join(regime_sections) + "\n"
    path = Path(cfg.run.report_file) if cfg.run.report_file else out_dir / f"{cfg.run.run_name}_report.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    out.write(text)
    return path


def seed_targets_section(per_symbol) -> str:
    """The seed guide's performance targets and which the final model meets on the report split."""
    lines = ["Seed guide targets (win rate 40-50%, profit factor 1.2-1.8, max drawdown < 25%, Sharpe > 1.0):"]
    for main, _ in per_symbol:
        m = main.metrics
        checks = []
        wr, pf, dd, sh = (m.get(k) for k in ("win_rate", "profit_factor", "max_drawdown", "sharpe"))
        checks.append(f"win rate {_fmt(wr)} {'met' if wr is not None and wr >= 0.40 else 'NOT met'}")
        checks.append(f"profit factor {_fmt(pf)} {'met' if pf is not None and pf >= 1.2 else 'NOT met'}")
        checks.append(f"max drawdown {_fmt(dd)} {'met' if dd is not None and dd < 0.25 else 'NOT met'}")
        checks.append(f"Sharpe {_fmt(sh)} {'met' if sh is not None and sh > 1.0 else 'NOT met'}")
        lines.append(f"  {main.symbol} ({main.split}): " + "; ".join(checks))
    return "\n".join(lines)
