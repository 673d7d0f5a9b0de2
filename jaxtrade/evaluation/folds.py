"""Walk-forward folds over a symbol's sessions (DESIGN sections 2 and 8; `--eval.walk_forward=K`).

A fold is a train window followed, later in time, by a validation window and then a test window: three
contiguous, disjoint session ranges `[lo, hi)`. K rolling-origin folds step forward by the test window, so
their test windows tile the most recent sessions without overlap and the last fold tests on the last sessions:

    rolling (default)            anchored (--eval.anchored)
    fold 0: [train][val][test]            [train][val][test]
    fold 1:     [train][val][test]        [train....][val][test]
    fold 2:         [train][val][test]    [train........][val][test]

Window sizes come either from explicit session counts (`--eval.train_sessions`, `--eval.val_sessions`,
`--eval.test_sessions`, all three) or from the split fractions (`--env.split_fractions`): then every fold spans
the same W sessions, cut by `data.split_sessions(W, fractions)` exactly as today's single split cuts all S
sessions, with W the largest span for which K folds fit (W + (K - 1) x test <= S). K = 1 therefore *is*
today's split. Sessions left over are the earliest ones and go unused (at most K - 1 with fractions); anchored
folds start training where the first fold does, so rolling and anchored share their first fold. Test windows
never overlap; a later fold's train and validation windows may cover an earlier fold's test window (that is
what a rolling origin is).

What a fold needs to train and evaluate is a `Market` whose `splits` are the fold's windows and whose feature
scaler was fitted on the fold's training window only (no look-ahead: bars after a fold's train window cannot
change its scaler, nor its train and validation observations). `fold_market` builds it from the symbol's
market; `env.make_params` / the config's env-params function then take it as they take any market. Folds of
one symbol differ only in their session ranges and scaled features (and the cost rates in force at a window's
start), so their `EnvParams` stack on a leading fold axis (`stack_folds`) and train under `vmap` beside seeds.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import jax.numpy as jnp
import numpy as np

from jaxtrade import env as E
from jaxtrade.data import DEFAULT_SPLIT_FRACTIONS, Market, check_split_fractions, scale_features, split_sessions
from jaxtrade.errors import InputError

WINDOW_FLAGS = ("--eval.train_sessions", "--eval.val_sessions", "--eval.test_sessions")


@dataclasses.dataclass(frozen=True)
class WalkForwardConfig:
    """The `--eval.*` flags. Session counts of None take their sizes from the split fractions."""

    walk_forward: int = 1  # K folds; 1 = today's single train/val/test split
    train_sessions: int | None = None  # sessions per training window (give all three window sizes or none)
    val_sessions: int | None = None  # sessions per validation window (none: sizes from env.split_fractions)
    test_sessions: int | None = None  # sessions per test window; folds step forward by it
    anchored: bool = False  # expanding train window: every fold trains from the first fold's first session

    def __post_init__(self):
        if not isinstance(self.walk_forward, (int, np.integer)) or self.walk_forward < 1:
            raise InputError(f"--eval.walk_forward must be an integer >= 1, got {self.walk_forward}")
        counts = self.window_counts
        if counts is None and any(c is not None for c in (self.train_sessions, self.val_sessions,
                                                          self.test_sessions)):
            missing = [f for f, c in zip(WINDOW_FLAGS, (self.train_sessions, self.val_sessions,
                                                        self.test_sessions)) if c is None]
            raise InputError(f"{', '.join(missing)}: give all three of {', '.join(WINDOW_FLAGS)} or none "
                             f"(none: sizes from --env.split_fractions)")
        if counts is not None:
            for flag, c, least in zip(WINDOW_FLAGS, counts, (1, 0, 0)):
                if not isinstance(c, (int, np.integer)) or c < least:
                    raise InputError(f"{flag} must be an integer >= {least}, got {c}")
            if counts[1] + counts[2] < 1:
                raise InputError(f"{WINDOW_FLAGS[1]}, {WINDOW_FLAGS[2]}: a fold needs at least one validation "
                                 f"or test session, got 0 and 0")
            if self.walk_forward > 1 and counts[2] < 1:
                raise InputError(f"--eval.walk_forward={self.walk_forward} needs {WINDOW_FLAGS[2]} >= 1 (folds "
                                 f"step forward by the test window), got 0")

    @property
    def window_counts(self) -> tuple[int, int, int] | None:
        """(train, val, test) session counts when all three were given, else None."""
        c = (self.train_sessions, self.val_sessions, self.test_sessions)
        return None if any(x is None for x in c) else tuple(int(x) for x in c)


@dataclasses.dataclass(frozen=True)
class Fold:
    """One fold: session ranges [lo, hi) in time order, train before val before test."""

    index: int
    train: tuple[int, int]
    val: tuple[int, int]
    test: tuple[int, int]

    @property
    def splits(self) -> dict[str, tuple[int, int]]:
        """`Market.splits` for this fold; "all" is the fold's whole span (train start to test end)."""
        return {"train": self.train, "val": self.val, "test": self.test, "all": (self.train[0], self.test[1])}

    def describe(self, market: Market | None = None) -> str:
        def window(name, lo, hi):
            if market is None or hi <= lo:
                return f"{name} {lo}..{hi - 1} ({hi - lo})"
            d = market.session_dates
            return f"{name} {d[lo]}..{d[hi - 1]} ({hi - lo})"

        return f"fold {self.index}: " + ", ".join(window(n, *getattr(self, n)) for n in ("train", "val", "test"))


@dataclasses.dataclass(frozen=True)
class FoldPlan:
    """K folds over `num_sessions` sessions; `unused` earliest sessions belong to no fold."""

    folds: tuple[Fold, ...]
    num_sessions: int
    anchored: bool
    step: int  # sessions between consecutive folds' test windows
    unused: int

    def __len__(self) -> int:
        return len(self.folds)

    def __iter__(self):
        return iter(self.folds)

    def __getitem__(self, i: int) -> Fold:
        return self.folds[i]

    def describe(self, market: Market | None = None) -> str:
        kind = "anchored" if self.anchored else "rolling"
        head = (f"{len(self)} {kind} walk-forward fold(s) over {self.num_sessions} sessions"
                + (f" ({self.unused} earliest unused)" if self.unused else ""))
        return "\n".join([head] + ["  " + f.describe(market) for f in self.folds])


def plan_folds(num_sessions: int, config: WalkForwardConfig = WalkForwardConfig(),
               split_fractions: Sequence[float] = DEFAULT_SPLIT_FRACTIONS, where: str = "") -> FoldPlan:
    """The K folds of `config` over `num_sessions` sessions (see the module docstring for the geometry).

    An InputError naming the flags when the sessions cannot hold K folds; `where` (a symbol or file) leads it."""
    k = config.walk_forward
    prefix = f"{where}: " if where else ""
    counts = config.window_counts
    if counts is None:
        fractions = check_split_fractions(split_fractions, "--env.split_fractions")
        if k == 1:  # today's split, through the same function
            s = split_sessions(num_sessions, fractions, where=where)
            return _layout(num_sessions, k, s["train"][1], s["val"][1] - s["val"][0],
                           s["test"][1] - s["test"][0], config.anchored)
        if fractions[2] <= 0:
            raise InputError(f"{prefix}--eval.walk_forward={k} needs a test window to step by, but "
                             f"--env.split_fractions gives test 0 ({_fmt(fractions)})")
        for span in range(num_sessions, 2, -1):  # the largest span whose K folds fit
            n_train, n_val, n_test = _window_sizes(span, fractions)
            if n_train >= 1 and n_test >= 1 and span + (k - 1) * n_test <= num_sessions:
                return _layout(num_sessions, k, n_train, n_val, n_test, config.anchored)
        raise InputError(f"{prefix}{num_sessions} sessions are too few for --eval.walk_forward={k} folds with "
                         f"--env.split_fractions {_fmt(fractions)} (each fold needs at least 3 sessions); use "
                         f"fewer folds or set {', '.join(WINDOW_FLAGS)}")
    n_train, n_val, n_test = counts
    need = n_train + n_val + n_test + (k - 1) * n_test
    if need > num_sessions:
        raise InputError(f"{prefix}{num_sessions} sessions cannot hold --eval.walk_forward={k} folds of "
                         f"{n_train} train + {n_val} val + {n_test} test sessions stepping by {n_test}: they need "
                         f"{need}; lower --eval.walk_forward or {', '.join(WINDOW_FLAGS)}")
    return _layout(num_sessions, k, n_train, n_val, n_test, config.anchored)


def _window_sizes(span: int, fractions) -> tuple[int, int, int]:
    try:
        s = split_sessions(span, fractions)
    except InputError:
        return 0, 0, 0
    return s["train"][1], s["val"][1] - s["val"][0], s["test"][1] - s["test"][0]


def _layout(num_sessions: int, k: int, n_train: int, n_val: int, n_test: int, anchored: bool) -> FoldPlan:
    step = n_test
    unused = num_sessions - (n_train + n_val + n_test + (k - 1) * step)
    folds = []
    for i in range(k):
        train_end = unused + n_train + i * step
        train_lo = unused if anchored else train_end - n_train
        val = (train_end, train_end + n_val)
        folds.append(Fold(i, (train_lo, train_end), val, (val[1], val[1] + n_test)))
    assert folds[-1].test[1] == num_sessions
    return FoldPlan(tuple(folds), num_sessions, anchored, step, unused)


def _fmt(fractions) -> str:
    return ",".join(f"{f:g}" for f in fractions)


# ------------------------------------------------------------------------------------------ per-fold data

def fold_market(market: Market, fold: Fold) -> Market:
    """`market` seen through one fold: its splits are the fold's windows and its features are scaled with
    statistics of the fold's training window only. Prices and every other array are shared, not copied."""
    if market.raw_features is None:
        raise ValueError(f"{market.symbol}: the market carries no raw features (load it with data.load_market)")
    if fold.test[1] > market.num_sessions:
        raise ValueError(f"{market.symbol}: fold {fold.index} ends at session {fold.test[1]} but the market has "
                         f"{market.num_sessions} sessions (plan the folds on this market)")
    scaler, scaled = scale_features(market.raw_features, market.data.session_start, market.data.session_end,
                                    fold.train)
    data = market.data.replace(features=jnp.asarray(scaled))
    return dataclasses.replace(market, data=data, splits=fold.splits, scaler=scaler)


def fold_markets(market: Market, config: WalkForwardConfig = WalkForwardConfig(),
                 split_fractions: Sequence[float] | None = None) -> tuple[FoldPlan, list[Market]]:
    """Plan `config`'s folds on `market` and build each fold's market. `split_fractions` defaults to the
    fractions the market was loaded with (when it records them) or DESIGN's 70/15/15."""
    if split_fractions is None:
        split_fractions = getattr(market, "split_fractions", DEFAULT_SPLIT_FRACTIONS)
    plan = plan_folds(market.num_sessions, config, split_fractions, where=market.symbol)
    return plan, [fold_market(market, f) for f in plan]


def stack_folds(params: Sequence[E.EnvParams]) -> E.EnvParams:
    """`[K]` per-fold `EnvParams` -> one `EnvParams` whose every array leaf has a leading fold axis `[K, ...]`,
    for `jax.vmap(..., in_axes=0)` over folds (nest it with a `vmap` over seeds).

    Folds of one symbol share every shape (bars and sessions are the whole market's; a fold only moves
    `split_lo` / `split_hi`, the scaled `features` and the costs in force), so nothing is padded; folds of
    several symbols are padded as `env.stack_params` pads symbols."""
    if not params:
        raise ValueError("stack_folds: no folds")
    return E.stack_params(list(params))


def fold_env_params(markets: Sequence[Market], build: Callable[[Market], E.EnvParams]) -> E.EnvParams:
    """`build` (a Market -> EnvParams function, e.g. `lambda m: env_params(config, m, "train")`) applied to each
    fold's market, stacked on a leading fold axis."""
    return stack_folds([build(m) for m in markets])


def split_bars(markets: Sequence[Market], split: str) -> np.ndarray:
    """`[K, 2]` int: [first bar, end bar) of `split` in each fold's market. An evaluation scanning a split as one
    episode under `vmap` over folds needs the longest: `(b[:, 1] - b[:, 0]).max()` steps."""
    return np.array([m.split_bars(split) for m in markets], np.int64).reshape(len(markets), 2)
