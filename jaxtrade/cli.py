"""Helpers shared by the thin entry points in `experiments/`, `data_tools/` and the `run_*.py` scripts.

Nothing here reads `sys.argv` by itself: an entry point passes its argv in. This keeps the library importable
without side effects while every command accepts both flag spellings (`--processed-data-dir` and
`--processed_data_dir`), the seed's space-separated lists (`--symbols Nifty_2 Bank_Nifty_5`), and exits with
code 2 and one line for bad flags or bad input.
"""

from __future__ import annotations

import atexit
import logging as logging_std
import os
import sys
import threading
import traceback
from typing import Callable, Iterable, Sequence

from absl import app, flags, logging

from jaxtrade.errors import GateFailure, InputError, NumericalFault, StopRequested


def _read_flagfile(path: str, depth: int) -> list[str]:
    """The flags of a flagfile, one per line (blank lines and `#` / `//` comments skipped)."""
    if depth > 10:
        die(f"--flagfile: {path}: flagfiles nested more than 10 deep (a cycle?)")
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line.strip() for line in f]
    except OSError as e:
        die(f"--flagfile: cannot open {path} ({e.strerror or e})")
    return [line for line in lines if line and not line.startswith(("#", "//"))]


def normalize_argv(argv: Sequence[str], list_flags: Iterable[str] = (), _depth: int = 0) -> list[str]:
    """Rewrite argv so that absl can parse it.

    `--foo-bar=x` -> `--foo_bar=x` (both spellings accepted), and for each name in `list_flags`,
    `--symbols A B C` -> `--symbols=A,B,C` (the seed's argparse `nargs='+'` style). `--flagfile=F` is expanded
    in place (so both spellings work inside flagfiles too; later flags still override earlier ones).
    """
    list_flags = {name.replace("-", "_") for name in list_flags}
    out: list[str] = [argv[0]] if argv else []
    i = 1
    while i < len(argv):
        tok = argv[i]
        if tok == "--":
            out.extend(argv[i:])
            break
        if tok.startswith("--") and len(tok) > 2:
            name, eq, value = tok[2:].partition("=")
            name = name.replace("-", "_")
            if name == "flagfile":
                if not eq:
                    if i + 1 >= len(argv):
                        die("--flagfile: missing file name")
                    value, i = argv[i + 1], i + 1
                for path in (v for v in value.split(",") if v):
                    out.extend(normalize_argv(["-"] + _read_flagfile(path, _depth), list_flags, _depth + 1)[1:])
                i += 1
                continue
            if name in list_flags and not eq:
                values = []
                j = i + 1
                while j < len(argv) and not argv[j].startswith("--"):
                    values.extend(v for v in argv[j].split(",") if v)
                    j += 1
                if values:
                    out.append(f"--{name}={','.join(values)}")
                    i = j
                    continue
                out.append(f"--{name}")
                i += 1
                continue
            out.append(f"--{name}{eq}{value}")
        else:
            out.append(tok)
        i += 1
    return out


class _QuietLibraries(logging_std.Filter):
    """Drop INFO/DEBUG records from Orbax and JAX internals: our progress lines stay readable. Matplotlib's
    font-cache notes ("generated new fontManager", "building the font cache", on the first plot of a fresh
    machine) are dropped below ERROR: they are not about the user's run."""

    NOISY = ("orbax", "jax/_src", "etils")
    PLOTTING = ("matplotlib", "PIL")

    def filter(self, record: logging_std.LogRecord) -> bool:
        if record.name.split(".")[0] in self.PLOTTING:
            return record.levelno >= logging_std.ERROR
        return record.levelno >= logging_std.WARNING or not any(n in record.pathname for n in self.NOISY)


def quiet_library_logs() -> None:
    handler = logging.get_absl_handler()
    if not any(isinstance(f, _QuietLibraries) for f in handler.filters):
        handler.addFilter(_QuietLibraries())


def die(message: str, code: int = 2) -> None:
    """Print one line on stderr and exit."""
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    sys.exit(code)


HELP_ARGS = ("--help", "-help", "-h", "-?", "--helpshort", "--helpfull")


PROJECT_PACKAGES = ("jaxtrade", "experiments", "data_tools", "run_training", "run_backtest")


def _is_project_module(module: str) -> bool:
    """absl files a flag under its module's name, or under the script's path for `__main__`."""
    return module.endswith(".py") or module.split(".")[0] in PROJECT_PACKAGES


def print_help(full: bool = False, stream=None, doc: str | None = None) -> None:
    """The command's `doc` (default: `__main__`'s docstring) and every flag it defines; with `full` also the
    flags of the libraries it imports (absl's logging flags, chex's test flags). Exit code 0 is the caller's:
    asking for help is not an error."""
    stream = stream or sys.stdout
    main_doc = getattr(sys.modules.get("__main__"), "__doc__", None)
    doc = (main_doc or doc or "").strip()
    parts = [doc] if doc else []
    for module in sorted(flags.FLAGS.flags_by_module_dict()):
        if full or _is_project_module(module):
            parts.append(flags.FLAGS.module_help(module))
    if not full:
        parts.append("(--helpfull also lists the flags of the libraries this command uses: absl, chex)")
    stream.write("\n\n".join(p for p in parts if p) + "\n")


def parse_flags(args: Sequence[str], flag_values: flags.FlagValues = flags.FLAGS) -> list[str]:
    """Parse normalised argv into `flag_values`; bad flags are one line on stderr and exit code 2."""
    try:
        return flag_values(list(args))
    except flags.Error as e:
        message = str(e).splitlines()[0] if str(e) else "bad flags"
        while message.upper().startswith("ERROR:"):  # absl's flagfile errors carry their own "ERROR::"
            message = message[6:].lstrip(": ")
        die(message)


def call_main(main: Callable[[list[str]], int | None], args: list[str]):
    """Run `main(args)` with DESIGN section 9's error contract: `InputError` -> one line, exit 2; `GateFailure`
    -> exit 1; `NumericalFault` -> one line, exit 3; `StopRequested` (SIGTERM/SIGINT) -> one line, exit 128 +
    the signal's number; anything else -> one line (the traceback only in the debug log), exit 1. Returns main's value
    (an exit code or None) or raises SystemExit."""
    if len(args) > 1:
        die(f"unexpected positional arguments: {' '.join(args[1:])}")
    try:
        return main(args)
    except InputError as e:
        die(str(e))
    except GateFailure as e:
        sys.stderr.write(f"gates failed: {e}\n")
        sys.exit(1)
    except NumericalFault as e:
        die(str(e), 3)
    except StopRequested as e:
        die(str(e), 128 + (e.signum or 15))
    except FileNotFoundError as e:
        die(f"{e.filename or e}: file not found")
    except KeyboardInterrupt:
        die("interrupted", 130)
    except Exception as e:  # noqa: BLE001 - last resort: keep a traceback in the log, one line on stderr
        logging.debug("%s", traceback.format_exc())
        die(f"{type(e).__name__}: {e}".splitlines()[0], 1)


def exit_status(code) -> int:
    """The process exit status the interpreter gives `sys.exit(code)` (a string is printed, status 1)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    sys.stderr.write(f"{code}\n")
    return 1


def invoke(main: Callable[[list[str]], int | None], argv: Sequence[str], flag_values: flags.FlagValues,
           list_flags: Iterable[str] = ()) -> int:
    """What `run` does, inside this process and without ending it: the same argv rewriting, flag parsing,
    error lines and exit codes, returned as the exit status. For tests that drive a command many times
    (`flag_values` is a private `flags.FlagValues` so the global flags stay untouched); `run` is the
    command line."""
    try:
        args = parse_flags(normalize_argv(list(argv), list_flags), flag_values)
        code = call_main(main, args)
    except SystemExit as e:
        code = e.code
    return exit_status(code)


def run(main: Callable[[list[str]], int | None], argv: Sequence[str] | None = None,
        list_flags: Iterable[str] = ()) -> None:
    """`absl.app.run` with both flag spellings, one-line errors and the exit codes of DESIGN section 9. Never
    returns: the process ends through `_exit_skipping_native_teardown` (for command-line entry points only)."""
    argv = list(sys.argv if argv is None else argv)
    argv = normalize_argv(argv, list_flags)
    if any(a in HELP_ARGS for a in argv[1:]):
        print_help(full="--helpfull" in argv, doc=getattr(sys.modules.get(main.__module__), "__doc__", None))
        sys.exit(0)

    def guarded(args):
        quiet_library_logs()
        return call_main(main, args)

    try:
        app.run(guarded, argv=argv, flags_parser=parse_flags)
    except SystemExit as e:
        _exit_skipping_native_teardown(e.code)


def _exit_skipping_native_teardown(code) -> None:
    """Leave the process as the interpreter would, minus the C++ static destructors.

    pyarrow's thread pools can abort the process while they are torn down at exit ("terminate called without
    an active exception", SIGABRT; apache/arrow#34314): seen about once in a hundred runs of
    `data_tools.process` on a loaded machine, after all output was written. So: shut threads down and join
    them (`threading._shutdown`), run the `atexit` handlers (absl, Orbax, JAX), flush, then `os._exit`.
    """
    status = exit_status(code)
    # What Py_Finalize does first: the hooks of `threading._register_atexit` (they wake idle
    # ThreadPoolExecutor workers, which would otherwise wait forever), then join every non-daemon thread.
    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is not None:
        shutdown()
    else:
        for t in threading.enumerate():
            if t is not threading.main_thread() and not t.daemon:
                t.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            status = status or 1  # e.g. stdout closed by `| head`: the interpreter would report it too
    os._exit(status)
