"""docs/ keeps up with the code: every flag of every command, every metric, column and model file name is
documented; links resolve inside the repository; the licence file matches pyproject.toml."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
FLAG_SOURCES = ["data_tools/process.py", "data_tools/synth.py", "experiments/backtest.py", "experiments/adapt.py",
                "experiments/replay.py", "experiments/retrain.py",
                "experiments/bench.py", "experiments/bench_suite.py", "jaxtrade/sharding.py"]


def _defined_flags(path: Path) -> set[str]:
    text = path.read_text()
    return set(re.findall(r'DEFINE_\w+\(\s*"(\w+)"', text)) | set(re.findall(r'define\(flags\.DEFINE_\w+,\s*"(\w+)"',
                                                                                text))


def _sequence_flags() -> set[str]:
    from jaxtrade import config as C

    cfg = C.default_config()
    names = {f.name for f in dataclasses.fields(C.RunConfig)} | {"config"}
    for group, instance in cfg.groups.items():
        names |= {f"{group}.{f.name}" for f in dataclasses.fields(type(instance))}
    return names


def test_every_flag_is_in_the_command_line_reference():
    cli = (DOCS / "cli.md").read_text()
    missing = {}
    for source in FLAG_SOURCES:
        names = _defined_flags(ROOT / source)
        assert names, source  # the pattern still finds this command's flags
        missing[source] = sorted(n for n in names if f"`--{n}`" not in cli)
    missing["experiments/sequence.py"] = sorted(n for n in _sequence_flags() if f"`--{n}`" not in cli)
    assert not any(missing.values()), {k: v for k, v in missing.items() if v}


def test_metrics_columns_and_model_names_are_documented():
    from jaxtrade.backtest import EQUITY_COLUMNS, TRADE_COLUMNS
    from jaxtrade.features import FEATURE_NAMES
    from jaxtrade.metrics import METRIC_KEYS
    from jaxtrade.checkpoints import MODEL_FILES

    metrics = (DOCS / "metrics.md").read_text()
    assert [k for k in METRIC_KEYS if f"`{k}`" not in metrics] == []
    outputs = (DOCS / "outputs.md").read_text()
    assert [c for c in (*EQUITY_COLUMNS, *TRADE_COLUMNS) if f"`{c}`" not in outputs] == []
    data = (DOCS / "data.md").read_text()
    assert [f for f in FEATURE_NAMES if f"`{f}`" not in data] == []
    models = (DOCS / "models.md").read_text()
    assert [n for n in MODEL_FILES.values() if f"_{n}.pth" not in models] == []


@pytest.mark.parametrize("page", ["README.md", "BUILD.md", *(f"docs/{p.name}" for p in sorted(DOCS.glob("*.md")))])
def test_links_stay_inside_the_repository_and_resolve(page):
    text = (ROOT / page).read_text()
    assert "shared/DESIGN" not in text and "nse-facts" not in text
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if target.startswith("http"):
            continue
        resolved = (ROOT / page).parent / target
        assert resolved.exists() and ROOT in resolved.resolve().parents, f"{page}: {target}"


def test_license_matches_pyproject():
    licence = re.search(r'^license = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert licence and licence.group(1) == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
