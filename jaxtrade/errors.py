"""Errors that the command lines turn into one clear line and exit code 2."""


class InputError(ValueError):
    """Bad user input (a file, a row, a flag). The message is one line that names what is wrong."""


class GateFailure(RuntimeError):
    """A training run completed but failed its gates while `on_fail=stop` (exit code 1)."""
