"""data_tools.synth's planted-edge markets (`--market ar1 | vol_regime`): the planted rule is in the bars,
deterministic, labelled synthetic, and processable as any raw file."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from data_tools.process import process_directory
from data_tools.synth import PlantedOptions, generate, planted_market
from jaxtrade.errors import InputError

REPO = Path(__file__).resolve().parents[1]
IST = 19_800


def _session_returns(sim):
    """[S, bars] log returns of each bar from its open to its close, and the bar vol per session."""
    c = sim.columns
    bars = int(np.ceil(375 / sim.bar_minutes))
    o, cl = c["open"].reshape(-1, bars), c["close"].reshape(-1, bars)
    return np.log(cl / o)


def _lag1(r):
    """Lag-1 autocorrelation of bar returns pooled over sessions (pairs inside a session only)."""
    a, b = r[:, :-1].ravel(), r[:, 1:].ravel()
    return float(np.corrcoef(a, b)[0, 1])


def test_ar1_planted_coefficient_and_layout():
    sim = planted_market("ar1", seed=0, years=1.0)
    c = sim.columns
    assert sim.symbol == "AR1_5" and sim.bar_minutes == 5
    assert list(c) == ["datetime", "open", "high", "low", "close", "volume"]
    r = _session_returns(sim)
    assert r.shape[1] == 75 and 240 <= r.shape[0] <= 260
    # stationary AR(1): lag-1 autocorrelation 0.5 (+- 3 standard errors of ~1/sqrt(18,000)), bar vol 0.001
    assert abs(_lag1(r) - 0.5) < 0.025
    assert 0.00095 < r[:, 1:].std() < 0.00105
    # inside a session every bar opens at the previous close: the env's fill price sees the planted return
    o, cl = c["open"].reshape(r.shape), c["close"].reshape(r.shape)
    np.testing.assert_array_equal(o[:, 1:], cl[:, :-1])
    assert np.all(c["low"] <= np.minimum(c["open"], c["close"])) and np.all(c["high"] >= np.maximum(c["open"], c["close"]))
    assert np.all(np.round(c["close"] / 0.05, 6) % 1 == 0)
    sod = (c["datetime"] + IST) % 86400
    assert sod.min() == 9 * 3600 + 15 * 60 and sod.max() == 15 * 3600 + 25 * 60
    assert np.all(sim.session_ar_coef == 0.5) and sim.session_regime is None
    # coefficient 0 is a random walk
    rw = _session_returns(planted_market("ar1", seed=0, years=1.0, options=PlantedOptions(ar_coef=0.0)))
    assert abs(_lag1(rw)) < 0.025


def test_ar1_sign_blocks():
    sim = planted_market("ar1", seed=3, years=1.0, options=PlantedOptions(sign_block=10))
    coef = sim.session_ar_coef
    blocks = coef[: len(coef) // 10 * 10].reshape(-1, 10)
    assert np.all(blocks == blocks[:, :1])                       # constant inside a block
    assert set(np.unique(coef)) == {-0.5, 0.5}
    pairs = blocks[: len(blocks) // 2 * 2, 0].reshape(-1, 2)
    assert np.all(pairs.sum(1) == 0)                             # balanced: one of each sign per pair of blocks
    assert len({tuple(p) for p in pairs}) == 2                   # in random order
    r = _session_returns(sim)
    assert _lag1(r[coef > 0]) > 0.45 and _lag1(r[coef < 0]) < -0.45


def test_vol_regime_rules_per_regime():
    sim = planted_market("vol_regime", seed=0, years=1.0)
    assert sim.symbol == "VOLREG_5"
    reg = sim.session_regime
    assert set(np.unique(reg)) == {0, 1}
    stay = np.mean(reg[1:] == reg[:-1])
    assert 0.82 < stay < 0.97                                    # sticky regimes (0.9)
    r = _session_returns(sim)
    calm, turb = r[reg == 0], r[reg == 1]
    assert _lag1(turb) > 0.45 and _lag1(calm) < -0.45         # momentum when turbulent, reversion when calm
    assert 2.2 < turb.std() / calm.std() < 2.9                  # 0.0018 / 0.0007
    np.testing.assert_array_equal(sim.session_ar_coef, np.where(reg == 1, 0.5, -0.5))


def test_files_deterministic_labelled_and_processable(tmp_path):
    opts = PlantedOptions(sign_block=5, bar_minutes=15)
    a = generate(tmp_path / "a", seed=2, years=0.2, market="ar1", options=opts)
    b = generate(tmp_path / "b", seed=2, years=0.2, market="ar1", options=opts)
    c = generate(tmp_path / "c", seed=3, years=0.2, market="ar1", options=opts)
    assert [p.name for p in a] == ["AR1_15.parquet"]
    assert a[0].read_bytes() == b[0].read_bytes() and a[0].read_bytes() != c[0].read_bytes()
    meta = {k.decode(): v.decode() for k, v in pq.read_schema(a[0]).metadata.items()}
    assert meta["synthetic"] == "true" and meta["market"] == "ar1" and "SYNTHETIC" in meta["description"]
    assert json.loads(meta["options"])["sign_block"] == 5
    assert len(json.loads(meta["session_ar_coef"])) == pq.read_table(a[0]).num_rows // 25
    v = generate(tmp_path / "a", seed=0, years=0.2, market="vol_regime", symbol="MY_5")
    assert json.loads(pq.read_schema(v[0]).metadata[b"session_regime"])["regimes"] == ["calm", "turbulent"]
    buf = io.StringIO()
    res = process_directory(tmp_path / "a", tmp_path / "p", out=buf, err=io.StringIO())
    assert res.ok and buf.getvalue().count("SYNTHETIC") == 2
    assert {s.symbol: (s.bar_minutes, s.rows_in == s.rows_out) for s in res.summaries} == {
        "AR1_15": (15, True), "MY_5": (5, True)}


@pytest.mark.parametrize("opts,flag", [(PlantedOptions(ar_coef=1.0), "--ar_coef"),
                                       (PlantedOptions(bar_vol=0.0), "--bar_vol"),
                                       (PlantedOptions(sign_block=-1), "--sign_block"),
                                       (PlantedOptions(bar_minutes=0), "--bar_minutes"),
                                       (PlantedOptions(regime_stay=1.5), "--regime_stay")])
def test_bad_options_name_the_flag(opts, flag):
    with pytest.raises(InputError, match=flag):
        planted_market("ar1", options=opts)


def test_cli_planted_market(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    run = lambda *a: subprocess.run([sys.executable, "-m", "data_tools.synth", *a], cwd=REPO,  # noqa: E731
                                    capture_output=True, text=True, env=env, timeout=60)
    p = run("--market", "ar1", "--ar-coef", "-0.3", "--sign-block", "4", "--years", "0.1",
            "--raw-data-dir", str(tmp_path / "r"))
    assert p.returncode == 0, p.stderr
    assert "AR1_5.parquet" in p.stdout and "SYNTHETIC" in p.stdout and "coefficient -0.3" in p.stdout
    meta = pq.read_schema(tmp_path / "r" / "AR1_5.parquet").metadata
    assert json.loads(meta[b"options"])["ar_coef"] == -0.3
    p = run("--ar_coef", "0.3", "--raw_data_dir", str(tmp_path / "r2"))        # a planted flag, default market
    assert p.returncode == 2 and "--ar_coef" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    p = run("--market", "garch", "--raw_data_dir", str(tmp_path / "r2"))
    assert p.returncode == 2 and "--market" in p.stderr
    assert not (tmp_path / "r2").exists()
