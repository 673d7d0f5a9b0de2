"""The seed guide's performance targets: one table (`gates.SEED_TARGETS`) that the report's header and checks
both come from, the win rate checked at both ends of its 40-50% range."""

from jaxtrade import gates as G


def _met(**metrics):
    return {t.metric: met for t, _, met in G.seed_target_checks(metrics)}


def test_seed_targets_from_one_table_win_rate_at_both_ends():
    assert G.seed_targets_header() == ("Seed guide targets (win rate 40-50%, profit factor 1.2-1.8, max drawdown "
                                       "< 25%, Sharpe > 1.0):")
    good = dict(win_rate=0.45, profit_factor=1.5, max_drawdown=0.1, sharpe=1.5)
    assert _met(**good) == {"win_rate": True, "profit_factor": True, "max_drawdown": True, "sharpe": True}
    assert _met(**{**good, "win_rate": 0.40})["win_rate"] and _met(**{**good, "win_rate": 0.50})["win_rate"]
    assert not _met(**{**good, "win_rate": 0.39})["win_rate"]
    assert not _met(**{**good, "win_rate": 0.51})["win_rate"]  # above the range: many small wins, rare big losses
    assert _met(**{**good, "profit_factor": 2.5})["profit_factor"]  # 1.2 is the bar; more is not a failure
    assert not _met(**{**good, "profit_factor": 1.19})["profit_factor"]
    assert not _met(**{**good, "max_drawdown": 0.25})["max_drawdown"]  # strictly below 25%
    assert not _met(**{**good, "sharpe": 1.0})["sharpe"]  # strictly above 1
    assert not any(_met(win_rate=None, profit_factor=None, max_drawdown=None, sharpe=None).values())
