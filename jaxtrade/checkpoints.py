"""Orbax checkpoints per symbol and stage: save every k iterations, keep the last n, resume, load.

    checkpoints/{run}/{symbol}/{stage}/{step}/...   (Orbax CheckpointManager; saves are atomic)

A checkpoint holds the whole training state as a pytree (parameters, optimiser state, environment states,
random keys) plus a JSON `meta` item (iteration, wall time, config). Typed PRNG keys are stored as their raw
key data and rebuilt on restore, so a resumed run continues bit-for-bit where it stopped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from jaxtrade.errors import InputError


def _is_key(x) -> bool:
    return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def to_storable(tree):
    """Replace typed PRNG keys by their uint32 key data (Orbax stores plain arrays)."""
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def from_storable(tree, template):
    """Inverse of `to_storable`, using `template` to know which leaves were keys."""
    return jax.tree.map(lambda x, t: jax.random.wrap_key_data(x, impl=jax.random.key_impl(t)) if _is_key(t) else x,
                        tree, template)


class StageCheckpointer:
    """One stage's CheckpointManager. `directory` = checkpoints/{run}/{symbol}/{stage}."""

    def __init__(self, directory, keep: int = 3):
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(max_to_keep=max(1, keep), create=True,
                                               enable_async_checkpointing=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state: Any, meta: dict) -> None:
        self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(to_storable(state)),
                                                        meta=ocp.args.JsonSave(meta)))

    def restore(self, template: Any, step: int | None = None) -> tuple[Any, dict]:
        step = self.latest_step() if step is None else step
        if step is None:
            raise InputError(f"{self.directory}: no checkpoint to restore")
        storable = to_storable(template)
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, storable)
        out = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                                 meta=ocp.args.JsonRestore()))
        return from_storable(out["state"], template), dict(out["meta"])

    def restore_meta(self, step: int | None = None) -> dict:
        step = self.latest_step() if step is None else step
        out = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return dict(out["meta"])

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        """Wait for pending asynchronous saves, then release the manager (safe to call twice)."""
        if self.manager is None:
            return
        self.manager.wait_until_finished()
        self.manager.close()
        self.manager = None


def restore_params(directory, step: int | None = None) -> tuple[Any, dict]:
    """Restore only the policy parameters and meta from a stage directory without a template (for
    `run_backtest.py --model DIR` and `experiments.adapt`). Returns (params as numpy pytree, meta)."""
    directory = Path(directory).absolute()
    if not directory.is_dir():
        raise InputError(f"{directory}: checkpoint directory not found")
    manager = ocp.CheckpointManager(directory)
    step = manager.latest_step() if step is None else step
    if step is None:
        raise InputError(f"{directory}: no Orbax checkpoint steps in this directory")
    out = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(),
                                                        meta=ocp.args.JsonRestore()))
    manager.close()
    state = out["state"]
    params = state.get("params") if isinstance(state, dict) else None
    if params is None:
        raise InputError(f"{directory}: checkpoint step {step} has no 'params' item")
    return jax.tree.map(np.asarray, params), dict(out["meta"])
