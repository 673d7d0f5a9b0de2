"""`jaxtrade.cli.run` ends the process itself (skipping pyarrow's native teardown): exit codes, `atexit`
handlers, non-daemon threads and buffered output must come out as a normal interpreter exit gives them."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import atexit, concurrent.futures, sys, threading, time
    from jaxtrade import cli
    from jaxtrade.errors import InputError

    marker = sys.argv[1]
    mode = sys.argv[2]

    def late_writer():
        time.sleep(0.3)
        with open(marker, "a") as f:
            f.write("thread;")

    def main(argv):
        atexit.register(lambda: open(marker, "a").write("atexit;"))
        threading.Thread(target=late_writer).start()  # non-daemon: the exit must wait for it
        pool = concurrent.futures.ThreadPoolExecutor(2)  # left open: its idle workers must be woken, not waited on
        pool.submit(lambda: None).result()
        sys.stdout.write("partial line without newline")  # still buffered when main returns
        if mode == "bad":
            raise InputError("data.csv row 3: bad price")
        if mode == "crash":
            raise RuntimeError("boom")
        return None

    cli.run(main, [sys.argv[0]])
""")


@pytest.mark.parametrize("mode,code", [("ok", 0), ("bad", 2), ("crash", 1)])
def test_run_exit_keeps_codes_atexit_threads_and_output(tmp_path, mode, code):
    marker = tmp_path / "marker.txt"
    p = subprocess.run([sys.executable, "-c", SCRIPT, str(marker), mode], cwd=REPO, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == code, p.stderr
    assert p.stdout == "partial line without newline"
    assert marker.read_text() == "thread;atexit;"  # threads joined first, then atexit, as the interpreter does
    if mode == "bad":
        assert p.stderr.strip() == "error: data.csv row 3: bad price"
    if mode == "crash":
        assert p.stderr.strip() == "error: RuntimeError: boom"
