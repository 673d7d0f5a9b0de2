"""Errors that the command lines turn into one clear line and exit code 2."""


class InputError(ValueError):
    """Bad user input (a file, a row, a flag). The message is one line that names what is wrong."""


class GateFailure(RuntimeError):
    """A training run completed but failed its gates while `on_fail=stop` (exit code 1)."""


class NumericalFault(RuntimeError):
    """A non-finite loss, gradient or parameter stopped training (exit code 3). `iteration`: the first bad one
    (1-based); `what`: "loss", "loss and gradient", "parameters", ...; `state`: the last good training state,
    at `good_iteration` iterations."""

    def __init__(self, iteration: int, what: str, state=None, good_iteration: int | None = None,
                 message: str | None = None):
        super().__init__(message or f"non-finite {what} at iteration {iteration}")
        self.iteration, self.what, self.state = iteration, what, state
        self.good_iteration = iteration - 1 if good_iteration is None else good_iteration


class StopRequested(Exception):
    """Training stopped on request (SIGTERM or SIGINT) at `iteration`, after its checkpoint was written. The
    command lines exit with 128 + the signal's number (143 for SIGTERM, 130 for SIGINT) and one line."""

    def __init__(self, iteration: int | None = None, message: str | None = None, signum: int | None = None):
        super().__init__(message or f"stopped on request at iteration {iteration}")
        self.iteration, self.signum = iteration, signum
