"""Early stopping (issue 18): `--eval_every K` evaluates on validation on device; `--{stage}.early_stopping_patience P`
stops after P evaluations without improvement and keeps the best evaluated parameters; off by default, runs are
bit-identical."""

import json

import jax
import numpy as np
import pytest

from jaxtrade import config as C, env as E, networks as N, pipeline as S, policies as P
from jaxtrade.errors import InputError
from jaxtrade.evaluation.on_device import SplitEvaluator
from jaxtrade.pipeline import train_stage
from jaxtrade.pipeline.context import SymbolContext
from jaxtrade.pipeline.early_stop import EarlyStopping
from tests.test_sequence import _params_of_run, market_dir, tiny_config  # noqa: F401 - the fixture

DEVNULL = open("/dev/null", "w")


def _tracker(patience, metric="sharpe"):
    return EarlyStopping(eval_every=1, patience=patience, metric=metric, evaluator=None, network=None)


def test_tracker_keeps_the_best_and_stops_after_patience():
    es = _tracker(patience=2)
    scores = [1.0, 3.0, 2.0, 2.5, 9.0]
    for i, s in enumerate(scores[:4], start=1):
        es.observe(i, {"sharpe": s}, {"w": np.full(2, float(i))})
    # 3.0 at iteration 2, then two evaluations without improvement: stop, keep iteration 2's parameters.
    assert es.should_stop and es.best_iteration == 2 and es.best_value == 3.0
    np.testing.assert_array_equal(es.kept({"w": np.full(2, 4.0)})["w"], [2.0, 2.0])
    assert [e["improved"] for e in es.history] == [True, True, False, False]
    rec = es.record(done=4, target=10, stopped=True)
    assert rec["kept_iteration"] == 2 and rec["num_evaluations"] == 4 and rec["stopped_at"] == 4
    assert "the best of 4 evaluations" in rec["why"] and "stopped at iteration 4 of 10" in rec["why"]
    # Without a patience nothing stops and the last parameters are kept.
    es0 = _tracker(patience=0)
    for i, s in enumerate(scores, start=1):
        es0.observe(i, {"sharpe": s}, {"w": np.full(2, float(i))})
    assert not es0.should_stop
    assert es0.kept({"w": np.zeros(2)})["w"].tolist() == [0.0, 0.0] and es0.kept_iteration(5) == 5


def test_null_metric_never_improves_on_a_number():
    es = _tracker(patience=3)
    es.observe(1, {"sharpe": None}, {"w": 1})  # the first evaluation is the first best, even when null
    es.observe(2, {"sharpe": -2.0}, {"w": 2})
    es.observe(3, {"sharpe": None}, {"w": 3})
    es.observe(4, {"sharpe": float("nan")}, {"w": 4})
    assert es.best_iteration == 2 and es.since_best == 2


def test_patience_needs_eval_every():
    cfg = C.default_config()
    with pytest.raises(InputError, match="needs --eval_every"):
        C.apply_overrides(cfg, {"ppo.early_stopping_patience": 3})
    with pytest.raises(InputError, match="eval_every must be >= 0"):
        C.apply_overrides(cfg, {"eval_every": -1})


def test_on_device_metrics_agree_with_the_float64_backtester(market_dir):
    """The evaluation early stopping runs (jnp, float32, one scan) against the backtester's (float64, numpy
    metrics) on the same policy: trades equal, ratios within float32 noise."""
    cfg = tiny_config(market_dir)
    ctx = SymbolContext(cfg, "NIFTY_5")
    net = N.ActorCritic(ctx.train_params.num_actions, hidden_sizes=(16,))
    params = net.init(jax.random.key(3), np.zeros((1, len(E.OBS_NAMES)), np.float32))
    got = SplitEvaluator.for_split(cfg.env, ctx.market, "val")(net, params)
    want = ctx.backtest(P.network_policy(net, params, "p"), "val").metrics
    assert want["num_trades"] > 5 and got["num_trades"] == want["num_trades"]
    for k in ("sharpe", "sortino", "total_return", "max_drawdown", "win_rate", "profit_factor"):
        assert got[k] == pytest.approx(want[k], rel=2e-3, abs=1e-5), k


class _PeakingEvaluator:
    """A validation score that peaks at the second evaluation; records the parameters it saw."""

    scores = [0.5, 2.0, 1.0, 1.5, 0.1, 0.0, 0.0, 0.0]

    def __init__(self):
        self.seen = []

    def __call__(self, network, params):
        self.seen.append(jax.tree.map(np.asarray, jax.device_get(params)))
        s = self.scores[len(self.seen) - 1]
        return {"sharpe": s, "win_rate": 0.5, "profit_factor": 1.0, "max_drawdown": 0.1}


def test_early_stopping_restores_the_best_and_is_off_by_default_bit_identical(market_dir, monkeypatch):
    """A validation score peaking at the second of evaluations every iteration, patience 2: the stage stops at
    iteration 4 and keeps iteration 2's parameters. Training up to the stop is bit for bit a default run's (no
    `--eval_every`, the untouched path): evaluating changes nothing but what is kept."""
    default = tiny_config(market_dir, checkpoint_dir=str(market_dir / "default"), generate_reports=False)
    assert default.run.eval_every == 0 and default.ppo.early_stopping_patience == 0
    S.run_sequence(default, out=DEVNULL)
    default_params, _ = _params_of_run(market_dir / "default")
    summary = json.loads((market_dir / "default" / "t" / "NIFTY_5" / "summary.json").read_text())
    assert "early_stopping" not in summary["stages"]["ppo"]

    evaluator = _PeakingEvaluator()
    monkeypatch.setattr(train_stage.SplitEvaluator, "for_split", classmethod(lambda cls, *a, **k: evaluator))
    cfg = tiny_config(market_dir, generate_reports=False, eval_every=1,
                      **{"ppo.num_iterations": 8, "ppo.early_stopping_patience": 2})
    S.run_sequence(cfg, out=DEVNULL)
    params, meta = _params_of_run(market_dir / "ck")
    # Evaluations at 1, 2 (best), 3, 4: two without improvement -> stopped at 4, iteration 2's parameters kept.
    assert len(evaluator.seen) == 4 and meta["complete"] and meta["iteration"] == 4
    for x, y in zip(jax.tree.leaves(params), jax.tree.leaves(evaluator.seen[1])):
        np.testing.assert_array_equal(x, y)
    # Iteration 4's parameters are the default 4-iteration run's, bit for bit; and they differ from the kept ones.
    for x, y in zip(jax.tree.leaves(default_params), jax.tree.leaves(evaluator.seen[3])):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(params), jax.tree.leaves(default_params)))
    summary = json.loads((market_dir / "ck" / "t" / "NIFTY_5" / "summary.json").read_text())
    es = summary["stages"]["ppo"]["early_stopping"]
    assert es["kept_iteration"] == 2 and es["stopped_at"] == 4 and es["num_evaluations"] == 4
    assert [e["sharpe"] for e in es["evaluations"]] == [0.5, 2.0, 1.0, 1.5]
    assert "kept iteration 2" in es["why"] and "best of 4" in es["why"]
