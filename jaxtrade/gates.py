"""Stage gates (DESIGN section 4) and the seed guide's performance targets, in one place.

`check_gate(metrics, GateConfig, iterations)` judges the PPO and MoE stages on their validation backtest;
`check_maml_gate(evaluation, MAMLGateConfig, iterations)` judges MAML on its held-out adaptation evaluation
(`jaxtrade.evaluation.adaptation`) plus optional validation-backtest criteria. `SEED_TARGETS` is the seed guide's
"Performance Targets" table, which the report checks the final model against (`seed_target_checks`). Nothing
here imports the pipeline or a trainer.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


@dataclasses.dataclass(frozen=True)
class GateConfig:
    """A stage passes when every set criterion holds on the validation split (None = not checked)."""

    min_win_rate: float | None = None  # least validation win rate to pass (none: not checked)
    min_profit_factor: float | None = None  # least validation profit factor to pass (none: not checked)
    max_drawdown: float | None = None  # largest validation drawdown to pass, a fraction (none: not checked)
    min_iterations: int = 0  # iterations before the gate can pass (the seed's advancement_criteria.min_episodes)


CROSS_SYMBOL_METRICS = ("win_rate", "profit_factor", "mean_episode_return")


@dataclasses.dataclass(frozen=True)
class MAMLGateConfig:
    """Stage-3 success criteria (DESIGN section 10), checked on held-out tasks.

    Main criterion: mean episode return after adaptation minus before, on the held-out tasks, has a 95%
    bootstrap interval above zero (`require_improvement_ci`).
    min_adaptation_speed: the seed's name for a MAXIMUM: inner steps needed to reach `speed_fraction` of the
      final adapted improvement must be <= this.
    min_cross_symbol_performance: the held-out symbol's post-adaptation `cross_symbol_metric` relative to the
      trained symbol's own (checked only when another processed symbol exists).
    min_win_rate / min_profit_factor / max_drawdown: optional validation-backtest criteria (None: unchecked).
    min_iterations: meta-iterations needed before the gate can pass (as the other stages' `min_iterations`).
    """

    min_adaptation_speed: float = 3.0  # at most this many inner steps to reach speed_fraction of the adapted gain
    min_cross_symbol_performance: float = 0.85  # held-out symbol's post-adaptation metric over the trained symbol's
    require_improvement_ci: bool = True  # the held-out improvement's 95% bootstrap interval must be above 0
    speed_fraction: float = 0.9  # share of the final adapted gain that min_adaptation_speed measures
    cross_symbol_metric: str = "win_rate"  # metric of the cross-symbol criterion
    min_win_rate: float | None = None  # least validation win rate (none: not checked)
    min_profit_factor: float | None = None  # least validation profit factor (none: not checked)
    max_drawdown: float | None = None  # largest validation drawdown, a fraction (none: not checked)
    min_iterations: int = 0  # meta-iterations before the gate can pass

    def __post_init__(self):
        if self.cross_symbol_metric not in CROSS_SYMBOL_METRICS:
            raise ValueError(f"MAMLGateConfig.cross_symbol_metric: {self.cross_symbol_metric!r} is not one of "
                             f"{', '.join(CROSS_SYMBOL_METRICS)}")

    def replace(self, **changes) -> "MAMLGateConfig":
        return dataclasses.replace(self, **changes)

    def backtest_gate(self) -> GateConfig | None:
        """The validation-backtest criteria as a `GateConfig`, or None when none is set."""
        if all(v is None for v in (self.min_win_rate, self.min_profit_factor, self.max_drawdown)):
            return None
        return GateConfig(self.min_win_rate, self.min_profit_factor, self.max_drawdown)


def check_gate(metrics: Mapping, gate: GateConfig, iterations: int) -> tuple[bool, list[str]]:
    """(passed, reasons it failed). A null metric (no trades, no losing trade) fails a minimum unless it
    is a profit factor with winning trades only."""
    reasons = []

    def need_min(name, threshold):
        if threshold is None:
            return
        value = metrics.get(name)
        if name == "profit_factor" and value is None and (metrics.get("num_trades") or 0) > 0 \
                and (metrics.get("win_rate") or 0) > 0:
            return  # no losing trade: profit factor is unbounded
        if value is None or not value >= threshold:
            reasons.append(f"{name} {_fmt(value)} < {threshold:g}")

    need_min("win_rate", gate.min_win_rate)
    need_min("profit_factor", gate.min_profit_factor)
    if gate.max_drawdown is not None:
        dd = metrics.get("max_drawdown")
        if dd is None or dd > gate.max_drawdown:
            reasons.append(f"max_drawdown {_fmt(dd)} > {gate.max_drawdown:g}")
    if iterations < gate.min_iterations:
        reasons.append(f"iterations {iterations} < {gate.min_iterations}")
    return not reasons, reasons


def check_maml_gate(ev: Mapping, gate: MAMLGateConfig, iterations: int | None = None,
                    validation: Mapping | None = None) -> list[str]:
    """Reasons the held-out evaluation `ev` (`evaluation.adaptation.evaluate_symbol_adaptation`) fails `gate`
    (empty: passed); with `validation` (the validation backtest's metrics), the optional backtest criteria too."""
    reasons = []
    own = ev["own"]
    ci = own.get("improvement_ci95")
    if gate.require_improvement_ci and (ci is None or not ci[0] > 0):
        ci_txt = "n/a" if ci is None else f"[{ci[0]:.3g}, {ci[1]:.3g}]"
        reasons.append(f"adaptation improvement {own.get('improvement')} has 95% CI {ci_txt}, not above 0")
    speed = own.get("adaptation_speed")
    if speed is None:
        reasons.append("adaptation did not improve held-out returns (adaptation speed undefined)")
    elif speed > gate.min_adaptation_speed:
        reasons.append(f"adaptation speed {speed} steps > {gate.min_adaptation_speed:g}")
    cross = ev.get("cross")
    if cross is not None:
        ratio = cross_symbol_ratio(ev, gate.cross_symbol_metric)
        ev_ratio = None if ratio is None else round(ratio, 4)
        if ratio is None or not ratio >= gate.min_cross_symbol_performance:
            reasons.append(f"cross-symbol {gate.cross_symbol_metric} ratio ({ev['cross_symbol']} / "
                           f"{ev['own_symbol']}) {ev_ratio} < {gate.min_cross_symbol_performance:g}")
    backtest = gate.backtest_gate()
    if backtest is not None and validation is not None:
        reasons += check_gate(validation, backtest, 0)[1]
    if iterations is not None and iterations < gate.min_iterations:
        reasons.append(f"iterations {iterations} < {gate.min_iterations}")
    return reasons


def cross_symbol_ratio(ev: Mapping, metric: str = "win_rate") -> float | None:
    """Held-out symbol's post-adaptation `metric` / the trained symbol's own (None when undefined)."""
    if ev.get("cross") is None:
        return None
    a, b = ev["cross"]["post"].get(metric), ev["own"]["post"].get(metric)
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)) or b <= 0:
        return None
    return float(a / b)


# ------------------------------------------------------------------------------------------------------------
# The seed guide's performance targets (seed-guide.md, "Performance Targets")


@dataclasses.dataclass(frozen=True)
class Target:
    """One line of the guide's table: met when `low` <(=) value <(=) `high` (None: that end is open)."""

    metric: str
    label: str
    text: str  # how the guide states it
    low: float | None = None
    high: float | None = None
    strict_low: bool = False
    strict_high: bool = False

    def met(self, value) -> bool:
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            return False
        if self.low is not None and not (value > self.low if self.strict_low else value >= self.low):
            return False
        return self.high is None or (value < self.high if self.strict_high else value <= self.high)


SEED_TARGETS = (
    # "Win Rate: 40-50% (realistic for options trading)": a range, checked at both ends (far above 50% is a
    # sign of many small wins against rare large losses, not of skill).
    Target("win_rate", "win rate", "40-50%", low=0.40, high=0.50),
    # "Profit Factor: 1.2-1.8 (good risk-adjusted returns)": the lower end is the bar; more is not a failure.
    Target("profit_factor", "profit factor", "1.2-1.8", low=1.2),
    Target("max_drawdown", "max drawdown", "< 25%", high=0.25, strict_high=True),
    Target("sharpe", "Sharpe", "> 1.0", low=1.0, strict_low=True),
)


def seed_target_checks(metrics: Mapping) -> list[tuple[Target, object, bool]]:
    """(target, value, met) for each of `SEED_TARGETS` on a backtest's `metrics`."""
    return [(t, metrics.get(t.metric), t.met(metrics.get(t.metric))) for t in SEED_TARGETS]


def seed_targets_header() -> str:
    return "Seed guide targets (" + ", ".join(f"{t.label} {t.text}" for t in SEED_TARGETS) + "):"
