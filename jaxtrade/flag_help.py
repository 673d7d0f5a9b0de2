"""Flags that explain themselves: a config field's flag help is the field's own comment (DESIGN section 9).

The help of `--ppo.learning_rate` is the comment on `PPOConfig.learning_rate`'s line (or the comment block
right above the field, or a `name: text` entry of the class docstring), made a sentence; absl adds the default.
Fields with a fixed set of values list them (`CHOICES`) and their flags refuse anything else. `flag_definition`
is how a command turns a field into a flag; `tests/test_flag_help.py` fails on a field without a comment.
"""

from __future__ import annotations

import functools
import inspect
import io
import re
import tokenize
from typing import Callable

from absl import flags

from jaxtrade import config as C
from jaxtrade.agents.ppo import PPOConfig
from jaxtrade.agents.moe import MoEConfig
from jaxtrade.costs import COST_MODELS
from jaxtrade.data import SPLITS
from jaxtrade.env import EnvConfig
from jaxtrade.gates import CROSS_SYMBOL_METRICS, MAMLGateConfig
from jaxtrade.metric_log import BACKENDS
from jaxtrade.networks import ACTIVATIONS

# (config class, field) -> the values its flag accepts.
CHOICES: dict[tuple[type, str], tuple[str, ...]] = {
    (C.RunConfig, "stages"): C.STAGES,
    (C.RunConfig, "final_metric"): C.FINAL_METRICS,
    (C.RunConfig, "eval_split"): SPLITS,
    (C.RunConfig, "report_split"): SPLITS,
    (C.RunConfig, "log_backend"): BACKENDS,
    (C.ProgressionConfig, "on_fail"): C.ON_FAIL,
    (EnvConfig, "cost_model"): COST_MODELS,
    (PPOConfig, "activation"): tuple(ACTIVATIONS),
    (MoEConfig, "activation"): tuple(ACTIVATIONS),
    (MAMLGateConfig, "cross_symbol_metric"): CROSS_SYMBOL_METRICS,
}
# Fields whose flag is given once per value (`--log_backend jsonl --log_backend tensorboard`).
REPEATABLE = {(C.RunConfig, "log_backend")}


def sentence(text: str) -> str:
    """`text` with a capital first letter and a full stop."""
    text = " ".join(text.split())
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "?", "!")) else text + "."


@functools.lru_cache(maxsize=None)
def field_docs(cls: type) -> dict[str, str]:
    """{field: its documentation}: the comment on the field's line, else the comment lines right above it, else
    the class docstring's `field: text` entry (indented continuation lines included)."""
    source = inspect.getsource(cls)
    fields = getattr(cls, "__dataclass_fields__", {})
    comments: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    lines = source.splitlines()
    docs: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        match = re.match(r"\s+(\w+)\s*:", line)
        if not match or match.group(1) not in fields or match.group(1) in docs or line.lstrip().startswith("#"):
            continue
        name = match.group(1)
        if number in comments and not line.lstrip().startswith("#"):
            docs[name] = comments[number]
            continue
        above, k = [], number - 1
        while k >= 1 and lines[k - 1].lstrip().startswith("#"):
            above.insert(0, comments[k])
            k -= 1
        if above:
            docs[name] = " ".join(above)
    for name, text in _docstring_entries(inspect.getdoc(cls) or "").items():
        if name in fields and name not in docs:
            docs[name] = text
    return docs


def _docstring_entries(doc: str) -> dict[str, str]:
    entries: dict[str, str] = {}
    current = None
    for line in doc.splitlines():
        match = re.match(r"(\w+(?: / \w+)*): (.*)", line)
        if match:
            names = match.group(1).split(" / ")
            current = names
            for name in names:
                entries[name] = match.group(2)
        elif current and line.startswith(" ") and line.strip():
            for name in current:
                entries[name] += " " + line.strip()
        else:
            current = None
    return entries


def field_help(cls: type, name: str) -> str:
    """The help of `name`'s flag: its documentation as a sentence ("" when it has none), with the choices of a
    comma-separated list flag (absl lists those of enum and multi-enum flags itself)."""
    text = sentence(field_docs(cls).get(name, ""))
    choices = CHOICES.get((cls, name))
    kind, _ = C.field_kind(cls, name)
    if choices and kind.startswith("list_") and (cls, name) not in REPEATABLE:
        text += f" Choices (comma-separated): {', '.join(choices)}."
    return text.strip()


def flag_definition(cls: type, field: str, default, help_text: str | None = None) -> tuple[Callable, tuple]:
    """(absl DEFINE function, its arguments after the name) for a flag of `cls.field`: the flag type of the
    field's type, enumerated fields as enums (absl refuses other values while parsing), `REPEATABLE` ones as
    multi-flags; help from `field_help`. The command calls `define(name, *args)` itself, so that absl files the
    flag under the command's module (what `--help` shows) and not this one."""
    kind, _ = C.field_kind(cls, field)
    text = help_text if help_text is not None else field_help(cls, field)
    choices = CHOICES.get((cls, field))
    if (cls, field) in REPEATABLE:
        return flags.DEFINE_multi_enum, (list(default), list(choices), text)
    if choices and kind == "str":
        return flags.DEFINE_enum, (default, list(choices), text)
    simple = {"bool": flags.DEFINE_bool, "int": flags.DEFINE_integer, "float": flags.DEFINE_float,
              "str": flags.DEFINE_string}
    if kind in simple:
        return simple[kind], (default, text)
    if kind.startswith("list_"):
        return flags.DEFINE_list, (None if default is None else [str(v) for v in default], text)
    raise TypeError(f"no flag type for {cls.__name__}.{field}: {kind}")
