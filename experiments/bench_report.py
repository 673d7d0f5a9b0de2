"""Tables and the throughput plot of a `bench all --out bench.json` document, for BENCHMARKS.md.

    python -m experiments.bench_report bench.json [--plot docs/bench_num_envs.png]

Prints Markdown tables (throughput against parallel episodes and against data length, compile times, memory,
the PPO configs against the matmul peak, Stable-Baselines3) with the machine, load and command they came from,
and with --plot writes a log-log plot of env steps/s against parallel episodes (needs matplotlib).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from jaxtrade import atomic

BENCHES = ("env", "ppo", "moe", "maml")


def read(path) -> dict:
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not JSON ({e})") from None
    if not isinstance(doc, dict) or "results" not in doc:
        raise ValueError(f"{path}: not a `bench all --out` document (no results)")
    return doc


def fmt(x, digits: int = 3) -> str:
    """1234567 -> '1.23 M'; None -> 'n/a'."""
    if x is None:
        return "n/a"
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(x) >= size:
            return f"{x / size:.{digits}g} {unit}"
    return f"{x:.{digits}g}"


def _rows(doc, sweep: str) -> dict[tuple[str, int], dict]:
    key = "num_envs" if sweep == "num_envs" else "num_bars"
    return {(r["bench"], r[key]): r for r in doc["results"]
            if r.get("bench") in BENCHES and sweep in r.get("sweeps", ())}


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def sweep_table(doc, sweep: str) -> str:
    rows = _rows(doc, sweep)
    sizes = sorted({size for _, size in rows})
    benches = [b for b in BENCHES if any(k[0] == b for k in rows)]
    label = "parallel episodes" if sweep == "num_envs" else "bars"
    header = ([label] + [f"{b} steps/s" for b in benches] + [f"{b} compile s" for b in benches]
              + ["peak RSS MB", "load (1 min)"])
    if sweep == "num_bars":
        loads = {r["num_bars"]: r for r in doc["results"] if r.get("bench") == "load"}
        header += ["load s"]
    out = []
    for size in sizes:
        got = [rows.get((b, size)) for b in benches]
        row = [f"{size:,}"] + [("skipped" if "skipped" in r else fmt(r["steps_per_s"])) if r else "-" for r in got]
        got = [r if r and "skipped" not in r else None for r in got]
        row += [f"{r['compile_s']:.1f}" if r else "-" for r in got]
        row += [f"{max(r['peak_rss_mb'] for r in got if r):,.0f}" if any(got) else "-"]
        loads_1m = [r["load_avg_1m"] for r in got if r and r.get("load_avg_1m") is not None]
        row += [f"{min(loads_1m):.1f}-{max(loads_1m):.1f}" if loads_1m else "-"]
        if sweep == "num_bars":
            load = loads.get(size)
            row += [f"{load['load_s']:.1f} (RSS {load['peak_rss_mb']:,.0f})" if load else "-"]
        out.append(row)
    return _table(header, out)


def ppo_table(doc) -> str:
    out = []
    for r in doc["results"]:
        if r.get("bench") == "ppo" and "config" in r.get("sweeps", ()):
            out.append([r["config"], f"{r['num_envs']} x {r['num_steps']}, mb {r['minibatch_size']}, "
                        f"{r['update_epochs']} epochs", fmt(r["steps_per_s"]), fmt(r["flops_per_step"]),
                        f"{r['achieved_gflops']:.1f}", f"{r['matmul_peak_gflops']:.1f}",
                        f"{100 * r['roofline_share']:.0f}%", f"{r.get('load_avg_1m', 0):.1f}"])
    return _table(["config", "rollout", "env steps/s", "FLOP/step", "GFLOP/s", "matmul peak GFLOP/s",
                   "share (bar 75%)", "load (1 min)"], out)


def sb3_table(doc) -> str:
    sb3 = {(r["config"], r.get("vec_env")): r for r in doc["results"] if r.get("bench") == "sb3"}
    out, bar = [], None
    for r in doc["results"]:
        if r.get("bench") == "ppo_vs_sb3":
            bar = r["bar"]
            s = sb3.get((r["config"], r.get("vec_env")), {})
            out.append([r["config"], r.get("vec_env", "batched"), fmt(r["jaxtrade_steps_per_s"]), fmt(r["sb3_steps_per_s"]),
                        f"{r['ratio']:.1f}x", "met" if r["met"] else "NOT met",
                        fmt(s.get("wrapper_env_steps_per_s")), s.get("library", "")])
    return _table(["config", "SB3 env", "jaxtrade PPO steps/s", "SB3 PPO steps/s", "ratio", f"bar {bar:g}x" if bar else "bar",
                   "SB3 env wrapper steps/s", "library"], out)


def command(doc) -> str:
    """The command as a user types it (`python -m ...` runs record the module's path as argv[0])."""
    first, _, rest = doc["command"].partition(" ")
    if first.endswith("experiments/bench.py"):
        return f"python -m experiments.bench {rest}".strip()
    return doc["command"]


def machine_line(doc) -> str:
    m = doc["machine"]
    return (f"{m['cpu']}, {m['cpus']} CPUs, {m['device']} x {m['device_count']}, jax {m['jax']}; load average "
            f"{'/'.join(str(x) for x in doc.get('load_avg_start', []))} at the start, "
            f"{'/'.join(str(x) for x in doc.get('load_avg_end', []))} at the end; {doc.get('wall_s', '?')} s; "
            f"`{command(doc)}`" + ("" if doc.get("complete") else " (INCOMPLETE run)"))


def plot(doc, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _rows(doc, "num_envs")
    fig, ax = plt.subplots(figsize=(6, 3.8), dpi=90)
    for b in BENCHES:
        pts = sorted((n, r["steps_per_s"]) for (k, n), r in rows.items() if k == b and "skipped" not in r)
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=b)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("parallel episodes")
    ax.set_ylabel("env steps / s")
    m = doc["machine"]
    ax.set_title(f"jaxtrade, {m['cpu']} ({m['cpus']} CPUs), JAX on {m['device'].split(':')[0]}; load average "
                 f"{doc.get('load_avg_start', ['?'])[0]} at the start", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic.save_figure(fig, path)
    plt.close(fig)


def report(doc) -> str:
    parts = [f"Machine and command: {machine_line(doc)}",
             "### Throughput against parallel episodes", sweep_table(doc, "num_envs"),
             "### Throughput against data length", sweep_table(doc, "num_bars"),
             "### PPO against the measured matmul peak", ppo_table(doc)]
    if any(r.get("bench") == "ppo_vs_sb3" for r in doc["results"]):
        parts += ["### PPO against Stable-Baselines3 (same settings, same market, same process)", sb3_table(doc)]
    return "\n\n".join(parts) + "\n"


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench_json")
    parser.add_argument("--plot", help="write the throughput plot (PNG) here")
    args = parser.parse_args(argv)
    try:
        doc = read(args.bench_json)
    except (OSError, ValueError) as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    sys.stdout.write(report(doc))
    if args.plot:
        plot(doc, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
