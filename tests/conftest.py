"""Hypothesis profiles. `ci` (the default): derandomized and without an example database, so a test run is
the same on every machine and leaves no `.hypothesis/` folder; property tests keep modest example counts
(`tests.env_harness.examples`). `HYPOTHESIS_PROFILE=explore` draws fresh random examples, 10x as many, for a
longer hunt on a workstation (a failure prints the `@reproduce_failure` blob to paste into the test). And one fixture: each test starts with JAX's
float64 switch as the previous one found it."""

import os
import tempfile
from pathlib import Path

import pytest

# One XLA compilation cache for the test session, shared by both xdist workers and inherited by every command a
# test starts as a subprocess: many tests compile the same small programs (the tiny sequence of
# `tests.test_sequence.tiny_config`, the backtester), and on two CPU cores compiling is most of their time.
# Set before JAX is imported (it reads these at import). A cached executable is the one XLA compiled, so results
# do not change.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(Path(tempfile.gettempdir()) / f"jaxtrade-tests-xla-{os.getuid()}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

try:
    from hypothesis import HealthCheck, settings
except ImportError:  # the dev extra brings hypothesis; without it only the property tests cannot run
    settings = None

if settings is not None:
    _COMMON = dict(deadline=None, print_blob=True,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                          HealthCheck.data_too_large])
    settings.register_profile("ci", derandomize=True, database=None, **_COMMON)
    settings.register_profile("explore", derandomize=False, database=None, **_COMMON)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def _jax_x64_as_it_was():
    """Commands run in-process (`cli.invoke` of `experiments.backtest`, `experiments.replay`) switch float64 on
    for the whole process, as they should as programs; here that would change every later test in the same
    worker (float32 training would silently run in float64). Put the switch back after each test."""
    import jax

    before = jax.config.jax_enable_x64
    yield
    if jax.config.jax_enable_x64 != before:
        jax.config.update("jax_enable_x64", before)
