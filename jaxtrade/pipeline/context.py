"""One symbol's data and market rules for the sequence: every environment it needs is built from the run's
`EnvConfig` (`cfg.env`) through `env.env_params`, the one path, so that training, gates, the report, MAML's
held-out tasks and the expert-regime table all trade under the same rules."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxtrade import backtest as B, env as E
from jaxtrade.config import SequenceConfig


class SymbolContext:
    """float32 market and params for training and on-device evaluation, float64 market for the validation and
    test backtests that gates and the report read."""

    def __init__(self, cfg: SequenceConfig, symbol: str):
        self.cfg = cfg
        self.symbol = symbol
        self.market = E.market_for(cfg.env, cfg.run.processed_data_dir, symbol)
        self.train_params = E.env_params(cfg.env, self.market, "train")
        with jax.enable_x64(True):
            self.market64 = E.market_for(cfg.env, cfg.run.processed_data_dir, symbol, price_dtype=jnp.float64)
        self.backtest_config = B.BacktestConfig(env=cfg.env, seed=cfg.run.seed, risk_free_rate=cfg.run.risk_free_rate)

    def eval_params(self, split: str) -> E.EnvParams:
        """float32 params of `split` as one episode (on-device evaluation traces: the expert-regime table)."""
        return E.env_params(self.cfg.env, self.market, split, whole_split=True)

    def split_params(self, split: str, symbol: str | None = None):
        """(market, float32 params of `split` with training-length episodes): MAML's held-out tasks, of this
        symbol or of another processed `symbol` (the cross-symbol check)."""
        market = self.market if symbol in (None, self.symbol) else E.market_for(
            self.cfg.env, self.cfg.run.processed_data_dir, symbol)
        return market, E.env_params(self.cfg.env, market, split)

    def backtest_params(self, split: str) -> E.EnvParams:
        """The float64 params the gates' and the report's backtests of `split` run on."""
        with jax.enable_x64(True):
            return B.build_env(self.market64, self.backtest_config.replace(split=split))[0]

    def backtest_many(self, policies, split: str) -> list[B.BacktestResult]:
        with jax.enable_x64(True):
            return B.backtest_many(self.market64, policies, self.backtest_config.replace(split=split))

    def backtest(self, policy, split: str) -> B.BacktestResult:
        return self.backtest_many([policy], split)[0]

    def data_record(self) -> dict:
        """summary.json's `data`: the processed file, its sessions and each split's first and last session date,
        and the training split's feature scaling (what `experiments.retrain` needs to know which sessions are new
        and to feed a model the observations it trained on)."""
        m = self.market

        def day(i: int) -> str:
            return str(m.session_dates[i])

        splits = {name: {"first_session": day(lo), "last_session": day(hi - 1), "sessions": hi - lo}
                  for name, (lo, hi) in m.splits.items() if name != "all" and hi > lo}
        return {"file": str(m.path), "bar_minutes": int(m.bar_minutes), "sessions": m.num_sessions,
                "first_session": day(0), "last_session": day(m.num_sessions - 1), "splits": splits,
                "scaler": m.scaler.to_dict()}
