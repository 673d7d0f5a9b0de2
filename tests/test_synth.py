"""data_tools.synth: deterministic, sane, labelled synthetic, with volatility regimes."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from data_tools.process import process_directory, read_processed_metadata
from data_tools.synth import ensure_default_data, generate

REPO = Path(__file__).resolve().parents[1]
IST = 19_800


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """The default 3 years, seed 0, generated once for this module."""
    raw = tmp_path_factory.mktemp("synth") / "raw"
    paths = generate(raw, seed=0, years=3)
    return raw, paths


def test_files_and_layout(full):
    raw, paths = full
    assert sorted(p.name for p in paths) == ["Bank_Nifty_5.parquet", "Nifty_2.parquet"]
    for p in paths:
        t = pq.read_table(p)
        assert t.column_names == ["datetime", "open", "high", "low", "close", "volume"]
        assert str(t.schema.field("datetime").type) == "int64"
        meta = {k.decode(): v.decode() for k, v in t.schema.metadata.items()}
        assert meta["synthetic"] == "true" and meta["generator"] == "data_tools.synth" and meta["seed"] == "0"


@pytest.mark.parametrize("name,minutes,bars,lo,hi", [("Nifty_2", 2, 188, 15_000, 30_000),
                                                      ("Bank_Nifty_5", 5, 75, 33_000, 65_000)])
def test_sessions_and_ohlc(full, name, minutes, bars, lo, hi):
    raw, _ = full
    t = pq.read_table(raw / f"{name}.parquet")
    sec = t["datetime"].to_numpy()
    o, h, l, c = (t[k].to_numpy() for k in ("open", "high", "low", "close"))
    assert np.all(np.diff(sec) > 0)
    local = sec + IST
    day, sod = local // 86400, local % 86400
    assert sod.min() == 9 * 3600 + 15 * 60 and sod.max() < 15 * 3600 + 30 * 60
    assert np.all((sod - (9 * 3600 + 15 * 60)) % (minutes * 60) == 0)
    _, per_day = np.unique(day, return_counts=True)
    assert np.all(per_day == bars)
    assert 700 <= len(per_day) <= 780                      # ~3 years of sessions, a few holidays
    weekday = (day + 3) % 7                                 # 1970-01-01 was a Thursday; Monday = 0
    assert np.all(weekday < 5)
    assert np.all(np.isfinite(o + h + l + c)) and np.all(l > 0)
    assert np.all(l <= np.minimum(o, c)) and np.all(h >= np.maximum(o, c))
    assert lo < c.min() and c.max() < hi
    assert np.all(t["volume"].to_numpy() == 0)


def test_deterministic_bytes_and_seed_changes(tmp_path):
    a = generate(tmp_path / "a", seed=5, years=0.3)
    b = generate(tmp_path / "b", seed=5, years=0.3)
    c = generate(tmp_path / "c", seed=6, years=0.3)
    for pa_, pb, pc_ in zip(a, b, c):
        assert pa_.read_bytes() == pb.read_bytes()
        assert not np.array_equal(pq.read_table(pa_)["close"].to_numpy(), pq.read_table(pc_)["close"].to_numpy())


def test_volatility_regimes_and_gaps(full):
    raw, _ = full
    t = pq.read_table(raw / "Nifty_2.parquet")
    sec, c, o = t["datetime"].to_numpy(), t["close"].to_numpy(), t["open"].to_numpy()
    day = (sec + IST) // 86400
    _, inv = np.unique(day, return_inverse=True)
    r = np.diff(np.log(c))
    same = inv[1:] == inv[:-1]
    rv = np.sqrt(np.bincount(inv[1:][same], r[same] ** 2))    # daily realised vol
    roll = np.convolve(rv, np.ones(20) / 20, mode="valid")
    assert roll.max() / roll.min() > 2.0
    # intraday U-shape: first and last half hours busier than midday
    sod = ((sec + IST) % 86400)[1:][same]
    a = np.abs(r[same])
    open_, mid = a[sod < 9 * 3600 + 45 * 60].mean(), a[(sod > 12 * 3600) & (sod < 13 * 3600)].mean()
    assert open_ > 1.5 * mid
    # overnight gaps exist
    first = np.r_[0, np.flatnonzero(np.diff(inv)) + 1]
    gaps = np.abs(np.log(o[first[1:]] / c[first[1:] - 1]))
    assert gaps.max() > 0.01


def test_processed_flagged_synthetic(full, tmp_path):
    raw, _ = full
    buf = io.StringIO()
    res = process_directory(raw, tmp_path / "p", out=buf, err=io.StringIO())
    assert res.ok
    assert buf.getvalue().count("SYNTHETIC") == 2
    meta = read_processed_metadata(tmp_path / "p" / "Nifty_2.parquet")
    assert meta["synthetic"] is True and meta["bar_minutes"] == 2 and meta["symbol"] == "Nifty_2"
    meta5 = read_processed_metadata(tmp_path / "p" / "Bank_Nifty_5.parquet")
    assert meta5["bar_minutes"] == 5 and meta5["rows_in"] == meta5["rows_out"]
    assert all(s.synthetic for s in res.summaries)


def test_ensure_default_data(tmp_path):
    raw, proc = tmp_path / "raw", tmp_path / "processed"
    buf = io.StringIO()
    res = ensure_default_data(raw, proc, out=buf)
    assert res is not None and res.ok
    assert "SYNTHETIC" in buf.getvalue()
    assert (proc / "Nifty_2.parquet").exists() and (proc / "Bank_Nifty_5.parquet").exists()
    assert ensure_default_data(raw, proc, out=io.StringIO()) is None      # nothing to do the second time
    (proc / "Bank_Nifty_5.parquet").unlink()
    assert ensure_default_data(raw, proc, out=None) is not None
    assert (proc / "Bank_Nifty_5.parquet").exists()


def test_synth_cli(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    p = subprocess.run([sys.executable, "-m", "data_tools.synth", "--raw-data-dir", str(tmp_path / "r"),
                        "--seed", "3", "--years", "0.2"], cwd=REPO, capture_output=True, text=True, env=env,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    assert "SYNTHETIC" in p.stdout
    assert (tmp_path / "r" / "Nifty_2.parquet").exists()
    p = subprocess.run([sys.executable, "-m", "data_tools.synth", "--years", "-1",
                        "--raw_data_dir", str(tmp_path / "r2")], cwd=REPO, capture_output=True, text=True,
                       env=env, timeout=60)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1


def test_ensure_default_data_leaves_a_folder_of_unreadable_files_alone(tmp_path):
    from jaxtrade.errors import InputError

    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "nifty.xlsx").write_bytes(b"PK\x03\x04")
    with pytest.raises(InputError, match=r"no readable raw data files \(found nifty\.xlsx"):
        ensure_default_data(raw, tmp_path / "processed", out=None)
    assert sorted(p.name for p in raw.iterdir()) == ["nifty.xlsx"]  # no synthetic files mixed in
