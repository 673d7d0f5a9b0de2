"""`python -m experiments.bench all --out bench.json [--vs_sb3]`: the whole benchmark suite in one process.

For env (random actions through full features and NSE costs), PPO, MoE (4 experts of hidden 128) and MAML
(second order, 7 inner steps, the MoE network):
  * throughput against parallel episodes (`--sweep_num_envs`, default 1 .. 65,536) on a market of
    `--sweep_at_num_bars` synthetic bars (or `--processed_data_dir/--symbol`),
  * throughput against data length (`--sweep_num_bars`, default 10 thousand .. 10 million synthetic bars, each
    written as a processed Parquet file and loaded through `jaxtrade.data.load_market`) at
    `--sweep_at_num_envs` parallel episodes, with a `load` line per size (write and load time, peak RSS),
  * compile time, peak host memory (resident set sampled while the configuration ran), device memory where
    the backend reports it, and the compiled program's own memory (XLA's analysis);
and for PPO the FLOPs per env step derived from the config, the matrix-product peak measured in this run on
the shapes of the update (`experiments/bench_roofline.py`), and the share of it PPO reaches. The named PPO
configs of `bench ppo` (`--configs`, default and throughput) run too, and with `--vs_sb3` each is compared with
Stable-Baselines3 PPO of the same settings on the same market in this process (`experiments/bench_sb3.py`).

A trainer's rollout length shrinks as the number of parallel episodes grows, so that one iteration holds at
most 2^19 env steps (PPO, MoE; never fewer than 8 steps) and one MAML task rollout at most 2^12 (never fewer
than 1); every line says the rollout it ran. The point where both sweeps meet is measured once and its line
lists both sweeps.

Every result is one JSON object per line on stdout (DESIGN section 9); `--out FILE` also writes them into one
JSON document {"command", "machine", "complete", "results": [...]}, rewritten after every line, with
"complete": false until the suite has finished.
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from absl import flags

from jaxtrade import atomic

from experiments import bench_measure as M
from experiments.bench_programs import bench_env_params, compile_env, compile_trainer

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Define the command's flags on absl's global FLAGS (once); called by `__main__`, not on import, so
    that importing this module beside another command (tests, notebooks) defines nothing."""
    if "vs_sb3" in FLAGS:
        return
    flags.DEFINE_string("out", "", "all: also write the results as one JSON document to this file")
    flags.DEFINE_bool("vs_sb3", False, "all: compare each --configs PPO config with Stable-Baselines3 PPO "
                      "(pip install -e '.[bench,torch]')")
    flags.DEFINE_integer("sb3_threads", 1, "all: torch threads for Stable-Baselines3 (0: torch's default)")
    flags.DEFINE_list("sweep_num_envs", ["1", "16", "256", "4096", "65536"], "all: parallel episodes to sweep")
    flags.DEFINE_list("sweep_num_bars", ["10000", "100000", "1000000", "10000000"],
                      "all: synthetic market lengths (bars) to sweep")
    flags.DEFINE_integer("sweep_at_num_envs", 256, "all: parallel episodes of the data-length sweep")
    flags.DEFINE_integer("sweep_at_num_bars", 100_000, "all: market length (bars) of the parallel-episodes sweep")
    flags.DEFINE_list("benches", ["env", "ppo", "moe", "maml"], "all: which benches the sweeps run")
    flags.DEFINE_list("max_num_envs", [], "all: per-bench caps on the parallel-episodes sweep, e.g. maml:4096 (a "
                      "skipped point still gets its line)")
    flags.DEFINE_float("min_run_s", 1.0, "all: a timed run repeats its unit of work until it lasts about this long")
    flags.DEFINE_float("max_config_s", 60.0, "all: fewer timed runs (at least one) when --repeats would take longer")


BENCHES = ("env", "ppo", "moe", "maml")


def _ints(values, flag: str, low: int) -> list[int]:
    from jaxtrade.errors import InputError

    try:
        out = [int(float(v)) for v in values]
    except ValueError:
        raise InputError(f"--{flag}: expected integers, got {','.join(values)}") from None
    if not out or min(out) < low:
        raise InputError(f"--{flag}: expected integers >= {low}, got {','.join(values)}")
    return out


def synthetic_market(directory, num_bars: int) -> tuple[object, dict]:
    """Write and load a `num_bars`-bar random walk; returns (market, the `load` line's figures)."""
    from experiments.bench_market import SYMBOL, write_random_walk
    from jaxtrade.data import load_market

    with M.PeakRSS() as rss:
        t0 = time.perf_counter()
        path = write_random_walk(directory, num_bars)
        t1 = time.perf_counter()
        market = load_market(directory, SYMBOL)
        t2 = time.perf_counter()
    figures = {"num_bars": market.num_bars, "num_sessions": market.num_sessions,
               "parquet_mb": round(path.stat().st_size / M.MB, 1), "write_s": round(t1 - t0, 3),
               "load_s": round(t2 - t1, 3), "peak_rss_mb": rss.peak_mb}
    path.unlink()
    return market, figures


# ---------------------------------------------------------------------------------------------------------
# The suite


class Suite:
    """Runs configurations and emits their lines (stdout and the --out document)."""

    def __init__(self, out_path: str = "", *, repeats: int = 3, min_run_s: float = 1.0, max_config_s: float = 60.0,
                 stream=None):
        self.out_path = Path(out_path) if out_path else None
        self.repeats, self.min_run_s, self.max_config_s = repeats, min_run_s, max_config_s
        self.stream = stream or sys.stdout
        self.machine = M.machine()
        self.started = time.perf_counter()
        argv = list(sys.argv)
        if argv and argv[0].endswith(os.path.join("experiments", "bench.py")):
            argv[0:1] = ["python", "-m", "experiments.bench"]
        self.doc = {"format": "jaxtrade-bench/1", "command": " ".join(argv),
                    "started": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                    "machine": self.machine, "load_avg_start": list(_load_avg()), "complete": False,
                    "results": []}

    def emit(self, line: dict) -> dict:
        line = {**line, "device": self.machine["device"], "cpus": self.machine["cpus"],
                "load_avg_1m": M.load_avg_1m(), "jax": self.machine["jax"]}
        self.stream.write(json.dumps(line) + "\n")
        self.stream.flush()
        self.doc["results"].append(line)
        self._write()
        return line

    def _write(self) -> None:
        if self.out_path is None:
            return
        self.out_path.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_text(self.out_path, json.dumps(self.doc, indent=1) + "\n")

    def finish(self) -> None:
        self.doc.update(complete=True, wall_s=round(time.perf_counter() - self.started, 1),
                        max_rss_mb=round(M.max_rss_mb(), 1), load_avg_end=list(_load_avg()))
        self._write()

    # -- measuring one configuration ------------------------------------------------------------------------
    def measure(self, kind: str, build, extra: dict) -> dict:
        """Compile with `build()` -> Program, time it, and emit its line."""
        import jax

        with M.PeakRSS() as rss:
            t0 = time.perf_counter()
            program = build()
            compile_s = time.perf_counter() - t0
            timing = M.time_calls(program.call, repeats=self.repeats, min_run_s=self.min_run_s,
                                  max_total_s=self.max_config_s)
        line = {"bench": kind, **extra, **program.describe,
                "steps_per_s": round(program.steps_per_call / timing["per_call_s"], 1),
                "compile_s": round(compile_s, 3), "calls_per_run": timing["calls_per_run"],
                "steps_per_call": program.steps_per_call, "run_s": timing["run_s"],
                "timed_warmup": timing["timed_warmup"], "peak_rss_mb": rss.peak_mb,
                "device_peak_mb": M.device_peak_mb(), **M.xla_memory_mb(program.compiled)}
        if kind == "ppo":
            line.update(self.roofline(program))
        del program
        jax.clear_caches()
        gc.collect()
        return self.emit(line)

    def roofline(self, program) -> dict:
        """FLOPs per env step of this PPO config, and its share of the matmul peak at its minibatch size:
        PPO iterations and the matmul microbenchmark timed in alternation, the share the median of the
        rounds' ratios (the load of a shared machine drifts between separate measurements)."""
        import statistics

        from experiments.bench_roofline import MatmulProgram, ppo_flops

        cfg = program.config
        flops = ppo_flops(cfg, program.params)
        matmul = MatmulProgram(program.params, cfg.minibatch_size)
        t_ppo, t_mm = M.paired_runs(program.call, matmul.call, rounds=max(self.repeats, 5),
                                    min_run_s=max(self.min_run_s, 0.2), max_total_s=self.max_config_s)
        achieved = [program.steps_per_call * flops.per_step / t / 1e9 for t in t_ppo]
        peak = [matmul.flops_per_call / t / 1e9 for t in t_mm]
        self.emit({"bench": "matmul_peak", **matmul.describe(), "gflops": round(statistics.median(peak), 2),
                   "gflops_runs": [round(p, 2) for p in peak], "paired_with": "ppo",
                   "ppo_num_envs": cfg.num_envs})
        return {**flops.as_dict(), "achieved_gflops": round(statistics.median(achieved), 2),
                "matmul_peak_gflops": round(statistics.median(peak), 2),
                "roofline_share": round(statistics.median(a / p for a, p in zip(achieved, peak)), 4),
                "roofline_rounds": len(t_ppo)}


def _load_avg() -> tuple:
    try:
        return tuple(round(x, 2) for x in os.getloadavg())
    except OSError:
        return ()


def run_suite(suite: Suite, *, benches, sweep_num_envs, sweep_num_bars, at_num_envs: int, at_num_bars: int,
              ppo_configs: dict, market=None, symbol: str | None = None, vs_sb3: bool = False,
              sb3_threads: int = 1, max_num_envs: dict | None = None) -> None:
    """The whole suite (see the module docstring). `market`: the user's symbol for the parallel-episodes
    sweep and the named configs (None: a synthetic market of `at_num_bars` bars). `ppo_configs`: name ->
    PPOConfig of the named runs; the sweeps scale the "throughput" one (or the first)."""
    from jaxtrade.agents.ppo import PPOConfig

    base = ppo_configs.get("throughput") or next(iter(ppo_configs.values()), None) or PPOConfig(
        num_envs=2048, num_steps=64, minibatch_size=4096, update_epochs=4)
    suite.emit({"bench": "suite", "benches": list(benches), "sweep_num_envs": list(sweep_num_envs),
                "sweep_num_bars": list(sweep_num_bars), "at_num_envs": at_num_envs, "at_num_bars": at_num_bars,
                "configs": list(ppo_configs), "vs_sb3": vs_sb3, **suite.machine})

    caps = dict(max_num_envs or {})

    def measure(kind, params, n, extra):
        if n > caps.get(kind, n):
            return suite.emit({"bench": kind, **extra, "skipped": f"above --max_num_envs {kind}:{caps[kind]}"})
        return suite.measure(kind, build(kind, params, n), extra)

    def build(kind, params, n):
        if kind == "env":
            return lambda: compile_env(params, n)
        return lambda: compile_trainer(kind, params, n, base)

    shared = market is None and at_num_bars in sweep_num_bars and at_num_envs in sweep_num_envs
    with tempfile.TemporaryDirectory(prefix="jaxtrade-bench-") as tmp:
        # 1. Parallel episodes, on one market.
        if market is None:
            market, load = synthetic_market(tmp, at_num_bars)
            suite.emit({"bench": "load", **load, "symbol": market.symbol, "synthetic": True})
        params = bench_env_params(market)
        where = {"num_bars": market.num_bars, "symbol": symbol or market.symbol, "synthetic": market.synthetic}
        for kind in benches:
            for n in sweep_num_envs:
                sweeps = ["num_envs"] + (["num_bars"] if shared and n == at_num_envs else [])
                measure(kind, params, n, {"sweeps": sweeps, "num_envs": n, **where})
        # 2. The named PPO configs, with the roofline, and Stable-Baselines3 beside them.
        for name, cfg in ppo_configs.items():
            line = suite.measure("ppo", lambda c=cfg: compile_trainer("ppo", params, 0, c),
                                 {"sweeps": ["config"], "config": name, "num_envs": cfg.num_envs, **where})
            if vs_sb3:
                from experiments.bench_sb3 import compare

                for sb3_line in compare(cfg, params, name, line["steps_per_s"], repeats=suite.repeats,
                                        min_run_s=suite.min_run_s, torch_threads=sb3_threads):
                    suite.emit({**sb3_line, **where})
        del params, market
        gc.collect()
        # 3. Data length, synthetic markets loaded through the real loading path.
        for num_bars in sweep_num_bars:
            if shared and num_bars == at_num_bars:
                continue
            market, load = synthetic_market(tmp, num_bars)
            suite.emit({"bench": "load", **load, "symbol": market.symbol, "synthetic": True})
            params = bench_env_params(market)
            where = {"num_bars": market.num_bars, "symbol": market.symbol, "synthetic": True}
            for kind in benches:
                measure(kind, params, at_num_envs, {"sweeps": ["num_bars"], "num_envs": at_num_envs, **where})
            del params, market
            gc.collect()
    suite.finish()
    suite.emit({"bench": "suite_done", "wall_s": suite.doc["wall_s"], "max_rss_mb": suite.doc["max_rss_mb"]})


def bench_all(argv, ppo_configs: dict) -> None:
    """The `all` command: flags -> `run_suite`. `ppo_configs`: `bench ppo`'s named configs (name -> (config,
    iterations)); `--configs` picks among them (`--configs=` for none)."""
    from jaxtrade.errors import InputError

    benches = [b.strip() for b in FLAGS.benches if b.strip()]
    unknown = [b for b in benches if b not in BENCHES]
    if unknown or not benches:
        raise InputError(f"--benches: unknown {', '.join(unknown) or '(none)'} (choose from {', '.join(BENCHES)})")
    names = [c for c in FLAGS.configs if c]
    missing = [c for c in names if c not in ppo_configs]
    if missing:
        raise InputError(f"--configs: unknown {', '.join(missing)} (choose from {', '.join(ppo_configs)})")
    if FLAGS.vs_sb3:
        check_sb3_installed()
        if not names:
            raise InputError("--vs_sb3 compares the --configs PPO configs: name at least one")
    if FLAGS.repeats < 1 or not FLAGS.min_run_s >= 0 or not FLAGS.max_config_s > 0:
        raise InputError("--repeats must be >= 1, --min_run_s >= 0 and --max_config_s > 0")
    market = symbol = None
    if FLAGS.processed_data_dir:
        from jaxtrade.data import list_symbols, load_market

        symbol = FLAGS.symbol or (list_symbols(FLAGS.processed_data_dir) or [None])[0]
        if symbol is None:
            raise InputError(f"{FLAGS.processed_data_dir}: no processed symbols")
        market = load_market(FLAGS.processed_data_dir, symbol)
    sizes = _ints(FLAGS.sweep_num_bars, "sweep_num_bars", 3 * 375)
    if FLAGS.sweep_at_num_bars < 3 * 375:
        raise InputError(f"--sweep_at_num_bars: at least {3 * 375} bars (three 375-bar sessions) are needed")
    suite = Suite(FLAGS.out, repeats=FLAGS.repeats, min_run_s=FLAGS.min_run_s, max_config_s=FLAGS.max_config_s)
    run_suite(suite, benches=benches, sweep_num_envs=_ints(FLAGS.sweep_num_envs, "sweep_num_envs", 1),
              sweep_num_bars=sorted(sizes), at_num_envs=_at_least(FLAGS.sweep_at_num_envs, "sweep_at_num_envs"),
              at_num_bars=FLAGS.sweep_at_num_bars, ppo_configs={n: ppo_configs[n][0] for n in names},
              market=market, symbol=symbol, vs_sb3=FLAGS.vs_sb3, sb3_threads=FLAGS.sb3_threads,
              max_num_envs=_caps(FLAGS.max_num_envs))


def _caps(values) -> dict[str, int]:
    """`--max_num_envs maml:4096,moe:16384` -> {"maml": 4096, "moe": 16384}."""
    from jaxtrade.errors import InputError

    caps = {}
    for item in values:
        kind, _, n = item.partition(":")
        if kind not in BENCHES or not n.isdigit() or int(n) < 1:
            raise InputError(f"--max_num_envs: expected BENCH:N with BENCH one of {', '.join(BENCHES)}, got {item!r}")
        caps[kind] = int(n)
    return caps


def check_sb3_installed() -> None:
    """Before a long run: --vs_sb3 needs the `bench` extra (and torch)."""
    import importlib.util

    from jaxtrade.errors import InputError

    missing = [m for m in ("gymnasium", "stable_baselines3", "torch") if importlib.util.find_spec(m) is None]
    if missing:
        raise InputError(f"--vs_sb3: {', '.join(missing)} not installed (pip install -e '.[bench,torch]')")


def _at_least(value: int, flag: str, low: int = 1) -> int:
    from jaxtrade.errors import InputError

    if value < low:
        raise InputError(f"--{flag} must be >= {low}, got {value}")
    return value
