"""data_tools.process: every accepted raw layout against hand-worked rows, and every bad input via the CLI."""

from __future__ import annotations

import io
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_tools.process import process_directory, read_processed_metadata
from jaxtrade.errors import InputError

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------ helpers

def run_proc(tmp_path, *args):
    raw = tmp_path / "raw"
    out = tmp_path / "processed"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, "-m", "data_tools.process", "--raw-data-dir", str(raw),
                        "--processed-data-dir", str(out), *args],
                       cwd=REPO, capture_output=True, text=True, env=env, timeout=60)
    return p


def process(tmp_path, **kw):
    buf, err = io.StringIO(), io.StringIO()
    res = process_directory(tmp_path / "raw", tmp_path / "processed", out=buf, err=err, **kw)
    return res, buf.getvalue(), err.getvalue()


def load(path):
    t = pq.read_table(path)
    return t, read_processed_metadata(path)


def hhmm(table):
    """Timestamps as 'YYYY-MM-DD HH:MM' IST strings (no pandas)."""
    ns = table["timestamp"].cast(pa.int64()).to_numpy() + 19_800 * 10**9
    return [str(x)[:16].replace("T", " ") for x in ns.astype("datetime64[ns]")]


def write(path: Path, text: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def bar(i, base=100.0, vol=None):
    """Hand-checkable bar i: O=base+i, H=O+1, L=O-0.5, C=O+0.5, V=10*(i+1)."""
    o = base + i
    return o, o + 1, o - 0.5, o + 0.5, (10 * (i + 1) if vol is None else vol)


def vendor_lines(sym, mult=1.0):
    """A vendor month: bars labelled by END minute, pre-open 09:08, post-close, and a Muhurat evening."""
    lines = []

    def add(date, t, i, base=100.0):
        o, h, l, c, v = bar(i, base)
        lines.append(f"{sym},{date},{t},{o * mult:.2f},{h * mult:.2f},{l * mult:.2f},{c * mult:.2f},{v},0")

    add("20240102", "09:08", 0, 90.0)                       # pre-open
    for i in range(10):                                     # 09:16 .. 09:25 -> starts 09:15 .. 09:24
        add("20240102", f"09:{16 + i:02d}", i)
    add("20240102", "15:29", 10)                            # -> 15:28
    add("20240102", "15:30", 11)                            # -> 15:29
    add("20240102", "15:31", 12)                            # -> 15:30 post-close
    for i in range(3):                                      # day 2: 09:16 .. 09:18
        add("20240103", f"09:{16 + i:02d}", i, 200.0)
    add("20240103", "15:30", 3, 200.0)                      # -> 15:29
    add("20240103", "15:32", 4, 200.0)                      # -> 15:31 post-close
    for i in range(3):                                      # Muhurat evening: no regular bar that day
        add("20241101", f"18:{16 + i:02d}", i, 300.0)
    return lines


def write_vendor(raw: Path, shuffle_seed=None):
    nifty, bank = vendor_lines("NIFTY"), vendor_lines("BANKNIFTY", 4.0)
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(nifty)
    # monthly files whose names sort in the wrong order; one file mixes both symbols
    write(raw / "2024 NOV NIFTY.txt", "\n".join(nifty[:9] + bank[:5]) + "\n")
    write(raw / "2024 JAN NIFTY.txt", "\n".join(nifty[9:]) + "\n")
    write(raw / "2024 JAN BNF.txt", "\n".join(bank[5:]) + "\n")


# ----------------------------------------------------------------------------------------- vendor layout

VENDOR_TIMES = ["2024-01-02 09:%02d" % m for m in range(15, 25)] + ["2024-01-02 15:28", "2024-01-02 15:29",
                "2024-01-03 09:15", "2024-01-03 09:16", "2024-01-03 09:17", "2024-01-03 15:29"]


def test_vendor_end_labels_sessions_and_drops(tmp_path):
    write_vendor(tmp_path / "raw")
    res, out, err = process(tmp_path)
    assert res.ok, err
    t, meta = load(tmp_path / "processed" / "NIFTY.parquet")
    assert t.column_names == ["timestamp", "open", "high", "low", "close", "volume", "session"]
    assert str(t.schema.field("timestamp").type) == "timestamp[ns, tz=Asia/Kolkata]"
    assert t.schema.field("session").type == pa.int32()
    assert hhmm(t) == VENDOR_TIMES
    assert t["session"].to_pylist() == [0] * 12 + [1] * 4
    assert t["open"].to_pylist()[:3] == [100.0, 101.0, 102.0]
    assert t["open"].to_pylist()[10:12] == [110.0, 111.0]
    assert t["close"].to_pylist()[12:] == [200.5, 201.5, 202.5, 203.5]
    assert t["volume"].to_pylist()[:2] == [10.0, 20.0]
    assert meta["rows_in"] == 22 and meta["rows_out"] == 16
    assert meta["dropped"] == {"exact_duplicates": 0, "pre_open": 1, "post_close": 2, "special_sessions": 3}
    assert meta["label_shift_minutes"] == -1 and meta["bar_minutes"] == 1
    assert meta["symbol"] == "NIFTY" and meta["synthetic"] is False
    assert "2024 JAN NIFTY.txt" in meta["source"] and "2024 NOV NIFTY.txt" in meta["source"]
    s = {x.symbol: x for x in res.summaries}
    assert s["NIFTY"].special_days == 1 and s["NIFTY"].sessions == 2
    assert "labels: bar end (detected), shifted -1 min" in out
    assert "pre-open 1" in out and "post-close/after-hours 2" in out and "special sessions 3 (1 day)" in out
    b, bmeta = load(tmp_path / "processed" / "BANKNIFTY.parquet")
    assert hhmm(b) == VENDOR_TIMES and b["open"].to_pylist()[0] == 400.0 and bmeta["rows_in"] == 22


def test_vendor_shuffled_rows_and_exact_duplicates(tmp_path):
    write_vendor(tmp_path / "raw", shuffle_seed=3)
    # the same month shipped twice: every row an exact duplicate
    extra = (tmp_path / "raw" / "2024 JAN NIFTY.txt").read_text()
    write(tmp_path / "raw" / "2024 JAN NIFTY copy.txt", extra)
    res, out, err = process(tmp_path)
    assert res.ok, err
    t, meta = load(tmp_path / "processed" / "NIFTY.parquet")
    assert hhmm(t) == VENDOR_TIMES
    assert meta["dropped"]["exact_duplicates"] == len(extra.strip().splitlines())
    assert meta["rows_out"] == 16


def test_vendor_resample_2_and_5(tmp_path):
    write_vendor(tmp_path / "raw")
    res, out, err = process(tmp_path, bar_minutes=5, symbols=["NIFTY"])
    assert res.ok, err
    t, meta = load(tmp_path / "processed" / "NIFTY_5.parquet")
    assert meta["symbol"] == "NIFTY_5" and meta["bar_minutes"] == 5
    assert hhmm(t) == ["2024-01-02 09:15", "2024-01-02 09:20", "2024-01-02 15:25", "2024-01-03 09:15",
                       "2024-01-03 15:25"]
    # bars 0-4, 5-9, 10-11 of day 1; 0-2 and 3 of day 2 (base 200)
    assert t["open"].to_pylist() == [100.0, 105.0, 110.0, 200.0, 203.0]
    assert t["high"].to_pylist() == [105.0, 110.0, 112.0, 203.0, 204.0]
    assert t["low"].to_pylist() == [99.5, 104.5, 109.5, 199.5, 202.5]
    assert t["close"].to_pylist() == [104.5, 109.5, 111.5, 202.5, 203.5]
    assert t["volume"].to_pylist() == [150.0, 400.0, 230.0, 60.0, 40.0]
    assert t["session"].to_pylist() == [0, 0, 0, 1, 1]
    assert not (tmp_path / "processed" / "BANKNIFTY_5.parquet").exists()

    res, out, err = process(tmp_path, bar_minutes=2, symbols=["NIFTY"])
    assert res.ok, err
    t, meta = load(tmp_path / "processed" / "NIFTY_2.parquet")
    assert hhmm(t) == ["2024-01-02 09:%02d" % m for m in (15, 17, 19, 21, 23)] + [
        "2024-01-02 15:27", "2024-01-02 15:29", "2024-01-03 09:15", "2024-01-03 09:17", "2024-01-03 15:29"]
    assert t["open"].to_pylist() == [100.0, 102.0, 104.0, 106.0, 108.0, 110.0, 111.0, 200.0, 202.0, 203.0]
    assert t["high"].to_pylist() == [102.0, 104.0, 106.0, 108.0, 110.0, 111.0, 112.0, 202.0, 203.0, 204.0]
    assert t["low"].to_pylist() == [99.5, 101.5, 103.5, 105.5, 107.5, 109.5, 110.5, 199.5, 201.5, 202.5]
    assert t["close"].to_pylist() == [101.5, 103.5, 105.5, 107.5, 109.5, 110.5, 111.5, 201.5, 202.5, 203.5]
    assert t["volume"].to_pylist() == [30.0, 70.0, 110.0, 150.0, 190.0, 110.0, 120.0, 30.0, 30.0, 40.0]


def test_bar_label_override(tmp_path):
    write_vendor(tmp_path / "raw")
    res, out, err = process(tmp_path, bar_label="start", symbols=["NIFTY"])
    assert res.ok, err
    t, meta = load(tmp_path / "processed" / "NIFTY.parquet")
    assert meta["label_shift_minutes"] == 0
    assert hhmm(t)[0] == "2024-01-02 09:16" and hhmm(t)[-1] == "2024-01-03 09:18"
    # 15:30 and 15:31/15:32 are now outside the session
    assert meta["dropped"]["post_close"] == 4 and meta["rows_out"] == 14
    assert "bar start (--bar-label), no shift" in out


# ------------------------------------------------------------------------------------ the seed's CSV layout

SEED_T0 = 1736480700          # 2025-01-10 09:15 IST


def seed_csv(times, prices=None):
    lines = [",datetime,open,high,low,close,volume"]
    for k, t in enumerate(times):
        o, h, l, c, v = bar(k, vol=0) if prices is None else prices[k]
        lines.append(f"{k},{t},{o},{h},{l},{c},{v}")
    return "\n".join(lines) + "\n"


def seed_times():
    day2 = SEED_T0 + 3 * 86400          # Monday 2025-01-13
    return [SEED_T0 + 120 * k for k in range(4)] + [day2 + 120 * k for k in range(2)]


def test_seed_csv_epoch_seconds(tmp_path):
    write(tmp_path / "raw" / "Nifty_2.csv", seed_csv(seed_times()))
    res, out, err = process(tmp_path)
    assert res.ok, err
    t, meta = load(tmp_path / "processed" / "Nifty_2.parquet")
    assert hhmm(t) == ["2025-01-10 09:15", "2025-01-10 09:17", "2025-01-10 09:19", "2025-01-10 09:21",
                       "2025-01-13 09:15", "2025-01-13 09:17"]
    assert t["timestamp"].cast(pa.int64()).to_pylist()[0] == SEED_T0 * 10**9
    assert meta["bar_minutes"] == 2 and meta["label_shift_minutes"] == 0 and meta["symbol"] == "Nifty_2"
    assert t["session"].to_pylist() == [0, 0, 0, 0, 1, 1]
    assert t["volume"].to_pylist() == [0.0] * 6
    # --bar-minutes equal to the file's own bar size: same name, no Nifty_2_2
    res, out, err = process(tmp_path, bar_minutes=2)
    assert res.ok and [s.symbol for s in res.summaries] == ["Nifty_2"]
    assert not (tmp_path / "processed" / "Nifty_2_2.parquet").exists()
    # resampled to 4 minutes: the _2 suffix is replaced
    res, out, err = process(tmp_path, bar_minutes=4)
    assert res.ok, err
    t, meta = load(tmp_path / "processed" / "Nifty_4.parquet")
    assert hhmm(t) == ["2025-01-10 09:15", "2025-01-10 09:19", "2025-01-13 09:15"]
    assert t["open"].to_pylist() == [100.0, 102.0, 104.0]
    assert t["close"].to_pylist() == [101.5, 103.5, 105.5]
    # smaller than the bar size: that symbol fails
    res, out, err = process(tmp_path, bar_minutes=1)
    assert not res.ok and "cannot resample" in err


def test_epoch_milliseconds_and_source_tz_ignored(tmp_path):
    ms = [t * 1000 for t in seed_times()]
    write(tmp_path / "raw" / "X.csv", seed_csv(ms))
    res, out, err = process(tmp_path, source_tz="America/New_York")
    assert res.ok, err
    t, _ = load(tmp_path / "processed" / "X.parquet")
    assert hhmm(t)[0] == "2025-01-10 09:15"


# ------------------------------------------------------------------------------------ zone-aware CSV exports

def yf_csv(offset: str, hours_back: int = 0, minutes_back: int = 0):
    lines = ["Datetime,Open,High,Low,Close,Adj Close,Volume"]
    for k in range(3):
        total = 9 * 60 + 15 + k - (hours_back * 60 + minutes_back)
        o, h, l, c, v = bar(k)
        lines.append(f"2024-01-02 {total // 60:02d}:{total % 60:02d}:00{offset},{o},{h},{l},{c},{c - 1},{v}")
    return "\n".join(lines) + "\n"


def test_zone_aware_csv_ist_and_utc(tmp_path):
    write(tmp_path / "raw" / "IST.csv", yf_csv("+05:30"))
    write(tmp_path / "raw" / "UTC.csv", yf_csv("+00:00", 5, 30))
    write(tmp_path / "raw" / "NAIVE.csv", yf_csv(""))
    res, out, err = process(tmp_path)
    assert res.ok, err
    want = ["2024-01-02 09:15", "2024-01-02 09:16", "2024-01-02 09:17"]
    for name in ("IST", "UTC", "NAIVE"):
        t, meta = load(tmp_path / "processed" / f"{name}.parquet")
        assert hhmm(t) == want, name
        assert t["close"].to_pylist() == [100.5, 101.5, 102.5]   # not the Adj Close column
        assert t["volume"].to_pylist() == [10.0, 20.0, 30.0]


def test_naive_source_tz(tmp_path):
    write(tmp_path / "raw" / "N.csv", yf_csv("", 5, 30))
    res, out, err = process(tmp_path, source_tz="UTC")
    assert res.ok, err
    t, _ = load(tmp_path / "processed" / "N.parquet")
    assert hhmm(t)[0] == "2024-01-02 09:15"


def test_date_and_time_columns(tmp_path):
    lines = ["Date,Time,Open,High,Low,Close"] + [
        f"2024-01-02,09:{15 + k}:00,{100 + k},{101 + k},{99.5 + k},{100.5 + k}" for k in range(3)]
    write(tmp_path / "raw" / "DT.csv", "\n".join(lines) + "\n")
    res, out, err = process(tmp_path)
    assert res.ok, err
    t, _ = load(tmp_path / "processed" / "DT.parquet")
    assert hhmm(t) == ["2024-01-02 09:15", "2024-01-02 09:16", "2024-01-02 09:17"]


def yf_multiheader_csv(tickers=("^NSEI",), first="Datetime"):
    """yfinance >= 0.2.51: Price/Ticker/Datetime header lines, columns Close,High,Low,Open,Volume."""
    cols = ["Close", "High", "Low", "Open", "Volume"]
    lines = ["Price," + ",".join(c for c in cols for _ in tickers),
             "Ticker," + ",".join(t for _ in cols for t in tickers),
             first + "," * (len(cols) * len(tickers))]
    for k in range(3):
        o, h, l, c, v = bar(k)
        vals = {"Open": o, "High": h, "Low": l, "Close": c, "Volume": v}
        lines.append(f"2024-01-08 09:{15 + k}:00+05:30," + ",".join(str(vals[c_]) for c_ in cols for _ in tickers))
    return "\n".join(lines) + "\n"


def test_yfinance_multiline_header(tmp_path):
    write(tmp_path / "raw" / "NSEI.csv", yf_multiheader_csv())
    write(tmp_path / "raw" / "DATE.csv", yf_multiheader_csv(first="Date"))
    res, out, err = process(tmp_path)
    assert res.ok, err
    for name in ("NSEI", "DATE"):
        t, _ = load(tmp_path / "processed" / f"{name}.parquet")
        assert hhmm(t) == ["2024-01-08 09:15", "2024-01-08 09:16", "2024-01-08 09:17"]
        assert t["open"].to_pylist() == [100.0, 101.0, 102.0]
        assert t["high"].to_pylist() == [101.0, 102.0, 103.0]
        assert t["low"].to_pylist() == [99.5, 100.5, 101.5]
        assert t["close"].to_pylist() == [100.5, 101.5, 102.5]
        assert t["volume"].to_pylist() == [10.0, 20.0, 30.0]
    # several tickers in one export: one line naming the file, not a silent pick of the first
    stale = bad_case(tmp_path, "TWO.csv", yf_multiheader_csv(("^NSEI", "^NSEBANK")))
    p = run_proc(tmp_path)
    assert p.returncode == 2
    line = one_line(p)
    assert "TWO.csv" in line and "2 tickers" in line and "^NSEBANK" in line
    assert not stale.exists()


def utc_day_csv(days=("2024-01-02", "2024-01-03", "2024-01-04")):
    """1-minute bars 03:45 .. 09:59 naive: the NSE session in UTC."""
    lines = ["datetime,open,high,low,close,volume"]
    for d in days:
        for k in range(375):
            m = 3 * 60 + 45 + k
            lines.append(f"{d} {m // 60:02d}:{m % 60:02d}:00,100,101,99,100.5,1")
    return "\n".join(lines) + "\n"


def test_naive_utc_outside_session_warns(tmp_path):
    write(tmp_path / "raw" / "U.csv", utc_day_csv())
    p = run_proc(tmp_path)
    assert p.returncode == 0, p.stderr
    assert "rows in 1,125 -> rows out 135" in p.stdout
    assert ("warning: 88% of rows fall outside 09:15-15:30 IST; if the timestamps are not IST, "
            "pass --source-tz UTC") in p.stdout
    p = run_proc(tmp_path, "--source-tz", "UTC")
    assert p.returncode == 0, p.stderr
    assert "rows in 1,125 -> rows out 1,125" in p.stdout and "warning" not in p.stdout
    # the zone given but still mostly outside: the warning names the zone used
    res, out, err = process(tmp_path, source_tz="America/New_York")
    assert res.ok and "timestamps without a zone were read as America/New_York" in out
    # a few pre-open/post-close bars (the vendor files) do not warn
    write_vendor(tmp_path / "raw2")
    buf = io.StringIO()
    assert process_directory(tmp_path / "raw2", tmp_path / "p2", out=buf, err=io.StringIO()).ok
    assert "warning" not in buf.getvalue()


def slash_dates_csv(days, hour=9):
    lines = ["Date,Open,High,Low,Close"]
    for d in days:
        for k in range(3):
            o, h, l, c, v = bar(k)
            lines.append(f"{d} {hour}:{15 + k},{o},{h},{l},{c}")
    return "\n".join(lines) + "\n"


def test_day_month_dates_layout_and_ambiguity(tmp_path):
    write(tmp_path / "raw" / "A.csv", slash_dates_csv(["1/8/2024", "1/9/2024", "1/10/2024"]))
    write(tmp_path / "raw" / "B.csv", slash_dates_csv(["15-01-2024", "16-01-2024"]))
    res, out, err = process(tmp_path)
    assert res.ok, err
    a, b = out.split("\nB\n")
    assert "dates: read day-first (DD/MM/YYYY)" in a
    assert "could be month-first (MM/DD/YYYY)" in a and "pass --date-order mdy" in a
    t, _ = load(tmp_path / "processed" / "A.parquet")
    assert hhmm(t)[::3] == ["2024-08-01 09:15", "2024-09-01 09:15", "2024-10-01 09:15"]
    assert "dates: read day-first (DD-MM-YYYY)" in b and "warning" not in b      # day 15: not ambiguous
    # --date-order mdy, via the CLI
    (tmp_path / "raw" / "B.csv").unlink()
    p = run_proc(tmp_path, "--date-order", "mdy")
    assert p.returncode == 0, p.stderr
    assert "dates: read month-first (MM/DD/YYYY)" in p.stdout and "--date-order dmy" in p.stdout
    t, _ = load(tmp_path / "processed" / "A.parquet")
    assert hhmm(t)[::3] == ["2024-01-08 09:15", "2024-01-09 09:15", "2024-01-10 09:15"]
    # ISO dates say nothing
    write(tmp_path / "iso" / "raw" / "I.csv", yf_csv(""))
    res, out, err = process(tmp_path / "iso")
    assert res.ok and "dates:" not in out and "warning" not in out


def test_day_month_dates_wrong_order_and_bad_flag_cli(tmp_path):
    write(tmp_path / "raw" / "M.csv", slash_dates_csv(["1/13/2024", "1/14/2024"]))
    p = run_proc(tmp_path)
    assert p.returncode == 2
    line = one_line(p)
    assert "M.csv row 2" in line and "unparseable timestamp" in line and "pass --date-order mdy" in line
    p = run_proc(tmp_path, "--date-order", "ymd")
    assert p.returncode == 2 and one_line(p)
    with pytest.raises(InputError):
        process_directory(tmp_path / "raw", tmp_path / "p", out=None, err=None, date_order="ymd")


# -------------------------------------------------------------------------------------------------- Parquet

def parquet_fixture(path, ts_array, meta=None):
    n = len(ts_array)
    cols = {"timestamp": ts_array, "Open": [100.0 + k for k in range(n)], "High": [101.0 + k for k in range(n)],
            "Low": [99.5 + k for k in range(n)], "Close": [100.5 + k for k in range(n)]}
    t = pa.table(cols)
    if meta:
        t = t.replace_schema_metadata(meta)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(t, path)


def test_parquet_timestamp_types(tmp_path):
    utc0 = np.datetime64("2024-01-02T03:45:00", "ns")       # 09:15 IST
    inst = [utc0 + np.timedelta64(k, "m") for k in range(3)]
    raw = tmp_path / "raw"
    parquet_fixture(raw / "TZ.parquet", pa.array(np.array(inst), pa.timestamp("ns", tz="UTC")))
    local = [np.datetime64("2024-01-02T09:15:00", "ns") + np.timedelta64(k, "m") for k in range(3)]
    parquet_fixture(raw / "NAIVE.parquet", pa.array(np.array(local), pa.timestamp("ns")))
    ms = (np.array(inst).astype("datetime64[ms]").astype(np.int64))
    parquet_fixture(raw / "MS.parquet", pa.array(ms), meta={"synthetic": "true"})
    res, out, err = process(tmp_path)
    assert res.ok, err
    for name in ("TZ", "NAIVE", "MS"):
        t, meta = load(tmp_path / "processed" / f"{name}.parquet")
        assert hhmm(t) == ["2024-01-02 09:15", "2024-01-02 09:16", "2024-01-02 09:17"], name
        assert meta["synthetic"] is (name == "MS")
    assert "MS  [SYNTHETIC DATA]" in out


# ------------------------------------------------------------------------------------ bad input, via the CLI

GOOD = seed_csv(seed_times())


def bad_case(tmp_path, name, text=None, data=None):
    raw = tmp_path / "raw"
    write(raw / "GOOD.csv", GOOD)
    if data is not None:
        raw.mkdir(parents=True, exist_ok=True)
        (raw / name).write_bytes(data)
    elif text is not None:
        write(raw / name, text)
    # a stale processed file from an earlier run must not survive
    proc = tmp_path / "processed"
    proc.mkdir(parents=True, exist_ok=True)
    stem = Path(name).stem
    (proc / f"{stem}.parquet").write_bytes(b"stale")
    return proc / f"{stem}.parquet"


def one_line(p):
    lines = p.stderr.strip("\n").splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("error: "), p.stderr
    assert "Traceback" not in p.stderr
    return lines[0]


def with_row(k, row_text):
    rows = GOOD.strip().splitlines()
    rows[k] = row_text
    return "\n".join(rows) + "\n"


BAD_CASES = {
    # name: (file name, text, expected fragments)
    "missing_column": ("BAD.csv", "datetime,open,low,close\n1736480700,1,1,1\n", ["BAD.csv", "missing column", "high"]),
    "unparseable_ts": ("BAD.csv", "datetime,open,high,low,close\n2024-01-02 09:15,1,2,1,1\nnot a time,1,2,1,1\n",
                       ["BAD.csv row 3", "unparseable timestamp", "not a time"]),
    "nan_price": ("BAD.csv", with_row(3, "2,1736480940,100,101,,100.5,0"), ["BAD.csv row 4", "NaN", "low"]),
    "nan_literal": ("BAD.csv", with_row(2, "1,1736480820,nan,101,99,100.5,0"), ["BAD.csv row 3", "NaN", "open"]),
    "nonpositive": ("BAD.csv", with_row(5, "4,1736739900,0,101,0,100.5,0"), ["BAD.csv row 6", "non-positive"]),
    "ohlc": ("BAD.csv", with_row(4, "3,1736481060,101,101.0,100,102.5,0"),
             ["BAD.csv row 5: high 101.0 < close 102.5 (OHLC inconsistency)"]),
    "conflict": ("BAD.csv", GOOD + "9,1736480820,200,201,199,200.5,0\n",
                 ["BAD.csv row 8", "conflicting duplicate timestamp 2025-01-10 09:17", "row 3"]),
    "empty": ("BAD.csv", "", ["BAD.csv", "empty file"]),
    "header_only": ("BAD.csv", ",datetime,open,high,low,close,volume\n", ["BAD.csv", "empty file"]),
    "not_a_number": ("BAD.csv", with_row(2, "1,1736480820,abc,101,99,100.5,0"), ["BAD.csv row 3", "'abc'"]),
    "ragged": ("BAD.csv", with_row(2, "1,1736480820,100"), ["BAD.csv row 3", "malformed"]),
    "no_header": ("BAD.csv", "hello,world\n1,2\n", ["BAD.csv", "no header"]),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_cli(tmp_path, case):
    name, text, fragments = BAD_CASES[case]
    stale = bad_case(tmp_path, name, text)
    p = run_proc(tmp_path)
    assert p.returncode == 2, (p.stdout, p.stderr)
    line = one_line(p)
    for f in fragments:
        assert f in line, line
    assert not stale.exists()
    assert (tmp_path / "processed" / "GOOD.parquet").exists()
    assert "GOOD" in p.stdout


def test_bad_parquet_cli(tmp_path):
    stale = bad_case(tmp_path, "CORRUPT.parquet", data=b"PAR1 this is not parquet PAR1")
    p = run_proc(tmp_path)
    assert p.returncode == 2
    line = one_line(p)
    assert "CORRUPT.parquet" in line and "unreadable Parquet" in line
    assert not stale.exists() and (tmp_path / "processed" / "GOOD.parquet").exists()


def test_bad_vendor_file_fails_its_symbols(tmp_path):
    raw = tmp_path / "raw"
    write_vendor(raw)
    lines = (raw / "2024 NOV NIFTY.txt").read_text().splitlines()
    lines[6] = lines[6].replace(",20240102,", ",2024010X,")
    write(raw / "2024 NOV NIFTY.txt", "\n".join(lines) + "\n")
    write(raw / "GOOD.csv", GOOD)
    p = run_proc(tmp_path)
    assert p.returncode == 2
    line = one_line(p)
    assert "2024 NOV NIFTY.txt row 7" in line and "unparseable timestamp" in line
    proc = tmp_path / "processed"
    assert not (proc / "NIFTY.parquet").exists() and not (proc / "BANKNIFTY.parquet").exists()
    assert (proc / "GOOD.parquet").exists()


UNRECOGNISABLE = "export failed, please retry\n" * 3     # no header, and no line in the vendor layout


@pytest.mark.parametrize("kw,outputs", [
    ({}, ["NIFTY", "BANKNIFTY"]),
    ({"bar_minutes": 10}, ["NIFTY_10", "BANKNIFTY_10"]),
    ({"symbols": ["NIFTY"]}, ["NIFTY"]),
])
def test_unrecognisable_vendor_file_fails_what_earlier_runs_wrote_from_it(tmp_path, kw, outputs):
    """A vendor file broken beyond telling its layout names no symbol; the processed files of the earlier run
    (metadata `source_names`) say which it held. Before: the failure went to the file's stem, and NIFTY and
    BANKNIFTY were written again from the other files without it (with --symbols NIFTY the file was skipped
    as "2024 NOV NIFTY" and the run exited 0)."""
    raw, proc = tmp_path / "raw", tmp_path / "processed"
    write_vendor(raw)
    write(raw / "GOOD.csv", GOOD)
    res, _, err = process(tmp_path, **kw)
    assert res.ok, err
    for name in outputs:
        assert "2024 NOV NIFTY.txt" in read_processed_metadata(proc / f"{name}.parquet")["source_names"]
    write(raw / "2024 NOV NIFTY.txt", UNRECOGNISABLE)
    res, out, err = process(tmp_path, **kw)
    assert err.splitlines() == [f"error: {raw / '2024 NOV NIFTY.txt'}: no header line, and the first lines are "
                                f"not the vendor layout SYMBOL,YYYYMMDD,HH:MM,OPEN,HIGH,LOW,CLOSE,VOLUME,OI"]
    assert sorted(sym for sym, _ in res.failures) == sorted(kw.get("symbols", ["BANKNIFTY", "NIFTY"]))
    for name in outputs:
        assert not (proc / f"{name}.parquet").exists(), name
    written = sorted(p.name for p in proc.iterdir())
    assert written == ([] if "symbols" in kw else ["GOOD_10.parquet" if kw else "GOOD.parquet"]), written


def test_processed_files_from_before_source_names_are_matched_by_source(tmp_path):
    """A processed file written before `source_names` existed names its raw files in `source` only."""
    raw, proc = tmp_path / "raw", tmp_path / "processed"
    write_vendor(raw)
    assert process(tmp_path)[0].ok
    path = proc / "BANKNIFTY.parquet"
    table = pq.read_table(path)
    meta = {k: v for k, v in table.schema.metadata.items() if k != b"source_names"}
    assert meta[b"source"] == b"2024 NOV NIFTY.txt, 2024 JAN BNF.txt"
    pq.write_table(table.replace_schema_metadata(meta), path)
    write(raw / "2024 NOV NIFTY.txt", UNRECOGNISABLE)
    res, _, _ = process(tmp_path)
    assert sorted(sym for sym, _ in res.failures) == ["BANKNIFTY", "NIFTY"]
    assert not path.exists()


@pytest.mark.parametrize("meta,names", [
    ({"source_names": '["2024 JAN NIFTY.txt", "a, b.csv"]', "source": "ignored"}, ["2024 JAN NIFTY.txt", "a, b.csv"]),
    ({"source": "2024 JAN NIFTY.txt, 2024 FEB NIFTY.txt"}, ["2024 JAN NIFTY.txt", "2024 FEB NIFTY.txt"]),
    ({"source": "25 files (2021 JAN BNF.txt, 2021 FEB BNF.txt, ..., 2023 JAN BNF.txt)"},
     ["2021 JAN BNF.txt", "2021 FEB BNF.txt", "2023 JAN BNF.txt"]),
])
def test_source_names_from_metadata(meta, names):
    from data_tools.output import source_names
    assert source_names(meta) == names


def test_processed_file_is_replaced_atomically(tmp_path, monkeypatch):
    """A crash while writing leaves the earlier processed file as it was and nothing that looks complete: the
    bytes go to a hidden temporary file in the same folder (not `*.parquet`), renamed over the output only when
    complete."""
    write(tmp_path / "raw" / "GOOD.csv", GOOD)
    assert process(tmp_path)[0].ok
    proc = tmp_path / "processed"
    before = (proc / "GOOD.parquet").read_bytes()
    temporary = []

    def crash(table, where, **kwargs):        # `where`: a path or an open file
        if isinstance(where, (str, os.PathLike)):
            temporary.append(Path(where))
            temporary[-1].write_bytes(before[: len(before) // 2])
        else:
            temporary.append(Path(where.name))
            where.write(before[: len(before) // 2])
        raise KeyboardInterrupt               # the process is stopped half way through the file

    monkeypatch.setattr(pq, "write_table", crash)
    with pytest.raises(KeyboardInterrupt):
        process(tmp_path)
    [tmp] = temporary
    assert tmp.parent == proc and tmp.name.startswith(".") and not tmp.match("*.parquet")
    assert sorted(p.name for p in proc.iterdir()) == ["GOOD.parquet"]
    assert (proc / "GOOD.parquet").read_bytes() == before


def test_unknown_symbol_cli(tmp_path):
    bad_case(tmp_path, "OTHER.csv", GOOD)
    p = run_proc(tmp_path, "--symbols", "GOOD", "NOPE")
    assert p.returncode == 2
    line = one_line(p)
    assert "NOPE" in line and "not found" in line
    assert "(found: GOOD, OTHER)" in line  # names what is there, wanted or not
    assert (tmp_path / "processed" / "GOOD.parquet").exists()


def test_unknown_symbol_names_the_symbols_of_vendor_files(tmp_path):
    write_vendor(tmp_path / "raw")
    res, out, err = process(tmp_path, symbols=["FINNIFTY"])
    assert not res.ok
    assert "symbol 'FINNIFTY' not found" in err and "(found: BANKNIFTY, NIFTY)" in err, err


def test_missing_dir_and_no_files_cli(tmp_path):
    p = run_proc(tmp_path)
    assert p.returncode == 2 and "raw data directory not found" in one_line(p)
    (tmp_path / "raw").mkdir()
    write(tmp_path / "raw" / "notes.md", "hello")
    p = run_proc(tmp_path)
    assert p.returncode == 2 and "no input files" in one_line(p)


def test_bad_flags_cli(tmp_path):
    write(tmp_path / "raw" / "GOOD.csv", GOOD)
    p = run_proc(tmp_path, "--bar-label", "middle")
    assert p.returncode == 2 and one_line(p)
    p = run_proc(tmp_path, "--source_tz", "Mars/Olympus")
    assert p.returncode == 2 and "time zone" in one_line(p)


def test_cli_ok_both_spellings(tmp_path):
    write(tmp_path / "raw" / "GOOD.csv", GOOD)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    p = subprocess.run([sys.executable, "-m", "data_tools.process", f"--raw_data_dir={tmp_path / 'raw'}",
                        "--processed-data-dir", str(tmp_path / "out"), "--symbols", "GOOD"],
                       cwd=REPO, capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""
    assert (tmp_path / "out" / "GOOD.parquet").exists()


def test_api_raises_for_missing_dir(tmp_path):
    with pytest.raises(InputError):
        process_directory(tmp_path / "nope", tmp_path / "p", out=None, err=None)


def test_end_labels_detected_from_first_bar(tmp_path):
    """2-minute bars labelled by end (09:17, 09:19, ...), no 15:30 bar: the first bar gives it away."""
    lines = ["timestamp,open,high,low,close"]
    for d in ("2024-01-02", "2024-01-03"):
        for k in range(3):
            m = 17 + 2 * k
            lines.append(f"{d} 09:{m}:00,{100 + k},{101 + k},{99.5 + k},{100.5 + k}")
    write(tmp_path / "raw" / "E.csv", "\n".join(lines) + "\n")
    res, out, err = process(tmp_path)
    assert res.ok, err
    t, meta = load(tmp_path / "processed" / "E.parquet")
    assert meta["label_shift_minutes"] == -2 and meta["bar_minutes"] == 2
    assert hhmm(t)[:3] == ["2024-01-02 09:15", "2024-01-02 09:17", "2024-01-02 09:19"]


REAL = REPO.parent / "shared" / "data" / "real" / "nse_1min"


@pytest.mark.skipif(not REAL.is_dir(), reason="real vendor files not present")
def test_real_vendor_directory(tmp_path):
    """The real files as they come, with no flags (counts from their README)."""
    buf = io.StringIO()
    res = process_directory(REAL, tmp_path, out=buf, err=io.StringIO())
    assert res.ok
    s = {x.symbol: x for x in res.summaries}
    assert s["NIFTY"].rows_in == 194_423 and s["NIFTY"].rows_out == 192_705
    assert s["BANKNIFTY"].rows_in == 194_393 and s["BANKNIFTY"].rows_out == 192_669
    assert s["NIFTY"].sessions == 515 and s["NIFTY"].special_days == 2
    assert s["NIFTY"].label_shift_minutes == -1
    t = pq.read_table(tmp_path / "NIFTY.parquet")
    days = (t["timestamp"].cast(pa.int64()).to_numpy() // 10**9 + 19_800) // 86_400
    outage = (np.datetime64("2021-02-24") - np.datetime64("1970-01-01")).astype(int)
    assert 50 <= int((days == outage).sum()) <= 56


def test_same_raw_and_processed_directory_is_refused(tmp_path):
    (tmp_path / "X.csv").write_text("timestamp,open,high,low,close\n")
    with pytest.raises(InputError, match="is the raw data directory"):
        process_directory(tmp_path, tmp_path, out=None, err=None)


@pytest.mark.parametrize("name,fragment", [
    ("Nifty_5", "the name Nifty_5 reads as 5-minute bars (as Nifty_2, Bank_Nifty_5), but the data has 2-minute "
                "bars; name the raw file Nifty_2 instead"),
    ("Nifty_4", None), ("Nifty_10", "name the raw file Nifty_2 instead (with --bar-minutes 10 that writes Nifty_10 with "
                             "10-minute bars)"), ("Nifty_2", None), ("NIFTY_50", None)])
def test_name_that_disagrees_with_the_bar_length_warns(tmp_path, name, fragment):
    write(tmp_path / "raw" / f"{name}.csv", GOOD)  # 2-minute bars
    res, out, err = process(tmp_path)
    assert res.ok, err
    if fragment is None:
        assert "warning" not in out, out
    else:
        warning = [line for line in out.splitlines() if line.strip().startswith("warning:")]
        assert len(warning) == 1 and fragment in warning[0], out
