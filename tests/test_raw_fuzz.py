"""`python -m data_tools.process` under fuzzing (issue 16): small valid raw files of every layout, mutated, must
come out as processed files that satisfy DESIGN section 2 or as exit 2 with one line naming the file (and the
row); never another exit code, never a traceback. See `tests/raw_fuzz.py` for the check, `raw_layouts.py` and
`raw_mutations.py` for the inputs, and `test_raw_fuzz_found.py` for the failing examples this found.

The command runs in-process (`raw_fuzz.run_command`, through the same `jaxtrade.cli` path as the command line):
a subprocess per mutant would spend its time importing pyarrow. `test_in_process_run_matches_the_command`
proves on a few files that both give the same exit code, stderr and stdout.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.raw_fuzz import STALE_KINDS, run_command, run_mutant
from tests.raw_layouts import PANDAS, SEED, VENDOR
from tests.raw_mutations import WRONG_TYPES, mutants

REPO = Path(__file__).resolve().parents[1]
FAST_EXAMPLES = 300  # the slow test runs 10x (3,000): about 100 s of the CI run
# Deterministic in CI: examples come from a seed fixed by the test (derandomize), no example database.
# No deadline: one example writes and reads files, and this machine is shared (timings vary 5x). too_slow:
# a mutant is a valid file of up to 12 bars (~90 draws) plus up to three mutations, each drawing again.
FAST = settings(max_examples=FAST_EXAMPLES, derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
LONG = settings(FAST, max_examples=10 * FAST_EXAMPLES)
GOOD = SEED.replace(b"1736480", b"1736740")        # a valid file of another symbol (GOOD), three days later


def _fuzz(m, companion: bool, stale: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        run_mutant(m, Path(d), GOOD if companion else b"", stale)


@FAST
@given(m=mutants(), companion=st.booleans(), stale=st.sampled_from(STALE_KINDS))
def test_raw_files_fuzz(m, companion, stale):
    _fuzz(m, companion, stale)


@pytest.mark.slow
@LONG
@given(m=mutants(), companion=st.booleans(), stale=st.sampled_from(STALE_KINDS))
def test_raw_files_fuzz_long(m, companion, stale):
    _fuzz(m, companion, stale)


# ----------------------------------------------------------------------- in-process run vs the command

CASES = {
    "ok": ("Nifty_2.csv", SEED),
    "ok_vendor_two_files": ("2024 FEB NIFTY.txt", VENDOR),
    "bad_row": ("NIFTY50.csv", PANDAS.replace(b"2024-01-05 09:15:00", b"2024-02-30 09:15:00")),
    "binary": ("Nifty_2.csv", WRONG_TYPES["nul"]),
    "warning_on_stdout": ("Nifty_5.csv", SEED),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_in_process_run_matches_the_command(tmp_path, case):
    name, data = CASES[case]
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / name).write_bytes(data)
    if case == "ok_vendor_two_files":
        (raw / "GOOD.csv").write_bytes(GOOD)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, "-m", "data_tools.process", "--raw-data-dir", str(raw),
                        "--processed-data-dir", str(tmp_path / "cli")], cwd=REPO, capture_output=True, text=True,
                       env=env, timeout=120)
    status, out, err = run_command(raw, tmp_path / "inproc")
    assert (status, err) == (p.returncode, p.stderr.replace(str(tmp_path / "cli"), str(tmp_path / "inproc")))

    def same(text):  # the timing and the output directory differ
        return re.sub(r" in \d+\.\d+ s", " in T s", text.replace(str(tmp_path / "cli"), str(tmp_path / "inproc")))
    assert same(out) == same(p.stdout)
    assert sorted(f.name for f in (tmp_path / "cli").glob("*.parquet")) == sorted(
        f.name for f in (tmp_path / "inproc").glob("*.parquet"))
    assert status == (2 if case in ("bad_row", "binary") else 0)
