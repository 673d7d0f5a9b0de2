"""Many runs of one trainer as one trainer: `vmap` over seeds, folds and array hyperparameters (DESIGN sections 4
and 8), behind the same contract as a single run, so `agents.base.run`, `Runner` (chunks, checkpoints, progress)
and everything that drives a trainer drive a batch of runs unchanged.

    runs = batched(trainer, 8)                                  # 8 seeds: leaves shared, keys per run
    runs = batched(trainer.with_hparams(learning_rate=lrs), 8, batched_fields=("hparams",))   # lrs: [8]
    folds = batched(runs.replace(inner=...), ...)               # nest: folds outside, seeds inside
    state = runs.init(keys)                                     # keys: [8] (one per run)
    state, metrics = runs.run(state, n)                         # every leaf of state and metrics: [8, ...]

A leaf of the inner trainer is either shared by every run (axis None: env params of one fold, a hyperparameter
that is not swept) or has a leading run axis (axis 0). Which is recorded per leaf (`axes`, static), so the batch
composes: `batched(batched(t, N, ...), K, ...)` vmaps folds outside seeds, and a fold's env params are stored
once, not once per seed. Run i of a batch computes what `inner` computes alone with run i's leaves and key (the
tests compare them to float rounding).
"""

from __future__ import annotations

from typing import Any, Iterable

import jax
import jax.numpy as jnp
from flax import struct

from jaxtrade.agents.base import TrainerMixin


@struct.dataclass
class Batched(TrainerMixin):
    """`size` runs of `inner` under `jax.vmap`; `axes[i]` is 0 where the i-th leaf of `inner` has a leading run
    axis, None where every run shares it."""

    inner: Any
    size: int = struct.field(pytree_node=False, default=1)
    axes: tuple = struct.field(pytree_node=False, default=())

    @property
    def config(self):
        return self.inner.config

    @property
    def network(self):
        return self.inner.network

    @property
    def env_steps_per_iteration(self) -> int:
        return self.inner.env_steps_per_iteration * self.size

    def _in_axes(self):
        return jax.tree.unflatten(jax.tree.structure(self.inner), list(self.axes))

    def init(self, keys: jax.Array, params=None):
        """keys: `[size]` (one per run); params: None, or starting parameters with a leading run axis."""
        if keys.shape[:1] != (self.size,):
            raise ValueError(f"Batched.init: expected {self.size} keys (one per run), got shape {keys.shape}")
        return jax.vmap(lambda t, k, p: t.init(k, p), in_axes=(self._in_axes(), 0, None if params is None else 0)
                        )(self.inner, keys, params)

    def train_iteration(self, state):
        return jax.vmap(lambda t, s: t.train_iteration(s), in_axes=(self._in_axes(), 0))(self.inner, state)

    def params_of(self, state):
        """The runs' policy parameters, `[size, ...]` per leaf."""
        return self.inner.params_of(state)

    def with_hparams(self, **changes):
        """Hyperparameters of every run: one value for all, or an array of one value per run where the leaf
        already has a run axis (the value is broadcast to the leaf's shape, so shared and per-run leaves keep
        their axes and nothing recompiles)."""
        flat = {}
        for name, value in changes.items():
            old = _hparam_leaf(self.inner, name)
            flat[name] = jnp.broadcast_to(jnp.asarray(value, old.dtype), jnp.shape(old))
        return self.replace(inner=self.inner.with_hparams(**flat))


def _hparam_leaf(trainer, name: str):
    if isinstance(trainer, Batched):
        return _hparam_leaf(trainer.inner, name)
    for group in ("hparams", "hook_hparams"):
        hp = getattr(trainer, group, None)
        if hp is not None and hasattr(hp, name):
            return getattr(hp, name)
    raise ValueError(f"{type(trainer).__name__}: no hyperparameter {name!r}")


def batched(inner, size: int, batched_fields: Iterable[str] = ()) -> Batched:
    """`size` runs of `inner`. `batched_fields`: the trainer's fields (e.g. "hparams", "hook_hparams",
    "init_from", "env_params"; for a nested batch, the innermost trainer's) whose leaves carry a leading axis of
    `size`, one entry per run; every other leaf is shared by all runs."""
    size = int(size)
    if size < 1:
        raise ValueError(f"batched: size must be >= 1, got {size}")
    fields = set(batched_fields)
    axes = []
    for name, sub in _fields(inner):
        n = len(jax.tree.leaves(sub))
        if name in fields:
            for leaf in jax.tree.leaves(sub):
                if jnp.shape(leaf)[:1] != (size,):
                    raise ValueError(f"batched: {name} leaf of shape {jnp.shape(leaf)} has no leading axis of "
                                     f"{size} runs")
            axes += [0] * n
        else:
            axes += [None] * n
    unknown = fields - {name for name, _ in _fields(inner)}
    if unknown:
        raise ValueError(f"batched: {type(inner).__name__} has no field(s) {', '.join(sorted(unknown))}")
    if len(axes) != len(jax.tree.leaves(inner)):
        raise AssertionError("batched: leaf count mismatch")
    return Batched(inner=inner, size=size, axes=tuple(axes))


def _fields(trainer) -> list[tuple[str, Any]]:
    """(field name, value) of a trainer's pytree fields, in flattening order (through nested batches, the
    innermost trainer's fields)."""
    import dataclasses

    if isinstance(trainer, Batched):
        return _fields(trainer.inner)
    return [(f.name, getattr(trainer, f.name)) for f in dataclasses.fields(trainer)
            if f.metadata.get("pytree_node", True)]


def unstack(tree, index: int):
    """Run `index` of a batched pytree (every leaf's leading axis)."""
    return jax.tree.map(lambda x: x[index], tree)


def _axes(trainer, zero_fields: set[str]) -> tuple:
    axes = []
    for name, sub in _fields(trainer):
        axes += [0 if name in zero_fields else None] * len(jax.tree.leaves(sub))
    return tuple(axes)


def folds_by_runs(trainer, num_folds: int, num_runs: int, *, per_fold: Iterable[str] = ("env_params",),
                  per_run: Iterable[str] = (), per_cell: Iterable[str] = ()) -> Batched:
    """A `[num_folds, num_runs]` grid of runs: folds vmapped outside runs (seeds, or configuration x seed).

    per_fold: fields whose leaves are `[num_folds, ...]` (a fold's env params, stored once for all its runs);
    per_run: `[num_runs, ...]` (swept hyperparameters: the same in every fold); per_cell: `[num_folds,
    num_runs, ...]` (e.g. `init_from`, each cell's previous-stage policy); a scalar leaf of such a field is
    broadcast (the hyperparameters beside a swept one). Other fields are shared. State,
    metrics and parameters come out `[num_folds, num_runs, ...]`; `init` takes keys `[num_folds, num_runs]`."""
    per_fold, per_run, per_cell = set(per_fold), set(per_run), set(per_cell)
    names = {name for name, _ in _fields(trainer)}
    unknown = (per_fold | per_run | per_cell) - names
    if unknown:
        raise ValueError(f"folds_by_runs: {type(trainer).__name__} has no field(s) {', '.join(sorted(unknown))}")
    changes = {}
    for name, sub in _fields(trainer):
        lead = ((num_folds,) if name in per_fold else (num_runs,) if name in per_run
                else (num_folds, num_runs) if name in per_cell else ())
        if not lead:
            continue

        def lead_with(leaf, name=name, lead=lead):
            if jnp.ndim(leaf) == 0:  # a scalar hyperparameter beside a swept one: the same for every run
                return jnp.broadcast_to(leaf, lead)
            if jnp.shape(leaf)[:len(lead)] != lead:
                raise ValueError(f"folds_by_runs: a {name} leaf of shape {jnp.shape(leaf)} does not lead with "
                                 f"{lead}")
            return leaf

        changes[name] = jax.tree.map(lead_with, sub)
    trainer = trainer.replace(**changes)
    inner = Batched(inner=trainer, size=int(num_runs), axes=_axes(trainer, per_run | per_cell))
    return Batched(inner=inner, size=int(num_folds), axes=_axes(trainer, per_fold | per_cell))
