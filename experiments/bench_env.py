"""`python -m experiments.bench env`: environment steps/s with random actions through full features and costs.

One JSON line per size: {"bench": "env", "num_envs": N, "steps_per_s": X, "compile_s": C, "symbol": S,
"device": D, ...}. The clock stops after `block_until_ready`; compile time is measured separately; the figure
is the median of `repeats` runs. The observation is consumed (summed into the carry) so that XLA cannot drop
the feature gather, as a policy would read it.
"""

from __future__ import annotations

import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxtrade import atomic, env

DEFAULT_SIZES = (1, 256, 4096, 16384)


def _random_walk_market(num_sessions=250, bars_per_session=75, seed=0):
    import tempfile
    from pathlib import Path

    import pyarrow as pa

    from jaxtrade import data

    rng = np.random.default_rng(seed)
    n = num_sessions * bars_per_session
    close = 20000 * np.exp(np.cumsum(rng.normal(0, 8e-4, n)))
    open_ = np.r_[20000.0, close[:-1]]
    high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0, 3e-4, n)))
    low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0, 3e-4, n)))
    days = np.busday_offset("2023-01-02", np.arange(num_sessions), roll="forward")
    ts = (days.astype("datetime64[m]")[:, None] + np.timedelta64(555, "m")
          + np.arange(bars_per_session) * np.timedelta64(5, "m")).ravel()
    utc = (ts - np.timedelta64(330, "m")).astype("datetime64[ns]").astype(np.int64)
    table = pa.table({"timestamp": pa.array(utc).cast(pa.timestamp("ns", tz="Asia/Kolkata")),
                      "open": open_, "high": high, "low": low, "close": close, "volume": np.zeros(n),
                      "session": np.repeat(np.arange(num_sessions), bars_per_session).astype(np.int32)})
    table = table.replace_schema_metadata({"symbol": "SYNTH_5", "bar_minutes": "5", "synthetic": "true"})
    directory = Path(tempfile.mkdtemp(prefix="jaxtrade-bench-"))
    atomic.write_parquet(table, directory / "SYNTH_5.parquet")
    return data.load_market(directory, "SYNTH_5")


def make_runner(params: env.EnvParams, num_envs: int, num_steps: int):
    @jax.jit
    def run(key):
        _, state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(key, num_envs), params)

        def body(carry, k):
            state, acc = carry
            k_act, k_env = jax.random.split(k)
            actions = jax.random.randint(k_act, (num_envs,), 0, params.num_actions)
            obs, state, reward, done, _ = jax.vmap(env.step, in_axes=(None, 0, 0, None))(k_env, state, actions,
                                                                                          params)
            return (state, acc + obs.sum() + reward.sum()), None

        (state, acc), _ = jax.lax.scan(body, (state, jnp.float32(0)), jax.random.split(key, num_steps))
        return acc, state.equity

    return run


def bench_env(market=None, sizes=DEFAULT_SIZES, repeats: int = 5, target_steps: int = 10_000_000,
              symbol: str | None = None, emit=print):
    if market is None:
        market = _random_walk_market()
    # The default market rules (NSE futures costs, 1 tick of slippage, one-session episodes), the one path.
    params = env.env_params(env.EnvConfig(split_fractions=market.split_fractions), market, "train")
    device = str(jax.devices()[0].device_kind)
    results = []
    for n in sizes:
        num_steps = int(max(64, min(4096, target_steps // n)))
        run = make_runner(params, n, num_steps)
        t0 = time.perf_counter()
        jax.block_until_ready(run(jax.random.key(0)))
        compile_s = time.perf_counter() - t0
        times = []
        for r in range(repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(run(jax.random.key(r + 1)))
            times.append(time.perf_counter() - t0)
        median = statistics.median(times)
        row = {"bench": "env", "num_envs": n, "steps_per_s": round(n * num_steps / median),
               "compile_s": round(compile_s, 3), "symbol": symbol or market.symbol, "device": device,
               "num_steps": num_steps, "repeats": repeats, "median_s": round(median, 4),
               "synthetic": bool(market.synthetic)}
        emit(json.dumps(row))
        results.append(row)
    return results
