"""Hypothesis profiles. `ci` (the default): derandomized and without an example database, so a test run is
the same on every machine and leaves no `.hypothesis/` folder; property tests keep modest example counts
(`tests.env_harness.examples`). `HYPOTHESIS_PROFILE=explore` draws fresh random examples, 10x as many, for a
longer hunt on a workstation (a failure prints the `@reproduce_failure` blob to paste into the test)."""

import os

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
