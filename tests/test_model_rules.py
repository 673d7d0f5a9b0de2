"""A model is gated, reported, backtested (`run_backtest.py --model`) and adapted (`experiments.adapt`) under
exactly the market rules it trained with, from its own file, with no flag repeated."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jaxtrade import backtest as B, config as C, env as E, policies as P
from tests.market_fixtures import nifty_rules_market

ROOT = Path(__file__).resolve().parents[1]
SYMBOL = "NIFTY_15"
RULES = {"env.square_off_time": "14:30", "env.dated_lots": True, "env.split_fractions": (0.6, 0.2, 0.2)}


def _cli(module_or_script, *args, cwd):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    cmd = [sys.executable, str(ROOT / module_or_script)] if module_or_script.endswith(".py") else \
        [sys.executable, "-m", module_or_script]
    out = subprocess.run([*cmd, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _same_metrics(a: dict, b: dict, keys=("total_return", "sharpe", "max_drawdown", "num_trades", "win_rate",
                                             "profit_factor", "total_costs", "exposure")):
    for k in keys:
        assert (a[k] is None) == (b[k] is None), k
        if a[k] is not None:
            assert a[k] == pytest.approx(b[k], rel=1e-9, abs=1e-9), k


@pytest.mark.slow
def test_a_model_is_judged_everywhere_under_its_training_rules(tmp_path):
    data = tmp_path / "processed"
    nifty_rules_market(data, SYMBOL)
    cfg = C.apply_overrides(C.default_config(), {
        "symbols": (SYMBOL,), "processed_data_dir": str(data), "checkpoint_dir": str(tmp_path / "ck"),
        "output_dir": str(tmp_path / "reports"), "run_name": "rules", "stages": ("ppo",), "checkpoint_every": 4,
        "ppo.num_iterations": 4, "ppo.num_envs": 8, "ppo.num_steps": 16, "ppo.minibatch_size": 64,
        "ppo.update_epochs": 1, "ppo.learning_rate": 3e-3, "ppo_gate.min_iterations": 0,
        "progression.on_fail": "continue", **RULES})
    from jaxtrade.pipeline import run_sequence

    run_sequence(cfg, out=open(os.devnull, "w"))
    rules = cfg.env
    pth = tmp_path / "ck" / "rules" / "models" / f"{SYMBOL}_final_model.pth"
    summary = json.loads((tmp_path / "ck" / "rules" / SYMBOL / "summary.json").read_text())
    validation = summary["stages"]["ppo"]["validation"]
    model = P.load_policy(pth, backend="jax")
    assert model.env_config == rules  # the file records the whole EnvConfig

    # Gated under the rules: the validation metrics are a backtest under them, and other rules give others.
    with jax.enable_x64(True):
        market = E.market_for(rules, data, SYMBOL, price_dtype=np.float64)
        gated = B.backtest(market, model, B.BacktestConfig(env=rules, split="val"))
        default = E.EnvConfig()
        other = B.backtest(E.market_for(default, data, SYMBOL, price_dtype=np.float64), model,
                           B.BacktestConfig(env=default, split="val"))
    _same_metrics(validation, gated.metrics)
    assert gated.metrics["num_trades"] > 0 and other.metrics != gated.metrics

    # Reported under the rules: the 0.6/0.2/0.2 test split, dated lots (50 in 2024, not today's 65), flat from 14:30.
    test_lo, _ = market.split_bars("test")
    report_dir = tmp_path / "reports" / SYMBOL
    reported = json.loads((report_dir / "metrics.json").read_text())
    equity = pq.read_table(report_dir / "equity.parquet")
    minutes = (equity.column("timestamp").cast(pa.int64()).to_numpy() // 60_000_000_000 + 330) % 1440
    late = minutes >= 14 * 60 + 30
    assert late.any() and not equity.column("target").to_numpy()[late].any()
    assert set(equity.column("lot_size").to_numpy()) == {50.0}
    assert reported["start"] == str(market.timestamps[test_lo])[:16].replace("T", " ")
    assert reported["env_config"] == rules.to_dict()

    # Backtested by run_backtest.py --model with no market-rule flag: the same rules, the same numbers.
    stdout = _cli("run_backtest.py", f"--model={pth}", "--symbols", SYMBOL, f"--processed-data-dir={data}",
                  f"--output-dir={tmp_path / 'bt'}", cwd=tmp_path)
    assert f"{SYMBOL}: market rules: the model's own (" in stdout and "notice" not in stdout
    backtested = json.loads((tmp_path / "bt" / SYMBOL / "metrics.json").read_text())
    assert backtested["env_config"] == rules.to_dict() and backtested["start"] == reported["start"]
    _same_metrics(backtested, reported)

    # Adapted by experiments.adapt with no market-rule flag: its "before" is the gate's validation backtest.
    stdout = _cli("experiments.adapt", f"--model={pth}", f"--symbol={SYMBOL}", f"--processed_data_dir={data}",
                  f"--output_dir={tmp_path / 'adapted'}", "--steps=1", "--support_num_envs=4",
                  "--support_num_steps=16", cwd=tmp_path)
    assert "market rules: the model's own (" in stdout and "notice" not in stdout
    from jaxtrade.checkpoints import restore_params

    _, meta = restore_params(tmp_path / "adapted" / "orbax")
    assert meta["env_config"] == rules.to_dict()
    _same_metrics(meta["record"]["before"], validation)
    adapted = P.load_policy(tmp_path / "adapted" / f"{SYMBOL}_adapted.pth", backend="jax")
    assert adapted.env_config == rules

    # An overriding flag is said once, naming the setting.
    stdout = _cli("run_backtest.py", f"--model={pth}", "--symbols", SYMBOL, f"--processed-data-dir={data}",
                  f"--output-dir={tmp_path / 'bt2'}", "--square-off-time=15:00", cwd=tmp_path)
    notices = [line for line in stdout.splitlines() if "notice:" in line]
    assert notices == [f"{SYMBOL}: notice: --square-off-time 15:00 overrides the model's square_off_time 14:30: it "
                       f"is not judged under the rules it trained with"]
