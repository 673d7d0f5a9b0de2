"""The sequence runner: seed YAML and flags, gates and progression rules, resume, final-model selection."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxtrade import config as C
from jaxtrade import gates as G
from jaxtrade import pipeline as S
from jaxtrade.pipeline import final as final_model
from jaxtrade.errors import GateFailure, InputError
from jaxtrade.export import torch_available
from tests.market_fixtures import random_walk_market

ROOT = Path(__file__).resolve().parents[1]
HAS_TORCH = torch_available()
NO_TORCH = ("PyTorch is not installed (the `torch` extra): the .pth assertions are skipped; the Orbax checkpoints, "
            "summary.json and report were checked")


def skip_pth_part_without_torch():
    """Call after a test asserted what needs no PyTorch: marks the test skipped (with the reason) when torch is absent,
    so the skip count says what was not covered."""
    if not HAS_TORCH:
        pytest.skip(NO_TORCH)


def tiny_config(tmp_path, **overrides):
    cfg = C.default_config()
    base = {"symbols": ("NIFTY_5",), "processed_data_dir": str(tmp_path / "processed"),
            "checkpoint_dir": str(tmp_path / "ck"), "output_dir": str(tmp_path / "reports"), "run_name": "t",
            "stages": ("ppo",), "checkpoint_every": 2, "log_every": 1,
            "ppo.num_iterations": 4, "ppo.num_envs": 8, "ppo.num_steps": 16, "ppo.minibatch_size": 64,
            "ppo.update_epochs": 1, "ppo_gate.min_iterations": 0, "progression.on_fail": "continue"}
    base.update(overrides)
    return C.apply_overrides(cfg, base)


@pytest.fixture
def market_dir(tmp_path):
    random_walk_market(tmp_path / "processed", "NIFTY_5", num_sessions=24, bars_per_session=20)
    return tmp_path


def test_seed_yaml_maps_onto_config():
    cfg = C.from_seed_yaml(ROOT / "config" / "training_sequence.yaml")
    assert cfg.ppo.num_iterations == 500 and cfg.moe.num_iterations == 800 and cfg.maml.num_iterations == 150
    assert cfg.ppo.learning_rate == 1e-4 and cfg.ppo.minibatch_size == 128 and cfg.ppo.gamma == 0.995
    assert cfg.ppo.gae_lambda == 0.95 and cfg.ppo.clip_epsilon == 0.15 and cfg.ppo.update_epochs == 6
    assert cfg.moe.num_experts == 4 and cfg.moe.expert_hidden_dim == 128 and cfg.moe.diversity_loss_weight == 0.02
    assert cfg.moe.gating_temperature == 0.8 and cfg.moe.gating_hidden_dim == 64
    assert cfg.maml.inner_loop_steps == 7 and cfg.maml.meta_batch_size == 2 and cfg.maml.meta_learning_rate == 5e-4
    assert cfg.ppo_gate == C.GateConfig(0.35, 0.8, 0.40, 50)
    assert cfg.moe_gate == C.GateConfig(0.40, 1.0, 0.35, 100)
    assert cfg.progression.on_fail == "extend" and cfg.progression.max_extension_iterations == 200
    assert cfg.run.checkpoint_every == 50
    # The YAML equals the defaults (and experiments/nifty.flags).
    assert cfg.to_dict() == C.default_config().to_dict()


def test_seed_yaml_errors(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("training_params:\n  ppo:\n    learning_rat: 0.1\n")
    with pytest.raises(InputError, match=r"training_params\.ppo\.learning_rat: unknown key"):
        C.from_seed_yaml(bad)
    bad.write_text("training_params:\n  ppo:\n    k_epochs: six\n")
    with pytest.raises(InputError, match=r"training_params\.ppo\.k_epochs: expected an int, got str"):
        C.from_seed_yaml(bad)
    bad.write_text("training_sequence:\n  stage_1_ppo:\n    episodes: 12.5\n")
    with pytest.raises(InputError, match=r"episodes: expected an int"):
        C.from_seed_yaml(bad)
    bad.write_text("progression_rules:\n  fallback_strategies:\n    extend_training: false\n"
                   "  advancement_criteria:\n    stage_1_to_2:\n      min_win_rate: 0.5\n")
    cfg = C.from_seed_yaml(bad)
    assert cfg.progression.on_fail == "continue"
    assert cfg.ppo_gate.min_win_rate == 0.5  # the stricter of success and advancement criteria


def test_flags_override_yaml_and_nifty_flags_equal_defaults(tmp_path):
    code = (
        "import sys; from absl import flags; from experiments import sequence as s; s.define_flags();"
        "flags.FLAGS(sys.argv); import json;"
        "print(json.dumps(s.config_from_flags().to_dict()))")
    out = subprocess.run([sys.executable, "-c", code, f"--config={ROOT / 'config' / 'training_sequence.yaml'}",
                          "--ppo.learning_rate=0.0003", "--seed=7"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    assert d["ppo"]["learning_rate"] == 0.0003 and d["run"]["seed"] == 7 and d["ppo"]["num_iterations"] == 500
    out = subprocess.run([sys.executable, "-c", code, f"--flagfile={ROOT / 'experiments' / 'nifty.flags'}"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    expected = C.default_config().to_dict()
    expected["run"]["run_name"] = "nifty"
    assert d == expected


def test_check_gate_cases():
    gate = C.GateConfig(min_win_rate=0.4, min_profit_factor=1.0, max_drawdown=0.3, min_iterations=10)
    ok = {"win_rate": 0.45, "profit_factor": 1.2, "max_drawdown": 0.1, "num_trades": 20}
    assert G.check_gate(ok, gate, 10) == (True, [])
    passed, reasons = G.check_gate({**ok, "win_rate": 0.3, "max_drawdown": 0.5}, gate, 5)
    assert not passed and len(reasons) == 3
    assert G.check_gate({**ok, "profit_factor": None}, gate, 10)[0]  # winners only: unbounded
    assert not G.check_gate({**ok, "num_trades": 0, "win_rate": None, "profit_factor": None}, gate, 10)[0]


def test_select_final():
    recs = {"ppo": {"validation": {"sharpe": 0.5}}, "moe": {"validation": {"sharpe": 1.5}},
            "maml": {"validation": {"sharpe": None}}}
    best, why = final_model.select_final(recs, "sharpe")
    assert best == "moe" and "moe 1.500" in why and why.index("moe") < why.index("ppo")


def _params_of_run(ck: Path, stage="ppo"):
    from jaxtrade.checkpoints import restore_params
    params, meta = restore_params(ck / "t" / "NIFTY_5" / stage)
    return params, meta


def test_resume_equals_uninterrupted(market_dir, monkeypatch):
    tmp = market_dir
    cfg_a = tiny_config(tmp, checkpoint_dir=str(tmp / "a"), generate_reports=False)
    S.run_sequence(cfg_a, out=open("/dev/null", "w"))
    pa, meta_a = _params_of_run(tmp / "a")
    assert meta_a["complete"] and meta_a["iteration"] == 4

    # Interrupt the second run after its first chunk (2 iterations, checkpointed).
    cfg_b = tiny_config(tmp, checkpoint_dir=str(tmp / "b"), generate_reports=False,
                        log_backend=("jsonl", "tensorboard"))
    from jaxtrade.agents.base import Runner
    from jaxtrade.pipeline import train_stage
    calls = {"n": 0}

    class Interrupting(Runner):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            real_run = self._run

            def run(*a, **k):
                calls["n"] += 1
                if calls["n"] == 2:
                    raise KeyboardInterrupt
                return real_run(*a, **k)

            self._run = run

    monkeypatch.setattr(train_stage, "Runner", Interrupting)
    with pytest.raises(KeyboardInterrupt):
        S.run_sequence(cfg_b, out=open("/dev/null", "w"))
    monkeypatch.setattr(train_stage, "Runner", Runner)
    from jaxtrade.checkpoints import StageCheckpointer
    assert StageCheckpointer(tmp / "b" / "t" / "NIFTY_5" / "ppo").latest_step() == 2
    S.run_sequence(cfg_b, out=open("/dev/null", "w"))
    pb, meta_b = _params_of_run(tmp / "b")
    assert meta_b["iteration"] == 4
    for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb)):
        np.testing.assert_array_equal(x, y)
    # A third run skips the finished stage.
    S.run_sequence(cfg_b, out=open("/dev/null", "w"))
    summary = json.loads((tmp / "b" / "t" / "NIFTY_5" / "summary.json").read_text())
    assert summary["stages"]["ppo"]["resumed"].startswith("skipped")
    lines = (tmp / "b" / "t" / "NIFTY_5" / "ppo" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l)["iteration"] for l in lines] == [1, 2, 3, 4]
    from tests.test_metric_log import check_curves_agree  # the TensorBoard curves too, across the resume
    check_curves_agree(tmp / "b" / "t", "NIFTY_5", "ppo", [1, 2, 3, 4])


def test_progression_rules(market_dir):
    tmp = market_dir
    impossible = {"ppo_gate.min_win_rate": 1.01}
    # extend: two extension chunks of 2 iterations, then give up and go on.
    cfg = tiny_config(tmp, **impossible, **{"progression.on_fail": "extend", "progression.extension_chunk": 2,
                                            "progression.max_extension_iterations": 4, "generate_reports": False})
    S.run_sequence(cfg, out=open("/dev/null", "w"))
    rec = json.loads((tmp / "ck" / "t" / "NIFTY_5" / "summary.json").read_text())["stages"]["ppo"]
    assert rec["iterations"] == 8 and rec["extended_iterations"] == 4 and not rec["gate_passed"]
    assert rec["learning_rate_scale"] == 0.25
    # stop: a failed gate ends the run with GateFailure (exit code 1 in the CLI).
    cfg = tiny_config(tmp, **impossible, **{"progression.on_fail": "stop", "run_name": "s", "generate_reports": False})
    with pytest.raises(GateFailure, match="win_rate"):
        S.run_sequence(cfg, out=open("/dev/null", "w"))


def test_sequence_writes_models_summary_and_report(market_dir):
    tmp = market_dir
    cfg = tiny_config(tmp)
    S.run_sequence(cfg, out=open("/dev/null", "w"))
    models = tmp / "ck" / "t" / "models"
    summary = json.loads((tmp / "ck" / "t" / "NIFTY_5" / "summary.json").read_text())
    rec = summary["stages"]["ppo"]
    for key in ("iterations", "wall_s", "env_steps", "validation", "gate_passed"):
        assert key in rec
    assert rec["env_steps"] == 4 * 8 * 16
    assert summary["final_model"]["stage"] == "ppo"
    assert Path(summary["final_model"]["checkpoint"]).name == "ppo"
    _assert_complete_checkpoint(tmp / "ck" / "t" / "NIFTY_5" / "ppo", iterations=4)
    report = (tmp / "reports" / "t_report.txt").read_text()
    assert "NIFTY_5" in report and "Seed guide targets" in report
    assert (tmp / "reports" / "NIFTY_5" / "equity.parquet").exists()
    assert (tmp / "reports" / "NIFTY_5" / "daily_returns.csv").exists()
    assert "Monthly returns" in (tmp / "reports" / "NIFTY_5" / "tearsheet.html").read_text()
    skip_pth_part_without_torch()
    assert (models / "NIFTY_5_ppo_stage1.pth").exists() and (models / "NIFTY_5_final_model.pth").exists()


def _assert_complete_checkpoint(stage_dir: Path, iterations: int):
    """The stage's latest Orbax checkpoint is marked finished, at `iterations`, with the network to rebuild it."""
    from jaxtrade.checkpoints import restore_params

    params, meta = restore_params(stage_dir)
    assert meta["complete"] and meta["iteration"] == iterations and meta["network"]
    assert jax.tree.leaves(params)


def test_cli_bad_flags_exit_2(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "run_training.py"), "--ppo.learning_rat=1"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    out = subprocess.run([sys.executable, str(ROOT / "run_training.py"), "--symbols", "NOPE",
                          f"--processed-data-dir={tmp_path}"], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 2 and "NOPE" in out.stderr and len(out.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("key,value,message", [
    ("env.cost_model", "free", "--env.cost_model: unknown cost model 'free'"),
    ("env.square_off_time", "25:99", "--env.square_off_time: expected HH:MM"),
    ("env.square_off_time", "15", "--env.square_off_time: expected HH:MM"),
    ("env.split_fractions", (0.5, 0.5), "--env.split_fractions"),
    ("env.split_fractions", (0.0, 0.5, 0.5), "--env.split_fractions"),
    ("env.max_lots", 0, "--env.max_lots must be >= 1"),
    ("env.initial_capital", 0.0, "--env.initial_capital must be positive"),
    ("env.slippage_ticks", float("nan"), "--env.slippage_ticks must be >= 0"),
    ("env.lot_size", -1.0, "--env.lot_size must be >= 0"),
    ("env.episode_sessions", 0, "--env.episode_sessions must be >= 1"),
])
def test_env_settings_checked_when_flags_are_read(tmp_path, key, value, message):
    """Before any data is loaded or run folder made, naming the flag as typed (not the library's --cost_model)."""
    with pytest.raises(InputError, match=re.escape(message)):
        tiny_config(tmp_path, **{key: value})
    assert not (tmp_path / "ck").exists()
    tiny_config(tmp_path, **{"env.square_off_time": "15:10", "env.split_fractions": (0.6, 0.2, 0.2)})  # fine


def test_moe_narrower_than_ppo_is_a_clear_error(market_dir):
    cfg = tiny_config(market_dir, stages=("ppo", "moe"), generate_reports=False,
                      **{"ppo.num_iterations": 1, "moe.expert_hidden_dim": 16})
    with pytest.raises(InputError, match="--moe.expert_hidden_dim=16"):
        S.run_sequence(cfg, out=open("/dev/null", "w"))


def test_pth_backtest_matches_orbax_checkpoint(market_dir):
    """`run_backtest.py --model X.pth` runs the PyTorch module and trades exactly as the Orbax checkpoint."""
    pytest.importorskip("torch")
    import pyarrow.parquet as pq

    tmp = market_dir
    cfg = tiny_config(tmp, generate_reports=False, **{"ppo.num_iterations": 6})
    S.run_sequence(cfg, out=open("/dev/null", "w"))
    pth = tmp / "ck" / "t" / "models" / "NIFTY_5_ppo_stage1.pth"
    orbax_dir = tmp / "ck" / "t" / "NIFTY_5" / "ppo"
    trades, stdout = {}, {}
    # The .pth runs without --initial-capital: it records its training capital (2,000,000) and runs at it.
    for name, model, capital in (("pth", pth, []), ("orbax", orbax_dir, ["--initial-capital=2000000"]),
                                 ("low", pth, ["--initial-capital=100000"])):
        out = subprocess.run(
            [sys.executable, str(ROOT / "run_backtest.py"), f"--model={model}", "--symbols", "NIFTY_5",
             f"--processed-data-dir={tmp / 'processed'}", f"--output-dir={tmp / name}", "--split=val",
             *capital], capture_output=True, text=True, cwd=tmp)
        assert out.returncode == 0, out.stderr
        stdout[name] = out.stdout
        trades[name] = pq.read_table(tmp / name / "NIFTY_5" / "trades.parquet").to_pydict()
        equity = pq.read_table(tmp / name / "NIFTY_5" / "equity.parquet").to_pydict()
        trades[name + "_position"] = equity["position"]
    assert len(trades["pth"]["net_pnl"]) > 0
    assert trades["pth"] == trades["orbax"]
    assert trades["pth_position"] == trades["orbax_position"]
    rules = [line for line in stdout["pth"].splitlines() if line.startswith("NIFTY_5: market rules")]
    assert len(rules) == 1 and "the model's own (" in rules[0] and "capital 2,000,000" in rules[0]
    assert "initial capital 2,000,000" in (tmp / "pth" / "backtest_report.txt").read_text()
    assert "notice" not in stdout["orbax"].split("\n\n")[0]
    assert ("notice: --initial-capital 100,000 overrides the model's initial_capital 2,000,000: its position "
            "features are scaled by capital") in stdout["low"]


@pytest.mark.slow
def test_three_stages_end_to_end(market_dir):
    """PPO -> MoE -> MAML on a tiny market: every stage exported, the MoE regime table and the MAML adaptation
    numbers in summary.json, the final model chosen on validation, and the report."""
    tmp = market_dir
    cfg = tiny_config(tmp, stages=("ppo", "moe", "maml"), **{
        "ppo.hidden_sizes": (16, 16), "moe.num_iterations": 2, "moe.num_experts": 2, "moe.expert_hidden_dim": 16,
        "moe_gate.min_iterations": 0,
        "maml.num_iterations": 2, "maml.support_num_envs": 4, "maml.support_num_steps": 16,
        "maml.query_num_envs": 4, "maml.query_num_steps": 16, "maml.evaluation_steps": 1, "maml.eval_episodes": 4,
        "maml.window_sessions": 4, "maml.bootstrap_resamples": 200})
    S.run_sequence(cfg, out=open("/dev/null", "w"))
    models = tmp / "ck" / "t" / "models"
    summary = json.loads((tmp / "ck" / "t" / "NIFTY_5" / "summary.json").read_text())
    for stage, iterations in (("ppo", 4), ("moe", 2), ("maml", 2)):
        _assert_complete_checkpoint(tmp / "ck" / "t" / "NIFTY_5" / stage, iterations)
    table = summary["stages"]["moe"]["expert_regimes"]
    assert np.array(table["bars"]).shape == (3, 3) and sum(map(sum, table["bars"])) == table["num_bars"]
    assert "adaptation" in summary["stages"]["maml"]
    final = summary["final_model"]
    sharpes = {s: summary["stages"][s]["validation"]["sharpe"] for s in ("ppo", "moe", "maml")}
    ranked = sorted(sharpes, key=lambda s: -np.inf if sharpes[s] is None else sharpes[s], reverse=True)
    assert final["stage"] == ranked[0] and Path(final["checkpoint"]).name == ranked[0]
    report = (tmp / "reports" / "t_report.txt").read_text()
    assert "Expert leading each market condition" in report and "maml" in report
    sheet = (tmp / "reports" / "NIFTY_5" / "tearsheet.html").read_text()
    assert "Expert by market regime" in sheet and "MAML adaptation: before and after" in sheet
    skip_pth_part_without_torch()
    for name in ("ppo_stage1", "moe_stage2", "maml_stage3_final", "final_model"):
        assert (models / f"NIFTY_5_{name}.pth").exists(), name


def test_rerun_with_other_settings_is_refused_and_budget_change_warns(market_dir, caplog):
    tmp = market_dir
    S.run_sequence(tiny_config(tmp, generate_reports=False), out=open("/dev/null", "w"))
    with pytest.raises(InputError, match=r"ppo.*other settings.*--ppo\.hidden_sizes \[64, 64\] -> \[32, 32\].*--overwrite"):
        S.run_sequence(tiny_config(tmp, generate_reports=False, **{"ppo.hidden_sizes": (32, 32)}),
                       out=open("/dev/null", "w"))
    with pytest.raises(InputError, match=r"--ppo\.learning_rate"):
        S.run_sequence(tiny_config(tmp, generate_reports=False, **{"ppo.learning_rate": 3e-4}),
                       out=open("/dev/null", "w"))
    # A different iteration budget is the same run: skipped, with a warning that the budget is not applied.
    with caplog.at_level("WARNING"):
        S.run_sequence(tiny_config(tmp, generate_reports=False, **{"ppo.num_iterations": 9}),
                       out=open("/dev/null", "w"))
    assert any("num_iterations=9 is not applied" in r.getMessage() for r in caplog.records)
    summary = json.loads((tmp / "ck" / "t" / "NIFTY_5" / "summary.json").read_text())
    assert summary["stages"]["ppo"]["iterations"] == 4
    assert summary["stages"]["ppo"]["settings"]["ppo"]["hidden_sizes"] == [64, 64]
    # --overwrite retrains with the new settings.
    S.run_sequence(tiny_config(tmp, generate_reports=False, overwrite=True, **{"ppo.hidden_sizes": (32, 32)}),
                   out=open("/dev/null", "w"))


def test_final_model_competes_across_earlier_commands(market_dir, monkeypatch):
    tmp = market_dir
    cfg = tiny_config(tmp, stages=("ppo", "moe"), generate_reports=False,
                      **{"moe.num_iterations": 2, "moe.expert_hidden_dim": 64, "moe_gate.min_iterations": 0})
    # Make the MoE stage the best on validation whatever the tiny runs learn.
    real_select = final_model.select_final
    monkeypatch.setattr(final_model, "select_final", lambda records, metric: (
        ("moe", "forced") if "moe" in records else real_select(records, metric)))
    S.run_sequence(cfg, out=open("/dev/null", "w"))
    summary_path = tmp / "ck" / "t" / "NIFTY_5" / "summary.json"
    assert json.loads(summary_path.read_text())["final_model"]["stage"] == "moe"
    # A later `--stages ppo` command must not replace the final model with PPO's.
    S.run_sequence(C.apply_overrides(cfg, {"stages": ("ppo",)}), out=open("/dev/null", "w"))
    final = json.loads(summary_path.read_text())["final_model"]
    assert final["stage"] == "moe" and Path(final["checkpoint"]) == Path(cfg.run.checkpoint_dir) / "t" / "NIFTY_5" / "moe"
    skip_pth_part_without_torch()
    from jaxtrade import export
    _, meta = export.load_pth(tmp / "ck" / "t" / "models" / "NIFTY_5_final_model.pth")
    assert meta["network"]["architecture"] == "moe_actor_critic"


def test_list_and_numeric_text_values_coerce():
    assert C.coerce("0.6,0.2,0.2", "list_float", False, "--env.split_fractions") == (0.6, 0.2, 0.2)
    assert C.coerce("32,32", "list_int", False, "--ppo.hidden_sizes") == (32, 32)
    assert C.coerce("1e-4", "float", False, "learning_rate") == 1e-4  # YAML 1.1 reads 1e-4 as text
    for bad, kind in (("32,x", "list_int"), ("abc", "float"), ("nan", "float"), ("1.5", "int")):
        with pytest.raises(InputError):
            C.coerce(bad, kind, False, "--x")
    with pytest.raises(InputError, match="--report_split"):
        tiny_config(Path("/tmp"), report_split="bogus")


def test_settings_checked_before_any_training(market_dir):
    cfg = tiny_config(market_dir, stages=("ppo", "moe", "maml"), **{"maml.cross_symbol": "Nifty_2"})
    with pytest.raises(InputError, match=r"--maml\.cross_symbol: no processed data for Nifty_2 .*available: NIFTY_5"):
        S.resolve_symbols(cfg, out=open("/dev/null", "w"))
    with pytest.raises(InputError, match=r"^--ppo\.learning_rate must be > 0"):
        tiny_config(market_dir, **{"ppo.learning_rate": -1.0})


def test_flagfiles_accept_both_spellings_and_nest(tmp_path):
    from jaxtrade.cli import normalize_argv

    inner = tmp_path / "inner.flags"
    inner.write_text("// nested\n--ppo.num-envs=8\n")
    outer = tmp_path / "outer.flags"
    outer.write_text(f"# a comment\n--processed-data-dir=/data\n\n--flagfile={inner}\n--seed=3\n")
    argv = normalize_argv(["prog", f"--flagfile={outer}", "--seed", "4", "--symbols", "A", "B"], ["symbols"])
    assert argv == ["prog", "--processed_data_dir=/data", "--ppo.num_envs=8", "--seed=3", "--seed", "4",
                    "--symbols=A,B"]


def test_without_torch_the_sequence_runs_and_skips_pth(market_dir, monkeypatch):
    from jaxtrade import export

    monkeypatch.setattr(export, "torch_available", lambda: False)
    buf = __import__("io").StringIO()
    S.run_sequence(tiny_config(market_dir), out=buf)
    assert "the .pth exports are skipped" in buf.getvalue()
    assert not list((market_dir / "ck" / "t" / "models").glob("*.pth"))
    summary = json.loads((market_dir / "ck" / "t" / "NIFTY_5" / "summary.json").read_text())
    assert summary["final_model"]["stage"] == "ppo" and summary["final_model"]["file"] is None
    assert (market_dir / "reports" / "t_report.txt").exists()


def test_progress_line_shows_expert_usage_and_writes_jsonl(tmp_path):
    from jaxtrade.metric_log import open_writer
    from jaxtrade.pipeline.progress import StageLogger

    writer = open_writer(("jsonl",), tmp_path, "NIFTY_5/moe", jsonl_path=tmp_path / "m.jsonl",
                         extra={"symbol": "NIFTY_5", "stage": "moe"})
    logger = StageLogger("NIFTY_5", "moe", 10, writer, stream=open(os.devnull, "w"))
    metrics = {"iteration": np.int32(5), "env_steps": np.int64(640), "mean_episode_return": np.float32(0.01),
               "win_rate": np.float32(0.5), "profit_factor": np.float32(np.nan), "policy_loss": np.float32(-0.1),
               "usage_0": np.float32(0.7), "usage_1": np.float32(0.2), "usage_2": np.float32(0.1),
               "gate_entropy": np.float32(0.8)}
    logger(metrics)
    line = logger.line({k: float(v) for k, v in metrics.items()})
    assert "moe  NIFTY_5 [##########..........] 5/10" in line and "pf n/a" in line
    assert "experts 0.70 0.20 0.10 gate ent 0.800" in line
    rec = json.loads((tmp_path / "m.jsonl").read_text())
    assert rec["usage_0"] == pytest.approx(0.7) and rec["profit_factor"] is None and rec["stage"] == "moe"
