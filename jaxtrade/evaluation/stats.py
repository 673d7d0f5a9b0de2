"""Statistics that survive many trials: aggregates across seeds and folds with stratified bootstrap intervals,
probability of improvement, the deflated Sharpe ratio and the probability of backtest overfitting.

Host-side numpy, float64. Score matrices follow rliable's layout: `[R, K]` = runs (seeds) x tasks (folds, or
(symbol, fold) pairs); every run of a task is an independent draw of the same experiment.

References
- Agarwal, Schwarzer, Castro, Courville, Bellemare (2021), "Deep Reinforcement Learning at the Edge of the
  Statistical Precipice", NeurIPS (the `rliable` library): interquartile mean, stratified bootstrap
  confidence intervals, probability of improvement.
- Bailey, Lopez de Prado (2012), "The Sharpe Ratio Efficient Frontier", Journal of Risk 15(2): the
  probabilistic Sharpe ratio.
- Bailey, Lopez de Prado (2014), "The Deflated Sharpe Ratio: Correcting for Selection Bias, Backtest
  Overfitting and Non-Normality", Journal of Portfolio Management 40(5), 94-107.
- Bailey, Borwein, Lopez de Prado, Zhu (2017), "The Probability of Backtest Overfitting", Journal of
  Computational Finance 20(4), 39-69 (SSRN 2326253, 2015): combinatorially symmetric cross-validation.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Callable

import numpy as np

from jaxtrade import metrics

EULER_GAMMA = 0.5772156649015329


# ------------------------------------------------------------------------------------------ aggregates

def _scores(x, name: str = "scores") -> np.ndarray:
    a = np.asarray(x, np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or a.size == 0:
        raise ValueError(f"{name}: expected a non-empty [runs, tasks] matrix, got shape {np.shape(x)}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: {int((~np.isfinite(a)).sum())} non-finite score(s); replace nulls "
                         f"(e.g. the Sharpe of a run that never traded) before aggregating")
    return a


def mean(scores) -> float:
    """Mean over every run and task. scores: `[R, K]` (or `[R]`, one task)."""
    return float(_scores(scores).mean())


def iqm(scores) -> float:
    """Interquartile mean over every run and task (rliable's `aggregate_iqm`, Agarwal et al. 2021): the mean of
    the scores left after dropping floor(n/4) lowest and floor(n/4) highest of the n = R x K scores (scipy's
    `trim_mean(x, 0.25)` on the flattened matrix). scores: `[R, K]` or `[R]`."""
    return float(_iqm_rows(_scores(scores).reshape(1, -1))[0])


def _iqm_rows(flat: np.ndarray) -> np.ndarray:
    """IQM of each row of `[B, n]`."""
    n = flat.shape[1]
    cut = int(0.25 * n)
    return np.sort(flat, axis=1)[:, cut:n - cut].mean(axis=1)


def _batched(statistic: Callable) -> Callable:
    """Statistics given by name run vectorised over a leading bootstrap axis; other callables one at a time."""
    if statistic is mean or statistic == "mean":
        return lambda *xs: xs[0].reshape(xs[0].shape[0], -1).mean(axis=1)
    if statistic is iqm or statistic == "iqm":
        return lambda *xs: _iqm_rows(xs[0].reshape(xs[0].shape[0], -1))
    if isinstance(statistic, str):
        raise ValueError(f"unknown statistic {statistic!r} (mean, iqm or a callable)")
    return lambda *xs: np.array([statistic(*(x[b] for x in xs)) for b in range(xs[0].shape[0])], np.float64)


def stratified_bootstrap(statistic, *scores, reps: int = 50_000, seed: int = 0, paired: bool = False,
                         chunk: int = 5_000) -> np.ndarray:
    """The bootstrap distribution `[reps]` of `statistic(*scores)` under rliable's stratified resampling: each
    replicate draws R runs with replacement *within each task* (column), independently per task. Several arrays
    (e.g. two configurations for a difference or a probability of improvement) are resampled independently of
    each other, as rliable's `StratifiedIndependentBootstrap` does; `paired=True` applies one draw to all of
    them instead (same shape required), for runs that are matched across arrays.

    statistic: "mean", "iqm" (vectorised) or a callable of `len(scores)` `[R_i, K]` arrays returning a float
        (called once per replicate: a few thousand reps are plenty).
    scores: one or more `[R_i, K]` matrices."""
    mats = [_scores(s, f"scores[{i}]") for i, s in enumerate(scores)]
    if not mats:
        raise ValueError("stratified_bootstrap: no scores")
    if paired and any(m.shape != mats[0].shape for m in mats):
        raise ValueError(f"stratified_bootstrap: paired arrays must share a shape, got {[m.shape for m in mats]}")
    if reps < 1:
        raise ValueError(f"reps must be >= 1, got {reps}")
    fn = _batched(statistic)
    rng = np.random.default_rng(seed)
    out = []
    for start in range(0, reps, chunk):
        b = min(chunk, reps - start)
        if paired:  # run drawn for each (replicate, slot, task), shared by every array
            idx = rng.integers(0, mats[0].shape[0], size=(b,) + mats[0].shape)
            draws = [m[idx, np.arange(m.shape[1])] for m in mats]
        else:
            draws = [m[rng.integers(0, m.shape[0], size=(b,) + m.shape), np.arange(m.shape[1])] for m in mats]
        out.append(fn(*draws))
    return np.concatenate(out)


def percentile_interval(distribution, confidence: float = 0.95) -> tuple[float, float]:
    """The percentile interval of a bootstrap distribution (rliable's default method): its (1 - c)/2 and
    (1 + c)/2 quantiles, linearly interpolated (`np.percentile`)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    tail = 100 * (1 - confidence) / 2
    lo, hi = np.percentile(np.asarray(distribution, np.float64), [tail, 100 - tail])
    return float(lo), float(hi)


def bootstrap_interval(statistic, *scores, confidence: float = 0.95, reps: int = 50_000, seed: int = 0,
                       paired: bool = False) -> tuple[float, float]:
    """95% (by default) stratified bootstrap percentile interval of `statistic(*scores)` (rliable's
    `get_interval_estimates`). Arguments as `stratified_bootstrap`."""
    return percentile_interval(stratified_bootstrap(statistic, *scores, reps=reps, seed=seed, paired=paired),
                               confidence)


@dataclasses.dataclass(frozen=True)
class Aggregate:
    """Point estimates and stratified bootstrap intervals of one metric across runs and tasks."""

    mean: float
    mean_ci: tuple[float, float]
    iqm: float
    iqm_ci: tuple[float, float]
    runs: int
    tasks: int

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def aggregate(scores, *, confidence: float = 0.95, reps: int = 50_000, seed: int = 0) -> Aggregate:
    """Mean and IQM of `[R, K]` scores, each with its stratified bootstrap interval (same resamples)."""
    s = _scores(scores)
    dist_mean = stratified_bootstrap("mean", s, reps=reps, seed=seed)
    dist_iqm = stratified_bootstrap("iqm", s, reps=reps, seed=seed)
    return Aggregate(mean=mean(s), mean_ci=percentile_interval(dist_mean, confidence), iqm=iqm(s),
                     iqm_ci=percentile_interval(dist_iqm, confidence), runs=s.shape[0], tasks=s.shape[1])


def probability_of_improvement(scores_x, scores_y) -> float:
    """P(X > Y): rliable's probability of improvement of configuration X over Y (Agarwal et al. 2021).

    Per task k, the Mann-Whitney U statistic of X's runs against Y's, normalised by the number of pairs:
    P_k = (#{(i, j): x_ik > y_jk} + 0.5 #{(i, j): x_ik = y_jk}) / (R_x R_y); the result is the mean of P_k over
    tasks. scores_x: `[R_x, K]`, scores_y: `[R_y, K]` (run counts may differ, tasks must match)."""
    x, y = _scores(scores_x, "scores_x"), _scores(scores_y, "scores_y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"probability_of_improvement: {x.shape[1]} vs {y.shape[1]} tasks")
    diff = x[:, None, :] - y[None, :, :]  # [R_x, R_y, K]
    per_task = ((diff > 0).sum(axis=(0, 1)) + 0.5 * (diff == 0).sum(axis=(0, 1))) / (x.shape[0] * y.shape[0])
    return float(per_task.mean())


# ------------------------------------------------------------------------------------------ Sharpe ratios

def norm_cdf(z: float) -> float:
    """Standard normal CDF (float64, via erfc)."""
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


def norm_ppf(p: float) -> float:
    """Inverse standard normal CDF: Acklam's rational approximation refined by two Halley steps (error near
    machine precision on (0, 1)); -inf / inf at 0 / 1."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"norm_ppf: probability {p} outside [0, 1]")
    if p == 0.0:
        return -math.inf
    if p == 1.0:
        return math.inf
    a = (-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02, 1.383577518672690e+02,
         -3.066479806614716e+01, 2.506628277459239e+00)
    b = (-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02, 6.680131188771972e+01,
         -1.328068155288572e+01)
    c = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00, -2.549732539343734e+00,
         4.374664141464968e+00, 2.938163982698783e+00)
    d = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00, 3.754408661907416e+00)
    if p < 0.02425 or p > 1 - 0.02425:
        q = math.sqrt(-2 * math.log(min(p, 1 - p)))
        x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / \
            ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1)
        x = x if p < 0.5 else -x
    else:
        q = p - 0.5
        r = q * q
        x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q / \
            (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)
    for _ in range(2):  # Halley on f = Phi(x) - p (f' = phi(x), f'' = -x phi(x)); the upper tail as (1-p) - Q(x)
        if p < 0.5:
            err = 0.5 * math.erfc(-x / math.sqrt(2.0)) - p
        else:
            err = (1.0 - p) - 0.5 * math.erfc(x / math.sqrt(2.0))
        u = err * math.sqrt(2 * math.pi) * math.exp(x * x / 2)
        x = x - u / (1 + x * u / 2)
    return x


def sharpe_per_period(returns) -> float:
    """mean / std (ddof=1) of `[T]` returns, not annualised: `metrics.sharpe` (DESIGN section 7, the one
    definition) without its sqrt(252); NaN when undefined (T < 2 or zero deviation)."""
    return float(metrics.sharpe(np.asarray(returns, np.float64).reshape(-1))) / math.sqrt(metrics.TRADING_DAYS)


def skew_kurtosis(returns) -> tuple[float, float]:
    """Sample skewness and (non-excess, normal = 3) kurtosis of `[T]` returns, from the central moments
    m_k = mean((r - mean)^k): m3 / m2^1.5 and m4 / m2^2 (scipy's biased `skew`, `kurtosis(fisher=False)`)."""
    r = np.asarray(returns, np.float64)
    dev = r - r.mean()
    m2 = float(np.mean(dev ** 2))
    if m2 <= 0:
        return math.nan, math.nan
    return float(np.mean(dev ** 3) / m2 ** 1.5), float(np.mean(dev ** 4) / m2 ** 2)


def expected_max_sharpe(num_trials: int, sharpe_variance: float) -> float:
    """Expected maximum of `num_trials` independent Sharpe estimates whose true value is 0 and whose variance
    across trials is `sharpe_variance` (Bailey and Lopez de Prado 2014, eq. in Proposition 1 / the DSR's SR_0):

        SR_0 = sqrt(V) ((1 - gamma) Z^-1(1 - 1/N) + gamma Z^-1(1 - 1/(N e))),   gamma = Euler-Mascheroni.

    Units are those of the Sharpe ratios whose variance is given. One trial (or zero variance) gives 0: the
    expectation of a single zero-mean estimate."""
    if num_trials < 1:
        raise ValueError(f"num_trials must be >= 1, got {num_trials}")
    if not sharpe_variance >= 0:
        raise ValueError(f"sharpe_variance must be >= 0, got {sharpe_variance}")
    if num_trials == 1 or sharpe_variance == 0:
        return 0.0
    n = float(num_trials)
    z = (1 - EULER_GAMMA) * norm_ppf(1 - 1 / n) + EULER_GAMMA * norm_ppf(1 - 1 / (n * math.e))
    return math.sqrt(sharpe_variance) * z


def probabilistic_sharpe_ratio(sharpe: float, benchmark: float, num_obs: int, skew: float = 0.0,
                               kurtosis: float = 3.0) -> float:
    """PSR(SR*) = Z[(SR - SR*) sqrt(T - 1) / sqrt(1 - g3 SR + (g4 - 1)/4 SR^2)] (Bailey and Lopez de Prado
    2012): the probability that the true Sharpe exceeds `benchmark`, given the estimate `sharpe` from `num_obs`
    returns with skewness g3 and (non-excess) kurtosis g4. `sharpe`, `benchmark` per period (not annualised)."""
    if num_obs < 2:
        raise ValueError(f"num_obs must be >= 2, got {num_obs}")
    var = 1 - skew * sharpe + (kurtosis - 1) / 4 * sharpe ** 2
    if not var > 0:
        raise ValueError(f"probabilistic_sharpe_ratio: non-positive variance term {var} (skew {skew}, "
                         f"kurtosis {kurtosis}, sharpe {sharpe})")
    return norm_cdf((sharpe - benchmark) * math.sqrt(num_obs - 1) / math.sqrt(var))


@dataclasses.dataclass(frozen=True)
class DeflatedSharpe:
    """The deflated Sharpe ratio of one selected strategy (per-period Sharpe ratios unless named `_annual`)."""

    dsr: float  # PSR against the expected maximum: P(true Sharpe > SR_0); >= 0.95 is significant at 5%
    sharpe: float  # the selected strategy's Sharpe, per period
    expected_max_sharpe: float  # SR_0, per period
    num_trials: int
    trial_sharpe_variance: float  # per period^2
    num_obs: int
    skew: float
    kurtosis: float
    periods_per_year: float

    @property
    def sharpe_annual(self) -> float:
        return self.sharpe * math.sqrt(self.periods_per_year)

    @property
    def expected_max_sharpe_annual(self) -> float:
        return self.expected_max_sharpe * math.sqrt(self.periods_per_year)

    def to_dict(self) -> dict:
        return dict(dataclasses.asdict(self), sharpe_annual=self.sharpe_annual,
                    expected_max_sharpe_annual=self.expected_max_sharpe_annual)


def deflated_sharpe_ratio(returns, trial_sharpes, *, num_trials: int | None = None,
                          periods_per_year: float = 1.0) -> DeflatedSharpe:
    """Deflated Sharpe ratio (Bailey and Lopez de Prado 2014) of the strategy selected among several trials:
    DSR = PSR(SR_0), SR_0 = `expected_max_sharpe(N, V)` with V the variance (ddof=1) of the trials' Sharpe
    ratios, and the selected strategy's Sharpe, skewness and kurtosis taken from its own returns.

    returns: `[T]` per-period returns of the selected strategy (jaxtrade: the daily returns of section 7).
    trial_sharpes: `[N]` Sharpe ratios of every trial tried, the selected one included, annualised with
        sqrt(`periods_per_year`) (252 for `jaxtrade.metrics.sharpe`; 1 when already per period).
        Null (NaN) Sharpe ratios count in N but not in the variance.
    num_trials: N (default `len(trial_sharpes)`; pass fewer for correlated trials' effective number)."""
    r = np.asarray(returns, np.float64).reshape(-1)
    sr = sharpe_per_period(r)
    if math.isnan(sr):
        raise ValueError(f"deflated_sharpe_ratio: the selected strategy's Sharpe is undefined ({r.size} returns, "
                         f"zero deviation or fewer than 2)")
    trials = np.asarray(trial_sharpes, np.float64).reshape(-1) / math.sqrt(periods_per_year)
    n = int(num_trials if num_trials is not None else max(trials.size, 1))
    trials = trials[np.isfinite(trials)]  # a null Sharpe (never traded) still counts as a trial in N
    variance = float(trials.var(ddof=1)) if trials.size > 1 else 0.0
    skew, kurt = skew_kurtosis(r)
    sr0 = expected_max_sharpe(n, variance)
    return DeflatedSharpe(dsr=probabilistic_sharpe_ratio(sr, sr0, r.size, skew, kurt), sharpe=sr,
                          expected_max_sharpe=sr0, num_trials=n, trial_sharpe_variance=variance,
                          num_obs=int(r.size), skew=skew, kurtosis=kurt, periods_per_year=float(periods_per_year))


# ------------------------------------------------------------------------------------------ overfitting

@dataclasses.dataclass(frozen=True)
class BacktestOverfitting:
    """CSCV's result. Per combination c (`[C]` arrays): the in-sample best configuration, its out-of-sample
    relative rank w_c in (0, 1) and logit lambda_c = ln(w_c / (1 - w_c))."""

    pbo: float  # fraction of combinations with lambda_c <= 0
    logits: np.ndarray  # [C]
    relative_ranks: np.ndarray  # [C]
    best_in_sample: np.ndarray  # [C] int: column chosen in sample
    is_performance: np.ndarray  # [C] in-sample metric of the chosen column
    oos_performance: np.ndarray  # [C] its out-of-sample metric
    num_blocks: int
    rows_used: int  # T rounded down to a multiple of num_blocks (the earliest rows are dropped)

    @property
    def prob_oos_loss(self) -> float:
        """Fraction of combinations where the in-sample best has an out-of-sample metric below 0."""
        return float(np.mean(self.oos_performance < 0))


def _block_metric(sums, sq_sums, count, metric: str) -> np.ndarray:
    mu = sums / count
    if metric == "mean":
        return mu
    var = (sq_sums - count * mu ** 2) / (count - 1)
    sd = np.sqrt(np.maximum(var, 0.0))
    return np.where(sd > 0, mu / np.where(sd > 0, sd, 1.0), 0.0)


def probability_of_backtest_overfitting(performance, num_blocks: int = 16, metric="sharpe"
                                        ) -> BacktestOverfitting:
    """Probability of backtest overfitting by combinatorially symmetric cross-validation (Bailey, Borwein,
    Lopez de Prado and Zhu 2017):

    1. split the rows of the `[T, N]` performance matrix (T periods x N configurations, e.g. daily returns)
       into S = `num_blocks` contiguous blocks of equal size (the earliest T mod S rows are dropped);
    2. for each of the C(S, S/2) combinations c of S/2 blocks: in sample J = those blocks, out of sample the
       rest; n* = the configuration with the best metric on J (first on ties);
    3. w_c = rank of n*'s out-of-sample metric among all N (1 = worst, ties averaged) / (N + 1);
       lambda_c = ln(w_c / (1 - w_c));
    4. PBO = the fraction of combinations with lambda_c <= 0 (n* at or below the out-of-sample median).

    metric: "sharpe" (mean / std with ddof=1 of the rows; 0 where the deviation is 0), "mean", or a callable
    mapping `[rows, N]` to `[N]`. S must be even and T >= S (>= 2S rows for a Sharpe of every half)."""
    m = np.asarray(performance, np.float64)
    if m.ndim != 2 or m.shape[1] < 2:
        raise ValueError(f"performance: expected [periods, configurations] with >= 2 configurations, got shape "
                         f"{m.shape}")
    if not np.all(np.isfinite(m)):
        raise ValueError("performance: non-finite values")
    s = int(num_blocks)
    if s < 2 or s % 2:
        raise ValueError(f"num_blocks must be an even number >= 2, got {num_blocks}")
    t, n = m.shape
    if t < s:
        raise ValueError(f"performance: {t} rows are fewer than num_blocks={s}")
    m = m[t % s:]
    rows = m.shape[0] // s
    if metric == "sharpe" and rows * s // 2 < 2:
        raise ValueError(f"performance: {m.shape[0]} rows in {s} blocks leave {rows * s // 2} row(s) per half; a "
                         f"Sharpe needs >= 2")
    blocks = m.reshape(s, rows, n)
    combos = np.array(list(itertools.combinations(range(s), s // 2)), np.int64)  # [C, S/2]
    member = np.zeros((len(combos), s), bool)
    member[np.arange(len(combos))[:, None], combos] = True
    if callable(metric):
        is_perf = np.stack([np.asarray(metric(blocks[c].reshape(-1, n)), np.float64) for c in member])
        oos_perf = np.stack([np.asarray(metric(blocks[~c].reshape(-1, n)), np.float64) for c in member])
    elif metric in ("sharpe", "mean"):
        sums, sq = blocks.sum(axis=1), (blocks ** 2).sum(axis=1)  # [S, N]
        w = member.astype(np.float64)
        count = rows * s // 2
        is_perf = _block_metric(w @ sums, w @ sq, count, metric)
        oos_perf = _block_metric((1 - w) @ sums, (1 - w) @ sq, count, metric)
    else:
        raise ValueError(f"metric: {metric!r} is not 'sharpe', 'mean' or a callable")
    best = np.argmax(is_perf, axis=1)
    chosen = oos_perf[np.arange(len(best)), best]
    below = (oos_perf < chosen[:, None]).sum(axis=1)
    ties = (oos_perf == chosen[:, None]).sum(axis=1)  # includes n* itself
    rank = below + (ties + 1) / 2.0  # average rank, 1-based
    w_c = rank / (n + 1)
    logits = np.log(w_c / (1 - w_c))
    return BacktestOverfitting(pbo=float(np.mean(logits <= 0)), logits=logits, relative_ranks=w_c,
                               best_in_sample=best, is_performance=is_perf[np.arange(len(best)), best],
                               oos_performance=chosen, num_blocks=s, rows_used=int(m.shape[0]))
