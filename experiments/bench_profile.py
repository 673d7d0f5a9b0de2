"""`python -m experiments.bench profile`: where a trainer's compiled iteration spends its time, op by op.

One training iteration (rollout + GAE + update, or one MAML meta-iteration) is compiled as `bench all` compiles it
(`bench_programs.compile_trainer`), run `--repeats` times under `jax.profiler`, and every op event of the trace
is matched to the compiled module's instruction of that name and put in one of these classes:

  * products: a `dot` or `convolution`, or a fusion / custom call that contains one (XLA:CPU's library
    fusions of a product with its bias add, cuBLAS / oneDNN calls): what the roofline counts,
  * transcendentals: the rest of the fusions that evaluate tanh, exp, log, logistic, power, sqrt or rsqrt
    (activations, log-softmax, Adam's square root),
  * gathers: gather, scatter, dynamic slices and updates (the minibatch shuffles, env feature lookups),
  * other: every other elementwise op, reduction, copy, RNG and sort.

Shares are of op time (the sum of the ops' own durations; on a CPU two cores run ops at once, so it can exceed
the wall time). Control flow (`while`, `conditional`, `call`) is not an op of its own: its body's ops are
counted. This says what the arithmetic the roofline leaves out costs (BENCHMARKS.md, issue 13's bars). A
backend whose profiler names device kernels rather than instructions (a GPU) matches no op: the command says so
in one line.

    python -m experiments.bench profile [--stage ppo|moe|maml] [--configs default,throughput] [--repeats 3]
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import re
import tempfile

CLASSES = ("products", "transcendentals", "gathers", "other")
CONTROL_FLOW = frozenset({"while", "conditional", "call"})
TRANSCENDENTAL = frozenset({"tanh", "exponential", "exponential-minus-one", "log", "log-plus-one", "logistic",
                            "power", "sqrt", "rsqrt", "cbrt", "erf", "sine", "cosine", "atan2"})
GATHER = frozenset({"gather", "scatter", "dynamic-slice", "dynamic-update-slice"})
PRODUCT_TARGET = re.compile(r"gemm|matmul|dot|onednn|conv", re.IGNORECASE)

_COMPUTATION = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) ")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = ")
_OPCODE = re.compile(r" ([a-z][a-z0-9\-]*)\(")
_CALLS = re.compile(r"(?:calls|to_apply|body|condition|branch_computations)=\{?([^}]*?)\}?(?=, [a-z_]+=|$)")
_TARGET = re.compile(r'custom_call_target="([^"]+)"')


def parse_hlo(text: str) -> tuple[dict[str, tuple[str, list[str], str]], dict[str, list[str]]]:
    """Optimised HLO text -> ({instruction: (opcode, called computations, custom-call target)},
    {computation: [its instructions]}). Names drop the leading `%`."""
    instructions: dict[str, tuple[str, list[str], str]] = {}
    computations: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if not line.strip() or line.startswith("HloModule"):
            continue
        if not line[0].isspace() and line.rstrip().endswith("{"):
            m = _COMPUTATION.match(line)
            current = computations.setdefault(m.group(1), []) if m else None
            continue
        if line.strip() == "}":
            current = None
            continue
        m = _INSTRUCTION.match(line)
        if m is None or current is None:
            continue
        rest = line[m.end():]
        op = _OPCODE.search(rest)
        called = []
        for group in _CALLS.findall(rest):
            called += [c.strip().lstrip("%") for c in group.split(",") if c.strip()]
        target = _TARGET.search(rest)
        instructions[m.group(1)] = (op.group(1) if op else "", called, target.group(1) if target else "")
        current.append(m.group(1))
    return instructions, computations


def classify(name: str, instructions, computations) -> str | None:
    """The class (`CLASSES`) of a top-level instruction, from its own opcode and those of what it calls;
    None for control flow and names that are not instructions."""
    if name not in instructions or instructions[name][0] in CONTROL_FLOW:
        return None
    ops, targets, todo, seen = set(), set(), [name], set()
    while todo:
        inst = todo.pop()
        if inst in seen or inst not in instructions:
            continue
        seen.add(inst)
        opcode, called, target = instructions[inst]
        ops.add(opcode)
        if target:
            targets.add(target)
        for comp in called:
            todo += computations.get(comp, [])
    if ops & {"dot", "convolution"} or any(PRODUCT_TARGET.search(t) for t in targets):
        return "products"
    if ops & TRANSCENDENTAL:
        return "transcendentals"
    if ops & GATHER:
        return "gathers"
    return "other"


def op_times(trace_events, instructions, computations) -> tuple[dict[str, float], dict[str, float]]:
    """({class: op seconds}, {instruction: op seconds}) of a trace's complete events ('ph' == 'X') whose names
    are instructions of the module; other events (the runtime's own, other programs') are left out."""
    by_op: dict[str, float] = collections.Counter()
    for event in trace_events:
        if event.get("ph") == "X" and event.get("name", "") in instructions:
            by_op[event["name"]] += float(event.get("dur", 0.0)) * 1e-6
    by_class: dict[str, float] = collections.Counter()
    for name in list(by_op):  # each instruction classed once, however many events it has
        cls = classify(name, instructions, computations)
        if cls is None:
            del by_op[name]
        else:
            by_class[cls] += by_op[name]
    return dict(by_class), dict(by_op)


def profile_program(program, repeats: int) -> dict:
    """Trace `repeats` calls of a compiled `bench_programs.Program` (one warm call first) and summarise."""
    import jax

    jax.block_until_ready(program.call())
    with tempfile.TemporaryDirectory() as tmp:
        jax.profiler.start_trace(tmp)
        try:
            for _ in range(repeats):
                jax.block_until_ready(program.call())
        finally:
            jax.profiler.stop_trace()
        files = sorted(glob.glob(f"{tmp}/**/*.trace.json.gz", recursive=True))
        if not files:
            raise RuntimeError(f"jax.profiler wrote no trace under {tmp}")
        events = json.loads(gzip.open(files[-1]).read()).get("traceEvents", [])
    instructions, computations = parse_hlo(program.compiled.as_text())
    by_class, by_op = op_times(events, instructions, computations)
    total = sum(by_class.values())
    if total <= 0:
        raise RuntimeError("the trace holds no op of the compiled program (a backend whose profiler does not "
                           "name ops after HLO instructions?)")
    top = sorted(by_op.items(), key=lambda kv: -kv[1])[:12]
    return {
        "op_s_per_call": round(total / repeats, 5),
        "share": {c: round(by_class.get(c, 0.0) / total, 4) for c in CLASSES},
        "top_ops": [{"op": n, "class": classify(n, instructions, computations),
                     "opcode": instructions[n][0], "share": round(s / total, 4)} for n, s in top],
    }

