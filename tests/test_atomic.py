"""Atomic outputs (issue 14 item 2): every file jaxtrade writes goes to a hidden temporary name in the same folder
and is renamed into place (`jaxtrade.atomic`), so a writer killed at any moment leaves the earlier file or none
under the real name, never a complete-looking partial one."""

import ast
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jaxtrade import atomic

ROOT = Path(__file__).resolve().parents[1]

# A writer process: each kind of file the project writes, through the project's own writer functions; the
# temporary file is complete and about to be renamed when the process says "ready" and waits to be killed (the
# most dangerous moment: a file that looks whole, under a temporary name).
CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from jaxtrade import atomic
    kind, path = sys.argv[1], Path(sys.argv[2])
    real_fsync = atomic._fsync_file
    def fsync_then_wait(tmp):
        real_fsync(tmp)
        print("ready", tmp, flush=True)
        time.sleep(600)
    atomic._fsync_file = fsync_then_wait
    if kind == "parquet":   # processed data, equity/trades
        import pyarrow as pa
        atomic.write_parquet(pa.table({"x": list(range(100000))}), path)
    elif kind == "json":    # metrics.json, summary.json
        from jaxtrade.jsonio import write_json_atomic
        write_json_atomic(path, {"sharpe": 1.5, "complete": True})
    elif kind == "csv":     # daily_returns.csv, reports
        atomic.write_text(path, "date,returns\\n2024-01-01,0.01\\n")
    elif kind == "png":
        import matplotlib; matplotlib.use("Agg"); import matplotlib.pyplot as plt
        fig = plt.figure(); plt.plot([1, 2, 3]); atomic.save_figure(fig, path)
    elif kind == "pth":
        atomic.torch_save({"state_dict": {}, "config": {"format_version": 1}}, path)
""")


@pytest.mark.parametrize("kind", ["parquet", "json", "csv"])
def test_writer_killed_before_rename_leaves_old_file_or_none(tmp_path, kind):
    for existing in (False, True):
        target = tmp_path / f"out{int(existing)}.{kind}"
        if existing:
            target.write_text("OLD")
        p = subprocess.Popen([sys.executable, "-c", CHILD, kind, str(target)], cwd=ROOT, stdout=subprocess.PIPE,
                             text=True)
        line = p.stdout.readline()
        assert line.startswith("ready "), line
        tmp = Path(line.split(" ", 1)[1].strip())
        assert tmp.parent == target.parent and tmp.name.startswith(f".{target.name}{atomic.TMP_MARK}")
        assert tmp.stat().st_size > 0  # the whole content was written ...
        p.send_signal(signal.SIGKILL)
        p.wait(30)
        # ... but under a hidden temporary name: the real name holds the old file, or nothing.
        if existing:
            assert target.read_text() == "OLD"
        else:
            assert not target.exists()
        visible = [f.name for f in tmp_path.iterdir() if not f.name.startswith(".")]
        assert visible == ([target.name] if existing else [])


def test_writer_that_fails_midway_leaves_nothing(tmp_path):
    target = tmp_path / "equity.parquet"

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with atomic.replacing(target) as tmp:
            tmp.write_bytes(b"PAR1 half a file")
            raise Boom
    assert list(tmp_path.iterdir()) == []
    atomic.write_parquet(pa.table({"x": [1, 2]}), target)
    assert pq.read_table(target)["x"].to_pylist() == [1, 2] and len(list(tmp_path.iterdir())) == 1


def test_a_torn_metrics_line_is_dropped_when_the_run_resumes(tmp_path):
    from jaxtrade.metric_log import JsonlSink

    log = tmp_path / "metrics.jsonl"
    for i in (1, 2, 3):
        atomic.append_line(log, json.dumps({"iteration": i}))
    with open(log, "a") as f:
        f.write('{"iteration": 4, "lo')  # a writer killed mid-line
    sink = JsonlSink(log, {}, resume_at=2)  # resumed from the checkpoint at iteration 2
    sink.write(3, {"iteration": 3.0})
    assert [json.loads(l)["iteration"] for l in log.read_text().splitlines()] == [1, 2, 3]


# What may write without `jaxtrade.atomic`: the helper itself; the backtester's report, which is staged under a
# temporary name and renamed after its per-symbol folders (experiments.backtest); the tear sheet's figures, which
# go to an in-memory buffer embedded in the page; TensorBoard event files, appended record by record (each record
# is length-prefixed and checksummed, the format's own guard against a torn last record).
WRITE_CALLS = {"write_table", "savefig", "write_text", "write_bytes", "to_csv", "to_parquet"}
ALLOWED = {("jaxtrade/atomic.py", "*"), ("experiments/backtest.py", "write_text"), ("jaxtrade/tearsheet.py", "savefig"),
           ("jaxtrade/tfevents.py", "open")}


def test_every_writer_goes_through_the_atomic_helper():
    offenders = []
    for folder in ("jaxtrade", "data_tools", "experiments"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            for node in ast.walk(ast.parse(path.read_text())):
                if not isinstance(node, ast.Call):
                    continue
                name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                if isinstance(node.func, ast.Attribute) and getattr(node.func.value, "id", "") == "atomic":
                    continue
                torch_save = name == "save" and isinstance(node.func, ast.Attribute) and \
                    getattr(node.func.value, "id", "") == "torch"
                write_open = name == "open" and any(isinstance(a, ast.Constant) and isinstance(a.value, str)
                                                    and a.value[:1] in "wax" for a in node.args[1:2])
                if (name in WRITE_CALLS or torch_save or write_open) and (rel, "*") not in ALLOWED \
                        and (rel, name) not in ALLOWED:
                    offenders.append(f"{rel}:{node.lineno} {name}")
    assert not offenders, "write through jaxtrade.atomic: " + ", ".join(offenders)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["png", "pth"])
def test_figure_and_model_writers_killed_before_rename(tmp_path, kind):
    pytest.importorskip("matplotlib" if kind == "png" else "torch")
    target = tmp_path / f"model.{kind}"
    p = subprocess.Popen([sys.executable, "-c", CHILD, kind, str(target)], cwd=ROOT, stdout=subprocess.PIPE,
                         text=True)
    line = p.stdout.readline()
    assert line.startswith("ready "), line
    assert Path(line.split(" ", 1)[1].strip()).stat().st_size > 0
    os.kill(p.pid, signal.SIGKILL)
    p.wait(30)
    assert not target.exists() and not [f for f in tmp_path.iterdir() if not f.name.startswith(".")]
