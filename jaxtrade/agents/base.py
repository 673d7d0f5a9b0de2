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


def host_call(callback: Callback) -> Callable[[Metrics], None]:
    """Wrap a host metrics callback for `jax.debug.callback`: numpy arrays, and `env_steps` recomputed exactly
    (int64) from `iteration` x `batch_size` when both are in the metrics (on device it is a float32)."""
    def call(metrics):
        m = {k: np.asarray(v) for k, v in metrics.items()}
        if "iteration" in m and "batch_size" in m:
            m["env_steps"] = m["iteration"].astype(np.int64) * m["batch_size"].astype(np.int64)
        callback(m)
    return call


def run(trainer, state, num_iterations: int, *, log_every: int = 0, callback: Callback | None = None
        ) -> tuple[Any, Metrics]:
    """`num_iterations` of `trainer.train_iteration` as one `lax.scan`; returns the state and the metrics stacked
    `[num_iterations]` (nothing else accumulates on device). With a `callback` and `log_every > 0`, every
    `log_every`-th iteration of this call and its last go to the host. The scan index, not the (possibly
    batched) iteration counter, decides when, so the predicate stays unbatched under `vmap`."""
    n = int(num_iterations)
    every = max(int(log_every), 1)
    host = host_call(callback) if callback is not None and log_every > 0 else None

    def body(s, i):
        s, metrics = trainer.train_iteration(s)
        if host is not None:
            log_now = ((i + 1) % every == 0) | (i == n - 1)
            jax.lax.cond(log_now, lambda m: jax.debug.callback(host, m), lambda m: None, metrics)
        return s, metrics

    return jax.lax.scan(body, state, jnp.arange(n, dtype=jnp.int32))


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
        state, metrics = runner(trainer, state, 200, chunk=50, done=0, on_chunk=save)
    """

    def __init__(self, callback: Callback | None = None, log_every: int = 0):
        self._run = jax.jit(functools.partial(run, log_every=log_every, callback=callback),
                            static_argnames="num_iterations")
        self.wall_s = 0.0  # time spent in compiled runs (hooks excluded), for the stage's record

    def __call__(self, trainer, state, num_iterations: int, *, chunk: int | None = None, done: int = 0,
                 on_chunk: Callable[[Any, int], None] | None = None) -> tuple[Any, Metrics]:
        """`num_iterations` more iterations. With `chunk`, in pieces that end where the iteration count (`done`
        so far) reaches a multiple of `chunk`, calling `on_chunk(state, iterations done)` after each but the
        last. Returns the state and every iteration's metrics (host numpy, concatenated)."""
        total = int(num_iterations)
        pieces, target = [], done + total
        while done < target:
            n = target - done if not chunk else min(chunk - done % chunk, target - done)
            t0 = time.perf_counter()
            state, metrics = self._run(trainer, state, num_iterations=n)
            pieces.append(fetch(metrics))  # host numpy (gathered when other processes hold parts)
            self.wall_s += time.perf_counter() - t0
            done += n
            if on_chunk is not None and done < target:
                on_chunk(state, done)
        if not pieces:
            return state, {}
        return state, {k: np.concatenate([p[k] for p in pieces]) for k in pieces[0]}

    def cache_size(self) -> int:
        """Compiled programs so far (one per chunk length and trainer structure)."""
        return self._run._cache_size()
