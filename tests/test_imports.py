"""The house's shape (DESIGN section 1): imports run one way, read from the source with `ast` (imports inside
functions count: they hide cycles, they do not remove them), no cycles, no library module over about 400 lines,
and one path from settings to market rules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("jaxtrade", "experiments", "data_tools")
MAX_LINES = 400

# Lower layers never import higher ones. Within a layer, imports are allowed but must not form a cycle.
LAYERS = (
    ("jaxtrade", "jaxtrade.errors", "jaxtrade.atomic", "jaxtrade.jsonio", "jaxtrade.cli", "jaxtrade.contracts", "jaxtrade.features",
     "jaxtrade.costs", "jaxtrade.data", "jaxtrade.metric_log", "jaxtrade.tfevents", "jaxtrade.sharding"),
    ("jaxtrade.env", "jaxtrade.networks", "jaxtrade.ensemble", "jaxtrade.metrics", "jaxtrade.sharpe_ci",
     "data_tools"),  # data_tools never reaches agents
    ("jaxtrade.agents",),  # trainers: env, networks, rollout; nothing of gates, evaluation or the pipeline
    ("jaxtrade.gates", "jaxtrade.evaluation", "jaxtrade.policies", "jaxtrade.backtest", "jaxtrade.report",
     "jaxtrade.export", "jaxtrade.checkpoints", "jaxtrade.config", "jaxtrade.tearsheet", "jaxtrade.tearsheet_context",
     "jaxtrade.live", "jaxtrade.flag_help"),
    ("jaxtrade.pipeline",),
    ("experiments",),
)


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _layer(module: str) -> int:
    best, rank = -1, None
    for i, names in enumerate(LAYERS):
        for name in names:
            within = module == name or (module.startswith(name + ".") and name != "jaxtrade")
            if within and len(name) > best:
                best, rank = len(name), i
    assert rank is not None, f"{module} is in no layer of the house: add it to LAYERS"
    return rank


def _imports(module: str) -> set[str]:
    """The project modules `module` imports anywhere in its source (resolved to existing modules)."""
    tree = ast.parse(MODULES[module].read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            subs = [f"{node.module}.{a.name}" for a in node.names]
            names = [s for s in subs if s in MODULES] or [node.module]
            if len(names) < len(subs) and node.module not in names:
                names.append(node.module)  # `from pkg import function, submodule`
        else:
            continue
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


GRAPH = {m: _imports(m) for m in MODULES}


def test_every_module_has_a_layer():
    for module in MODULES:
        _layer(module)


def test_imports_run_one_way():
    reverse = [f"{a} (layer {_layer(a)}) imports {b} (layer {_layer(b)})"
               for a, deps in GRAPH.items() for b in deps if _layer(b) > _layer(a)]
    assert not reverse, "\n".join(reverse)


def test_no_import_cycles():
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for d in sorted(GRAPH[m]):
            if state.get(d) == 1:
                pytest.fail("import cycle: " + " -> ".join(stack[stack.index(d):] + [d]))
            if d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m)


def test_the_checks_catch_a_reverse_edge_and_a_cycle(monkeypatch):
    """The two tests above can fail: a trainer importing the pipeline is both."""
    monkeypatch.setitem(GRAPH, "jaxtrade.agents.maml", GRAPH["jaxtrade.agents.maml"] | {"jaxtrade.pipeline.stages"})
    with pytest.raises(AssertionError, match="jaxtrade.agents.maml .layer 2. imports jaxtrade.pipeline.stages"):
        test_imports_run_one_way()
    with pytest.raises(pytest.fail.Exception, match="import cycle: .*jaxtrade.agents.maml"):
        test_no_import_cycles()


def test_trainers_see_config_env_params_and_network_only():
    # jaxtrade.sharding: where the batch axes go on a device mesh (a no-op without one)
    allowed = ("jaxtrade.agents", "jaxtrade.env", "jaxtrade.networks", "jaxtrade.errors", "jaxtrade.sharding")
    for module, deps in GRAPH.items():
        if module.startswith("jaxtrade.agents"):
            bad = [d for d in deps if not d.startswith(allowed)]
            assert not bad, f"{module} imports {bad}"


def test_no_library_module_over_about_400_lines():
    long = {m: n for m, p in MODULES.items() if m.startswith("jaxtrade")
            for n in [len(p.read_text().splitlines())] if n > MAX_LINES}
    assert not long, long


def test_one_path_from_settings_to_market_rules():
    """Only `env.env_params` calls the low-level `make_params` (tests may, to build odd markets)."""
    callers = sorted(m for m, p in MODULES.items() if m != "jaxtrade.env.params"
                     and any(isinstance(n, ast.Attribute) and n.attr == "make_params"
                             or isinstance(n, ast.Name) and n.id == "make_params"
                             for n in ast.walk(ast.parse(p.read_text()))))
    assert callers == [], callers
