"""Numerical faults (issue 14 item 3): a non-finite loss, gradient or parameter is flagged on device inside the run
scan (no host sync per step), read at chunk ends, and stops the stage with one line naming stage and iteration;
the last good checkpoint is kept and no `.pth` or summary entry claims the stage succeeded."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

from jaxtrade import cli, env as E, pipeline as S
from jaxtrade.agents import base, ppo
from jaxtrade.checkpoints import StageCheckpointer
from jaxtrade.config import EnvConfig
from jaxtrade.errors import NumericalFault
from jaxtrade.pipeline import stages
from tests.market_fixtures import random_walk_market
from tests.test_sequence import tiny_config

@struct.dataclass
class Poisoned(base.TrainerMixin):
    """A trainer whose parameters turn NaN in the update that completes iteration `at` (1-based); every other
    iteration is the wrapped trainer's."""

    inner: object
    at: jax.Array  # a leaf: every `at` shares one compiled program

    def init(self, key, params=None):
        return self.inner.init(key, params)

    def train_iteration(self, state):
        new, metrics = self.inner.train_iteration(state)
        bad = new.iteration == self.at
        return new.replace(params=jax.tree.map(lambda p: jnp.where(bad, jnp.nan, p), new.params)), metrics

    def params_of(self, state):
        return self.inner.params_of(state)

    def with_hparams(self, **changes):
        return self.replace(inner=self.inner.with_hparams(**changes))

    def __getattr__(self, name):  # network, env_steps_per_iteration, ...
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)


@pytest.fixture(scope="module")
def small_trainer(tmp_path_factory):
    directory = tmp_path_factory.mktemp("m")
    random_walk_market(directory, "NIFTY_5", num_sessions=12, bars_per_session=20)
    market = E.market_for(EnvConfig(), directory, "NIFTY_5")
    params = E.env_params(EnvConfig(), market, "train")
    cfg = ppo.PPOConfig(num_envs=4, num_steps=8, minibatch_size=16, update_epochs=1, hidden_sizes=(8,))
    return ppo.make_trainer(cfg, params)


def test_fault_bits_name_loss_gradient_and_parameters():
    assert base.describe_fault(base.FAULT_LOSS | base.FAULT_GRADIENT) == "loss and gradient"
    assert base.describe_fault(base.FAULT_PARAMETERS) == "parameters"

    class T:
        def params_of(self, s):
            return s
    ok = base.fault_code(T(), {"w": jnp.ones(3)}, {"total_loss": jnp.float32(1), "grad_norm": jnp.float32(2),
                                                  "profit_factor": jnp.float32(jnp.nan)})  # NaN by design: ignored
    assert int(ok) == 0
    bad = base.fault_code(T(), {"w": jnp.array([1.0, jnp.inf])}, {"total_loss": jnp.float32(jnp.nan),
                                                                 "grad_norm": jnp.float32(1)})
    assert int(bad) == base.FAULT_LOSS | base.FAULT_PARAMETERS


def test_run_flags_first_fault_on_device_and_keeps_last_good_state(small_trainer):
    """The scan carries the flag: the update of the first bad iteration and every later one are skipped, so the
    state the Runner reports is the one before it (equal to a clean run's), and the error names the 1-based
    iteration. Read once per chunk: `on_chunk` saw only the good chunk."""
    runner = base.Runner()
    state0 = small_trainer.init(jax.random.key(0))
    never = jnp.int32(10**6)
    clean, _ = runner(Poisoned(small_trainer, never), state0, 2)
    # A NaN learning rate poisons the first update (same program: hyperparameters are leaves).
    with pytest.raises(NumericalFault, match="at iteration 1$"):
        runner(Poisoned(small_trainer.with_hparams(learning_rate=jnp.nan), never), state0, 2)
    saved = []
    with pytest.raises(NumericalFault, match="non-finite parameters at iteration 3$") as info:
        runner(Poisoned(small_trainer, jnp.int32(3)), state0, 6, chunk=2, on_chunk=lambda s, n: saved.append(n))
    fault = info.value
    assert saved == [2] and fault.iteration == 3 and fault.good_iteration == 2
    assert int(fault.state.iteration) == 2  # iteration 4 (chunk 3-4) was not applied either
    assert runner.cache_size() == 1
    for a, b in zip(jax.tree.leaves(clean.params), jax.tree.leaves(fault.state.params)):
        np.testing.assert_array_equal(a, b)


def test_pipeline_stops_keeps_last_good_checkpoint_and_claims_nothing(tmp_path, monkeypatch):
    random_walk_market(tmp_path / "processed", "NIFTY_5", num_sessions=24, bars_per_session=20)
    real_build = stages.build_stage

    def build(cfg, ctx, stage, prev):
        spec = real_build(cfg, ctx, stage, prev)
        spec.trainer = Poisoned(spec.trainer, jnp.int32(5))
        return spec

    monkeypatch.setattr(stages, "build_stage", build)
    cfg = tiny_config(tmp_path, generate_reports=False, **{"ppo.num_iterations": 8})  # checkpoints every 2
    with pytest.raises(NumericalFault) as info:
        S.run_sequence(cfg, out=open("/dev/null", "w"))
    line = str(info.value)
    assert "\n" not in line and "NIFTY_5 ppo: non-finite parameters at iteration 5" in line, line
    assert "iteration 4) is kept" in line, line
    run = tmp_path / "ck" / "t"
    assert StageCheckpointer(run / "NIFTY_5" / "ppo").all_steps() == [2, 4]  # nothing after the fault
    assert not list((run / "models").glob("*.pth"))
    summary = run / "NIFTY_5" / "summary.json"
    assert not summary.exists() or "ppo" not in json.loads(summary.read_text()).get("stages", {})


def test_command_line_turns_a_fault_into_exit_3_and_one_line(capsys):
    def main(argv):
        raise NumericalFault(5, "loss", message="NIFTY_5 ppo: non-finite loss at iteration 5; training stopped")

    with pytest.raises(SystemExit) as info:
        cli.call_main(main, ["prog"])
    assert info.value.code == 3
    assert capsys.readouterr().err == "error: NIFTY_5 ppo: non-finite loss at iteration 5; training stopped\n"


def test_runner_logs_up_to_the_faulted_iteration_and_none_after(small_trainer):
    """The Runner logs on the host from the metrics a piece returns (no callback in the compiled run): every
    iteration up to and including the first faulted one reaches the callback, none of the skipped ones after."""
    calls = []
    runner = base.Runner(callback=calls.append, log_every=1)
    with pytest.raises(NumericalFault, match="at iteration 3$"):
        runner(Poisoned(small_trainer, jnp.int32(3)), small_trainer.init(jax.random.key(0)), 6)
    assert len(calls) == 3 and [int(c["iteration"]) for c in calls[:2]] == [1, 2]
    assert [int(c["fault"]) for c in calls] == [0, 0, base.FAULT_PARAMETERS]
