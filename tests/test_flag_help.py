"""Flags that explain themselves: every flag's help is a sentence from the config field's own comment, enumerated
flags list their choices and refuse others, library flags (chex, absl) only under --helpfull, and the console
scripts of pyproject.toml run."""

from __future__ import annotations

import dataclasses
import importlib
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from absl import flags

from jaxtrade import config as C
from jaxtrade.flag_help import CHOICES, field_docs, field_help, flag_definition, sentence

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
COMMANDS = ("jaxtrade-train", "jaxtrade-process", "jaxtrade-backtest", "jaxtrade-adapt", "jaxtrade-replay",
            "jaxtrade-ablate")
TYPE_LINE = re.compile(r"\((default: .*|an? [\w ]+|integer[^)]*|a number[^)]*|[\w ]*separated list)\)$")


def config_classes() -> list[type]:
    return [C.RunConfig, *dict.fromkeys(type(g) for g in C.default_config().groups.values())]


def test_every_config_field_has_a_sentence_of_help():
    missing, not_sentences = [], []
    for cls in config_classes():
        for field in dataclasses.fields(cls):
            text = field_help(cls, field.name)
            if not text:
                missing.append(f"{cls.__name__}.{field.name}")
            elif not (text[0].isupper() and text.endswith(".")) or re.search(r"\b[A-Z]\w*Config\.", text):
                not_sentences.append(text)
    assert missing == [], "give these fields a comment on their line: " + ", ".join(missing)
    assert not_sentences == []


def test_help_comes_from_the_field_line_the_block_above_or_the_docstring():
    from jaxtrade.agents.maml import MAMLConfig
    from jaxtrade.agents.ppo import PPOConfig
    from jaxtrade.gates import MAMLGateConfig

    assert field_docs(PPOConfig)["learning_rate"] == "Adam step size"
    assert field_help(MAMLConfig, "window_sessions").startswith("Sessions per task window (clipped")  # docstring
    assert field_help(MAMLGateConfig, "cross_symbol_metric") == "Metric of the cross-symbol criterion."

    @dataclasses.dataclass
    class Example:
        """Doc.

        gamma: from the docstring,
          continued here.
        """

        # a block above
        # on two lines
        alpha: int = 1
        beta: str = "#not a comment"  # the line's own comment
        gamma: float = 0.5

    assert field_docs(Example) == {"alpha": "a block above on two lines", "beta": "the line's own comment",
                                   "gamma": "from the docstring, continued here."}
    assert sentence("ratio clip") == "Ratio clip." and sentence("Done.") == "Done."


def test_enumerated_flags_refuse_other_values_and_backends_repeat():
    fv = flags.FlagValues()
    for cls, field in [(C.ProgressionConfig, "on_fail"), (C.RunConfig, "log_backend"), (C.RunConfig, "stages")]:
        define, args = flag_definition(cls, field, getattr(cls(), field))
        define(field, *args, flag_values=fv)
    fv(["prog", "--log_backend", "tensorboard", "--log_backend=jsonl", "--on_fail=stop"])
    assert fv.log_backend == ["tensorboard", "jsonl"] and fv.on_fail == "stop"
    with pytest.raises(flags.IllegalFlagValueError, match="continue|extend|stop"):
        fv(["prog", "--on_fail=retry"])
    with pytest.raises(flags.IllegalFlagValueError, match="jsonl|tensorboard|wandb"):
        fv(["prog", "--log_backend=tensorbord"])
    assert "Choices (comma-separated): ppo, moe, maml." in fv["stages"].help
    assert set(CHOICES[(C.RunConfig, "final_metric")]) == set(C.FINAL_METRICS)


def flag_helps(text: str) -> dict[str, str]:
    """{flag: help} from absl's --help layout (type and default lines dropped)."""
    out, current = {}, None
    for line in text.splitlines():
        m = re.match(r"  --(?:\[no\])?([\w.]+): ?(.*)$", line)
        if m:
            current, out[m.group(1)] = m.group(1), m.group(2)
        elif current and line.startswith("    ") and not TYPE_LINE.match(line.strip()):
            out[current] += " " + line.strip()
        elif not line.startswith("    "):
            current = None
    return {k: re.sub(r";\s*repeat this option to specify a list of values$", "", re.sub(r"^<[^>]*>: ", "", v))
            for k, v in out.items()}


def test_console_scripts_are_declared_and_importable():
    assert set(COMMANDS) <= set(SCRIPTS)
    for name, target in SCRIPTS.items():
        module, _, function = target.partition(":")
        assert callable(getattr(importlib.import_module(module), function)), name


def test_help_of_every_command_is_sentences_with_choices_and_no_library_flags():
    bindir = Path(sys.executable).parent
    if not (bindir / "jaxtrade-train").exists():
        pytest.skip(f"the console scripts are not installed in {bindir} (pip install -e .)")
    runs = {(c, a): subprocess.Popen([str(bindir / c), a], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for c, a in [*((c, "--help") for c in COMMANDS), ("jaxtrade-train", "--helpfull"),
                         ("jaxtrade-train", "--env.cost_model=free")]}
    out = {key: (p.communicate(timeout=300), p.returncode) for key, p in runs.items()}
    for command in COMMANDS:
        (stdout, stderr), code = out[(command, "--help")]
        assert code == 0, (command, stderr[-2000:])
        helps = flag_helps(stdout)
        assert len(helps) >= 5, command
        assert "--chex" not in stdout and "--logtostderr" not in stdout, command
        assert not re.search(r"\b[A-Z]\w*Config\.\w+", stdout), command  # no dataclass paths
        bad = {k: v for k, v in helps.items() if not (v[:1].isupper() and v.rstrip().endswith("."))}
        assert bad == {}, command
    train = out[("jaxtrade-train", "--help")][0][0]
    assert flag_helps(train)["ppo.learning_rate"] == "Adam step size."
    for shown in ("--progression.on_fail: <continue|extend|stop>:", "--env.cost_model: <zero|bps|nse_futures|"
                  "nse_options>:", "--final_metric: <sharpe|sortino|total_return|profit_factor|win_rate|calmar>:",
                  "--log_backend: <jsonl|tensorboard|wandb>:"):
        assert shown in train.replace("\n    ", " ").replace("| ", "|"), shown
    assert "--chex_n_cpu_devices" in out[("jaxtrade-train", "--helpfull")][0][0]
    (_, stderr), code = out[("jaxtrade-train", "--env.cost_model=free")]
    assert code == 2 and len(stderr.strip().splitlines()) == 1 and "--env.cost_model=free" in stderr
    assert "nse_futures" in stderr
