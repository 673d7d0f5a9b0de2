"""Benchmarks; each prints one JSON object per line (DESIGN section 9).

    python -m experiments.bench env [--processed_data_dir DIR --symbol SYMBOL] [--num_envs N] [--repeats 5]
    python -m experiments.bench ppo [--processed_data_dir DIR --symbol SYMBOL] [--repeats 3] [--configs default,throughput]
    python -m experiments.bench moe [same flags as ppo]
    python -m experiments.bench maml [--processed_data_dir DIR --symbol SYMBOL] [--repeats 3] [--iterations 3]
    python -m experiments.bench vmap [--stage ppo|moe|maml] [--batch 8] [--iterations 3] [--repeats 3]
    python -m experiments.bench learn [--checks ppo,ppo_costs,moe,maml,flat] [--seed 0]
    python -m experiments.bench profile [--stage ppo|moe|maml] [--configs default,throughput] [--repeats 3]
    python -m experiments.bench all --out bench.json [--vs_sb3]     # the whole suite (experiments/bench_suite.py)

`ppo`: end-to-end PPO training throughput (rollout + GAE + update), env steps per second, the median of
`--repeats` timed runs of `--iterations` iterations each, compile time reported separately. Without
`--processed_data_dir` it trains on a synthetic in-memory random-walk market (2-minute bars).

`profile`: the share of one compiled iteration's op time spent in matrix products, transcendentals (tanh,
exp, log, sqrt), gathers and the rest, from a `jax.profiler` trace (`experiments/bench_profile.py`), with the
device's FLOP rate on large square products (`square_matmul_gflops`, 1024 x 1024 float32) for scale.

`learn`: the learning checks of `tests/test_learning.py` on planted-edge markets (`data_tools.synth --market
ar1 | vol_regime`), one JSON line per check with the figures the slow tests assert on: PPO against the optimal
rule on AR(1) bars without and with NSE costs, the MoE against PPO of the experts' width on volatility
regimes, MAML's adaptation to the sign of the edge, and PPO on a random walk with costs. The checks live in
`tests/planted_edges.py` (run from a checkout); `--seed` reruns them on other markets and initialisations.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np
from absl import app, flags

from experiments import bench_suite
from experiments.bench_programs import bench_env_params
from jaxtrade import cli
from jaxtrade import atomic
from jaxtrade.env import EnvConfig

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Define the command's flags on absl's global FLAGS (once); called by `__main__`, not on import, so
    that importing this module beside another command (tests, notebooks) defines nothing."""
    if "repeats" in FLAGS:
        return
    bench_suite.define_flags()
    flags.DEFINE_string("processed_data_dir", None, "processed Parquet directory (default: a synthetic market)")
    flags.DEFINE_string("symbol", None, "symbol to benchmark on (with --processed_data_dir)")
    flags.DEFINE_integer("repeats", 3, "timed runs per config (the median is reported)")
    flags.DEFINE_list("configs", ["default", "throughput"], "ppo bench configs to run: default, throughput")
    flags.DEFINE_integer("iterations", 0, "iterations per timed run (0: per-config default)")
    flags.DEFINE_integer("num_envs", 0, "override num_envs of every config (0: keep)")
    flags.DEFINE_string("stage", "ppo", "vmap: the stage whose learning rate is swept; profile: the stage "
                        "profiled (ppo, moe, maml)")
    flags.DEFINE_integer("batch", 8, "vmap: learning rates in the vmapped batch")
    flags.DEFINE_list("checks", ["ppo", "ppo_costs", "moe", "maml", "flat"], "learn: the checks to run")
    flags.DEFINE_integer("seed", 0, "learn: seed of the markets and the training")


COMMANDS = ("env", "ppo", "maml", "moe", "vmap", "learn", "profile", "all")

# The market rules every training bench runs under (the training defaults: NSE futures costs, 1 tick of
# slippage, one-session episodes), built into EnvParams by `env.env_params` (`bench_programs.bench_env_params`)
# like every other consumer's.
BENCH_ENV = EnvConfig()


def bench_env(argv) -> None:
    """Env steps/s with random actions at N = 1, 256, 4096, 16384 (experiments/bench_env.py)."""
    from experiments.bench_env import DEFAULT_SIZES, bench_env as run_env_bench

    market, symbol = None, None  # None: bench_env's own synthetic market
    if FLAGS.processed_data_dir:
        symbol, market = _bench_market("")
    sizes = [FLAGS.num_envs] if FLAGS.num_envs else DEFAULT_SIZES
    run_env_bench(market, sizes=sizes, repeats=max(FLAGS.repeats, 1) if FLAGS["repeats"].present else 5,
                  symbol=symbol)


def _synthetic_market_dir(directory: str, symbol: str = "SYNTH_2", num_sessions: int = 250,
                          bars_per_session: int = 188, bar_minutes: int = 2, seed: int = 0) -> str:
    """A random-walk market in the processed layout (DESIGN section 2), labelled synthetic."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    n = num_sessions * bars_per_session
    vol = 6e-4
    close = 20_000.0 * np.exp(np.cumsum(rng.normal(0.0, vol, n)))
    open_ = np.r_[20_000.0, close[:-1]] * np.exp(rng.normal(0.0, vol / 4, n))
    high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0.0, vol / 2, n)))
    low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0.0, vol / 2, n)))
    days = np.busday_offset("2024-01-01", np.arange(num_sessions), roll="forward")
    start = days.astype("datetime64[m]")[:, None] + np.timedelta64(9 * 60 + 15, "m")
    ts_ist = (start + np.arange(bars_per_session) * np.timedelta64(bar_minutes, "m")).ravel()
    utc_ns = (ts_ist - np.timedelta64(330, "m")).astype("datetime64[ns]").astype(np.int64)
    table = pa.table({
        "timestamp": pa.array(utc_ns, pa.int64()).cast(pa.timestamp("ns", tz="Asia/Kolkata")),
        "open": open_, "high": high, "low": low, "close": close, "volume": np.zeros(n),
        "session": np.repeat(np.arange(num_sessions, dtype=np.int32), bars_per_session),
    })
    table = table.replace_schema_metadata({"symbol": symbol, "bar_minutes": str(bar_minutes),
                                           "source": "experiments.bench (synthetic)", "rows_in": str(n),
                                           "rows_out": str(n), "synthetic": "true"})
    atomic.write_parquet(table, f"{directory}/{symbol}.parquet")
    return symbol


def _ppo_configs():
    from jaxtrade.agents.ppo import PPOConfig

    return {
        # The seed's hyperparameters (minibatch 128, 6 epochs) with the default 256 x 128 rollout.
        "default": (PPOConfig(), 3),
        # Same network, 4 epochs, larger rollout and minibatches: the throughput bar's config.
        "throughput": (PPOConfig(num_envs=2048, num_steps=64, minibatch_size=4096, update_epochs=4), 10),
    }


def _bench_market(tmp: str):
    """(symbol, market): --processed_data_dir/--symbol (first symbol by default), else a synthetic market
    written into `tmp`."""
    from jaxtrade.data import list_symbols
    from jaxtrade.env import market_for

    if FLAGS.processed_data_dir:
        symbol = FLAGS.symbol or (list_symbols(FLAGS.processed_data_dir) or [None])[0]
        if symbol is None:
            raise cli.InputError(f"{FLAGS.processed_data_dir}: no processed symbols")
        return symbol, market_for(BENCH_ENV, FLAGS.processed_data_dir, symbol)
    symbol = _synthetic_market_dir(tmp)
    return symbol, market_for(BENCH_ENV, tmp, symbol)


def _training_bench_setup(tmp: str):
    """(symbol, market, train env params, the selected `_ppo_configs`) for the training benches: the market
    from --processed_data_dir/--symbol, else a synthetic one written into `tmp`."""
    symbol, market = _bench_market(tmp)
    configs = _ppo_configs()
    unknown = [c for c in FLAGS.configs if c not in configs]
    if unknown:
        raise cli.InputError(f"--configs: unknown {', '.join(unknown)} (choose from {', '.join(configs)})")
    return symbol, market, bench_env_params(market), configs


def _time_runs(trainer, iters: int, memory: bool = False):
    """(state, compile seconds, run seconds of each of --repeats runs[, XLA temp MB]) of the shared
    `agents.base.run` of `iters` iterations: compiled once (trainer and state are arguments), one warm-up."""
    import functools

    import jax

    from jaxtrade.agents.base import run

    state = jax.block_until_ready(jax.jit(lambda t, k: t.init(k))(trainer, jax.random.key(0)))
    t0 = time.perf_counter()
    compiled = jax.jit(functools.partial(run, num_iterations=iters)).lower(trainer, state).compile()
    compile_s = time.perf_counter() - t0
    temp_mb = None
    if memory:
        try:
            temp_mb = compiled.memory_analysis().temp_size_in_bytes / 2**20
        except Exception:  # noqa: BLE001 - not every backend reports it
            temp_mb = None
    state, _ = jax.block_until_ready(compiled(trainer, state))  # warm-up
    times = []
    for _ in range(max(FLAGS.repeats, 1)):
        t0 = time.perf_counter()
        state, _ = jax.block_until_ready(compiled(trainer, state))
        times.append(time.perf_counter() - t0)
    return (state, compile_s, times, temp_mb) if memory else (state, compile_s, times)


def bench_ppo(argv) -> None:
    import jax

    from jaxtrade.agents.ppo import make_trainer

    with tempfile.TemporaryDirectory() as tmp:
        symbol, market, env_params, configs = _training_bench_setup(tmp)
        device = jax.devices()[0]
        for name in FLAGS.configs:
            config, iters = configs[name]
            if FLAGS.num_envs:
                config = config.replace(num_envs=FLAGS.num_envs)
            iters = FLAGS.iterations or iters
            trainer = make_trainer(config, env_params)
            rs, compile_s, times = _time_runs(trainer, iters)
            steps = iters * config.batch_size
            med = statistics.median(times)
            print(json.dumps({
                "bench": "ppo", "config": name, "num_envs": config.num_envs, "num_steps": config.num_steps,
                "minibatch_size": config.minibatch_size, "update_epochs": config.update_epochs,
                "hidden_sizes": list(config.hidden_sizes), "iterations": iters,
                "steps_per_s": round(steps / med, 1), "compile_s": round(compile_s, 3),
                "run_s": [round(t, 4) for t in times], "symbol": symbol, "synthetic": market.synthetic,
                "device": f"{device.platform}:{device.device_kind}", "host": platform.machine(),
                "cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
                "jax": jax.__version__}), flush=True)


def bench_maml(argv) -> None:
    """MAML meta-iterations per second, second- vs first-order, default MAMLConfig and MoE network, with the
    compiled program's temp memory (XLA memory analysis) and the process's peak RSS after each."""
    import resource

    import jax

    from jaxtrade.agents import maml
    from jaxtrade.agents.ppo import PPOConfig

    with tempfile.TemporaryDirectory() as tmp:
        symbol, market = _bench_market(tmp)
        env_params = bench_env_params(market)
        device = jax.devices()[0]
        iters = FLAGS.iterations or 3
        for first_order in (True, False):
            config = maml.MAMLConfig(first_order=first_order)
            trainer = maml.make_trainer(config, PPOConfig(), env_params)
            state, compile_s, times, temp_mb = _time_runs(trainer, iters, memory=True)
            med = statistics.median(times)
            print(json.dumps({
                "bench": "maml", "order": "first" if first_order else "second", "remat": config.remat,
                "inner_loop_steps": config.inner_loop_steps, "meta_batch_size": config.meta_batch_size,
                "support": [config.support_num_envs, config.support_num_steps],
                "query": [config.query_num_envs, config.query_num_steps], "iterations": iters,
                "meta_iterations_per_s": round(iters / med, 3),
                "steps_per_s": round(iters * trainer.env_steps_per_iteration / med, 1),
                "compile_s": round(compile_s, 3), "xla_temp_mb": None if temp_mb is None else round(temp_mb, 1),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "run_s": [round(t, 4) for t in times], "symbol": symbol, "synthetic": market.synthetic,
                "device": f"{device.platform}:{device.device_kind}", "host": platform.machine(),
                "cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
                "jax": jax.__version__}), flush=True)


def _dense_macs_per_row(params) -> int:
    """Multiply-accumulates of one forward pass per observation row: the sizes of all Dense kernels (stacked
    expert kernels included). Backward passes scale with it, so the MoE/PPO ratio of this number is the
    ratio of arithmetic per env step that a device without spare parallel units must pay."""
    from jax.tree_util import tree_flatten_with_path

    leaves, _ = tree_flatten_with_path(params)
    return int(sum(leaf.size for path, leaf in leaves if getattr(path[-1], "key", None) == "kernel"))


def bench_moe(argv) -> None:
    """`moe`: end-to-end MoE training (4 experts of hidden 128 behind the gate) against PPO with one
    ActorCritic of hidden 128, same market, rollout and update settings (the `--configs` of `ppo`), timed in
    the same process. One JSON line per network and config; the MoE line has `ratio_vs_ppo128` = PPO-128's
    steps/s divided by the MoE's (the cost of the MoE per env step in units of one hidden-128 network) and
    `macs_ratio_vs_ppo128`, the ratio of arithmetic (`dense_macs_per_row`): on hardware that is already busy
    with one network (a CPU), the time ratio cannot fall below it; below it means the experts ran on
    otherwise idle parallel units (a GPU/TPU)."""
    import jax

    from jaxtrade.agents import moe as moe_agent
    from jaxtrade.agents.ppo import make_trainer

    with tempfile.TemporaryDirectory() as tmp:
        symbol, market, env_params, configs = _training_bench_setup(tmp)
        device = jax.devices()[0]
        moe_config = moe_agent.MoEConfig()
        for name in FLAGS.configs:
            config, iters = configs[name]
            config = config.replace(hidden_sizes=(moe_config.expert_hidden_dim,) * moe_config.expert_num_layers)
            if FLAGS.num_envs:
                config = config.replace(num_envs=FLAGS.num_envs)
            iters = FLAGS.iterations or max(iters // 3, 1)
            rates, macs = {}, {}
            for net in ("ppo128", "moe"):
                if net == "moe":
                    trainer = moe_agent.make_trainer(moe_config.replace(num_iterations=iters), config, env_params)
                else:
                    trainer = make_trainer(config, env_params)
                rs, compile_s, times = _time_runs(trainer, iters)
                rates[net] = iters * config.batch_size / statistics.median(times)
                macs[net] = _dense_macs_per_row(rs.params)
                line = {"bench": "moe", "config": name, "network": net, "dense_macs_per_row": macs[net],
                        "num_envs": config.num_envs,
                        "num_steps": config.num_steps, "minibatch_size": config.minibatch_size,
                        "update_epochs": config.update_epochs, "iterations": iters,
                        "steps_per_s": round(rates[net], 1), "compile_s": round(compile_s, 3),
                        "run_s": [round(t, 4) for t in times]}
                if net == "moe":
                    line.update(num_experts=moe_config.num_experts, expert_hidden_dim=moe_config.expert_hidden_dim,
                                gating_hidden_dim=moe_config.gating_hidden_dim,
                                ratio_vs_ppo128=round(rates["ppo128"] / rates["moe"], 3),
                                macs_ratio_vs_ppo128=round(macs["moe"] / macs["ppo128"], 3))
                else:
                    line.update(hidden_sizes=list(config.hidden_sizes))
                line.update(symbol=symbol, synthetic=market.synthetic,
                            device=f"{device.platform}:{device.device_kind}", host=platform.machine(),
                            jax=jax.__version__)
                print(json.dumps(line), flush=True)


def bench_vmap(argv) -> None:
    """`vmap`: a batch of `--batch` learning rates (log-spaced, each with its own seed) trained in one vmapped
    program against one run of the same trainer, timed in the same process: `ratio_vs_batch_singles` =
    vmapped time / (batch x single time), the issue's bar being <= 1.1 on a CPU. `--stage` ppo (default config),
    moe or maml; each timed run is `train` (init + `--iterations` iterations)."""
    import functools

    import jax
    import jax.numpy as jnp

    from jaxtrade.agents import maml as maml_agent, moe as moe_agent
    from jaxtrade.agents.base import train
    from jaxtrade.agents.ppo import PPOConfig, make_trainer

    with tempfile.TemporaryDirectory() as tmp:
        symbol, market = _bench_market(tmp)
        env_params = bench_env_params(market)
        iters = FLAGS.iterations or 3
        if FLAGS.stage == "ppo":
            trainer, lr_field = make_trainer(PPOConfig(), env_params), "learning_rate"
        elif FLAGS.stage == "moe":
            trainer, lr_field = moe_agent.make_trainer(moe_agent.MoEConfig(), PPOConfig(), env_params), "learning_rate"
        elif FLAGS.stage == "maml":
            trainer, lr_field = maml_agent.make_trainer(maml_agent.MAMLConfig(), PPOConfig(), env_params), \
                "meta_learning_rate"
        else:
            raise cli.InputError(f"--stage: unknown stage {FLAGS.stage!r} (choose from ppo, moe, maml)")
        batch = FLAGS.batch
        lrs = jnp.asarray(np.geomspace(1e-4, 1e-3, batch), jnp.float32)
        keys = jax.random.split(jax.random.key(0), batch)
        single = jax.jit(functools.partial(train, num_iterations=iters))
        swept = jax.jit(jax.vmap(lambda t, lr, k: train(t.with_hparams(**{lr_field: lr}), k, iters),
                                 in_axes=(None, 0, 0)))
        result = {}
        for name, fn, args in (("single", single, (trainer, keys[0])), ("vmapped", swept, (trainer, lrs, keys))):
            t0 = time.perf_counter()
            compiled = fn.lower(*args).compile()
            compile_s = time.perf_counter() - t0
            jax.block_until_ready(compiled(*args))  # warm-up
            times = []
            for _ in range(max(FLAGS.repeats, 1)):
                t0 = time.perf_counter()
                jax.block_until_ready(compiled(*args))
                times.append(time.perf_counter() - t0)
            result[name] = (statistics.median(times), compile_s, times)
        device = jax.devices()[0]
        ratio = result["vmapped"][0] / (batch * result["single"][0])
        print(json.dumps({
            "bench": "vmap", "stage": FLAGS.stage, "swept": lr_field, "batch": batch, "iterations": iters,
            "single_s": round(result["single"][0], 4), "vmapped_s": round(result["vmapped"][0], 4),
            "ratio_vs_batch_singles": round(ratio, 3),
            "steps_per_s": round(batch * iters * trainer.env_steps_per_iteration / result["vmapped"][0], 1),
            "compile_s": {k: round(v[1], 3) for k, v in result.items()},
            "run_s": {k: [round(t, 4) for t in v[2]] for k, v in result.items()}, "symbol": symbol,
            "synthetic": market.synthetic, "device": f"{device.platform}:{device.device_kind}",
            "host": platform.machine(), "cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
            "jax": jax.__version__}), flush=True)


def bench_learn(argv) -> None:
    """One JSON line per learning check (`tests/planted_edges.py`), figures as the slow tests print them."""
    import resource
    from pathlib import Path

    import jax

    repo = str(Path(__file__).resolve().parents[1])
    if repo not in sys.path:
        sys.path.insert(0, repo)
    try:
        from tests import planted_edges as PE
    except ImportError as e:
        raise cli.InputError(f"learn: the checks live in tests/planted_edges.py of a jaxtrade checkout ({e})")
    checks = {"ppo": lambda d: PE.ppo_finds_edge(d, costs=False, seed=FLAGS.seed),
              "ppo_costs": lambda d: PE.ppo_finds_edge(d, costs=True, seed=FLAGS.seed),
              "moe": lambda d: PE.moe_specialises(d, seed=FLAGS.seed),
              "maml": lambda d: PE.maml_adapts(d, seed=FLAGS.seed),
              "flat": lambda d: PE.flat_market_teaches_nothing(d, seed=FLAGS.seed)}
    unknown = [c for c in FLAGS.checks if c not in checks]
    if unknown:
        raise cli.InputError(f"--checks: unknown {', '.join(unknown)} (choose from {', '.join(checks)})")
    device = jax.devices()[0]
    for name in FLAGS.checks:
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        with tempfile.TemporaryDirectory() as tmp:
            figures = checks[name](tmp)
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
        print(json.dumps({"bench": "learn", **figures, "seed": FLAGS.seed, "cpu_s": round(cpu, 1),
                          "device": f"{device.platform}:{device.device_kind}", "cpus": os.cpu_count(),
                          "load_avg_1m": round(os.getloadavg()[0], 2), "jax": jax.__version__}), flush=True)


def bench_profile(argv) -> None:
    """Op-time shares of one iteration of --stage (each of --configs for PPO and MoE; MAML's defaults)."""
    import jax

    from experiments.bench_profile import profile_program
    from experiments.bench_programs import compile_trainer
    from experiments.bench_roofline import square_matmul_peak

    if FLAGS.stage not in ("ppo", "moe", "maml"):
        raise cli.InputError(f"--stage: expected ppo, moe or maml, got {FLAGS.stage!r}")
    with tempfile.TemporaryDirectory() as tmp:
        symbol, market, env_params, configs = _training_bench_setup(tmp)
        device = jax.devices()[0]
        for name in (["maml"] if FLAGS.stage == "maml" else FLAGS.configs):
            config = configs[name][0] if name in configs else None
            if config is not None and FLAGS.num_envs:
                config = config.replace(num_envs=FLAGS.num_envs)
            program = compile_trainer(FLAGS.stage, env_params, 0, config)
            try:
                result = profile_program(program, max(FLAGS.repeats, 1))
            except RuntimeError as e:
                raise cli.InputError(f"profile: {e}") from None
            peak = square_matmul_peak()
            print(json.dumps({"bench": "profile", "stage": FLAGS.stage, "config": name, **program.describe,
                              "steps_per_call": program.steps_per_call, **result,
                              "square_matmul_gflops": peak["gflops"], "square_matmul_n": peak["n"], "symbol": symbol,
                              "synthetic": market.synthetic, "device": f"{device.platform}:{device.device_kind}",
                              "cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
                              "jax": jax.__version__}), flush=True)


def main(argv) -> None:
    if len(argv) < 2 or argv[1] not in COMMANDS:
        cli.die(f"usage: python -m experiments.bench {{{'|'.join(COMMANDS)}}} [flags]")
    if len(argv) > 2:
        cli.die(f"unexpected positional arguments: {' '.join(argv[2:])}")
    try:
        {"env": bench_env, "ppo": bench_ppo, "maml": bench_maml, "moe": bench_moe, "vmap": bench_vmap,
         "learn": bench_learn, "profile": bench_profile, "all": lambda a: bench_suite.bench_all(a, _ppo_configs())}[argv[1]](argv)
    except cli.InputError as e:
        cli.die(str(e))


if __name__ == "__main__":
    define_flags()
    app.run(main, argv=cli.normalize_argv(sys.argv))
