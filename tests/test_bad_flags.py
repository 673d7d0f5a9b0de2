"""Bad flags and configs (issue 14 item 5): the training command (`experiments.sequence`, `run_training.py`) ends
with exit 2 and one line naming the flag (or YAML key) before anything is trained or compiled: non-positive
capital, iterations or envs, negative lot size or slippage (lot size 0 means the symbol's NSE lot), split
fractions that do not sum to 1 or leave a split the run needs empty, unknown symbols, stages and cost models,
YAML values of the wrong type and unknown keys, a checkpoint directory that is a file or cannot be written.
Driven in-process through the command's own flag parsing (`cli.invoke`)."""

import pytest
from absl import flags

from experiments import sequence as cmd
from jaxtrade import cli
from jaxtrade.pipeline import sequence
from tests.market_fixtures import random_walk_market

CASES = {
    "zero capital": (["--env.initial_capital=0"], "--env.initial_capital"),
    "negative capital": (["--env.initial_capital=-5"], "--env.initial_capital"),
    "negative lot size": (["--env.lot_size=-1"], "--env.lot_size"),
    "negative slippage": (["--env.slippage_ticks=-0.5"], "--env.slippage_ticks"),
    "zero iterations": (["--ppo.num_iterations=0"], "--ppo.num_iterations"),
    "negative iterations": (["--stages=ppo,moe,maml", "--maml.num_iterations=-3"], "--maml.num_iterations"),
    "zero envs": (["--ppo.num_envs=0"], "--ppo.num_envs"),
    "zero MAML envs": (["--maml.support_num_envs=0"], "--maml.support_num_envs"),
    "envs not a number": (["--ppo.num_envs=many"], "--ppo.num_envs"),
    "fractions not summing to 1": (["--env.split_fractions=0.5,0.3,0.1"], "--env.split_fractions"),
    "an empty split the report needs": (["--env.split_fractions=0.8,0.2,0"], "--env.split_fractions"),
    "an empty split the gates need": (["--env.split_fractions=0.8,0,0.2"], "--env.split_fractions"),
    "unknown symbol": (["--symbols=NOPE"], "--symbols"),
    "unknown stage": (["--stages=ppo,sac"], "--stages"),
    "unknown cost model": (["--env.cost_model=free"], "--env.cost_model"),
    "unknown flag": (["--ppo.learning_rat=1"], "learning_rat"),
    "YAML wrong type": (["--config={tmp}/wrong_type.yaml"], "training_params.ppo.k_epochs"),
    "YAML unknown key": (["--config={tmp}/unknown_key.yaml"], "training_params.ppo.learning_rat"),
    "checkpoint dir is a file": (["--checkpoint_dir={tmp}/a_file"], "--checkpoint_dir"),
    "checkpoint dir cannot be made": (["--checkpoint_dir={tmp}/a_file/sub"], "--checkpoint_dir"),
    "output dir is a file": (["--output_dir={tmp}/a_file"], "--output_dir"),
}


@pytest.fixture(scope="module")
def market(tmp_path_factory):
    d = tmp_path_factory.mktemp("flags")
    random_walk_market(d / "processed", "NIFTY_5", num_sessions=12, bars_per_session=20)
    (d / "a_file").write_text("not a directory")
    (d / "wrong_type.yaml").write_text("training_params:\n  ppo:\n    k_epochs: six\n")
    (d / "unknown_key.yaml").write_text("training_params:\n  ppo:\n    learning_rat: 0.1\n")
    return d


def _invoke(argv, capsys):
    cmd.define_flags()
    flags.FLAGS.unparse_flags()
    try:
        code = cli.invoke(cmd.main, ["experiments.sequence", *argv], flags.FLAGS, list_flags=["symbols", "stages"])
    finally:
        flags.FLAGS.unparse_flags()
    return code, capsys.readouterr().err


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_flag_exits_2_with_one_line_naming_it_before_training(case, market, tmp_path, capsys, monkeypatch):
    def never(*a, **k):
        raise AssertionError("a stage started (and compiled) despite a bad flag")

    monkeypatch.setattr(sequence, "run_stage", never)
    args, flag = CASES[case]
    base = ["--symbols=NIFTY_5", "--stages=ppo", f"--processed_data_dir={market / 'processed'}",
            f"--checkpoint_dir={tmp_path / 'ck'}", f"--output_dir={tmp_path / 'reports'}"]
    argv = base + [a.format(tmp=market) for a in args]
    code, err = _invoke(argv, capsys)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error:") and flag in lines[0], err
    assert not (tmp_path / "ck" / "default").exists() and not list((tmp_path / "ck").glob("*/NIFTY_5"))


def test_the_same_flags_without_the_fault_reach_training(market, tmp_path, capsys, monkeypatch):
    """The control: a good command gets as far as the first stage (where the patched stage stops it)."""
    class Reached(Exception):
        pass

    def reached(*a, **k):
        raise Reached

    monkeypatch.setattr(sequence, "run_stage", reached)
    code, err = _invoke(["--symbols=NIFTY_5", "--stages=ppo", f"--processed_data_dir={market / 'processed'}",
                         f"--checkpoint_dir={tmp_path / 'ck'}", f"--output_dir={tmp_path / 'reports'}",
                         "--env.lot_size=0", "--env.split_fractions=0.6,0.2,0.2"], capsys)
    assert code == 1 and "Reached" in err, err
