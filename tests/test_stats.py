"""Statistics across seeds, folds and configurations, against hand-worked examples, published numbers and
independent computations (scipy, brute force); pure noise is not reported as significant."""

import itertools
import math

import numpy as np
import pytest
from scipy import special, stats as ss

from jaxtrade.evaluation import stats as S


# ------------------------------------------------------------------------------------------ aggregates

def test_mean_and_iqm_hand_checked():
    assert S.iqm(np.arange(1, 9)) == 4.5  # drop {1, 2} and {7, 8}: mean(3, 4, 5, 6)
    assert S.iqm([[1, 100], [2, -50], [3, 4]]) == 2.5  # 6 scores, drop one each end: mean(1, 2, 3, 4)
    assert S.mean([[1, 100], [2, -50], [3, 4]]) == 10
    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 5, 8, 13, 40):
        x = rng.normal(size=(n, 3))
        assert S.iqm(x) == pytest.approx(ss.trim_mean(x, 0.25, axis=None), rel=1e-12)
    with pytest.raises(ValueError, match="non-finite"):
        S.mean([[1.0, np.nan]])


def test_bootstrap_degenerate_cases_are_exact():
    # Every run of a task scores the same: stratified resampling always rebuilds the same matrix, so the
    # interval is the point itself. (Pooling runs across tasks would give anything from 0 to 1.)
    scores = np.array([[0.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
    for stat in ("mean", "iqm"):
        assert S.bootstrap_interval(stat, scores, reps=2000) == (0.5, 0.5)
    # Two runs {0, 1} of one task: the resampled mean is 0, 0.5, 1 with probability 1/4, 1/2, 1/4, so the 2.5% and
    # 97.5% points are exactly 0 and 1.
    dist = S.stratified_bootstrap("mean", [[0.0], [1.0]], reps=40_000, seed=1)
    assert set(np.unique(dist)) == {0.0, 0.5, 1.0}
    assert np.mean(dist == 0.5) == pytest.approx(0.5, abs=0.01)
    assert S.percentile_interval(dist) == (0.0, 1.0)
    # Paired arrays share each draw: x - y is the same constant in every replicate; unpaired ones (rliable's
    # default for several arrays) are drawn independently, so the difference varies.
    x = np.random.default_rng(2).normal(size=(5, 3))
    diff = S.stratified_bootstrap(lambda a, b: a.mean() - b.mean(), x, x - 0.25, reps=300, paired=True)
    np.testing.assert_allclose(diff, 0.25, atol=1e-12)
    diff = S.stratified_bootstrap(lambda a, b: a.mean() - b.mean(), x, x - 0.25, reps=300)
    assert diff.std() > 0.05
    # Independent arrays may have different run counts (tasks are the strata); each keeps its own task columns.
    y = np.array([[0.0, 1.0, 2.0]] * 2)
    assert np.all(S.stratified_bootstrap(lambda a, b: b.mean(), x, y, reps=50) == 1.0)


def test_bootstrap_matches_exact_enumeration():
    """R=3 runs x K=2 tasks: all 27 x 27 equally likely stratified resamples enumerated by hand; the Monte Carlo
    distribution's CDF agrees with the exact one at every atom (DKW bound: 0.01 fails with p < 1e-4)."""
    scores = np.array([[0.0, 10.0], [1.0, 20.0], [5.0, 40.0]])
    draws = list(itertools.product(range(3), repeat=3))
    exact = np.array([(scores[list(a), 0].sum() + scores[list(b), 1].sum()) / 6 for a in draws for b in draws])
    mc = S.stratified_bootstrap("mean", scores, reps=50_000, seed=3)
    atoms = np.unique(exact)
    cdf_exact = np.searchsorted(np.sort(exact), atoms, side="right") / exact.size
    cdf_mc = np.searchsorted(np.sort(mc), atoms, side="right") / mc.size
    assert np.max(np.abs(cdf_exact - cdf_mc)) < 0.01
    assert set(np.unique(mc)) <= set(atoms)
    # A pooled (unstratified) bootstrap would reach means like 40 (every slot drawing the 40): never here.
    assert mc.max() <= exact.max()


def test_aggregate_intervals_bracket_the_estimates():
    x = np.random.default_rng(4).normal(1.0, 1.0, size=(8, 3))
    agg = S.aggregate(x, reps=5000)
    assert agg.mean_ci[0] < agg.mean < agg.mean_ci[1] and agg.iqm_ci[0] < agg.iqm < agg.iqm_ci[1]
    assert (agg.runs, agg.tasks) == (8, 3)
    assert agg.to_dict()["mean"] == agg.mean


def test_probability_of_improvement_hand_counted():
    # Task 0: X {3, 5, 6} vs Y {2, 4}: 3>2, 5>2, 5>4, 6>2, 6>4 -> 5 of 6 pairs.
    # Task 1: X {1, 1, 2} vs Y {1, 3}: two ties (1=1 twice) count 1/2 each, 2>1 -> (1 + 1) / 6 = 1/3.
    x = np.array([[3.0, 1.0], [5.0, 1.0], [6.0, 2.0]])
    y = np.array([[2.0, 1.0], [4.0, 3.0]])
    assert S.probability_of_improvement(x, y) == pytest.approx((5 / 6 + 1 / 3) / 2)
    assert S.probability_of_improvement(y, x) == pytest.approx(1 - (5 / 6 + 1 / 3) / 2)
    assert S.probability_of_improvement(x, x) == 0.5
    # rliable's definition: scipy's Mann-Whitney U over the number of pairs, averaged over tasks.
    rng = np.random.default_rng(5)
    a, b = rng.integers(0, 4, size=(6, 4)).astype(float), rng.integers(0, 4, size=(5, 4)).astype(float)
    want = np.mean([ss.mannwhitneyu(a[:, k], b[:, k], alternative="greater").statistic / 30 for k in range(4)])
    assert S.probability_of_improvement(a, b) == pytest.approx(want)


def test_noise_configurations_are_not_significant():
    """Pairs of configurations that are the same noise: the 95% interval of their mean difference spans 0, and
    the probability of improvement's interval spans 1/2, in (nearly) every pair."""
    rng = np.random.default_rng(6)
    covered, poi_covered = 0, 0
    pairs = 60
    for i in range(pairs):
        x, y = rng.normal(size=(10, 4)), rng.normal(size=(10, 4))  # 10 seeds x 4 folds each
        lo, hi = S.bootstrap_interval(lambda a, b: a.mean() - b.mean(), x, y, reps=1000, seed=i)
        covered += lo <= 0 <= hi
        if i < 15:
            lo, hi = S.bootstrap_interval(S.probability_of_improvement, x, y, reps=300, seed=i)
            poi_covered += lo <= 0.5 <= hi
    assert covered >= 0.85 * pairs and poi_covered >= 13
    # ...while a real difference is found.
    x = rng.normal(size=(10, 4)) + 1.5
    assert S.bootstrap_interval(lambda a, b: a.mean() - b.mean(), x, rng.normal(size=(10, 4)), reps=1000)[0] > 0


# ------------------------------------------------------------------------------------------ Sharpe ratios

def test_norm_ppf_and_cdf_match_scipy():
    ps = np.r_[1e-300, 1e-12, 1e-6, 1e-3, 0.02, 0.02425, 0.03, 0.2, 0.5, 0.8, 0.97, 0.999, 1 - 1e-9]
    for p in ps:
        assert S.norm_ppf(p) == pytest.approx(special.ndtri(p), rel=1e-13, abs=1e-13)
    for z in (-8.0, -1.96, 0.0, 0.3, 2.5):
        assert S.norm_cdf(z) == pytest.approx(special.ndtr(z), rel=1e-14)


def test_deflated_sharpe_paper_example():
    """Bailey and Lopez de Prado (2014), the paper's numerical example: N = 100 trials whose annualised Sharpe
    ratios vary with V = 1/2, the best annualised SR 2.5 over T = 1250 daily returns (5 years of 250 days) with
    skewness -3 and kurtosis 10. Published: SR_0 = 0.1132 (per day), DSR = 0.9004."""
    sr0 = S.expected_max_sharpe(100, 0.5 / 250)
    assert sr0 == pytest.approx(0.1132, abs=5e-5)
    dsr = S.probabilistic_sharpe_ratio(2.5 / math.sqrt(250), sr0, 1250, skew=-3, kurtosis=10)
    assert dsr == pytest.approx(0.9004, abs=5e-5)
    # The same through deflated_sharpe_ratio: returns built with exactly that Sharpe, skew and kurtosis are not
    # needed; check the function composes its parts on a return series instead.
    rng = np.random.default_rng(7)
    returns = rng.standard_t(5, 1250) * 0.01 + 0.001
    trials = rng.normal(0, math.sqrt(0.5), 100)
    out = S.deflated_sharpe_ratio(returns, trials, periods_per_year=250)
    sr = returns.mean() / returns.std(ddof=1)
    v = np.var(trials / math.sqrt(250), ddof=1)
    g3, g4 = ss.skew(returns), ss.kurtosis(returns, fisher=False)
    z = (sr - S.expected_max_sharpe(100, v)) * math.sqrt(1249) / math.sqrt(1 - g3 * sr + (g4 - 1) / 4 * sr ** 2)
    assert out.dsr == pytest.approx(special.ndtr(z), rel=1e-12)
    assert (out.sharpe, out.skew, out.kurtosis) == pytest.approx((sr, g3, g4), rel=1e-12)
    assert out.sharpe_annual == pytest.approx(sr * math.sqrt(250))
    # A trial whose Sharpe is null (it never traded) was still tried: it counts in N, not in the variance.
    with_null = S.deflated_sharpe_ratio(returns, np.r_[trials, np.nan], periods_per_year=250)
    assert with_null.num_trials == 101 and with_null.trial_sharpe_variance == pytest.approx(v, rel=1e-12)


def test_expected_max_sharpe_against_simulation():
    """SR_0 approximates E[max of N zero-mean normals with the trials' deviation] (Bailey and Lopez de Prado's
    extreme-value approximation is within ~1% for N >= 10); one trial is not deflated at all."""
    rng = np.random.default_rng(8)
    for n in (10, 100, 1000):
        simulated = rng.normal(0, 0.3, size=(4000, n)).max(axis=1).mean()
        assert S.expected_max_sharpe(n, 0.09) == pytest.approx(simulated, rel=0.03)
    assert S.expected_max_sharpe(1, 0.09) == 0.0 and S.expected_max_sharpe(50, 0.0) == 0.0


def test_best_of_many_noise_strategies_is_not_significant():
    """100 trials of 50 pure-noise strategies (a year of daily returns each): the best one's plain PSR against 0
    looks significant most of the time, its deflated Sharpe ratio almost never does."""
    rng = np.random.default_rng(9)
    naive, deflated = 0, 0
    for _ in range(100):
        returns = rng.normal(0, 0.01, size=(252, 50))
        sharpes = returns.mean(0) / returns.std(0, ddof=1)
        best = int(np.argmax(sharpes))
        g3, g4 = S.skew_kurtosis(returns[:, best])
        naive += S.probabilistic_sharpe_ratio(sharpes[best], 0.0, 252, g3, g4) >= 0.95
        out = S.deflated_sharpe_ratio(returns[:, best], sharpes * math.sqrt(252), periods_per_year=252)
        deflated += out.dsr >= 0.95
    assert naive >= 60 and deflated <= 8


# ------------------------------------------------------------------------------------------ overfitting

def test_pbo_hand_counted():
    """Columns A, B, C over 4 rows, S = 4 blocks of one row, metric = mean (sums compare alike). Combinations of
    two in-sample rows, the in-sample best (first on ties), its out-of-sample rank among 3 (ties averaged):
        IS {0,1}: A4 B1 C4 -> A;  OOS {2,3}: A0 B3 C4 -> rank 1   -> w = 1/4   overfit
        IS {0,2}: A4 B3 C4 -> A;  OOS {1,3}: A0 B1 C4 -> rank 1   -> w = 1/4   overfit
        IS {0,3}: A4 B0 C4 -> A;  OOS {1,2}: A0 B4 C4 -> rank 1   -> w = 1/4   overfit
        IS {1,2}: A0 B4 C4 -> B;  OOS {0,3}: A4 B0 C4 -> rank 1   -> w = 1/4   overfit
        IS {1,3}: A0 B1 C4 -> C;  OOS {0,2}: A4 B3 C4 -> rank 2.5 -> w = 5/8   not
        IS {2,3}: A0 B3 C4 -> C;  OOS {0,1}: A4 B1 C4 -> rank 2.5 -> w = 5/8   not
    PBO = 4/6."""
    m = np.array([[4.0, 0.0, 2.0], [0.0, 1.0, 2.0], [0.0, 3.0, 2.0], [0.0, 0.0, 2.0]])
    out = S.probability_of_backtest_overfitting(m, num_blocks=4, metric="mean")
    assert out.pbo == pytest.approx(4 / 6)
    assert out.best_in_sample.tolist() == [0, 0, 0, 1, 2, 2]
    np.testing.assert_allclose(out.relative_ranks, [1 / 4] * 4 + [5 / 8] * 2)
    np.testing.assert_allclose(out.logits, np.log(out.relative_ranks / (1 - out.relative_ranks)))
    # The in-sample best exactly at the out-of-sample median (lambda = 0) counts as overfit: S = 2 blocks,
    # IS {0}: A1 B0 -> A, OOS {1}: A1 B1 -> rank 1.5 of 2 -> w = 1/2, lambda = 0 (overfit);
    # IS {1}: A1 B1 -> A (first), OOS {0}: A1 B0 -> rank 2 -> w = 2/3 (not). PBO = 1/2.
    assert S.probability_of_backtest_overfitting([[1.0, 0.0], [1.0, 1.0]], 2, metric="mean").pbo == 0.5
    # C made strictly best everywhere (2.1 per row beats every pair sum in and out of sample): PBO 0.
    m[:, 2] = 2.1
    assert S.probability_of_backtest_overfitting(m, num_blocks=4, metric="mean").pbo == 0.0


def _pbo_brute_force(m, s):
    """CSCV written out directly (independent of the vectorised version): loops, scipy ranks."""
    m = m[len(m) % s:]
    blocks = np.split(m, s)
    logits = []
    for combo in itertools.combinations(range(s), s // 2):
        train = np.concatenate([blocks[i] for i in combo])
        test = np.concatenate([blocks[i] for i in range(s) if i not in combo])
        sr_is = train.mean(0) / train.std(0, ddof=1)
        sr_oos = test.mean(0) / test.std(0, ddof=1)
        w = ss.rankdata(sr_oos)[np.argmax(sr_is)] / (m.shape[1] + 1)
        logits.append(math.log(w / (1 - w)))
    return np.mean(np.array(logits) <= 0), np.array(logits)


def test_pbo_matches_brute_force_and_callable_metric():
    rng = np.random.default_rng(10)
    m = rng.normal(0, 1, size=(83, 7)) + np.linspace(0, 0.3, 7)
    pbo, logits = _pbo_brute_force(m, 8)
    out = S.probability_of_backtest_overfitting(m, num_blocks=8)
    assert out.pbo == pbo and out.rows_used == 80
    np.testing.assert_allclose(out.logits, logits, rtol=1e-10)
    by_callable = S.probability_of_backtest_overfitting(
        m, num_blocks=8, metric=lambda x: x.mean(0) / x.std(0, ddof=1))
    np.testing.assert_allclose(by_callable.logits, logits, rtol=1e-10)
    for bad in (dict(num_blocks=3), dict(num_blocks=100), dict(metric="median")):
        with pytest.raises(ValueError):
            S.probability_of_backtest_overfitting(m, **bad)


def test_pbo_of_noise_is_high_and_of_skill_is_low():
    """Pure-noise configurations: the in-sample best is a coin flip out of sample, PBO near 1/2. One configuration
    with a real edge among the noise: PBO near 0."""
    rng = np.random.default_rng(11)
    # One matrix's PBO spreads widely (sd ~0.2 over matrices: its combinations share rows), so average 40.
    noise = [S.probability_of_backtest_overfitting(rng.normal(0, 0.01, size=(120, 20)), 12).pbo
             for _ in range(40)]
    assert 0.38 <= np.mean(noise) <= 0.62
    m = rng.normal(0, 0.01, size=(320, 40))
    m[:, 17] += 0.004  # daily Sharpe ~0.4
    assert S.probability_of_backtest_overfitting(m, 16).pbo < 0.05
