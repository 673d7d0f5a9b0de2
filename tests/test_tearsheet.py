"""The tear sheet: its numbers against hand-worked ones and jaxtrade.metrics, a self-contained page, the
no-matplotlib path, the MoE and MAML sections, and `run_backtest.py --tearsheet` end to end."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtrade import backtest as B, metrics as M, policies as P, tearsheet as T
from jaxtrade.data import load_market
from tests.test_backtest import write_fixture

ROOT = Path(__file__).resolve().parents[1]


def test_monthly_returns_by_hand():
    dates = np.array(["2024-01-30", "2024-01-31", "2024-02-01", "2025-03-03"], "datetime64[D]")
    years, grid = T.monthly_returns(dates, [0.10, -0.10, 0.05, 0.02])
    assert years == [2024, 2025]
    assert grid[0, 0] == pytest.approx(1.1 * 0.9 - 1) and grid[0, 1] == pytest.approx(0.05)
    assert grid[1, 2] == pytest.approx(0.02)
    assert np.isnan(grid[0, 2]) and np.isfinite(grid).sum() == 3


def test_time_of_day_buckets_by_hand():
    ts = np.array(["2024-01-02T09:15", "2024-01-02T09:44", "2024-01-02T09:45", "2024-01-02T10:15",
                   "2024-01-03T09:20"], "datetime64[m]")
    equity = np.array([100.0, 103.0, 101.0, 106.0, 110.0])
    labels, sums, counts = T.pnl_by_time_of_day(ts, equity)
    # bar PnL 0, +3, -2, +5, +4 -> 09:15 bucket: 0 + 3 + 4; 09:45: -2; 10:15: +5
    assert labels == ["09:15", "09:45", "10:15"]
    assert sums.tolist() == [7.0, -2.0, 5.0] and counts.tolist() == [3, 1, 1]


def test_rolling_sharpe_and_underwater_use_the_metrics():
    d = np.random.default_rng(0).normal(0.001, 0.01, 30)
    roll = T.rolling_sharpe(d, 20, 1e-4)
    assert np.isnan(roll[:19]).all()
    assert roll[25] == pytest.approx(M.sharpe(d[6:26], risk_free=1e-4))
    e = 100.0 * np.cumprod(1 + d)
    assert T.underwater(e, 100.0).max() == pytest.approx(M.max_drawdown(e, 100.0))


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    d = tmp_path_factory.mktemp("ts")
    write_fixture(d, "NIFTY_15", sessions=45, seed=5)
    with jax.enable_x64(True):
        market = load_market(d, "NIFTY_15", price_dtype=jnp.float64)
        runs = B.backtest_many(market, [P.momentum(market.scaler, horizon=1), P.buy_and_hold(), P.flat()],
                               B.BacktestConfig(split="all", initial_capital=2e6))
    return market, runs, d


def _images(page: str) -> list[bytes]:
    return [base64.b64decode(x) for x in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def test_page_is_self_contained_with_every_section(results):
    pytest.importorskip("matplotlib")
    _, (main, *baselines), _ = results
    page, notices = T.render_tearsheet(main, baselines)
    assert notices == []
    images = _images(page)
    assert len(images) == 6 and all(img.startswith(b"\x89PNG") for img in images)
    # nothing loaded from elsewhere: every src is an inline data URI, no links, scripts or stylesheets
    assert len(re.findall(r"src=", page)) == len(images)
    assert "http" not in page and "<script" not in page and "<link" not in page
    for section in ("Metrics", "Equity against the baselines", "Underwater", "Monthly returns", "Rolling Sharpe",
                    "Trade PnL", "PnL by time of day"):
        assert f"<h2>{section}" in page, section
    assert "Expert by market regime" not in page and "MAML adaptation" not in page
    # the monthly table shows the compounded daily returns of the result
    years, grid = T.monthly_returns(T.session_dates(main), main.daily_returns)
    assert f"<td>{100 * grid[0, np.isfinite(grid[0])][0]:.2f}</td>" in page
    assert f"<td>{100 * main.metrics['annual_volatility']:.2f}%</td>" in page


def test_without_matplotlib_the_tables_stay_and_one_note_says_so(results, tmp_path, monkeypatch):
    _, (main, *baselines), _ = results
    monkeypatch.setattr(T, "_pyplot", lambda: None)
    notices = T.write_tearsheet(main, baselines, tmp_path / "tearsheet.html")
    page = (tmp_path / "tearsheet.html").read_text()
    assert notices == [T.NO_MATPLOTLIB] and T._esc(T.NO_MATPLOTLIB) in page
    assert "<img" not in page and "<h2>Monthly returns" in page and "daily VaR 95%" in page


def test_expert_and_adaptation_sections(results, tmp_path):
    from jaxtrade import env as E, export
    from jaxtrade.agents.moe import MoEConfig
    from jaxtrade.checkpoints import StageCheckpointer

    market, (main, *baselines), _ = results
    with jax.enable_x64(True):
        params_env, _ = B.build_env(market, B.BacktestConfig(split="all", initial_capital=2e6))
        network = MoEConfig(num_experts=2, expert_hidden_dim=8, gating_hidden_dim=8).make_network(3)
        params = network.init(jax.random.key(0), jnp.zeros((1, len(E.OBS_NAMES)), jnp.float32))
        record = {"before": dict(main.metrics), "after": dict(baselines[0].metrics), "split": "val",
                  "symbol": "NIFTY_15", "steps": 3, "source_model": "m.pth"}
        ck = StageCheckpointer(tmp_path / "orbax", keep=1)
        ck.save(3, {"params": params}, {"stage": "adapted", "network": export.network_config(network, len(E.OBS_NAMES)),
                                        "record": record})
        ck.close()
        extras = T.model_extras(tmp_path / "orbax", market, params_env, "all")
    table = extras["expert_regimes"]
    assert table["num_experts"] == 2 and sum(map(sum, table["bars"])) == table["num_bars"] > 0
    assert extras["adaptation"]["before"]["sharpe"] == main.metrics["sharpe"]
    page, _ = T.render_tearsheet(main, baselines, plots=False, **extras)
    assert "Expert by market regime" in page and "MAML adaptation: before and after" in page
    assert f"<td>{T.fmt('win_rate', main.metrics['win_rate'])}</td>" in page
    # the MAML stage's held-out evaluation (summary.json form)
    held_out = {"split": "val", "own_symbol": "NIFTY_15", "cross_symbol": None, "cross": None,
                "own": {"num_tasks": 2, "num_episodes": 8, "adaptation_steps": 3, "improvement": 0.01,
                        "improvement_ci95": [0.001, 0.02], "adaptation_speed": 2,
                        "adaptation_curve": [0.0, 0.005, 0.01, 0.01],
                        "pre": {"mean_episode_return": -0.002, "win_rate": 0.4},
                        "post": {"mean_episode_return": 0.008, "win_rate": 0.5}}}
    summary = tmp_path / "run" / "NIFTY_15" / "summary.json"
    summary.parent.mkdir(parents=True)
    summary.write_text(json.dumps({"stages": {"maml": {"adaptation": held_out}}}))
    assert T.summary_adaptation(summary) == held_out
    assert T.find_adaptation(tmp_path / "run" / "models" / "NIFTY_15_final_model.pth",
                             {"symbol": "NIFTY_15", "stage": "final", "extra": {"selected_stage": "maml"}}) == held_out
    page, _ = T.render_tearsheet(main, baselines, plots=False, adaptation=held_out)
    assert "<td>40.00%</td><td>50.00%</td>" in page and "[0.001, 0.02]" in page


def test_run_backtest_tearsheet_end_to_end(results, tmp_path):
    _, _, data = results
    out = tmp_path / "out"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    r = subprocess.run([sys.executable, str(ROOT / "run_backtest.py"), "--processed-data-dir", str(data),
                        "--output-dir", str(out), "--policy", "momentum", "--tearsheet", "--risk-free-rate",
                        "0.07", "--plots=false"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    sym = out / "NIFTY_15"
    assert {"tearsheet.html", "daily_returns.csv", "metrics.json"} <= {p.name for p in sym.iterdir()}
    rec = json.loads((sym / "metrics.json").read_text())
    assert rec["risk_free_rate"] == 0.07 and "risk-free 7% a year" in (sym / "tearsheet.html").read_text()
    lines = (sym / "daily_returns.csv").read_text().splitlines()
    assert lines[0] == "date,returns" and len(lines) == 1 + rec["sessions"]
    bad = subprocess.run([sys.executable, str(ROOT / "run_backtest.py"), "--processed-data-dir", str(data),
                          "--output-dir", str(tmp_path / "bad"), "--risk-free-rate", "6.5"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--risk-free-rate" in bad.stderr
