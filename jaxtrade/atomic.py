"""Every file jaxtrade writes goes through here: a temporary name in the same folder, written, flushed and
fsynced, then renamed into place (`os.replace`, atomic on POSIX and Windows). A crash or a kill at any moment
leaves either the old file or the new one, never a half-written file under the real name; what a killed writer
leaves is a hidden `.{name}.tmp-{pid}-{random}` beside it, which nothing reads.

    with replacing(path) as tmp: write anything to `tmp` (a Path), then it becomes `path`
    write_bytes(path, data) / write_text(path, text)        (JSON: `jsonio.write_json_atomic`, through these)
    write_parquet(table, path, **pyarrow_kwargs) / save_figure(fig, path, **savefig_kwargs) / torch_save(obj, path)
    append_line(path, line)     metrics.jsonl: appends are not atomic; the resuming writer drops a torn last
                                line (`metric_log.JsonlSink`)

Directories that must appear whole (a backtest's per-symbol folders) are staged under a hidden name and renamed the
same way by their writer (`experiments.backtest`).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Iterator

from jaxtrade.errors import InputError

TMP_MARK = ".tmp-"  # every temporary name holds this: `.{name}.tmp-{pid}-{hex}`


def temporary_name(path) -> Path:
    """A fresh hidden name beside `path` for writing it."""
    path = Path(path)
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}")


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def replacing(path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block ends normally, the file written there is fsynced and
    renamed to `path` (replacing it). When the block raises, the temporary file is removed and `path` is left as
    it was. Creates the parent directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def writable_directory(path, flag: str) -> Path:
    """`path` as a directory the run can write into (created when missing), else an InputError naming `flag`:
    checked when a command starts, not after hours of training."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{flag}: {path} is a file, not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = temporary_name(path / "write-check")
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise InputError(f"{flag}: cannot write into {path} ({e.strerror or e})") from None
    return path


def write_bytes(path, data: bytes) -> Path:
    with replacing(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path, text: str, encoding: str = "utf-8") -> Path:
    with replacing(path) as tmp:
        tmp.write_text(text, encoding=encoding)
    return Path(path)


def write_parquet(table, path, **kwargs) -> Path:
    """`pyarrow.parquet.write_table(table, ...)` into place."""
    import pyarrow.parquet as pq

    with replacing(path) as tmp:
        pq.write_table(table, tmp, **kwargs)
    return Path(path)


def save_figure(fig, path, **kwargs) -> Path:
    """`fig.savefig` into place; the format is the path's suffix (the temporary name has none)."""
    kwargs.setdefault("format", Path(path).suffix.lstrip(".") or "png")
    with replacing(path) as tmp:
        fig.savefig(tmp, **kwargs)
    return Path(path)


def torch_save(obj, path) -> Path:
    """`torch.save(obj, ...)` into place (PyTorch imported by the caller's need, not here)."""
    import torch

    with replacing(path) as tmp:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
    return Path(path)


def append_line(path, line: str) -> None:
    """Append one line (a newline is added) and flush. Not atomic: a writer killed mid-line leaves a torn last
    line, which the resuming writer (`metric_log.JsonlSink`) drops."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(line.rstrip("\n") + "\n")
        f.flush()
