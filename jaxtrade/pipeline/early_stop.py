"""Early stopping for a stage (the seed guide's "use early stopping if performance plateaus"):

`--eval_every K` evaluates the stage's policy on the validation split every K iterations (and at the stage's last
iteration), on device (`evaluation.on_device.SplitEvaluator`: the gate's metrics under the run's market rules);
`--{stage}.early_stopping_patience P` stops the stage after P evaluations in a row without an improvement of
`--final_metric` and keeps the best evaluated parameters, not the last. Without a patience the evaluations are
recorded and the last parameters kept. An improvement is a strictly higher value; a null metric (no trades, zero
deviation) never improves on a number, and the first evaluation is the first best.

The tracker's state (every evaluation so far, the best iteration, value and parameters, evaluations since the best)
goes into each checkpoint (`to_meta` beside the `best_params` item), so a stage resumed mid-way continues the same
history. Choosing the best of many evaluations flatters the kept parameters' validation score: the record says how
many evaluations the choice was made from, and the report repeats it.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np
from absl import logging

from jaxtrade.pipeline.stages import fmt


def _rank(value) -> float:
    return -math.inf if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


class EarlyStopping:
    """`observe(iteration, metrics, params)` after each evaluation; `should_stop`; `kept(last_params)`."""

    def __init__(self, eval_every: int, patience: int, metric: str, evaluator, network, stage: str = "ppo",
                 label: str = ""):
        self.eval_every, self.patience, self.metric = int(eval_every), int(patience), metric
        self.evaluator, self.network, self.stage, self.label = evaluator, network, stage, label or stage
        self.history: list[dict] = []
        self.best_iteration: int | None = None
        self.best_value = None
        self.best_params: Any = None
        self.since_best = 0

    def next_evaluation(self, done: int, target: int) -> int:
        """The iteration of the next evaluation after `done`: the next multiple of K, or the stage's end."""
        return min(target, (done // self.eval_every + 1) * self.eval_every)

    def evaluate(self, iteration: int, params) -> dict:
        """Evaluate `params` on the validation split and observe the result; returns the history entry."""
        entry = self.observe(iteration, self.evaluator(self.network, params), params)
        logging.info("%s: validation evaluation at iteration %d: %s %s, win %s, pf %s, dd %s (best %s at iteration %d%s)",
                     self.label, iteration, self.metric, fmt(entry.get(self.metric)), fmt(entry.get("win_rate")),
                     fmt(entry.get("profit_factor")), fmt(entry.get("max_drawdown")), fmt(self.best_value),
                     self.best_iteration, f"; {self.since_best} of {self.patience} without improvement"
                     if self.patience else "")
        return entry

    def observe(self, iteration: int, metrics: dict, params) -> dict:
        value = metrics.get(self.metric)
        improved = self.best_iteration is None or _rank(value) > _rank(self.best_value)
        if improved:
            self.best_iteration, self.best_value, self.since_best = int(iteration), value, 0
            self.best_params = jax.tree.map(np.asarray, jax.device_get(params))
        else:
            self.since_best += 1
        entry = {"iteration": int(iteration), **metrics, "improved": bool(improved)}
        self.history.append(entry)
        return entry

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.since_best >= self.patience

    def kept(self, last_params):
        """The parameters the stage keeps: the best evaluated with a patience, else the last."""
        if self.patience > 0 and self.best_params is not None:
            return jax.tree.map(np.asarray, self.best_params)
        return last_params

    def kept_iteration(self, done: int) -> int:
        return self.best_iteration if self.patience > 0 and self.best_iteration is not None else done

    # -------------------------------------------------------------------------------- checkpoints and records

    def to_meta(self) -> dict:
        return {"eval_every": self.eval_every, "patience": self.patience, "metric": self.metric,
                "history": self.history, "best_iteration": self.best_iteration, "best_value": self.best_value,
                "since_best": self.since_best}

    def restore(self, meta: dict, best_params) -> None:
        """Continue the history a checkpoint recorded (`to_meta`, and its `best_params` item)."""
        if meta.get("metric") not in (None, self.metric):
            # Another --final_metric: the recorded values cannot rank this run's evaluations; start afresh.
            return
        self.history = list(meta.get("history") or [])
        self.best_iteration, self.best_value = meta.get("best_iteration"), meta.get("best_value")
        self.since_best = int(meta.get("since_best", 0))
        self.best_params = None if self.best_iteration is None else jax.tree.map(np.asarray, best_params)

    def record(self, done: int, target: int, stopped: bool) -> dict:
        """summary.json's `early_stopping` entry: every evaluation, the iteration kept and why."""
        n = len(self.history)
        kept = self.kept_iteration(done)
        if self.patience <= 0:
            why = (f"no early stopping (--{self.stage}.early_stopping_patience 0): {n} evaluation(s) recorded, the "
                   f"last parameters (iteration {done}) kept")
        else:
            ran = (f"stopped at iteration {done} of {target}: no improvement of validation {self.metric} in "
                   f"{self.since_best} evaluations (patience {self.patience})" if stopped
                   else f"ran all {done} iterations")
            why = (f"{ran}; kept iteration {kept} (validation {self.metric} {fmt(self.best_value)}), the best of {n} "
                   f"evaluations every {self.eval_every} iterations; a best of {n} flatters its validation score")
        return {"eval_every": self.eval_every, "patience": self.patience, "metric": self.metric,
                "num_evaluations": n, "evaluations": self.history, "kept_iteration": kept,
                "best_value": self.best_value, "stopped_early": bool(stopped), "stopped_at": done if stopped else None,
                "why": why}
