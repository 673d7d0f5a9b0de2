"""Training curves: the one place per-iteration training metrics go (`--log_backend`, repeatable).

    writer = open_writer(("jsonl", "tensorboard"), run_dir, "NIFTY_5/ppo", jsonl_path=stage_dir / "metrics.jsonl",
                         extra={"symbol": "NIFTY_5", "stage": "ppo"})
    writer.write(iteration, {"mean_episode_return": 0.01, "policy_loss": -0.02, ...})
    writer.close()

Backends (each gets every metric of every `write`):
- `jsonl`: one JSON object per line in `jsonl_path` (non-finite values as null), with the `extra` fields;
- `tensorboard`: an event file under `{run_dir}/tensorboard/{tag}/` (`jaxtrade.tfevents`: no TensorFlow), so
  `tensorboard --logdir {run_dir}/tensorboard` shows one curve per metric for every tag;
- `wandb`: one W&B run per tag (group = the run directory's name), offline when `WANDB_MODE` says so or when no
  W&B credentials or network are found (`wandb sync {run_dir}/wandb/offline-run-*` uploads it later).

A tag is a path of names: `{symbol}/{stage}` for the sequence; an ablation adds a suffix per member
(`f"{symbol}/{stage}/seed_{s}"`, `.../lr_3e-4`) and opens one writer per member; `split_members` takes the
host metrics of a vmapped run (leading member axis) apart for them.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import socket
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from jaxtrade import atomic
from jaxtrade.errors import InputError

BACKENDS = ("jsonl", "tensorboard", "wandb")
_PACKAGES = {"wandb": "wandb"}  # backend -> the package it needs (tensorboard's writer is our own)


def check_backends(names: Iterable[str], flag: str = "--log_backend") -> tuple[str, ...]:
    """`names` checked before any training: known backends whose packages are installed. Returns them deduplicated."""
    out = []
    for name in names:
        if name not in BACKENDS:
            raise InputError(f"{flag}: unknown backend {name!r} (choose from {', '.join(BACKENDS)})")
        package = _PACKAGES.get(name)
        if package and importlib.util.find_spec(package) is None:
            raise InputError(f"{flag} {name}: the {package!r} package is not installed (pip install "
                             f"'jaxtrade[logging]', or pip install {package})")
        if name not in out:
            out.append(name)
    return tuple(out)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


class JsonlSink:
    def __init__(self, path: Path, extra: Mapping[str, Any], resume_at: int | None):
        self.path, self.extra = Path(path), dict(extra)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_at is None:
            self.path.unlink(missing_ok=True)
        elif self.path.exists():  # drop what an interrupted run logged after its last checkpoint
            kept = [line for line in self.path.read_text().splitlines(keepends=True)
                    if line.strip() and _iteration(line) <= resume_at]
            atomic.write_text(self.path, "".join(kept))

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        atomic.append_line(self.path, json.dumps({**{k: _finite(v) for k, v in metrics.items()}, **self.extra}))

    def close(self) -> None:
        pass


def _iteration(line: str) -> float:
    try:
        return float(json.loads(line).get("iteration") or 0)
    except (ValueError, AttributeError):
        return math.inf  # a torn last line of a killed run


class TensorBoardSink:
    def __init__(self, logdir: Path, resume_at: int | None):
        from jaxtrade.tfevents import EventFileWriter

        if resume_at is None and logdir.exists():  # a retrained stage's old curves would mix with the new ones
            for old in logdir.glob("events.out.tfevents.*"):
                old.unlink()
        self.events = EventFileWriter(logdir)
        if resume_at is not None:
            self.events.add_session_start(resume_at + 1)

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        self.events.add_scalars(step, metrics)

    def close(self) -> None:
        self.events.close()


def wandb_mode() -> str:
    """`WANDB_MODE` when set; else online only with credentials (`WANDB_API_KEY` or a netrc entry) and the W&B
    host reachable within 2 s, offline otherwise (never a prompt for a key in the middle of a run)."""
    mode = os.environ.get("WANDB_MODE")
    if mode:
        return mode
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].split("/")[0]
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    has_key = bool(os.environ.get("WANDB_API_KEY")) or (netrc.exists() and host.split(":")[0] in netrc.read_text())
    if not has_key:
        return "offline"
    try:
        name, _, port = host.partition(":")
        socket.create_connection((name, int(port or 443)), timeout=2).close()
        return "online"
    except OSError:
        return "offline"


class WandbSink:
    def __init__(self, run_dir: Path, tag: str, config: Mapping[str, Any] | None):
        try:
            import wandb
        except ImportError:
            raise InputError("--log_backend wandb: the 'wandb' package is not installed (pip install "
                             "'jaxtrade[logging]', or pip install wandb)") from None
        run_dir.mkdir(parents=True, exist_ok=True)
        mode = wandb_mode()
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "jaxtrade"), group=run_dir.name,
                              name=f"{run_dir.name}/{tag}", job_type=tag.split("/")[-1], dir=str(run_dir),
                              config=dict(config or {}), mode=mode, reinit="finish_previous")
        self.mode = mode

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        self.run.log(dict(metrics), step=step)

    def close(self) -> None:
        self.run.finish()


class MetricWriter:
    """Every `write(step, metrics)` to every backend; `close()` (or `with`) ends them."""

    def __init__(self, sinks: Sequence[Any]):
        self.sinks = list(sinks)

    def write(self, step: int, metrics: Mapping[str, Any]) -> None:
        scalars = {k: float(np.mean(np.asarray(v, np.float64))) for k, v in metrics.items()}
        for sink in self.sinks:
            sink.write(int(step), scalars)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
        self.sinks = []

    def __enter__(self) -> "MetricWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_writer(backends: Iterable[str], run_dir: str | Path, tag: str, *, jsonl_path: str | Path | None = None,
                extra: Mapping[str, Any] | None = None, config: Mapping[str, Any] | None = None,
                resume_at: int | None = None) -> MetricWriter:
    """A writer for one curve set `tag` (e.g. "NIFTY_5/ppo", "NIFTY_5/ppo/seed_3"). `jsonl_path` is where the
    jsonl backend writes (default `{run_dir}/{tag}/metrics.jsonl`); `extra` fields go on every jsonl line;
    `config` is W&B's run config. `resume_at`: None for a fresh start (this tag's old jsonl file and event
    files are removed); else the iteration a resumed run restarts after: the curves are kept up to it and
    appended to, what an interrupted run logged after it is dropped (jsonl lines; TensorBoard points, by a
    restart marker)."""
    run_dir = Path(run_dir)
    sinks: list[Any] = []
    for name in check_backends(backends):
        if name == "jsonl":
            sinks.append(JsonlSink(Path(jsonl_path) if jsonl_path else run_dir / tag / "metrics.jsonl",
                                   extra or {}, resume_at))
        elif name == "tensorboard":
            sinks.append(TensorBoardSink(run_dir / "tensorboard" / tag, resume_at))
        elif name == "wandb":
            sinks.append(WandbSink(run_dir, tag, config))
    return MetricWriter(sinks)


def split_members(metrics: Mapping[str, Any], num_members: int) -> list[dict[str, np.ndarray]]:
    """Host metrics of a vmapped run, `{name: [num_members, ...]}`, as one dict per member (for one writer each);
    a metric without the member axis (a scalar) is given to every member."""
    out: list[dict[str, np.ndarray]] = [{} for _ in range(num_members)]
    for name, value in metrics.items():
        value = np.asarray(value)
        for i in range(num_members):
            out[i][name] = value[i] if value.ndim and value.shape[0] == num_members else value
    return out
