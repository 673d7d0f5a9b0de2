"""Orbax checkpoints per symbol and stage: save every k iterations, keep the last n, resume, load.

    checkpoints/{run}/{symbol}/{stage}/{step}/...   (Orbax CheckpointManager; saves are atomic)

A checkpoint holds the whole training state as a pytree (parameters, optimiser state, environment states,
random keys) plus a JSON `meta` item (iteration, wall time, config). Typed PRNG keys are stored as their raw
key data and rebuilt on restore, so a resumed run continues bit-for-bit where it stopped.

`find_model` is the backtester's loading priority (final -> maml -> moe -> ppo, `.pth` file else Orbax checkpoint,
most recent run first); `stage_status` says whether a stage directory holds a finished stage.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

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
        self._options = ocp.CheckpointManagerOptions(max_to_keep=max(1, keep), create=True,
                                                     enable_async_checkpointing=True)
        self.manager = ocp.CheckpointManager(self.directory, options=self._options)

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

    def restore_latest(self, template: Callable[[dict], Any], check_meta: Callable[[dict], None] | None = None
                       ) -> tuple[int, Any, dict] | None:
        """(step, state, meta) of the newest checkpoint that reads back whole, or None when there is none. A step
        that cannot be read (a half-written or corrupted checkpoint) is renamed `{step}.unreadable` beside the
        others, with a warning naming it, and the step before it is tried. `check_meta(meta)` may raise (say, a
        checkpoint trained with other settings): that error is not a corruption and goes to the caller.
        `template(meta)`: the state structure to restore that step into."""
        for step in sorted(self.all_steps(), reverse=True):
            try:
                meta = self.restore_meta(step)
            except Exception as e:  # noqa: BLE001 - any failure to read a step means it is not usable
                self._set_aside(step, e)
                continue
            if check_meta is not None:
                check_meta(meta)
            try:
                state, meta = self.restore(template(meta), step)
            except Exception as e:  # noqa: BLE001
                self._set_aside(step, e)
                continue
            return step, state, meta
        return None

    def _set_aside(self, step: int, error: Exception) -> None:
        bad = self.directory / str(step)
        aside = bad.with_name(f"{step}.unreadable")
        n = 1
        while aside.exists():
            n += 1
            aside = bad.with_name(f"{step}.unreadable{n}")
        first = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
        logging.warning("checkpoint %s cannot be read (%s: %s); set aside as %s, resuming from the one before it",
                        bad, type(error).__name__, first, aside.name)
        if bad.exists():
            os.replace(bad, aside)
        # A fresh manager forgets the step (Orbax lists steps once, when it is created).
        self.manager.close()
        self.manager = ocp.CheckpointManager(self.directory, options=self._options)

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
    out = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(_on_this_device(
        directory / str(step) / "state")), meta=ocp.args.JsonRestore()))
    manager.close()
    state = out["state"]
    params = state.get("params") if isinstance(state, dict) else None
    if params is None:
        raise InputError(f"{directory}: checkpoint step {step} has no 'params' item")
    return jax.tree.map(np.asarray, params), dict(out["meta"])


def _on_this_device(item_dir: Path):
    """The saved tree's shapes and dtypes on this process's first device: a checkpoint written over a device mesh
    or several hosts (`jaxtrade.sharding`) restores on a machine with other devices."""
    device = jax.local_devices()[0]
    metadata = ocp.StandardCheckpointHandler().metadata(item_dir)
    return jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=jax.sharding.SingleDeviceSharding(
        device)), metadata, is_leaf=lambda m: hasattr(m, "shape") and hasattr(m, "dtype"))


# ------------------------------------------------------------------------------------------ loading priority

# The backtester's loading priority (DESIGN section 5) and each rank's `.pth` name: checkpoints/{run}/models/
# {symbol}_{name}.pth. The Orbax form of a stage rank is checkpoints/{run}/{symbol}/{stage}; of "final", the stage
# directory that summary.json's "final_model" names.
PRIORITY = ("final", "maml", "moe", "ppo")
MODEL_FILES = {"final": "final_model", "maml": "maml_stage3_final", "moe": "moe_stage2", "ppo": "ppo_stage1"}
PRIORITY_TEXT = "loading priority final > maml > moe > ppo"


def stage_status(directory) -> tuple[bool | None, str]:
    """(finished, why not) of an Orbax stage directory, from its latest checkpoint's meta: True when the sequence
    marked it finished ("complete"), False when it did not (or there is no checkpoint yet), None when the meta does
    not say (a checkpoint another tool wrote). `why` is "" when finished."""
    directory = Path(directory).absolute()
    try:
        manager = ocp.CheckpointManager(directory)  # reads only (read_only=True would log three warnings)
        step = manager.latest_step()
        meta = None if step is None else dict(
            manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])
        manager.close()
    except Exception as e:  # noqa: BLE001 - an unreadable directory is not a finished model
        return False, f"its checkpoint cannot be read ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    if meta is None:
        return False, "it has no checkpoint yet (training stopped or still running)"
    if "complete" not in meta:
        return None, ""
    if meta["complete"]:
        return True, ""
    done, target = meta.get("iteration"), meta.get("target_iterations")
    at = f"iteration {done} of {target}" if target is not None else f"iteration {done}"
    return False, f"its latest checkpoint is at {at}, not finished (training stopped or still running)"


@dataclasses.dataclass(frozen=True)
class FoundModel:
    """A model the loading priority chose: `path` is a `.pth` file or an Orbax stage directory."""

    path: Path
    run: str
    rank: str  # "final", "maml", "moe" or "ppo"
    stage: str  # the training stage it holds ("final" for a final .pth; the recorded stage for an Orbax final)

    def describe(self) -> str:
        if self.path.suffix == ".pth":
            what = f"{self.rank} rank"
        elif self.rank == "final":
            what = f"Orbax checkpoint of the {self.stage} stage, the final model as summary.json records it"
        else:
            what = f"Orbax checkpoint of the {self.stage} stage"
        return f"{self.path} ({what}) from run {self.run}"


@dataclasses.dataclass(frozen=True)
class ModelSearch:
    """What `find_model` found: the model (None: no model at all), lines to print (which run among several,
    which stage was skipped and why), and what was looked for (for the no-model line)."""

    found: FoundModel | None
    notes: tuple[str, ...]
    looked: str


def _torch_importable() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def _run_models(run_dir: Path, symbol: str, can_read_pth: bool
                ) -> tuple[list[tuple[FoundModel, float]], list[tuple[str, str]]]:
    """Every loadable model of `symbol` in one run, in priority order with its time (newest file or step directory),
    and (rank, line) for each rank whose model cannot be loaded as it is (a partly finished stage, a .pth without
    PyTorch)."""
    found, skipped = [], []
    summary = None
    summary_path = run_dir / symbol / "summary.json"
    if summary_path.is_file():
        try:
            summary = json.loads(summary_path.read_text())
        except (OSError, ValueError) as e:
            skipped.append(("final", f"final: {summary_path} cannot be read ({e}); the final model is not known"))
    for rank in PRIORITY:
        pth = run_dir / "models" / f"{symbol}_{MODEL_FILES[rank]}.pth"
        if pth.is_file():
            if can_read_pth:
                found.append((FoundModel(pth, run_dir.name, rank, rank), pth.stat().st_mtime))
                continue
            from jaxtrade.export import TORCH_HINT
            pth_note = f"{pth} needs PyTorch, which is not installed ({TORCH_HINT})"
        else:
            pth_note = None
        stage = rank
        if rank == "final":
            recorded = (summary or {}).get("final_model") or {}
            stage = recorded.get("stage")
            if stage not in PRIORITY[1:]:
                if pth_note:
                    skipped.append((rank, f"final: {pth_note}, and summary.json records no final model to load "
                                          f"instead"))
                continue
        directory = run_dir / symbol / stage
        label = f"final ({stage} stage, as summary.json records it)" if rank == "final" else stage
        if not directory.is_dir():
            if pth_note:
                skipped.append((rank, f"{label}: {pth_note}, and {directory} does not exist"))
            continue
        finished, why = stage_status(directory)
        if finished is False:
            skipped.append((rank, f"{label} skipped: {directory}: {why}"))
            continue
        if pth_note:
            skipped.append((rank, f"{label}: {pth_note}; its Orbax checkpoint {directory} is loaded instead"))
        steps = [p for p in directory.iterdir() if p.is_dir() and p.name.isdigit()]
        when = max((p.stat().st_mtime for p in steps), default=directory.stat().st_mtime)
        found.append((FoundModel(directory, run_dir.name, rank, stage), when))
    return found, skipped


def run_directory(checkpoint_dir, run: str) -> Path:
    """`{checkpoint_dir}/{run}`, or an InputError naming the runs there (for `--run`)."""
    root = Path(checkpoint_dir)
    if not (root / run).is_dir():
        have = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        raise InputError(f"--run: {root / run} not found (runs in {root}: {', '.join(have) or 'none'})")
    return root / run


def find_model(checkpoint_dir, symbol: str, run: str | None = None, can_read_pth: bool | None = None) -> ModelSearch:
    """The model `run_backtest.py` loads for `symbol` (DESIGN section 5): in the most recent run under
    `checkpoint_dir` that holds a finished model of the symbol (or in `run`), the first rank of final > maml > moe >
    ppo that has one, its `.pth` file (`{run}/models/{symbol}_{final_model,...}.pth`) or else its Orbax checkpoint
    (`{run}/{symbol}/{stage}`; for final, the stage summary.json records as the final model). A stage whose latest
    checkpoint is not marked finished is never loaded; a note says it was skipped and why. A run's time is its
    newest model file or checkpoint step of the symbol. `.pth` files are only loadable with PyTorch
    (`can_read_pth`, default: whether torch imports); without it the same rank's Orbax checkpoint is used."""
    root = Path(checkpoint_dir)
    can_read_pth = _torch_importable() if can_read_pth is None else can_read_pth
    names = "{" + ",".join(MODEL_FILES[r] for r in PRIORITY) + "}"
    where = f"{root}/{run or '*'}"
    looked = f"{where}/models/{symbol}_{names}.pth or {where}/{symbol}/{{maml,moe,ppo}}/ Orbax checkpoints"
    if run is not None:
        run_dirs = [run_directory(root, run)]
    else:
        run_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) \
            if root.is_dir() else []
    per_run = {d.name: _run_models(d, symbol, can_read_pth) for d in run_dirs}
    holding = {name: max(t for _, t in models) for name, (models, _) in per_run.items() if models}
    if not holding:
        notes = tuple(f"run {name}: {line}" for name, (_, skipped) in per_run.items() for _, line in skipped)
        return ModelSearch(None, notes, looked)
    chosen = max(holding, key=lambda name: (holding[name], name))
    models, skipped = per_run[chosen]
    best = models[0][0]
    notes = []
    if len(holding) > 1:
        newest_first = sorted(holding, key=lambda n: (holding[n], n), reverse=True)
        notes.append(f"models for {symbol} in {len(holding)} runs: "
                     f"{', '.join(f'{n} ({_stamp(holding[n])})' for n in newest_first)}; using the most recent, "
                     f"{chosen} (--run NAME or --model PATH picks another)")
    # Lines for what outranked the choice but could not be loaded: in the chosen run, the higher ranks; in runs
    # without any finished model, everything (say, a newer run still training its first stage).
    upto = PRIORITY[:PRIORITY.index(best.rank) + 1]
    notes += [f"run {chosen}: {line}" for rank, line in skipped if rank in upto]
    notes += [f"run {name}: {line}" for name, (m, lines) in per_run.items() if not m for _, line in lines]
    return ModelSearch(best, tuple(notes), looked)


def _stamp(t: float) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))
