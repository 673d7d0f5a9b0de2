"""The trainer contract and the one shared `run` (DESIGN section 4; rejax's and purejaxrl's shape).

A trainer is a `flax.struct` pytree built from `(config, env_params, network)` and nothing of the pipeline:
its array leaves are the env params and the shape-free hyperparameters (learning rates, gamma, clip, loss
weights, ...), its static fields the shape-setting settings (sizes, counts, steps) and the network. It provides

    state = trainer.init(key, params=None)                  pure, jittable: a fresh state (or from given params)
    state, metrics = trainer.train_iteration(state)         pure, jittable: one iteration; metrics are scalars
    trainer.params_of(state)                                the policy's parameters
    trainer.env_steps_per_iteration                         static

and this module runs it: `run(trainer, state, n)` scans `n` iterations in one `lax.scan`, calling a host
`callback` every `log_every` iterations through `jax.debug.callback`; `train(trainer, key, n)` is
`run(trainer, trainer.init(key), n)`, one `jit`, `vmap`-able over keys, over hyperparameters
(`trainer.with_hparams(learning_rate=lr)` with `lr` batched) and over stacked env params (folds):

    jax.jit(jax.vmap(lambda lr, k: train(trainer.with_hparams(learning_rate=lr), k, 100)))(lrs, keys)

`Runner` is the host side the pipeline uses: `run` compiled once per chunk length, chunks that end at multiples
of `chunk` iterations with an `on_chunk` hook between them (checkpoints), the same metrics as one long run.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxtrade.sharding import fetch

Metrics = dict[str, jax.Array]
Callback = Callable[[dict[str, np.ndarray]], None]


def host_call(callback: Callback) -> Callable[..., None]:
    """Wrap a host metrics callback for `jax.debug.callback`: numpy arrays, and `env_steps` recomputed exactly
    (int64) from `iteration` x `batch_size` when both are in the metrics (on device it is a float32). An optional
    second argument `fresh` (bool, per member under `vmap`) drops the call when it is false everywhere."""
    def call(metrics, fresh=True):
        if not np.any(np.asarray(fresh)):
            return
        m = {k: np.asarray(v) for k, v in metrics.items()}
        if "iteration" in m and "batch_size" in m:
            m["env_steps"] = m["iteration"].astype(np.int64) * m["batch_size"].astype(np.int64)
        callback(m)
    return call


# Numerical faults, as bits of `metrics["fault"]` (see `run`).
FAULT_LOSS, FAULT_GRADIENT, FAULT_PARAMETERS = 1, 2, 4
DEFAULT_LOSS_METRICS = ("total_loss",)
DEFAULT_GRADIENT_METRICS = ("grad_norm",)


def fault_code(trainer, state, metrics: Metrics) -> jax.Array:
    """() int32: which of this iteration's loss, gradient and new parameters are non-finite (`FAULT_*` bits; 0:
    all finite). The loss and gradient are the metrics the trainer names in `loss_metrics` / `gradient_metrics`
    (default `total_loss` / `grad_norm`; metrics that may be NaN by design, such as a profit factor without a
    losing trade, are not looked at); the parameters are `trainer.params_of(state)`."""
    def nonfinite(values) -> jax.Array:
        flags = [~jnp.all(jnp.isfinite(v)) for v in values if jnp.issubdtype(jnp.result_type(v), jnp.inexact)]
        return jnp.any(jnp.stack(flags)) if flags else jnp.bool_(False)

    losses = [metrics[k] for k in getattr(trainer, "loss_metrics", DEFAULT_LOSS_METRICS) if k in metrics]
    grads = [metrics[k] for k in getattr(trainer, "gradient_metrics", DEFAULT_GRADIENT_METRICS) if k in metrics]
    return (nonfinite(losses).astype(jnp.int32) * FAULT_LOSS + nonfinite(grads).astype(jnp.int32) * FAULT_GRADIENT
            + nonfinite(jax.tree.leaves(trainer.params_of(state))).astype(jnp.int32) * FAULT_PARAMETERS)


def describe_fault(code: int) -> str:
    """`fault` bits in words: "loss", "loss and gradient", "parameters", ..."""
    parts = [name for bit, name in ((FAULT_LOSS, "loss"), (FAULT_GRADIENT, "gradient"),
                                    (FAULT_PARAMETERS, "parameters")) if int(code) & bit]
    return " and ".join(parts) or "nothing"


def first_fault(metrics: Metrics) -> tuple[int, int] | None:
    """(index into the stacked iterations, fault bits) of the first faulted iteration of `run`'s metrics, or
    None (host numpy; unbatched metrics)."""
    fault = np.asarray(metrics.get("fault", ()))
    if not fault.size or not fault.any():
        return None
    i = int(np.argmax(fault != 0))
    return i, int(fault[i])


def run(trainer, state, num_iterations: int, *, log_every: int = 0, callback: Callback | None = None
        ) -> tuple[Any, Metrics]:
    """`num_iterations` of `trainer.train_iteration` as one `lax.scan`; returns the state and the metrics stacked
    `[num_iterations]` (nothing else accumulates on device). With a `callback` and `log_every > 0`, every
    `log_every`-th iteration of this call and its last go to the host. The scan index, not the (possibly
    batched) iteration counter, decides when, so the predicate stays unbatched under `vmap`.

    Numerical faults are caught on device, without a host sync: `metrics["fault"]` (int32) is 0 while every
    iteration's loss, gradient and parameters are finite (`fault_code`); from the first iteration where one is
    not, it holds that iteration's `FAULT_*` bits, and that and every later update of this call is skipped: the
    state returned is the last good one (under `vmap`, per member). The host reads the flag with the metrics at
    the end of the call (`Runner` raises `NumericalFault`); the faulted iteration is still logged, the skipped
    ones after it are not."""
    n = int(num_iterations)
    every = max(int(log_every), 1)
    host = host_call(callback) if callback is not None and log_every > 0 else None

    def body(carry, i):
        s, fault = carry
        new, metrics = trainer.train_iteration(s)
        fault = jnp.where(fault == 0, fault_code(trainer, new, metrics), fault)
        s = jax.tree.map(lambda a, b: jax.lax.select(fault == 0, a, b), new, s)
        metrics = dict(metrics, fault=fault)
        if host is not None:
            # A skipped iteration after the first fault is not logged: the host drops it (the predicate of the
            # cond stays unbatched under `vmap`, where `fault` is per member).
            fresh = (fault == 0) | (carry[1] == 0)
            log_now = ((i + 1) % every == 0) | (i == n - 1)
            jax.lax.cond(log_now, lambda m, f: jax.debug.callback(host, m, f), lambda m, f: None, metrics, fresh)
        return (s, fault), metrics

    (state, _), metrics = jax.lax.scan(body, (state, jnp.int32(0)), jnp.arange(n, dtype=jnp.int32))
    return state, metrics


def train(trainer, key: jax.Array, num_iterations: int | None = None, params=None, **run_kwargs
          ) -> tuple[Any, Metrics]:
    """`run(trainer, trainer.init(key, params), n)` (n: the config's `num_iterations` by default)."""
    n = trainer.config.num_iterations if num_iterations is None else int(num_iterations)
    state = trainer.init(key, params)
    # The barrier keeps XLA from fusing initialisation into the first iteration, so that `train` gives bit for
    # bit the result of `init` then `run` (and of the same run in chunks).
    state = jax.lax.optimization_barrier(state)
    return run(trainer, state, n, **run_kwargs)


class TrainerMixin:
    """`run`, `train` and `with_hparams` as methods of a trainer (the implementations are this module's)."""

    def run(self, state, num_iterations: int, **run_kwargs):
        return run(self, state, num_iterations, **run_kwargs)

    def train(self, key: jax.Array, num_iterations: int | None = None, params=None, **run_kwargs):
        return train(self, key, num_iterations, params, **run_kwargs)

    def with_hparams(self, **changes):
        """The trainer with hyperparameter leaves replaced (values or batched arrays, for `vmap` sweeps). Each
        name is looked up in `hparams`, then in any other hyperparameter group (`hook_hparams`)."""
        trainer = self
        for name, value in changes.items():
            for group in ("hparams", "hook_hparams"):
                hp = getattr(trainer, group, None)
                if hp is not None and name in {f.name for f in dataclasses.fields(hp)}:
                    # as the leaf's dtype (a Python float would be weakly typed: another program to compile)
                    value = jnp.asarray(value, jnp.result_type(getattr(hp, name)))
                    trainer = trainer.replace(**{group: hp.replace(**{name: value})})
                    break
            else:
                raise ValueError(f"{type(self).__name__}: no hyperparameter {name!r}")
        return trainer


class Runner:
    """Host-side training: `run` jitted (one compilation per trainer structure and chunk length; env params and
    hyperparameters are arguments, so changing a learning rate does not recompile), in chunks.

        runner = Runner(callback=logger, log_every=10)
        state, metrics = runner(trainer, state, 200, chunk=50, done=0, on_chunk=save, should_stop=requested)

    A numerical fault (`run`'s `fault` flag, read once per piece) raises `NumericalFault` naming the iteration;
    `should_stop()` (a SIGTERM or SIGINT, `pipeline.preemption`) is asked between pieces of at most
    `STOP_POLL_ITERATIONS`, and when it says so the state is passed to `on_chunk` and `StopRequested` raised.
    """

    STOP_POLL_ITERATIONS = 10  # a stop request waits for at most this many iterations

    def __init__(self, callback: Callback | None = None, log_every: int = 0):
        # The compiled run has no host callback: the logged iterations are sent to `callback` from the metrics
        # each piece returns (the same iterations `run(..., callback=...)` would send, at the piece's end). A
        # program with a host callback cannot go to JAX's persistent compilation cache; this one can.
        self._run = jax.jit(functools.partial(run), static_argnames="num_iterations")  # this runner's own cache
        self._log = host_call(callback) if callback is not None and log_every > 0 else None
        self._every = max(int(log_every), 1)
        self.wall_s = 0.0  # time spent in compiled runs (hooks excluded), for the stage's record

    def _send_logs(self, metrics: Metrics, n: int) -> None:
        """`run`'s logging on the host: every `log_every`-th iteration of the piece and its last, none after the
        first faulted one."""
        fault = np.asarray(metrics.get("fault", np.zeros(n, np.int32)))
        for i in range(n):
            if (i + 1) % self._every and i != n - 1:
                continue
            fresh = True if i == 0 else (fault[i - 1] == 0)
            self._log({k: v[i] for k, v in metrics.items()}, fresh)

    def __call__(self, trainer, state, num_iterations: int, *, chunk: int | None = None, done: int = 0,
                 on_chunk: Callable[[Any, int], None] | None = None,
                 should_stop: Callable[[], bool] | None = None) -> tuple[Any, Metrics]:
        """`num_iterations` more iterations. With `chunk`, in pieces that end where the iteration count (`done`
        so far) reaches a multiple of `chunk`, calling `on_chunk(state, iterations done)` after each but the
        last. Returns the state and every iteration's metrics (host numpy, concatenated).

        Raises `NumericalFault` (the iteration, the last good state) when an iteration's loss, gradient or
        parameters are non-finite, and `StopRequested` after `on_chunk` of the state reached when `should_stop()`
        turned true (asked every `STOP_POLL_ITERATIONS` iterations at most, and at chunk ends)."""
        from jaxtrade.errors import NumericalFault, StopRequested

        total = int(num_iterations)
        pieces, target = [], done + total
        saved = done  # the iteration count on_chunk last saw (or the start)
        while done < target:
            n = target - done if not chunk else min(chunk - done % chunk, target - done)
            if should_stop is not None:
                n = min(n, self.STOP_POLL_ITERATIONS)
            t0 = time.perf_counter()
            state, metrics = self._run(trainer, state, num_iterations=n)
            metrics = fetch(metrics)  # host numpy (gathered when other processes hold parts)
            pieces.append(metrics)
            self.wall_s += time.perf_counter() - t0
            if self._log is not None:
                self._send_logs(metrics, n)
            fault = first_fault(metrics)
            if fault is not None:
                i, code = fault
                raise NumericalFault(done + i + 1, describe_fault(code), state, done + i)
            done += n
            chunk_end = not chunk or done % chunk == 0
            if on_chunk is not None and done < target and chunk_end:
                on_chunk(state, done)
                saved = done
            if should_stop is not None and done < target and should_stop():
                if on_chunk is not None and saved != done:
                    on_chunk(state, done)
                raise StopRequested(done)
        if not pieces:
            return state, {}
        return state, {k: np.concatenate([p[k] for p in pieces]) for k in pieces[0]}

    def cache_size(self) -> int:
        """Compiled programs so far (one per chunk length and trainer structure)."""
        return self._run._cache_size()
