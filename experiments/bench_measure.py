"""How the benchmark suite measures: wall time (medians of several runs, compile apart), peak host memory
(resident set size sampled while a configuration runs), device memory where the backend reports it, the
compiled program's own memory (XLA's analysis), and the machine a figure was measured on.
"""

from __future__ import annotations

import math
import os
import platform
import resource
import statistics
import sys
import threading
import time
from typing import Callable

import jax

MB = 2**20


def _statm_rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def max_rss_mb() -> float:
    """The process's resident-set high-water mark since it started (kilobytes on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MB if sys.platform == "darwin" else peak / 1024


class PeakRSS:
    """`with PeakRSS() as p: ...; p.peak_mb`: the largest resident set of this process while the block ran,
    sampled every `interval` seconds (20 ms) from /proc (JAX releases the GIL while XLA runs, so the sampler keeps
    up). It counts everything the process holds, including what earlier work left allocated. Where /proc is
    missing (macOS) it falls back to the process's high-water mark."""

    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._proc = _statm_rss_bytes() is not None

    def _sample(self) -> None:
        rss = _statm_rss_bytes()
        if rss is not None and rss > self.peak_bytes:
            self.peak_bytes = rss

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> "PeakRSS":
        if self._proc:
            self._sample()
            self._thread = threading.Thread(target=self._loop, name="peak-rss", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._sample()

    @property
    def peak_mb(self) -> float:
        return round(self.peak_bytes / MB if self._proc else max_rss_mb(), 1)


def device_peak_mb(device=None) -> float | None:
    """Peak bytes in use on `device` since the process started, where the backend reports it (GPU, TPU);
    None on the CPU backend."""
    device = device or jax.devices()[0]
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 - backends without memory statistics raise or return None
        return None
    if not stats or "peak_bytes_in_use" not in stats:
        return None
    return round(stats["peak_bytes_in_use"] / MB, 1)


def xla_memory_mb(compiled) -> dict[str, float | None]:
    """The compiled program's arguments, outputs and temporaries (XLA's memory analysis, every backend)."""
    try:
        m = compiled.memory_analysis()
        return {"xla_args_mb": round(m.argument_size_in_bytes / MB, 1),
                "xla_out_mb": round(m.output_size_in_bytes / MB, 1),
                "xla_temp_mb": round(m.temp_size_in_bytes / MB, 1)}
    except Exception:  # noqa: BLE001 - not every backend implements it
        return {"xla_args_mb": None, "xla_out_mb": None, "xla_temp_mb": None}


def time_calls(call: Callable[[], object], *, repeats: int = 3, min_run_s: float = 0.5, max_total_s: float = 60.0,
               max_calls: int = 10_000) -> dict:
    """Time `call` (which runs one unit of work and returns something to block on): one warm-up call, then
    `repeats` runs of k calls each, k chosen from the warm-up so a run lasts about `min_run_s` (as `timeit`'s
    autorange does). Fewer runs (at least one) when `repeats` runs would exceed `max_total_s`; a warm-up call
    longer than `max_total_s` is itself the one measurement (`timed_warmup`: a call of that length carries
    no first-call cost worth repeating it for).
    Returns {"per_call_s": median run time / k, "calls_per_run": k, "run_s": [...], "timed_warmup": bool}."""
    t0 = time.perf_counter()
    jax.block_until_ready(call())
    warm = max(time.perf_counter() - t0, 1e-6)
    if warm > max_total_s:
        return {"per_call_s": warm, "calls_per_run": 1, "run_s": [round(warm, 4)], "timed_warmup": True}
    k = int(min(max(math.ceil(min_run_s / warm), 1), max_calls))
    runs = int(max(1, min(repeats, max_total_s // (warm * k))))
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        out = None
        for _ in range(k):
            out = call()
        jax.block_until_ready(out)
        times.append(time.perf_counter() - t0)
    return {"per_call_s": statistics.median(times) / k, "calls_per_run": k, "run_s": [round(t, 4) for t in times],
            "timed_warmup": False}


def paired_runs(a: Callable[[], object], b: Callable[[], object], *, rounds: int = 5, min_run_s: float = 0.5,
                max_total_s: float = 60.0) -> tuple[list[float], list[float]]:
    """Seconds per call of `a` and of `b`, timed in alternation (a, b, a, b, ...): on a shared machine whose
    load drifts, the ratio of neighbouring runs is steadier than the ratio of two separate medians. Each run
    repeats its call until it lasts about `min_run_s / 2`; at least 3 rounds, fewer than `rounds` when they
    would exceed `max_total_s`."""
    def calibrate(call):
        t0 = time.perf_counter()
        jax.block_until_ready(call())
        warm = max(time.perf_counter() - t0, 1e-6)
        return warm, int(max(math.ceil(min_run_s / 2 / warm), 1))

    warm_a, k_a = calibrate(a)
    warm_b, k_b = calibrate(b)
    per_round = warm_a * k_a + warm_b * k_b
    rounds = int(max(3, min(rounds, max_total_s // per_round)))
    times_a, times_b = [], []
    for _ in range(rounds):
        for call, k, times in ((a, k_a, times_a), (b, k_b, times_b)):
            t0 = time.perf_counter()
            out = None
            for _ in range(k):
                out = call()
            jax.block_until_ready(out)
            times.append((time.perf_counter() - t0) / k)
    return times_a, times_b


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    """What a figure was measured on, as the suite records it beside every line."""
    device = jax.devices()[0]
    return {"device": f"{device.platform}:{device.device_kind}", "device_count": jax.device_count(),
            "cpu": _cpu_model(), "cpus": os.cpu_count(), "host": platform.machine(), "jax": jax.__version__,
            "python": platform.python_version()}


def load_avg_1m() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None
