"""run_backtest.py end to end (subprocess): bad input exits 2 with one line and leaves no complete-looking
report; a run on a tiny fixture writes every file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from jaxtrade import contracts
from jaxtrade.metrics import METRIC_KEYS
from tests.test_backtest import write_fixture

ROOT = Path(__file__).resolve().parents[1]


def run(args, cwd=None, timeout=300):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, str(ROOT / "run_backtest.py"), *args], cwd=cwd or ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("processed")
    write_fixture(d, "NIFTY_15", sessions=30, seed=0)
    write_fixture(d, "Bank_Nifty_15", sessions=30, seed=1, level=45000.0, synthetic=True)
    (d / "BROKEN.parquet").write_bytes(b"not parquet")
    # one bar per session: loads, but its test split has a single bar (fails mid-run, after other symbols)
    write_fixture(d, "ZZZ_15", sessions=7, bars=1, seed=2)
    return d


def _no_outputs(out: Path, report: Path):
    assert not report.exists()
    leftovers = [p.name for p in out.rglob("*")] if out.exists() else []
    assert leftovers == [], leftovers


BAD = {
    "unknown symbol": ["--symbols", "NOPE"],
    "bad split": ["--split", "bogus", "--symbols", "NIFTY_15"],
    "bad cost model": ["--cost-model", "free", "--symbols", "NIFTY_15"],
    "negative capital": ["--initial-capital", "-5", "--symbols", "NIFTY_15"],
    "zero lot": ["--lot-size", "0", "--symbols", "NIFTY_15"],
    "unknown policy": ["--policy", "astrology", "--symbols", "NIFTY_15"],
    "missing model": ["--model", "/nonexistent/model.pth", "--symbols", "NIFTY_15"],
    "model and policy": ["--model", "/", "--policy", "flat", "--symbols", "NIFTY_15"],
    "unknown run": ["--run", "no_such_run", "--symbols", "NIFTY_15"],
    "corrupt data": ["--symbols", "NIFTY_15", "BROKEN"],
    "fails mid-run": ["--symbols", "NIFTY_15", "ZZZ_15"],
    "unknown flag": ["--symbols", "NIFTY_15", "--frobnicate"],
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_exits_2_with_one_line(case, data_dir, tmp_path):
    out, report = tmp_path / "reports", tmp_path / "report.txt"
    r = run(["--processed-data-dir", str(data_dir), "--output-dir", str(out), "--report-file", str(report),
             *BAD[case]])
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    _no_outputs(out, report)


def test_missing_processed_dir_and_bad_raw_data(tmp_path):
    r = run(["--processed-data-dir", str(tmp_path / "nope")])
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "NIFTY.csv").write_text("datetime,open,high,low,close\n2024-01-02 09:15,1,2,x,1\n")
    r = run(["--process-data", "--raw-data-dir", str(raw), "--processed-data-dir", str(tmp_path / "p"),
             "--output-dir", str(tmp_path / "out")])
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "out" / "backtest_report.txt").exists()


def test_run_writes_every_file(data_dir, tmp_path):
    out, report = tmp_path / "reports", tmp_path / "report.txt"
    r = run(["--processed_data_dir", str(data_dir), "--output-dir", str(out), "--report-file", str(report),
             "--symbols", "NIFTY_15", "Bank_Nifty_15", "--checkpoint-dir", str(tmp_path / "ck"),
             "--initial-capital", "5000000", "--split", "val"])
    assert r.returncode == 0, r.stderr
    assert "no trained model" in r.stdout and "momentum baseline instead" in r.stdout
    assert "bars" in r.stdout
    text = report.read_text()
    assert text in r.stdout  # printed as well
    for sym in ("NIFTY_15", "Bank_Nifty_15"):
        assert f"== {sym} ==" in text
        d = out / sym
        eq = pq.read_table(d / "equity.parquet")
        assert eq.column_names == ["timestamp", "close", "position", "cash", "equity", "costs"]
        assert str(eq.schema.field("timestamp").type) == "timestamp[ns, tz=Asia/Kolkata]"
        tr = pq.read_table(d / "trades.parquet")
        assert tr.column_names == ["entry_time", "exit_time", "side", "lots", "entry_price", "exit_price",
                                   "gross_pnl", "costs", "net_pnl"]
        m = json.loads((d / "metrics.json").read_text())
        for k in (*METRIC_KEYS, "symbol", "model", "split", "start", "end", "sharpe_ci95"):
            assert k in m, k
        assert m["symbol"] == sym and m["split"] == "val" and m["model"] == "momentum"
        assert (d / "equity.png").exists()
        assert m["lot_size"] == contracts.lot_size(sym)  # the current NSE lot by default
    for col in ("momentum *", "flat", "buy_and_hold", "random"):
        assert col in text
    assert "aggregate across symbols" in text
    assert "too short to judge" in text  # 4-5 sessions
    assert "SYNTHETIC" in text  # Bank_Nifty_15 is labelled synthetic
    assert not list(out.glob(".*"))  # no staging left behind


@pytest.mark.slow
def test_fresh_directory_runs_on_the_synthetic_default(tmp_path):
    r = run(["--process-data"], cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "SYNTHETIC" in r.stdout
    assert (tmp_path / "reports" / "backtest_report.txt").exists()
    assert (tmp_path / "reports" / "Nifty_2" / "metrics.json").exists()


def test_help_lists_the_flags_and_exits_0():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, str(root / "run_backtest.py"), "--help"], capture_output=True, text=True,
                         cwd=root, timeout=120)
    assert out.returncode == 0 and "--max_lots" in out.stdout and "--initial_capital" in out.stdout


def test_symbols_match_in_another_case(data_dir, tmp_path):
    out = run(["--processed-data-dir", str(data_dir), "--symbols", "nifty_15", "--policy", "flat",
               "--output-dir", str(tmp_path / "o")])
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "o" / "NIFTY_15" / "metrics.json").exists()
