"""One path from settings to market rules: every consumer (training, gates, the report, MAML's held-out tasks,
the expert-regime table, `experiments.adapt`, `run_backtest.py`, the benchmarks) builds its `EnvParams` from
the whole `EnvConfig` through `env.env_params`, so changing any field changes what every one of them builds."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from jaxtrade import backtest as B, config as C, env as E, policies as P
from tests.market_fixtures import nifty_rules_market

SYMBOL = "NIFTY_15"
# Every field of EnvConfig, with a value other than BASE's. A new field must be added here (test below).
BASE = E.EnvConfig(cost_model="bps", cost_bps=1.0, slippage_ticks=1.0, lot_size=0.0, dated_lots=False, max_lots=1,
                   initial_capital=2_000_000.0, episode_sessions=1, allow_overnight=False, square_off_time="",
                   split_fractions=(0.7, 0.15, 0.15))
CHANGED = {"cost_model": "nse_futures", "cost_bps": 5.0, "slippage_ticks": 3.0, "lot_size": 40.0, "dated_lots": True,
           "max_lots": 2, "initial_capital": 3_000_000.0, "episode_sessions": 2, "allow_overnight": True,
           "square_off_time": "14:30", "split_fractions": (0.6, 0.2, 0.2)}
# A backtest (gates, reports, run_backtest, adapt's comparison) runs its whole split as one episode.
WHOLE_SPLIT_IGNORES = {"episode_sessions"}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("processed")
    nifty_rules_market(d, SYMBOL)
    return d


def _sequence_context(config, directory):
    from jaxtrade.pipeline.context import SymbolContext

    cfg = C.apply_overrides(C.default_config(), {"symbols": (SYMBOL,), "processed_data_dir": str(directory)})
    cfg = C.SequenceConfig(run=cfg.run, groups={**cfg.groups, "env": config})
    return cfg, SymbolContext(cfg, SYMBOL)


def training(config, d):
    return _sequence_context(config, d)[1].train_params


def gates(config, d):
    cfg, ctx = _sequence_context(config, d)
    return ctx.backtest_params(cfg.run.eval_split)


def report(config, d):
    cfg, ctx = _sequence_context(config, d)
    return ctx.backtest_params(cfg.run.report_split)


def maml_heldout_tasks(config, d):
    cfg, ctx = _sequence_context(config, d)
    return ctx.split_params(cfg.run.eval_split)[1]


def expert_regimes(config, d):
    cfg, ctx = _sequence_context(config, d)
    return ctx.eval_params(cfg.run.eval_split)


def _model_file(config):
    """What a model's .pth config or Orbax meta records."""
    return {"network": {"architecture": "actor_critic", "num_actions": 2 * config.max_lots + 1},
            "env_config": config.to_dict()}


def adapt_support(config, d):
    from experiments import adapt

    rules, _ = adapt.adapt_rules(_model_file(config), {})
    return adapt.build_envs(rules, d, SYMBOL, "val")[1]


def adapt_comparison(config, d):
    from experiments import adapt

    rules, _ = adapt.adapt_rules(_model_file(config), {})
    _, _, market64, bt_config = adapt.build_envs(rules, d, SYMBOL, "val")
    with jax.enable_x64(True):
        return B.build_env(market64, bt_config)[0]


def run_backtest(config, d):
    from experiments import backtest as cmd

    model = P.Policy("model", lambda key, obs: 0, source="m.pth",
                     env_config=P.model_env_config(_model_file(config)))
    with jax.enable_x64(True):
        market, bt_config, _ = cmd.symbol_setup(d, SYMBOL, model, {}, "test")
        return B.build_env(market, bt_config)[0]


def bench(config, d):
    from experiments import bench_programs

    return bench_programs.bench_env_params(E.market_for(config, d, SYMBOL), config)


CONSUMERS = {"training": training, "gates": gates, "report": report, "maml_heldout_tasks": maml_heldout_tasks,
             "expert_regimes": expert_regimes, "adapt_support": adapt_support, "adapt_comparison": adapt_comparison,
             "run_backtest": run_backtest, "bench": bench}
WHOLE_SPLIT = {"gates", "report", "expert_regimes", "adapt_comparison", "run_backtest"}


def same_params(a: E.EnvParams, b: E.EnvParams) -> bool:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return a.max_lots == b.max_lots and all(
        np.shape(x) == np.shape(y) and np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


def test_the_table_covers_every_field():
    assert set(CHANGED) == {f.name for f in dataclasses.fields(E.EnvConfig)}
    for field, value in CHANGED.items():
        assert getattr(BASE, field) != value, field


@pytest.mark.parametrize("consumer", sorted(CONSUMERS))
def test_every_field_changes_what_every_consumer_builds(consumer, data_dir):
    build = CONSUMERS[consumer]
    base = build(BASE, data_dir)
    assert same_params(base, build(BASE, data_dir))  # deterministic: a difference below is the field's
    ignored = WHOLE_SPLIT_IGNORES if consumer in WHOLE_SPLIT else set()
    dropped = [field for field, value in CHANGED.items()
               if same_params(base, build(BASE.replace(**{field: value}), data_dir)) != (field in ignored)]
    assert not dropped, f"{consumer} builds the same market rules whatever {dropped} say"


def test_env_params_refuses_a_market_split_otherwise(data_dir):
    market = E.market_for(BASE, data_dir, SYMBOL)
    with pytest.raises(ValueError, match="market_for"):
        E.env_params(BASE.replace(split_fractions=(0.6, 0.2, 0.2)), market, "train")


def test_round_trip_through_a_model_file():
    config = BASE.replace(**{k: v for k, v in CHANGED.items()})
    assert E.EnvConfig.from_dict(config.to_dict()) == config
    assert P.model_env_config({"env_config": config.to_dict()}) == config
