"""Helpers shared by the thin entry points in `experiments/`, `data_tools/` and the `run_*.py` scripts.

Nothing here reads `sys.argv` by itself: an entry point passes its argv in. This keeps the library importable
without side effects while every command accepts both flag spellings (`--processed-data-dir` and
`--processed_data_dir`), the seed's space-separated lists (`--symbols Nifty_2 Bank_Nifty_5`), and exits with
code 2 and one line for bad flags or bad input.
"""

from __future__ import annotations

import logging as logging_std
import sys
import traceback
from typing import Callable, Iterable, Sequence

from absl import app, flags, logging

from jaxtrade.errors import GateFailure, InputError


def normalize_argv(argv: Sequence[str], list_flags: Iterable[str] = ()) -> list[str]:
    """Rewrite argv so that absl can parse it.

    `--foo-bar=x` -> `--foo_bar=x` (both spellings accepted), and for each name in `list_flags`,
    `--symbols A B C` -> `--symbols=A,B,C` (the seed's argparse `nargs='+'` style).
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
    """Drop INFO/DEBUG records from Orbax and JAX internals: our progress lines stay readable."""

    NOISY = ("orbax", "jax/_src", "etils")

    def filter(self, record: logging_std.LogRecord) -> bool:
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


def run(main: Callable[[list[str]], int | None], argv: Sequence[str] | None = None,
        list_flags: Iterable[str] = ()) -> None:
    """`absl.app.run` with both flag spellings, one-line errors and the exit codes of DESIGN section 9."""
    argv = list(sys.argv if argv is None else argv)
    argv = normalize_argv(argv, list_flags)

    def parser(args):
        try:
            return flags.FLAGS(args)
        except flags.Error as e:
            die(str(e).splitlines()[0] if str(e) else "bad flags")

    def guarded(args):
        quiet_library_logs()
        if len(args) > 1:
            die(f"unexpected positional arguments: {' '.join(args[1:])}")
        try:
            return main(args)
        except InputError as e:
            die(str(e))
        except GateFailure as e:
            sys.stderr.write(f"gates failed: {e}\n")
            sys.exit(1)
        except FileNotFoundError as e:
            die(f"{e.filename or e}: file not found")
        except KeyboardInterrupt:
            die("interrupted", 130)
        except Exception as e:  # noqa: BLE001 - last resort: keep a traceback in the log, one line on stderr
            logging.debug("%s", traceback.format_exc())
            die(f"{type(e).__name__}: {e}".splitlines()[0], 1)

    app.run(guarded, argv=argv, flags_parser=parser)
