"""The sequence's progress display: one host callback for every stage's trainer (`agents.base.run` calls it
every `log_every` iterations) that hands the metrics to the run's `metric_log` writer (`metrics.jsonl`, TensorBoard,
W&B: `--log_backend`) and shows a progress line: a bar on a terminal, an absl log
line otherwise. What the line shows depends on which metrics the stage reports (PPO's losses, the MoE's expert
usage and gate entropy, MAML's query returns before and after adaptation)."""

from __future__ import annotations

import math
import sys
import time

import numpy as np
from absl import logging

from jaxtrade.metric_log import MetricWriter

# (metric, label, format) shown when a stage reports it, in this order after the common part.
_FIELDS = (("policy_loss", "pi", "+.4f"), ("value_loss", "v", ".4f"), ("entropy", "ent", ".3f"),
           ("approx_kl", "kl", ".4f"), ("query_return_pre", "query pre", "+.5f"),
           ("query_return_post", "post", "+.5f"), ("meta_loss", "meta loss", ".4f"))


class StageLogger:
    """`logger(metrics)`: the metrics (host numpy scalars or arrays, averaged), with `steps_per_s` and `wall_s`,
    to `writer` (a `metric_log.MetricWriter`) and one progress line. `total` (iterations planned) may grow
    when a stage is extended."""

    def __init__(self, symbol: str, stage: str, total: int, writer: MetricWriter | None = None, stream=None):
        self.symbol, self.stage, self.total = symbol, stage, total
        self.writer = writer
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._last: tuple[float, float] | None = None
        self._start = time.perf_counter()

    def __call__(self, metrics) -> None:
        m = {k: float(np.mean(np.asarray(v))) for k, v in metrics.items()}
        now = time.perf_counter()
        steps = m.get("env_steps", 0.0)
        rate = 0.0
        if self._last is not None and now > self._last[0] and steps > self._last[1]:
            rate = (steps - self._last[1]) / (now - self._last[0])
        self._last = (now, steps)
        m["steps_per_s"] = rate
        m["wall_s"] = now - self._start
        if self.writer is not None:
            self.writer.write(int(m.get("iteration", 0)), m)
        line = self.line(m)
        it = int(m.get("iteration", 0))
        if self.tty:
            self.stream.write("\r" + line[:240].ljust(240) + ("\n" if it >= self.total else ""))
            self.stream.flush()
        else:
            logging.info("%s", line)

    def line(self, m: dict[str, float]) -> str:
        def f(name, spec):
            v = m.get(name, math.nan)
            return "n/a" if not math.isfinite(v) else format(v, spec)

        it, steps, rate = int(m.get("iteration", 0)), m.get("env_steps", 0.0), m.get("steps_per_s", 0.0)
        frac = min(it / max(self.total, 1), 1.0)
        bar = "#" * int(frac * 20) + "." * (20 - int(frac * 20))
        parts = [f"{self.stage:4s} {self.symbol} [{bar}] {it}/{self.total}", f"{steps:,.0f} steps"
                 + (f" | {rate:,.0f}/s" if rate else ""), f"return {f('mean_episode_return', '+.4f')}",
                 f"win {f('win_rate', '.3f')} pf {f('profit_factor', '.3f')}",
                 " ".join(f"{label} {f(name, spec)}" for name, label, spec in _FIELDS if name in m)]
        usage = sorted((k for k in m if k.startswith("usage_")), key=lambda k: int(k.split("_")[1]))
        if usage:  # the MoE stage: how much each expert carries, and how sharp the gate is
            parts.append("experts " + " ".join(f"{m[k]:.2f}" for k in usage) + f" gate ent {f('gate_entropy', '.3f')}")
        return " | ".join(p for p in parts if p)
