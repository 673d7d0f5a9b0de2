"""Stopping on request: SIGTERM (a preemptible machine going away, `kill`) and SIGINT (Ctrl-C) ask training to
stop at the next iteration boundary the host sees (`agents.base.Runner` polls every few iterations), write a
checkpoint there and end the command with one line and exit code 128 + the signal's number; the same command
run again resumes from that checkpoint. A second Ctrl-C interrupts at once (the default behaviour).

    with stop_on_signals():
        ... runner(..., should_stop=requested) ...   # raises StopRequested after the checkpoint
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_received: list[int] = []  # the signals received inside `stop_on_signals` (first one decides)


def requested() -> bool:
    """Whether a stop was asked for (inside `stop_on_signals`)."""
    return bool(_received)


def signal_number() -> int | None:
    return _received[0] if _received else None


def signal_name() -> str:
    return signal.Signals(_received[0]).name if _received else "a stop request"


def _handler(signum, frame):
    del frame
    if signum == signal.SIGINT and _received:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # the next Ctrl-C stops at once
        raise KeyboardInterrupt
    _received.append(signum)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn SIGTERM and SIGINT into stop requests for the block (main thread only; elsewhere a no-op), then
    restore the previous handlers and forget the requests."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in _SIGNALS}
    _received.clear()
    for s in _SIGNALS:
        signal.signal(s, _handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        _received.clear()
