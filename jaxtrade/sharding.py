"""Scale out (DESIGN section 8): the batch axes sharded over a `jax.sharding.Mesh`, and several hosts through
`jax.distributed`. JAX's own engine does the work; this module only says where the batch axes are.

The mesh has two axes: `sweep` (the seeds x configs x folds a sweep `vmap`s) and `batch` (parallel episodes).

    mesh = make_mesh(num_devices=4)                   # sweep 1 x batch 4 over the first 4 local devices
    with use_mesh(mesh):                              # every program traced inside sees it
        state, metrics = runner(trainer, state, n)    # rollouts constrain their episode axis to `batch`

Trainers need not know: the shared rollout code (`agents.rollout`) calls `constrain_batch` on its env states
and observations `[num_envs, ...]`, which shards them over `batch` when a mesh is in context (and the episode
count divides it) and does nothing otherwise; GSPMD propagates the rest (the gradient all-reduce included).
Parameters and optimiser states stay replicated. `sweep_jit` is `jit(vmap(f))` with the swept axis sharded
over `sweep` (`spmd_axis_name`), so a sweep's episodes shard over what `batch` is left.

Several hosts: `initialize_distributed(coordinator, num_processes, process_id)` before any computation; the
mesh then spans every process's devices, every process runs the same program, and only `is_writer()` (process
0) writes files. `num_devices` counts devices per process.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from jaxtrade.errors import InputError

SWEEP, BATCH = "sweep", "batch"


# ------------------------------------------------------------------------------------------------------------
# Processes


def initialize_distributed(coordinator_address: str | None, num_processes: int | None,
                           process_id: int | None) -> bool:
    """`jax.distributed.initialize` when a coordinator is given (every process runs the same command with its
    own `process_id`; `auto`: JAX detects the cluster, as on a TPU pod slice); must run before any computation.
    Returns True when it initialised. On the CPU backend
    the cross-process collectives are gloo's (`jax_cpu_collectives_implementation`)."""
    if coordinator_address == "auto":  # a TPU pod slice, SLURM, ...: JAX reads the cluster's own settings
        jax.distributed.initialize(num_processes=num_processes, process_id=process_id)
        return True
    if not coordinator_address:
        if num_processes not in (None, 0, 1) or process_id not in (None, 0):
            raise InputError("--num_processes/--process_id need --coordinator_address (host:port of process 0)")
        return False
    if num_processes is None or num_processes < 1:
        raise InputError(f"--num_processes: expected >= 1 with --coordinator_address, got {num_processes}")
    if process_id is None or not 0 <= process_id < num_processes:
        raise InputError(f"--process_id: expected 0..{num_processes - 1}, got {process_id}")
    if ":" not in coordinator_address:
        raise InputError(f"--coordinator_address: expected host:port, got {coordinator_address!r}")
    if jax.config.values.get("jax_cpu_collectives_implementation") in (None, "none"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id)
    return True


def is_writer() -> bool:
    """Whether this process writes files (checkpoints, reports, `.pth`): process 0 only."""
    return jax.process_index() == 0


def sync(name: str) -> None:
    """Wait until every process reaches this point (after process 0 wrote files the others will read)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)


# ------------------------------------------------------------------------------------------------------------
# Meshes


def make_mesh(num_devices: int | None = None, sweep: int = 1) -> Mesh:
    """A (`sweep`, `batch`) mesh over the first `num_devices` local devices of every process (default all);
    `sweep` devices of it along the sweep axis (it must divide the device count)."""
    local = jax.local_devices()
    n = len(local) if num_devices is None else int(num_devices)
    if not 1 <= n <= len(local):
        raise InputError(f"--num_devices: expected 1..{len(local)} (the {jax.default_backend()} devices of this "
                         f"process), got {num_devices}")
    by_process: dict[int, list] = {}
    for d in jax.devices():
        by_process.setdefault(d.process_index, []).append(d)
    chosen = [d for p in sorted(by_process) for d in sorted(by_process[p], key=lambda d: d.id)[:n]]
    total = len(chosen)
    if sweep < 1 or total % sweep:
        raise ValueError(f"make_mesh: sweep={sweep} does not divide {total} devices")
    grid = np.asarray(chosen, dtype=object).reshape(sweep, total // sweep)
    return Mesh(grid, (SWEEP, BATCH), axis_types=(AxisType.Auto, AxisType.Auto))


def use_mesh(mesh: Mesh | None):
    """Context in which traced programs see `mesh` (None: nothing changes)."""
    return contextlib.nullcontext() if mesh is None else jax.set_mesh(mesh)


def _context_mesh():
    mesh = jax.sharding.get_abstract_mesh()
    return None if mesh is None or mesh.empty else mesh


def axis_size(name: str = BATCH) -> int:
    """Devices along mesh axis `name` of the mesh in context (1 without one)."""
    mesh = _context_mesh()
    return int(dict(zip(mesh.axis_names, mesh.axis_sizes)).get(name, 1)) if mesh is not None else 1


def constrain_batch(tree, axis: int = 0):
    """Shard axis `axis` of every array leaf of `tree` over the mesh's `batch` axis (a no-op with no mesh in
    context, one `batch` device, or a leaf whose axis the device count does not divide: that one stays where
    GSPMD puts it). Call it inside traced code on arrays `[..., num_envs (at axis), ...]`."""
    n = axis_size(BATCH)
    if n <= 1:
        return tree

    def one(x):
        if getattr(x, "ndim", 0) <= axis or x.shape[axis] % n or jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return x
        return jax.lax.with_sharding_constraint(x, P(*([None] * axis), BATCH))

    return jax.tree.map(one, tree)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def leading_sharding(mesh: Mesh, x, name: str) -> NamedSharding:
    """`x`'s leading axis over mesh axis `name` when its size divides it, else replicated."""
    size = mesh.shape[name]
    shape = np.shape(x)
    if not shape or shape[0] % size:
        return replicated(mesh)
    return NamedSharding(mesh, P(name))


def put_replicated(tree, mesh: Mesh | None):
    """`tree`'s arrays replicated on every device of `mesh` (a global array in several processes)."""
    if mesh is None:
        return tree
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(replicated(mesh), np.asarray(x))
                        if jax.process_count() > 1 else jax.device_put(x, replicated(mesh)), tree)


def sweep_mesh(sweep_size: int, num_devices: int | None = None) -> Mesh:
    """A mesh for a sweep of `sweep_size` runs: as many devices along `sweep` as divide both the sweep and the
    device count (the rest along `batch`, for each run's episodes)."""
    n = len(jax.local_devices()) if num_devices is None else int(num_devices)
    n *= jax.process_count()
    return make_mesh(num_devices, sweep=math.gcd(int(sweep_size), n))


def sweep_jit(fn: Callable, mesh: Mesh, in_axes: Sequence[int | None]) -> Callable:
    """`jit(vmap(fn, in_axes))` over `mesh`: the swept (leading) axis of the mapped arguments and of every
    output sharded over `sweep`, constraints inside (`constrain_batch`) over `batch`. Call the result inside
    `use_mesh(mesh)` or not: it sets the mesh itself."""
    mapped = jax.vmap(fn, in_axes=tuple(in_axes), spmd_axis_name=SWEEP)
    compiled = jax.jit(mapped)

    def call(*args):
        placed = []
        for a, ax in zip(args, in_axes):
            if ax is None:
                placed.append(a)
            else:
                if ax != 0:
                    raise ValueError("sweep_jit: mapped arguments must be swept along their leading axis")
                placed.append(jax.tree.map(lambda x: jax.device_put(x, leading_sharding(mesh, x, SWEEP)), a))
        with use_mesh(mesh):
            return compiled(*placed)

    call.lower = compiled.lower  # type: ignore[attr-defined]
    call._cache_size = compiled._cache_size  # type: ignore[attr-defined]
    return call


def describe(mesh: Mesh | None) -> str:
    """One line: devices, processes and mesh shape."""
    if mesh is None:
        return f"1 device ({jax.default_backend()})"
    shape = dict(zip(mesh.axis_names, mesh.devices.shape))
    return (f"{mesh.devices.size} {jax.default_backend()} device(s) in {jax.process_count()} process(es); mesh "
            + " x ".join(f"{k} {v}" for k, v in shape.items()))


def shard_info(x: Any) -> str:
    """How `x` is laid out (for tests and logs)."""
    return str(getattr(x, "sharding", None))


def fetch(tree):
    """Host numpy copies of `tree`'s arrays, also of global arrays other processes hold parts of (gathered)."""
    def one(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated:
            from jax.experimental import multihost_utils
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return x
        return np.asarray(x) if isinstance(x, jax.Array) else x

    return jax.tree.map(one, tree)


# ------------------------------------------------------------------------------------------------------------
# Command-line flags (the training commands and the backtester)

FLAG_NAMES = ("num_devices", "coordinator_address", "num_processes", "process_id")


def define_flags(hosts: bool = True) -> None:
    """`--num_devices` and, with `hosts`, `--coordinator_address`, `--num_processes`, `--process_id`
    (idempotent)."""
    from absl import flags

    if "num_devices" not in flags.FLAGS:
        flags.DEFINE_integer("num_devices", None, "Local devices to shard the parallel episodes over (default: all of "
                             "this process's devices; 1: no sharding).")
    if not hosts or "coordinator_address" in flags.FLAGS:
        return
    flags.DEFINE_string("coordinator_address", None, "The host:port of process 0 for a run over several hosts "
                        "(jax.distributed; 'auto' on a TPU pod slice or SLURM); every process runs the same command.")
    flags.DEFINE_integer("num_processes", None, "Processes (hosts) in a run over several hosts.")
    flags.DEFINE_integer("process_id", None, "This process's index, 0..num_processes-1 (process 0 writes the files).")


def setup_from_flags() -> Mesh:
    """Initialise `jax.distributed` (when `--coordinator_address` is given), then build the mesh of
    `--num_devices` and make it the programs' mesh (`jax.set_mesh`). Call first in a command's main, before any
    computation. Returns the mesh."""
    from absl import flags, logging

    f = flags.FLAGS
    value = lambda name: f[name].value if name in f else None  # noqa: E731
    initialize_distributed(value("coordinator_address"), value("num_processes"), value("process_id"))
    mesh = make_mesh(value("num_devices"))
    if mesh.devices.size > 1:  # one device: programs stay exactly as they are without a mesh
        jax.set_mesh(mesh)
        logging.info("sharding over %s (process %d)", describe(mesh), jax.process_index())
    return mesh
