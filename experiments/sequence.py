"""`python -m experiments.sequence --flagfile=experiments/nifty.flags` (or `jaxtrade-train`): the PPO -> MoE -> MAML
sequence.

Flags: every field of `jaxtrade.config` (top-level run fields as `--symbols`, `--seed`, ...; groups as
`--ppo.learning_rate`, `--moe.num_experts`, `--maml.inner_loop_steps`, `--ppo_gate.min_win_rate`,
`--progression.on_fail`, `--env.cost_model`, ...), plus `--config config/training_sequence.yaml` (the seed's
layout). Precedence: defaults < --config < flags given on the command line (or in a --flagfile).
Training curves: `--log_backend jsonl` (default), `tensorboard`, `wandb`; repeat the flag for several.
Exit codes: 0 done, 1 a gate failed with on_fail=stop, 2 bad flags or data, 3 a non-finite loss, gradient or
parameter, 143/130 stopped by SIGTERM/SIGINT (a checkpoint written; the same command resumes).
"""

from __future__ import annotations

import dataclasses
import sys

from absl import flags, logging

from jaxtrade import config as C, sharding
from jaxtrade.cli import run
from jaxtrade.errors import InputError
from jaxtrade.flag_help import flag_definition

FLAGS = flags.FLAGS
_DEFINED: dict[str, tuple[str, type, str, bool]] = {}  # flag -> (group or "", cls, field, optional)


def define_flags() -> None:
    if "config" in FLAGS:
        return
    flags.DEFINE_string("config", None, "The seed's training_sequence.yaml in its own layout (flags given on the "
                        "command line override it).")
    sharding.define_flags()
    defaults = C.default_config()
    for field in dataclasses.fields(C.RunConfig):
        _, optional = C.field_kind(C.RunConfig, field.name)
        define, args = flag_definition(C.RunConfig, field.name, getattr(defaults.run, field.name))
        define(field.name, *args)
        _DEFINED[field.name] = ("", C.RunConfig, field.name, optional)
    for group, instance in defaults.groups.items():
        cls = type(instance)
        for field in dataclasses.fields(cls):
            _, optional = C.field_kind(cls, field.name)
            name = f"{group}.{field.name}"
            define, args = flag_definition(cls, field.name, getattr(instance, field.name))
            define(name, *args)
            _DEFINED[name] = (group, cls, field.name, optional)


def config_from_flags() -> C.SequenceConfig:
    cfg = C.default_config()
    if FLAGS.config:
        cfg = C.from_seed_yaml(FLAGS.config, cfg)
    overrides = {}
    for name, (group, cls, field, optional) in _DEFINED.items():
        flag = FLAGS[name]
        if not flag.present:
            continue
        kind, _ = C.field_kind(cls, field)
        overrides[name] = C.coerce(flag.value, kind, optional, f"--{name}")
    if "symbols" in overrides and [s.lower() for s in overrides["symbols"]] == ["all"]:
        overrides["symbols"] = ("all",)
    return C.apply_overrides(cfg, overrides)


def main(argv) -> int:
    del argv
    from jaxtrade.pipeline import run_sequence, walk_forward

    logging.set_verbosity(logging.INFO)
    sharding.setup_from_flags()  # jax.distributed and the device mesh, before any computation
    cfg = config_from_flags()
    if walk_forward.active(cfg):  # --eval.walk_forward=K / --eval.*_sessions: the sequence on each fold
        return walk_forward.run_walk_forward(cfg, out=sys.stdout)
    return run_sequence(cfg, out=sys.stdout)


def run_main(argv=None) -> None:
    define_flags()
    run(main, argv, list_flags=["symbols", "stages"])


if __name__ == "__main__":
    run_main()
