"""Walk-forward folds: boundaries (disjoint, in time order, train < val < test, rolling and anchored), K=1 is
today's split, per-fold scaling from the fold's training window only (no look-ahead), stacking under vmap."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtrade import data, env, features
from jaxtrade.errors import InputError
from jaxtrade.evaluation import folds as W
from tests.market_fixtures import random_walk_market
from tests.test_data import _rewrite_after

FRACTIONS = [(0.70, 0.15, 0.15), (0.6, 0.2, 0.2), (0.8, 0.2, 0.0), (0.5, 0.0, 0.5), (0.34, 0.33, 0.33)]


def test_one_fold_is_todays_split():
    for n, fr, anchored in itertools.product(range(3, 160), FRACTIONS, (False, True)):
        try:
            want = data.split_sessions(n, fr)
        except InputError:
            with pytest.raises(InputError):
                W.plan_folds(n, W.WalkForwardConfig(anchored=anchored), fr)
            continue
        plan = W.plan_folds(n, W.WalkForwardConfig(anchored=anchored), fr)
        assert len(plan) == 1 and plan.unused == 0
        assert plan[0].splits == {**want, "all": (0, n)}, (n, fr)


def _check_plan(plan: W.FoldPlan, n: int, k: int, anchored: bool):
    assert len(plan) == k
    first_train_lo = plan[0].train[0]
    for f in plan:
        (tl, th), (vl, vh), (sl, sh) = f.train, f.val, f.test
        assert 0 <= tl < th == vl <= vh == sl <= sh <= n  # contiguous, disjoint, train < val < test
        assert (vh - vl) == (plan[0].val[1] - plan[0].val[0]) and (sh - sl) == (plan[0].test[1] - plan[0].test[0])
        if anchored:
            assert tl == first_train_lo
        else:
            assert th - tl == plan[0].train[1] - plan[0].train[0]
    assert plan[-1].test[1] == n and first_train_lo == plan.unused
    for a, b in zip(plan.folds, plan.folds[1:]):  # later folds move forward by the test window
        assert b.test[0] == a.test[1] and b.val[0] == a.val[0] + plan.step and b.train[1] == a.train[1] + plan.step
        if anchored:
            assert b.train[1] - b.train[0] == a.train[1] - a.train[0] + plan.step


def test_fold_boundaries_rolling_and_anchored():
    for n, k, fr, anchored in itertools.product((12, 40, 97, 515), (1, 2, 3, 5), FRACTIONS[:2] + FRACTIONS[3:],
                                                (False, True)):
        try:
            plan = W.plan_folds(n, W.WalkForwardConfig(walk_forward=k, anchored=anchored), fr)
        except InputError:
            assert n < 20 and k > 1, (n, k, fr)
            continue
        _check_plan(plan, n, k, anchored)
        if k > 1:  # each fold cut like today's split of its span, the largest span for which K folds fit
            span = plan[0].test[1] - plan[0].train[0]
            cut = data.split_sessions(span, fr)
            assert (plan[0].train[1] - plan[0].train[0], plan[0].val[1] - plan[0].val[0], plan.step) == (
                cut["train"][1], cut["val"][1] - cut["val"][0], cut["test"][1] - cut["test"][0])
            for wider in range(span + 1, n + 1):
                test = data.split_sessions(wider, fr)["test"]
                assert wider + (k - 1) * (test[1] - test[0]) > n
    for n, k, counts, anchored in itertools.product((30, 61), (1, 2, 4), [(10, 3, 4), (5, 0, 2), (7, 2, 0)],
                                                    (False, True)):
        if k > 1 and counts[2] == 0:
            continue
        plan = W.plan_folds(n, W.WalkForwardConfig(k, *counts, anchored=anchored))
        _check_plan(plan, n, k, anchored)
        assert plan[0].train[1] - plan[0].train[0] == counts[0]


def test_fold_positions_hand_checked():
    plan = W.plan_folds(20, W.WalkForwardConfig(3, 8, 2, 3))  # 8 + 2 + 3 + 2 x 3 = 19: session 0 unused
    assert plan.unused == 1 and plan.step == 3
    assert plan.describe().splitlines() == [
        "3 rolling walk-forward fold(s) over 20 sessions (1 earliest unused)",
        "  fold 0: train 1..8 (8), val 9..10 (2), test 11..13 (3)",
        "  fold 1: train 4..11 (8), val 12..13 (2), test 14..16 (3)",
        "  fold 2: train 7..14 (8), val 15..16 (2), test 17..19 (3)"]
    assert [(f.train, f.val, f.test) for f in plan] == [
        ((1, 9), (9, 11), (11, 14)), ((4, 12), (12, 14), (14, 17)), ((7, 15), (15, 17), (17, 20))]
    anchored = W.plan_folds(20, W.WalkForwardConfig(3, 8, 2, 3, anchored=True))
    assert [f.train for f in anchored] == [(1, 9), (1, 12), (1, 15)]
    assert [f.test for f in anchored] == [f.test for f in plan]
    # Fractions: the largest span W with W + 2 x test(W) <= 100 is 76 (test 11; W = 77 has test 12 -> 101).
    fr = W.plan_folds(100, W.WalkForwardConfig(3), (0.7, 0.15, 0.15))
    assert [(f.train, f.val, f.test) for f in fr] == [
        ((2, 56), (56, 67), (67, 78)), ((13, 67), (67, 78), (78, 89)), ((24, 78), (78, 89), (89, 100))]
    assert data.split_sessions(76)["train"] == (0, 54)


def test_fold_errors_name_the_flags():
    cases = [
        (lambda: W.WalkForwardConfig(0), "--eval.walk_forward"),
        (lambda: W.WalkForwardConfig(2, train_sessions=10), "--eval.val_sessions, --eval.test_sessions"),
        (lambda: W.WalkForwardConfig(2, 10, 2, 0), "--eval.test_sessions"),
        (lambda: W.WalkForwardConfig(1, 0, 2, 2), "--eval.train_sessions"),
        (lambda: W.WalkForwardConfig(1, 5, 0, 0), "--eval.val_sessions"),
        (lambda: W.plan_folds(30, W.WalkForwardConfig(5, 10, 3, 4), where="NIFTY_5"), "they need 33"),
        (lambda: W.plan_folds(10, W.WalkForwardConfig(9)), "--eval.walk_forward=9"),
        (lambda: W.plan_folds(50, W.WalkForwardConfig(2), (0.8, 0.2, 0.0)), "--env.split_fractions"),
        (lambda: W.plan_folds(50, W.WalkForwardConfig(2), (0.8, 0.3, 0.0)), "--env.split_fractions"),
    ]
    for make, needle in cases:
        with pytest.raises(InputError) as e:
            make()
        msg = str(e.value)
        assert needle in msg and "\n" not in msg, msg
    with pytest.raises(InputError, match="NIFTY_5: 30 sessions"):
        W.plan_folds(30, W.WalkForwardConfig(5, 10, 3, 4), where="NIFTY_5")


@pytest.fixture
def market(tmp_path):
    random_walk_market(tmp_path, num_sessions=24, bars_per_session=20, volume=True)
    return tmp_path


def test_fold_markets_scale_from_their_train_window(market):
    m = data.load_market(market, "NIFTY_5")
    plan, fms = W.fold_markets(m, W.WalkForwardConfig(3))
    assert len(fms) == 3
    raw = m.raw_features
    for f, fm in zip(plan, fms):
        lo, hi = fm.split_bars("train")
        assert (lo, hi) == (int(m.data.session_start[f.train[0]]), int(m.data.session_end[f.train[1] - 1]) + 1)
        np.testing.assert_allclose(fm.scaler.mean[:features.NUM_SCALED], raw[lo:hi, :features.NUM_SCALED].mean(0))
        np.testing.assert_allclose(fm.scaler.std[:features.NUM_SCALED], raw[lo:hi, :features.NUM_SCALED].std(0))
        np.testing.assert_array_equal(np.asarray(fm.data.features),
                                      features.apply_scaler(raw, fm.scaler).astype(np.float32))
        assert fm.splits["val"] == f.val and fm.data.close is m.data.close  # prices shared, not copied
    # K=1: the fold market is the loaded market, bit for bit.
    _, (one,) = W.fold_markets(m, W.WalkForwardConfig(1))
    assert {k: one.splits[k] for k in data.SPLITS} == {k: m.splits[k] for k in data.SPLITS}
    np.testing.assert_array_equal(one.scaler.mean, m.scaler.mean)
    np.testing.assert_array_equal(np.asarray(one.data.features), np.asarray(m.data.features))


def _observations(params, steps):
    obs0, state = env.reset_to(params, 0)
    actions = jnp.tile(jnp.array([2, 2, 0, 1, 0]), steps // 5 + 1)[:steps]

    def body(s, a):
        o, s, *_ = env.step(jax.random.key(0), s, a, params)
        return s, o

    _, obs = jax.lax.scan(body, state, actions)
    return np.concatenate([np.asarray(obs0)[None], np.asarray(obs)])


def test_fold_scaler_and_observations_have_no_look_ahead(tmp_path):
    """Change every bar after fold 1's training window: its scaler and training features do not move (fold 2's,
    whose training window holds changed bars, does). Change every bar after a bar t in fold 1's validation
    window: fold 1's validation observations up to t do not move."""
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        random_walk_market(d, num_sessions=24, bars_per_session=20, volume=True)
    cfg = W.WalkForwardConfig(3)
    _, fa = W.fold_markets(data.load_market(a, "NIFTY_5"), cfg)
    _, train_end = fa[1].split_bars("train")
    _rewrite_after(b / "NIFTY_5.parquet", train_end - 1, scale=2.0)
    _, fb = W.fold_markets(data.load_market(b, "NIFTY_5"), cfg)
    np.testing.assert_array_equal(fa[1].scaler.mean, fb[1].scaler.mean)
    np.testing.assert_array_equal(fa[1].scaler.std, fb[1].scaler.std)
    np.testing.assert_array_equal(np.asarray(fa[1].data.features)[:train_end],
                                  np.asarray(fb[1].data.features)[:train_end])
    assert not np.array_equal(fa[2].scaler.std, fb[2].scaler.std)

    random_walk_market(b, num_sessions=24, bars_per_session=20, volume=True)
    lo, hi = fa[1].split_bars("val")
    t = lo + 23
    _rewrite_after(b / "NIFTY_5.parquet", t, scale=1.5)
    _, fb = W.fold_markets(data.load_market(b, "NIFTY_5"), cfg)
    oa, ob = (_observations(env.make_params(f[1], "val", episode_sessions=None), hi - lo - 1) for f in (fa, fb))
    k = t - lo
    np.testing.assert_array_equal(oa[: k + 1], ob[: k + 1])
    assert not np.array_equal(oa[k + 1:], ob[k + 1:])


def test_stacked_folds_under_vmap_equal_separate_runs(market):
    m = data.load_market(market, "NIFTY_5")
    for anchored in (False, True):
        _, fms = W.fold_markets(m, W.WalkForwardConfig(3, anchored=anchored))
        for split, episode in (("train", 1), ("val", None)):
            per_fold = [env.make_params(fm, split, episode_sessions=episode) for fm in fms]
            stacked = W.fold_env_params(fms, lambda fm: env.make_params(fm, split, episode_sessions=episode))
            assert stacked.features.shape == (3,) + m.data.features.shape
            assert stacked.split_lo.tolist() == [fm.splits[split][0] for fm in fms]
            bars = W.split_bars(fms, split)
            steps = 150  # one compiled length for every case: several auto-resets in each
            if episode is None:  # the whole split, then into the next episode
                assert steps > (bars[:, 1] - bars[:, 0]).max()
            together = _rollout_folds(stacked, steps)
            for i, p in enumerate(per_fold):
                alone = _rollout_one(p, steps)
                for x, y in zip(jax.tree.leaves(together), jax.tree.leaves(alone)):
                    np.testing.assert_allclose(np.asarray(x)[i], np.asarray(y), rtol=1e-6, atol=1e-6)


def _rollout(params, steps):
    """Fixed actions with auto-reset: observations, rewards, dones and the bars visited."""
    _, state = env.reset_to(params, 7)
    actions = jnp.tile(jnp.array([2, 0, 1, 2, 2, 0]), steps // 6 + 1)[:steps]
    keys = jax.random.split(jax.random.key(3), steps)

    def body(s, xs):
        key, a = xs
        o, s, r, d, info = env.step(key, s, a, params)
        return s, (o, r, d, info["bar"], info["equity"])

    return jax.lax.scan(body, state, (keys, actions))[1]


_rollout_one = jax.jit(_rollout, static_argnums=1)
_rollout_folds = jax.jit(jax.vmap(_rollout, in_axes=(0, None)), static_argnums=1)
