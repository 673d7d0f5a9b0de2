"""Live vs backtest (issue 18): `experiments.replay --decisions LOG` reads decisions a live loop took and reports
where they differ from the backtest's on the same bars."""

import numpy as np
import pytest

from jaxtrade import data as D
from jaxtrade.live import LiveInputError, compare_with_backtest, read_decision_log
from tests.test_live import SYMBOL, _cli, market_dir  # noqa: F401 - the fixture


def test_compare_by_hand(tmp_path):
    bars = np.array(["2024-01-01T09:15", "2024-01-01T09:20", "2024-01-01T09:25", "2024-01-01T09:30"],
                    "datetime64[m]")
    backtested = np.array([1, 1, 0])  # the last bar decides for a bar the backtest never reaches
    log = tmp_path / "live.csv"
    # 09:20 differs; 09:25 is missing from the log; 09:30 (the last bar) is not compared; epoch seconds work too
    # (2024-01-01 09:15 IST = 03:45 UTC = 1704080700).
    log.write_text("timestamp,target,note\n1704080700,1,x\n2024-01-01 09:20,-1,y\n2024-01-01 09:30,0,z\n")
    times, targets = read_decision_log(log)
    c = compare_with_backtest(times, targets, bars, backtested)
    assert c == {"compared": 2, "equal": 1, "differ": [("2024-01-01 09:20", -1, 1)], "unlogged": 1, "last_bar": 1}


@pytest.mark.parametrize("text,message", [
    ("time,lots\n", "needs columns timestamp and target"),
    ("timestamp,target\n2024-01-01 09:15,one\n", "row 2: expected a timestamp and an integer target"),
    ("timestamp,target\n2024-01-01 09:20,1\n2024-01-01 09:15,1\n", "row 3: timestamp 2024-01-01 09:15 is not after"),
])
def test_bad_logs_are_one_line_errors(tmp_path, text, message):
    (tmp_path / "l.csv").write_text(text)
    with pytest.raises(LiveInputError, match=message):
        read_decision_log(tmp_path / "l.csv")


def test_unknown_bar_is_refused():
    bars = np.array(["2024-01-01T09:15", "2024-01-01T09:20"], "datetime64[m]")
    with pytest.raises(LiveInputError, match="2024-01-01 09:17\\) is not a bar of the split"):
        compare_with_backtest(np.array(["2024-01-01T09:17"], "datetime64[m]"), np.array([0]), bars, np.array([0]))


def test_replay_cli_reports_where_a_live_log_differs(market_dir, tmp_path):  # noqa: F811
    out = tmp_path / "replay.csv"
    args = ["--model", str(market_dir / "model"), "--processed_data_dir", str(market_dir / "processed"),
            "--symbol", SYMBOL]
    r = _cli(args + ["--output", str(out)])
    assert r.returncode == 0, r.stderr
    # The replay's own CSV is a live log that agrees; change two decisions and drop one bar.
    rows = out.read_text().splitlines()
    header, body = rows[0], [r.split(",") for r in rows[1:]]
    changed = [10, 40]
    for i in changed:
        body[i][5] = str(-int(body[i][5]) or 1)
    expected = [body[i][0] for i in changed]
    del body[20]
    log = tmp_path / "live.csv"
    log.write_text("\n".join([header] + [",".join(b) for b in body]) + "\n")
    r = _cli(args + ["--decisions", str(log)])
    assert r.returncode == 1, r.stderr
    lines = [l for l in r.stdout.splitlines() if l.startswith("differs at")]
    assert [l.split(": ")[0][len("differs at "):] for l in lines] == expected
    assert "1 without a logged decision" in r.stdout and "differ on 2" in r.stdout
    lo, hi = D.split_sessions(30)["test"]
    assert f"{(hi - lo) * 75 - 1:,} live decisions" in r.stdout
