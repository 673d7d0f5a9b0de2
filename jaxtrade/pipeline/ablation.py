"""Ablations (DESIGN section 8; `python -m experiments.ablate`): configurations x seeds x walk-forward folds of
the PPO stage, trained as one `vmap`ped program per group of configurations that share their shapes.

A *configuration* is the run's config with some settings swept (`--sweep ppo.learning_rate=1e-4,3e-4`). A swept
setting that is a trainer hyperparameter leaf (`ppo.learning_rate`, `ppo.ent_coef`, ... the fields of
`PPOHParams`) is an array: every configuration that differs only in such settings trains in one program, runs =
configuration x seed, vmapped inside the folds (`agents.batched.folds_by_runs`). Any other setting (network
sizes, `env.max_lots`, `env.cost_model`, ...) sets shapes or market rules: its configurations form separate
groups, one compiled program each.

A *cell* is one (configuration, seed, symbol, fold): trained on the fold's train window, then backtested
greedily (float64 money, `backtest.backtest`) on the fold's validation and test windows. The baselines (flat,
buy and hold, momentum) are backtested on the same windows under the same market rules.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxtrade import backtest as B, config as C, env as E, metrics as M, policies
from jaxtrade.agents import ppo
from jaxtrade.agents.base import Runner
from jaxtrade.agents.batched import folds_by_runs
from jaxtrade.errors import InputError
from jaxtrade.evaluation import folds as W

ARRAY_GROUPS = {"ppo": ppo.PPOHParams}  # swept fields of these groups are vmapped hyperparameter leaves
ABLATION_BASELINES = ("flat", "buy_and_hold", "momentum")
EVAL_SPLITS = ("val", "test")
TRAIN_FIGURES = ("mean_reward", "policy_loss", "value_loss", "entropy", "approx_kl", "trades_per_episode")


# ------------------------------------------------------------------------------------------ configurations

@dataclasses.dataclass(frozen=True)
class Sweep:
    """One `--sweep group.field=v1,v2,...`: the setting and its values (typed as the field)."""

    key: str
    values: tuple

    @property
    def is_array(self) -> bool:
        group, field = self.key.split(".", 1) if "." in self.key else ("", self.key)
        cls = ARRAY_GROUPS.get(group)
        return cls is not None and field in {f.name for f in dataclasses.fields(cls)}


def parse_sweep(text: str, base: C.SequenceConfig) -> Sweep:
    """`group.field=v1,v2,...` -> Sweep, each value converted and checked as the field's flag would be."""
    key, eq, values = text.partition("=")
    key = key.strip().lstrip("-")
    if not eq or not values.strip():
        raise InputError(f"--sweep {text!r}: expected group.field=v1,v2,... (e.g. ppo.learning_rate=1e-4,3e-4)")
    if "." not in key or key.split(".", 1)[0] not in base.groups:
        raise InputError(f"--sweep {text!r}: {key!r} is not a group setting (groups: {', '.join(base.groups)})")
    group, field = key.split(".", 1)
    cls = type(base.groups[group])
    if field not in {f.name for f in dataclasses.fields(cls)}:
        raise InputError(f"--sweep: unknown setting --{key}")
    if group == "eval":
        raise InputError("--sweep: the walk-forward folds (--eval.*) are the ablation's tasks, not a configuration")
    kind, optional = C.field_kind(cls, field)
    if kind.startswith("list_"):  # a list-valued field: values separated by ';' (hidden sizes 64,64;128,128)
        raw = [v for v in values.split(";") if v.strip()]
    else:
        raw = [v for v in values.split(",") if v.strip()]
    typed = tuple(C.coerce(v.strip() if kind != "bool" else v.strip().lower() in ("1", "true", "yes"),
                           kind, optional, f"--sweep {key}") for v in raw)
    for v in typed:  # each value checked by the config's own validation, now, not after training
        C.apply_overrides(base, {key: v}, where=f"--sweep {key}={v}: ")
    return Sweep(key, typed)


@dataclasses.dataclass(frozen=True)
class Configuration:
    index: int
    values: tuple[tuple[str, Any], ...]  # (setting, value) of every swept setting

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={_show(v)}" for k, v in self.values) or "base"

    @property
    def config_id(self) -> str:
        return f"c{self.index}"

    def apply(self, base: C.SequenceConfig) -> C.SequenceConfig:
        return C.apply_overrides(base, dict(self.values), where=f"configuration {self.label}: ")


def _show(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, tuple):
        return ",".join(map(_show, v))
    return str(v)


def configurations(sweeps: Sequence[Sweep], zip_mode: bool = False) -> list[Configuration]:
    """Every configuration of the sweeps: their cartesian product (grid), or value i of every sweep (zip)."""
    if not sweeps:
        return [Configuration(0, ())]
    keys = [s.key for s in sweeps]
    if len(set(keys)) != len(keys):
        raise InputError(f"--sweep: a setting is swept twice ({', '.join(keys)})")
    if zip_mode:
        n = {len(s.values) for s in sweeps}
        if len(n) != 1:
            raise InputError(f"--zip: every --sweep needs the same number of values, got "
                             f"{', '.join(f'{s.key}: {len(s.values)}' for s in sweeps)}")
        combos = list(zip(*(s.values for s in sweeps)))
    else:
        combos = list(itertools.product(*(s.values for s in sweeps)))
    if len(set(combos)) != len(combos):
        raise InputError(f"--sweep: repeated configuration(s) ({'--zip' if zip_mode else 'a repeated value'})")
    return [Configuration(i, tuple(zip(keys, c))) for i, c in enumerate(combos)]


def program_groups(configs: Sequence[Configuration], sweeps: Sequence[Sweep]
                   ) -> list[tuple[tuple, list[Configuration]]]:
    """Configurations grouped by their shape-setting values (one compiled program per group), in order."""
    static = {s.key for s in sweeps if not s.is_array}
    groups: dict[tuple, list[Configuration]] = {}
    for c in configs:
        groups.setdefault(tuple((k, v) for k, v in c.values if k in static), []).append(c)
    return list(groups.items())


def seed_key(seed: int, symbol_index: int) -> jax.Array:
    """The PPO stage's key of `experiments.sequence --seed seed` for its `symbol_index`-th symbol (so an
    ablation cell and the sequence's stage 1 draw the same random numbers)."""
    sym = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), symbol_index), 0)
    return jax.random.split(sym)[1]


# ------------------------------------------------------------------------------------------ one symbol's folds

@dataclasses.dataclass
class SymbolFolds:
    """One symbol under one set of market rules: the fold plan, each fold's float32 market (training) and float64
    market (backtests), and the folds' training env params stacked `[K, ...]`."""

    symbol: str
    plan: W.FoldPlan
    markets: list
    markets64: list
    train_params: E.EnvParams
    first_train_params: E.EnvParams

    @classmethod
    def load(cls, cfg: C.SequenceConfig, symbol: str) -> "SymbolFolds":
        market = E.market_for(cfg.env, cfg.run.processed_data_dir, symbol)
        plan, markets = W.fold_markets(market, cfg.eval, cfg.env.split_fractions)
        with jax.enable_x64(True):
            market64 = E.market_for(cfg.env, cfg.run.processed_data_dir, symbol, price_dtype=jnp.float64)
            markets64 = [W.fold_market(market64, f) for f in plan]
        per_fold = [E.env_params(cfg.env, m, "train") for m in markets]
        return cls(symbol, plan, markets, markets64, W.stack_folds(per_fold), per_fold[0])


def backtest_split(cfg: C.SequenceConfig, market64, policy, split: str) -> B.BacktestResult:
    config = B.BacktestConfig(env=cfg.env, split=split, seed=cfg.run.seed, risk_free_rate=cfg.run.risk_free_rate,
                              bootstrap_resamples=200)
    with jax.enable_x64(True):
        return B.backtest(market64, policy, config)


def result_row(result: B.BacktestResult) -> dict:
    row = {k: _float(result.metrics.get(k)) for k in M.METRIC_KEYS}
    row.update(start=result.start, end=result.end, sessions=int(result.num_sessions))
    return row


def _float(v) -> float:
    return float("nan") if v is None else float(v)


def daily_rows(result: B.BacktestResult, market64, split: str) -> tuple[list[str], np.ndarray]:
    lo, hi = market64.splits[split]
    dates = [str(d) for d in np.asarray(market64.session_dates)[lo:hi]]
    r = np.asarray(result.daily_returns, np.float64)
    return dates[:len(r)], r


# ------------------------------------------------------------------------------------------ training a group

@dataclasses.dataclass
class GroupResult:
    """A trained group: per cell (fold f, run r) the policy parameters, and the metrics `[iterations, K, R]`."""

    params: Any
    metrics: dict[str, np.ndarray]
    wall_s: float
    network: Any


def train_group(cfg: C.SequenceConfig, folds: SymbolFolds, run_hparams: dict[str, np.ndarray],
                run_seeds: Sequence[int], symbol_index: int, fold_ids: Sequence[int],
                progress: Callable[[dict], None] | None = None) -> GroupResult:
    """Train R runs (run r: hyperparameters `run_hparams[name][r]`, seed `run_seeds[r]`) on each fold in
    `fold_ids`, as one program: folds vmapped outside runs. `cfg` holds the group's shared (shape-setting and
    unswept) settings."""
    fold_ids = list(fold_ids)
    num_runs = len(run_seeds)
    stacked = jax.tree.map(lambda x: x[np.asarray(fold_ids)], folds.train_params)
    template = ppo.make_trainer(cfg.ppo, folds.first_train_params).replace(env_params=stacked)
    if run_hparams:
        template = template.with_hparams(**{k: jnp.asarray(v) for k, v in run_hparams.items()})
    grid = folds_by_runs(template, len(fold_ids), num_runs, per_run=("hparams",) if run_hparams else ())
    keys = jnp.stack([jnp.stack([seed_key(s, symbol_index) for s in run_seeds])] * len(fold_ids))
    runner = Runner(callback=progress, log_every=max(cfg.run.log_every, 1) if progress else 0)
    t0 = time.perf_counter()
    state = jax.jit(lambda t, k: t.init(k))(grid, keys)
    state = jax.lax.optimization_barrier(state)
    state, metrics = runner(grid, state, cfg.ppo.num_iterations)
    params = jax.device_get(grid.params_of(state))
    return GroupResult(params, metrics, time.perf_counter() - t0, template.network)


def cell_params(group: GroupResult, f: int, r: int):
    return jax.tree.map(lambda x: np.asarray(x[f, r]), group.params)


def training_figures(metrics: dict[str, np.ndarray], f: int, r: int) -> dict:
    """The cell's last-iteration training figures (`train_*`)."""
    out = {}
    for name in TRAIN_FIGURES:
        if name in metrics:
            out[f"train_{name}"] = float(np.asarray(metrics[name])[-1, f, r])
    return out


def learning_curve(metrics: dict[str, np.ndarray], f: int, r: int, name: str = "mean_reward") -> np.ndarray:
    return np.asarray(metrics[name], np.float64)[:, f, r] if name in metrics else np.zeros(0)


def trained_policy(network, params, name: str):
    return policies.network_policy(network, params, name)


def baseline_policies(cfg: C.SequenceConfig, market64) -> list:
    return [policies.make_baseline(n, max_lots=cfg.env.max_lots, scaler=market64.scaler)
            for n in ABLATION_BASELINES]


def check_stages(stages: Sequence[str]) -> None:
    if tuple(stages) != ("ppo",):
        raise InputError(f"--stages={','.join(stages)}: experiments.ablate trains the ppo stage (the MoE and MAML "
                         f"stages are not yet ablated; run experiments.sequence for them)")
