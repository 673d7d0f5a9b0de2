"""The sequence's three stages: which trainer each builds from the run's config and the previous stage, what
settings identify a trained stage, and how each is judged on validation (DESIGN section 4).

A trainer sees `(config, env_params, network)`: this module is where the pipeline's config, the symbol's
training env and the previous stage's policy become those.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import jax
from absl import logging

from jaxtrade import data as D, gates as G
from jaxtrade.agents import maml, moe, ppo
from jaxtrade.config import SequenceConfig
from jaxtrade.errors import InputError
from jaxtrade.evaluation import adaptation, regimes
from jaxtrade.jsonio import to_json
from jaxtrade.pipeline.context import SymbolContext
from jaxtrade.policies import network_policy
from jaxtrade.sharding import is_writer

STAGE_FILES = {"ppo": "ppo_stage1", "moe": "moe_stage2", "maml": "maml_stage3_final"}
# The config groups a stage's training depends on (its gate is judged afresh from the record, not stored here).
STAGE_SETTINGS = {"ppo": ("env", "ppo"), "moe": ("env", "ppo", "moe"), "maml": ("env", "ppo", "moe", "maml")}


def stage_dir(cfg: SequenceConfig, symbol: str, stage: str) -> Path:
    return Path(cfg.run.checkpoint_dir) / cfg.run.run_name / symbol / stage


def stage_settings(cfg: SequenceConfig, stage: str) -> dict:
    """What trained `stage`, JSON-normalised: its config groups less the budget (`num_iterations`, and the early
    stopping patience: a larger budget is not a different run), the seed and, after stage 1, transfer_learning."""
    settings: dict[str, Any] = {"seed": cfg.run.seed}
    if stage != "ppo":
        settings["transfer_learning"] = cfg.run.transfer_learning
    for group in STAGE_SETTINGS[stage]:
        fields = dataclasses.asdict(cfg.groups[group])
        fields.pop("num_iterations", None)
        fields.pop("early_stopping_patience", None)
        settings[group] = fields
    return json.loads(json.dumps(to_json(settings)))


def settings_diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    """`--group.field old -> new` for every setting that differs."""
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += settings_diff(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"--{prefix}{k} {a!r} -> {b!r}")
    return out


@dataclasses.dataclass
class Stage:
    """A stage ready to train: its trainer (the `agents.base` contract), the parameters it starts from (None:
    the trainer's own initialisation), its planned iterations, and the learning rate an extension halves."""

    name: str
    trainer: Any
    init_params: Any
    iterations: int
    lr_field: str
    base_lr: float

    def with_lr_scale(self, scale: float) -> Any:
        """The trainer at `scale` x its configured learning rate (a hyperparameter leaf: no recompilation)."""
        return self.trainer.with_hparams(**{self.lr_field: self.base_lr * scale})


def build_stage(cfg: SequenceConfig, ctx: SymbolContext, stage: str, prev_params) -> Stage:
    """The trainer of `stage` on `ctx`'s training env; `prev_params`: the previous stage's policy, which the MoE
    experts (and MAML, from a stage-1 policy or the stage-2 mixture) start from when transfer learning is on."""
    start = prev_params if cfg.run.transfer_learning else None
    env_params = ctx.train_params
    if stage == "ppo":
        return Stage(stage, ppo.make_trainer(cfg.ppo, env_params), None, cfg.ppo.num_iterations, "learning_rate",
                     cfg.ppo.learning_rate)
    if stage == "moe":
        ppo_hidden = tuple(cfg.ppo.hidden_sizes)
        if start is not None and (cfg.moe.expert_hidden_dim < max(ppo_hidden, default=0)
                                  or cfg.moe.expert_num_layers != len(ppo_hidden)):
            raise InputError(
                f"--moe.expert_hidden_dim={cfg.moe.expert_hidden_dim} with --moe.expert_num_layers="
                f"{cfg.moe.expert_num_layers} cannot hold the stage-1 network (--ppo.hidden_sizes="
                f"{','.join(map(str, ppo_hidden))}) that every expert starts from; widen the experts, match the "
                f"layer count, or pass --transfer_learning=false")
        trainer = moe.make_trainer(cfg.moe, cfg.ppo, env_params, init_from=start)
        return Stage(stage, trainer, None, cfg.moe.num_iterations, "learning_rate", cfg.ppo.learning_rate)
    trainer = maml.make_trainer(cfg.maml, cfg.ppo, env_params, network=cfg.moe.make_network(env_params.num_actions),
                                moe_config=cfg.moe)
    return Stage(stage, trainer, start, cfg.maml.num_iterations, "meta_learning_rate", cfg.maml.meta_learning_rate)


# ------------------------------------------------------------------------------------------------------------
# Judging a stage on validation


def judge(cfg: SequenceConfig, ctx: SymbolContext, stage: str, network, params, iterations: int
          ) -> tuple[dict, list[str], dict]:
    """(validation backtest metrics, reasons the gate failed (empty: passed), extra record entries) of a trained
    stage: the validation backtest under the run's market rules and the stage's gate (`jaxtrade.gates`); MAML's
    gate reads its held-out adaptation evaluation, which the record keeps."""
    validation = ctx.backtest(network_policy(network, params, f"{stage} (validation)"), cfg.run.eval_split).metrics
    if stage != "maml":
        return validation, G.check_gate(validation, cfg.groups[f"{stage}_gate"], iterations)[1], {}
    evaluation = heldout_adaptation(cfg, ctx, network, params)
    reasons = G.check_maml_gate(evaluation, cfg.maml_gate, iterations, validation)
    return validation, reasons, {"adaptation": to_json(evaluation)}


def heldout_adaptation(cfg: SequenceConfig, ctx: SymbolContext, network, params) -> dict:
    """MAML's held-out evaluation: `maml.evaluation_steps` windows of the eval split of the trained symbol (a
    later time) and, when another processed symbol exists (`--maml.cross_symbol` or the first other one), of
    that never-trained symbol; every task's env from the run's market rules."""
    split, config = cfg.run.eval_split, cfg.maml
    _, own_params = ctx.split_params(split)
    own = adaptation.window_tasks(own_params, ctx.market.splits[split], config.evaluation_steps, config,
                                  name=f"{ctx.symbol}/{split}")
    other = config.cross_symbol
    if not other:
        try:
            other = next((s for s in D.list_symbols(cfg.run.processed_data_dir) if s != ctx.symbol), "")
        except InputError:  # no directory listing: no cross-symbol check
            other = ""
    cross = None
    if other and other != ctx.symbol:
        market, params_other = ctx.split_params(split, other)
        cross = adaptation.window_tasks(params_other, market.splits[split], config.evaluation_steps, config,
                                        name=f"{other}/{split}")
    return adaptation.evaluate_heldout(network, jax.tree.map(jax.numpy.asarray, params), own, cross, config,
                                       cfg.ppo, split=split, own_symbol=ctx.symbol, cross_symbol=other or None,
                                       speed_fraction=cfg.maml_gate.speed_fraction)


def expert_regimes(network, params, ctx: SymbolContext, split: str, png_path: Path) -> dict:
    """Which expert leads in which market condition (volatility terciles x trend) on `split`, with a heat-map PNG
    beside the MoE checkpoints."""
    table = regimes.expert_regime_table(network, params, ctx.market, split=split, env_params=ctx.eval_params(split))
    if is_writer():
        regimes.plot_expert_regimes(table, png_path)
    table["heatmap"] = str(png_path) if png_path.exists() else None
    return table


def fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def log_result(symbol: str, stage: str, iterations: int, wall: float, validation: dict, passed: bool,
               reasons: list[str]) -> None:
    status = "passed" if passed else f"FAILED ({'; '.join(reasons)})"
    logging.info("%s %s: %d iterations in %.1f s; validation win %s pf %s dd %s sharpe %s; gate %s", symbol, stage,
                 iterations, wall, *(fmt(validation.get(k)) for k in ("win_rate", "profit_factor", "max_drawdown",
                                                                      "sharpe")), status)
