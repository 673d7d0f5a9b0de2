"""Typed configuration of the training sequence, with the seed's defaults (DESIGN sections 4, 9, 10).

Three layers, later wins: the dataclass defaults (= the seed's production values), the seed's YAML layout
(`--config config/training_sequence.yaml`, read by `from_seed_yaml`), and flags given on the command line.
Every field is a flag: top-level run fields as `--symbols`, `--seed`, ...; group fields as `--ppo.learning_rate`,
`--moe.num_experts`, `--ppo_gate.min_win_rate`, `--progression.on_fail`, `--env.cost_model`, ...
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from jaxtrade.agents.maml import MAMLConfig
from jaxtrade.agents.moe import MoEConfig
from jaxtrade.agents.ppo import PPOConfig
from jaxtrade.data import SPLITS
from jaxtrade.env import EnvConfig
from jaxtrade.errors import InputError
from jaxtrade.evaluation.folds import WalkForwardConfig
from jaxtrade.gates import GateConfig, MAMLGateConfig
from jaxtrade.jsonio import to_json
from jaxtrade.metric_log import check_backends

ON_FAIL = ("continue", "extend", "stop")
STAGES = ("ppo", "moe", "maml")
FINAL_METRICS = ("sharpe", "sortino", "total_return", "profit_factor", "win_rate", "calmar")
FINAL_MODELS = ("best", "ensemble")
ENSEMBLE_RULES = ("mean", "vote")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    symbols: tuple[str, ...] = ("Nifty_2", "Bank_Nifty_5")  # symbols to train, or all (every processed symbol)
    processed_data_dir: str = "data/processed"  # folder of processed {symbol}.parquet files
    raw_data_dir: str = "data/raw"  # raw files; only used to make the synthetic default on a fresh clone
    checkpoint_dir: str = "checkpoints"  # run outputs go to {checkpoint_dir}/{run_name}/
    run_name: str = "default"  # name of this run's folder under checkpoint_dir
    stages: tuple[str, ...] = STAGES  # stages to run, in this order
    seed: int = 0  # random seed of training (same seed and settings, same run)
    seeds: int = 1  # seeds of each stage trained side by side in one program (vmap): seed, seed+1, ...
    overwrite: bool = False  # retrain stages from scratch instead of skipping or resuming them
    save_checkpoints: bool = True  # save Orbax checkpoints while training (a stopped run resumes from them)
    checkpoint_every: int = 50  # iterations between Orbax saves (the seed's monitoring.checkpoint_frequency)
    keep_checkpoints: int = 3  # checkpoints kept per stage (older ones are deleted)
    save_stage_models: bool = True  # export each stage's .pth model
    keep_best_models: bool = True  # write {symbol}_final_model.pth, the best stage on validation
    transfer_learning: bool = True  # each stage starts from the previous stage's policy
    final_metric: str = "sharpe"  # validation metric that picks the final model
    generate_reports: bool = True  # backtest every symbol on the report split at the end
    compare_stages: bool = True  # the report lists every stage beside the baselines
    output_dir: str = "reports"  # folder of the report and the per-symbol backtest outputs
    report_file: str = ""  # the text report (empty: {output_dir}/{run_name}_report.txt)
    eval_split: str = "val"  # split the gates and the final-model choice read
    report_split: str = "test"  # split the final report backtests
    log_every: int = 10  # iterations between progress lines and training-curve points
    tearsheet: bool = True  # the report also writes {output_dir}/{symbol}/tearsheet.html
    risk_free_rate: float = 0.0  # annual rate (0.065 = 6.5%) that Sharpe and Sortino subtract everywhere
    eval_every: int = 0  # iterations between on-device validation evaluations of a stage (0: none); early stopping
    final_model: str = "best"  # best: the best stage on validation; ensemble: the --seeds members of the best stage
    ensemble_rule: str = "mean"  # mean: mean of the members' action probabilities; vote: majority of their actions
    # where the training curves go (every metric, each log_every iterations): metrics.jsonl beside the checkpoints,
    # TensorBoard files in {checkpoint_dir}/{run_name}/tensorboard/, or W&B runs (offline without network)
    log_backend: tuple[str, ...] = ("jsonl",)

    def __post_init__(self):
        bad = [s for s in self.stages if s not in STAGES]
        if bad or not self.stages:
            raise InputError(f"--stages: unknown stage(s) {', '.join(bad) or '(none)'} (choose from "
                             f"{', '.join(STAGES)})")
        if list(self.stages) != sorted(self.stages, key=STAGES.index):
            raise InputError(f"--stages must be in the order ppo, moe, maml; got {','.join(self.stages)}")
        if self.final_metric not in FINAL_METRICS:
            raise InputError(f"--final_metric: {self.final_metric!r} is not one of {', '.join(FINAL_METRICS)}")
        if not isinstance(self.seeds, int) or self.seeds < 1:
            raise InputError(f"--seeds must be an integer >= 1, got {self.seeds}")
        object.__setattr__(self, "log_backend", check_backends(self.log_backend))
        if self.checkpoint_every < 1:
            raise InputError(f"--checkpoint_every must be >= 1, got {self.checkpoint_every}")
        if not -1.0 < self.risk_free_rate < 1.0:
            raise InputError(f"--risk_free_rate: expected an annual rate as a fraction (0.065 for 6.5%), got "
                             f"{self.risk_free_rate}")
        if self.eval_every < 0:
            raise InputError(f"--eval_every must be >= 0 (0: no evaluations), got {self.eval_every}")
        if self.final_model not in FINAL_MODELS:
            raise InputError(f"--final_model: {self.final_model!r} is not one of {', '.join(FINAL_MODELS)}")
        if self.final_model == "ensemble" and self.seeds < 2:
            raise InputError(f"--final_model=ensemble needs --seeds N with N >= 2 (the ensemble's members), got "
                             f"--seeds {self.seeds}")
        if self.ensemble_rule not in ENSEMBLE_RULES:
            raise InputError(f"--ensemble_rule: {self.ensemble_rule!r} is not one of {', '.join(ENSEMBLE_RULES)}")
        for name in ("eval_split", "report_split"):  # checked now, not after hours of training
            if getattr(self, name) not in SPLITS:
                raise InputError(f"--{name}: unknown split {getattr(self, name)!r} (choose from {', '.join(SPLITS)})")


@dataclasses.dataclass(frozen=True)
class ProgressionConfig:
    auto_progression: bool = True  # go on to the next stage automatically
    on_fail: str = "extend"  # what a failed gate does: continue, extend (train more, check again), stop (exit 1)
    max_extension_iterations: int = 200  # most iterations an extension may add (the seed's max_extension_episodes)
    extension_chunk: int = 50  # iterations per extension before the gate is checked again
    hyperparameter_tuning: bool = True  # halve the learning rate at each extension

    def __post_init__(self):
        if self.on_fail not in ON_FAIL:
            raise InputError(f"--progression.on_fail: {self.on_fail!r} is not one of {', '.join(ON_FAIL)}")


def _group_types() -> dict[str, type]:
    return {"env": EnvConfig, "ppo": PPOConfig, "ppo_gate": GateConfig, "progression": ProgressionConfig,
            "moe": MoEConfig, "moe_gate": GateConfig, "maml": MAMLConfig, "maml_gate": MAMLGateConfig,
            "eval": WalkForwardConfig}


@dataclasses.dataclass(frozen=True)
class SequenceConfig:
    run: RunConfig
    groups: Mapping[str, Any]  # group name -> config dataclass instance

    def __post_init__(self):
        """What no single group can check: every stage that runs trains at least one iteration, and the splits
        the run judges (`--eval_split`) and reports on (`--report_split`) are not empty."""
        for stage in self.run.stages:
            n = getattr(self.groups.get(stage), "num_iterations", 1)
            if n < 1:
                raise InputError(f"--{stage}.num_iterations must be >= 1 for a stage that runs (--stages="
                                 f"{','.join(self.run.stages)}), got {n}")
        env = self.groups.get("env")
        fractions = dict(zip(("train", "val", "test"), getattr(env, "split_fractions", ())))
        needed = [("--eval_split", self.run.eval_split)]
        if self.run.generate_reports:
            needed.append(("--report_split", self.run.report_split))
        for flag, split in needed:
            if split in fractions and not fractions[split] > 0:
                raise InputError(f"--env.split_fractions={','.join(f'{f:g}' for f in env.split_fractions)} leaves "
                                 f"the {split} split empty, and {flag}={split} needs it")
        for stage in self.run.stages:
            patience = getattr(self.groups.get(stage), "early_stopping_patience", 0)
            if patience and not self.run.eval_every:
                raise InputError(f"--{stage}.early_stopping_patience={patience} needs --eval_every K > 0 (how many "
                                 f"iterations apart the validation evaluations are)")
            if patience and self.run.seeds > 1:
                # The seeds train in one program; each would stop at its own iteration.
                raise InputError(f"--{stage}.early_stopping_patience={patience} with --seeds {self.run.seeds}: early "
                                 f"stopping runs one seed at a time; use --seeds 1 (or no patience)")

    def __getattr__(self, name):
        groups = object.__getattribute__(self, "groups")
        if name in groups:
            return groups[name]
        raise AttributeError(name)

    def to_dict(self) -> dict:
        return {"run": to_json(self.run), **{k: to_json(v) for k, v in self.groups.items()}}


def default_groups() -> dict[str, Any]:
    defaults = {name: cls() for name, cls in _group_types().items()}
    defaults["ppo_gate"] = GateConfig(min_win_rate=0.35, min_profit_factor=0.8, max_drawdown=0.40, min_iterations=50)
    defaults["moe_gate"] = GateConfig(min_win_rate=0.40, min_profit_factor=1.0, max_drawdown=0.35, min_iterations=100)
    return defaults


def default_config() -> SequenceConfig:
    return SequenceConfig(run=RunConfig(), groups=default_groups())


# ------------------------------------------------------------------------------------------------------------
# Field types, for flags and for checking YAML values


def field_kind(cls, name: str):
    """('int'|'float'|'bool'|'str'|'list_int'|'list_float'|'list_str', optional)."""
    hints = typing.get_type_hints(cls)
    tp = hints[name]
    optional = False
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) < len(typing.get_args(tp))
        tp = args[0]
        origin = typing.get_origin(tp)
    if origin in (tuple, list):
        inner = typing.get_args(tp)[0]
        return f"list_{inner.__name__}", optional
    return tp.__name__, optional


def coerce(value, kind: str, optional: bool, where: str):
    """Check a YAML/flag value against a field kind; return it converted."""
    if value is None:
        if optional:
            return None
        raise InputError(f"{where}: null is not allowed (expected {kind})")
    if kind == "bool":
        if isinstance(value, bool):
            return value
    elif kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):  # list items from a flag ("32,32")
            try:
                return int(value.strip())
            except ValueError:
                pass
    elif kind == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # list items from a flag; YAML 1.1 reads `1e-4` (no dot) as text
            try:
                number = float(value.strip())
            except ValueError:
                number = None
            if number is not None and number == number and abs(number) != float("inf"):
                return number
    elif kind == "str":
        if isinstance(value, str):
            return value
    elif kind.startswith("list_"):
        inner = kind[5:]
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if isinstance(value, (list, tuple)):
            return tuple(coerce(v, inner, False, where) for v in value)
    expected = {"list_int": "a list of integers", "list_float": "a list of numbers",
                "list_str": "a list of strings", "float": "a number"}.get(kind, f"a{'n' if kind == 'int' else ''} {kind}")
    raise InputError(f"{where}: expected {expected}, got {type(value).__name__} {value!r}")


def apply_overrides(config: SequenceConfig, overrides: Mapping[str, Any], where: str = "") -> SequenceConfig:
    """overrides: {"seed": 1, "ppo.learning_rate": 3e-4, ...} (values already of the right type)."""
    run_changes: dict[str, Any] = {}
    group_changes: dict[str, dict[str, Any]] = {}
    for key, value in overrides.items():
        if "." in key:
            group, field = key.split(".", 1)
            if group not in config.groups or field not in {f.name for f in dataclasses.fields(config.groups[group])}:
                raise InputError(f"{where}unknown setting {key!r}")
            group_changes.setdefault(group, {})[field] = value
        else:
            if key not in {f.name for f in dataclasses.fields(RunConfig)}:
                raise InputError(f"{where}unknown setting {key!r}")
            run_changes[key] = value
    try:
        run = dataclasses.replace(config.run, **run_changes)
    except (TypeError, ValueError) as e:
        raise InputError(f"{where}{e}") from None
    groups = dict(config.groups)
    for group, changes in group_changes.items():
        try:
            groups[group] = dataclasses.replace(groups[group], **changes)
        except (TypeError, ValueError) as e:
            # Name the flag the user typed (--ppo.learning_rate), not the dataclass field (PPOConfig.learning_rate).
            raise InputError(f"{where}{str(e).replace(type(groups[group]).__name__ + '.', f'--{group}.')}") from None
    return SequenceConfig(run=run, groups=groups)


def env_overrides(flag_values, fields: Iterable[str], flag_of: Callable[[str], str]) -> dict:
    """{`EnvConfig` field: value} for the market-rule flags the user typed (absl's `present`), each converted to
    the field's type and checked, errors naming the command's spelling `flag_of(field)` (e.g. `--slippage-ticks`).
    Flags left at their defaults are not in it: a trained model's own rules stand for them."""
    out = {}
    for field in fields:
        flag = flag_values[flag_of(field).lstrip("-").replace("-", "_")]
        if not flag.present or flag.value is None:
            continue
        kind, optional = field_kind(EnvConfig, field)
        out[field] = coerce(flag.value, kind, optional, flag_of(field))
        try:
            EnvConfig().replace(**{field: out[field]})
        except InputError as e:
            raise InputError(str(e).replace(f"--env.{field}", flag_of(field))) from None
    return out


# ------------------------------------------------------------------------------------------------------------
# The seed's YAML layout (DESIGN section 10)

_TEXT = object()  # free text (str or list of str), accepted and kept out of the config
_CHECK_ALGORITHM = {"stage_1_ppo": "PPO", "stage_2_moe": "MOE", "stage_3_maml": "MAML"}

_STAGE_KEYS = {
    "stage_1_ppo": {"episodes": "ppo.num_iterations", "success_criteria": {
        "min_win_rate": "ppo_gate.min_win_rate", "min_profit_factor": "ppo_gate.min_profit_factor",
        "max_drawdown": "ppo_gate.max_drawdown"}},
    "stage_2_moe": {"episodes": "moe.num_iterations", "success_criteria": {
        "min_win_rate": "moe_gate.min_win_rate", "min_profit_factor": "moe_gate.min_profit_factor",
        "max_drawdown": "moe_gate.max_drawdown"}},
    "stage_3_maml": {"meta_iterations": "maml.num_iterations", "episodes": "maml.num_iterations",
                     "success_criteria": {
                         "min_adaptation_speed": "maml_gate.min_adaptation_speed",
                         "min_cross_symbol_performance": "maml_gate.min_cross_symbol_performance"}},
}
SEED_LAYOUT: dict[str, Any] = {
    "training_sequence": {
        name: {"algorithm": _TEXT, "description": _TEXT, "objectives": _TEXT, "prerequisites": _TEXT, **keys}
        for name, keys in _STAGE_KEYS.items()},
    "training_params": {
        "ppo": {"learning_rate": "ppo.learning_rate", "batch_size": "ppo.minibatch_size", "gamma": "ppo.gamma",
                "gae_lambda": "ppo.gae_lambda", "clip_epsilon": "ppo.clip_epsilon", "k_epochs": "ppo.update_epochs",
                "num_envs": "ppo.num_envs", "num_steps": "ppo.num_steps", "entropy_coef": "ppo.ent_coef",
                "value_coef": "ppo.vf_coef", "max_grad_norm": "ppo.max_grad_norm"},
        "moe": {"num_experts": "moe.num_experts", "expert_hidden_dim": "moe.expert_hidden_dim",
                "gating_hidden_dim": "moe.gating_hidden_dim", "gating_temperature": "moe.gating_temperature",
                "diversity_loss_weight": "moe.diversity_loss_weight"},
        "maml": {"meta_learning_rate": "maml.meta_learning_rate", "inner_loop_steps": "maml.inner_loop_steps",
                 "evaluation_steps": "maml.evaluation_steps", "meta_batch_size": "maml.meta_batch_size",
                 "inner_learning_rate": "maml.inner_learning_rate"},
    },
    "progression_rules": {
        "auto_progression": "progression.auto_progression",
        "advancement_criteria": {
            "stage_1_to_2": {"min_episodes": "ppo_gate.min_iterations", "min_win_rate": "max:ppo_gate.min_win_rate",
                             "min_profit_factor": "max:ppo_gate.min_profit_factor"},
            "stage_2_to_3": {"min_episodes": "moe_gate.min_iterations", "min_win_rate": "max:moe_gate.min_win_rate",
                             "min_profit_factor": "max:moe_gate.min_profit_factor"},
        },
        "fallback_strategies": {"extend_training": "special:extend_training",
                                "max_extension_episodes": "progression.max_extension_iterations",
                                "hyperparameter_tuning": "progression.hyperparameter_tuning"},
    },
    "monitoring": {"save_checkpoints": "save_checkpoints", "checkpoint_frequency": "checkpoint_every",
                   "generate_reports": "generate_reports", "compare_stages": "compare_stages"},
    "model_management": {"save_stage_models": "save_stage_models", "keep_best_models": "keep_best_models",
                         "transfer_learning": "transfer_learning", "model_naming_convention": _TEXT},
}


def _kind_of_target(config: SequenceConfig, target: str):
    if "." in target:
        group, field = target.split(".", 1)
        return field_kind(type(config.groups[group]), field)
    return field_kind(RunConfig, target)


def from_seed_yaml(path, config: SequenceConfig | None = None) -> SequenceConfig:
    """Read the seed's `config/training_sequence.yaml` onto `config` (default: the defaults)."""
    import yaml

    config = config or default_config()
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise InputError(f"--config: {path}: file not found") from None
    except yaml.YAMLError as e:
        raise InputError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise InputError(f"{path}: expected a mapping at the top level")
    overrides: dict[str, Any] = {}
    maxima: dict[str, float] = {}

    def walk(node, layout, trail):
        for key, value in node.items():
            where = f"{path}: {'.'.join(trail + [str(key)])}"
            if key not in layout:
                raise InputError(f"{where}: unknown key")
            spec = layout[key]
            if spec is _TEXT:
                if key == "algorithm" and isinstance(value, str):
                    stage = trail[-1]
                    if value.replace("-", "").upper() != _CHECK_ALGORITHM[stage]:
                        raise InputError(f"{where}: {value!r} cannot run as {stage} (expected "
                                         f"{_CHECK_ALGORITHM[stage]})")
                if not (isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))):
                    raise InputError(f"{where}: expected text, got {type(value).__name__}")
                continue
            if isinstance(spec, dict):
                if not isinstance(value, dict):
                    raise InputError(f"{where}: expected a mapping, got {type(value).__name__}")
                walk(value, spec, trail + [str(key)])
                continue
            if spec == "special:extend_training":
                coerce(value, "bool", False, where)
                overrides["progression.on_fail"] = "extend" if value else "continue"
                continue
            use_max = spec.startswith("max:")
            target = spec[4:] if use_max else spec
            kind, optional = _kind_of_target(config, target)
            converted = coerce(value, kind, optional, where)
            if use_max:
                maxima[target] = converted
            else:
                overrides[target] = converted

    walk(doc, SEED_LAYOUT, [])
    for target, value in maxima.items():  # advancement criteria: the stricter of the two wins
        current = overrides.get(target, getattr(config.groups[target.split(".")[0]], target.split(".")[1]))
        overrides[target] = value if current is None else max(current, value)
    return apply_overrides(config, overrides, where=f"{path}: ")
