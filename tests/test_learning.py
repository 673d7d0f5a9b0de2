"""Learning tests on planted edges (issue 20): each stage finds what is there to find, and nothing where there
is nothing. The markets, training and evaluation are `tests/planted_edges.py`'s (shared with
`python -m experiments.bench learn`, which prints the same figures); each test prints its figures as one
JSON line (`pytest -s` shows them)."""

from __future__ import annotations

import json

import pytest

from tests import planted_edges as PE


def _show(figures: dict) -> dict:
    print(json.dumps(figures))
    return figures


@pytest.mark.slow
@pytest.mark.parametrize("costs", [False, True], ids=["no_costs", "nse_costs"])
def test_ppo_finds_planted_ar1_edge(tmp_path, costs):
    f = _show(PE.ppo_finds_edge(tmp_path, costs=costs))
    assert f["optimal_return"] > 0.3, f  # the planted edge is there to find (a check of the market itself)
    assert f["ratio"] >= 0.9, f"PPO earned {f['ppo_return']} on test, under 90% of one-bar momentum's {f['optimal_return']}"


@pytest.fixture(scope="module")
def moe_figures(tmp_path_factory):
    """One PPO-128 -> MoE run for both MoE tests (the most expensive check)."""
    return _show(PE.moe_specialises(tmp_path_factory.mktemp("moe")))


@pytest.mark.slow
def test_moe_specialises_by_volatility_regime(moe_figures):
    f = moe_figures
    by = f["gate_by_regime"]
    calm, turbulent = by["calm"], by["turbulent"]
    assert calm["leader"] != turbulent["leader"], by
    # specialised by gate weight, not only usage: each regime's leader weighs more in its own regime
    assert calm["mean_gate"][calm["leader"]] > turbulent["mean_gate"][calm["leader"]], by
    assert turbulent["mean_gate"][turbulent["leader"]] > calm["mean_gate"][turbulent["leader"]], by
    # the project's expert-by-regime table (volatility terciles of rvol_20) agrees: another leader when calm
    assert f["table_leader_by_vol"]["low"] != f["table_leader_by_vol"]["high"], f["table_leader_by_vol"]
    # the MoE stage improves on the PPO stage it started from (same width)
    assert f["moe_return"] > f["ppo_stage1_return"], f


@pytest.mark.slow
def test_moe_keeps_up_with_ppo_of_the_same_width_at_equal_iterations(moe_figures):
    """At equal iterations the MoE does not reliably BEAT PPO-128 on this market (seed 0: 131.8% vs 133.0%; 4 of 6
    runs won, both near the regime-aware rule's 143.8%): what is asserted is that it keeps up, within 5% of
    PPO-128's return and at least 85% of the regime-aware rule's, so a MoE that stops learning fails here."""
    f = moe_figures
    assert f["moe_return"] >= 0.95 * f["ppo_return"], f
    assert f["moe_return"] >= 0.85 * f["regime_oracle_return"], f


@pytest.mark.slow
def test_maml_adapts_to_the_sign_of_the_edge(tmp_path):
    """Held-out tasks of the sign-flip AR(1) family: after its inner steps on a task's first session, the
    meta-learned policy's greedy query return beats the unadapted meta-policy and the PPO policy trained on the
    mixture of tasks, each with the bootstrap interval (over tasks) of the improvement above zero.
    `python -m experiments.bench learn --checks maml --seed S`, improvement per query session over the
    meta-policy / over the mixture PPO, 8 held-out tasks: seed 0 +0.0082 [0.0043, 0.0123] / +0.0087 [0.0055,
    0.0121]; seed 1 +0.0102 [0.0087, 0.0118] / +0.0105 [0.0075, 0.0134]; with the same fit solved by LAPACK
    (before the Gauss-Jordan solve) seed 2 +0.0091 [0.0068, 0.0111] / +0.0094 [0.0068, 0.0120], seed 3 +0.0110
    [0.0074, 0.0144] / +0.0106 [0.0071, 0.0142].
    Settings, and why the advantage baseline matters: tests/planted_edges.py (MAML_*)."""
    f = _show(PE.maml_adapts(tmp_path))
    r = f["per_session_return"]
    assert f["improvement_vs_meta_ci95"][0] > 0, f
    assert f["improvement_vs_ppo_mixture_ci95"][0] > 0, f
    assert r["adapted"] > r["meta"] and r["adapted"] > r["ppo_mixture"], r


@pytest.mark.slow
def test_random_walk_with_costs_teaches_nothing(tmp_path):
    f = _show(PE.flat_market_teaches_nothing(tmp_path))
    assert f["daily_mean_ci95"][0] <= 0, f"test return significantly above zero on a random walk: {f}"
    # An untrained policy changes its position on most bars; the trained one has learnt that trading costs
    assert f["ppo_trades"] <= 0.1 * f["random_policy_trades"], f
