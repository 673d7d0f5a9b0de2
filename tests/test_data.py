"""MarketData loading: causal features (no look-ahead), splits by session, scaling from train only."""

import jax
import jax.numpy as jnp
import numpy as np
import pyarrow.parquet as pq
import pytest

from jaxtrade import data, env, features
from jaxtrade.errors import InputError
from tests.market_fixtures import random_walk_market, session_timestamps, write_processed


def _rewrite_after(path, t, seed=123, scale=1.5):
    """Change every bar after index t (prices and volume), keeping OHLC consistent."""
    table = pq.read_table(path)
    cols = {c: table.column(c).to_numpy().copy() for c in ("open", "high", "low", "close", "volume")}
    rng = np.random.default_rng(seed)
    n = len(cols["close"])
    factor = np.ones(n)
    factor[t + 1:] = scale * np.exp(rng.normal(0, 0.05, n - t - 1))
    for c in ("open", "high", "low", "close"):
        cols[c] = cols[c] * factor
    cols["volume"][t + 1:] = rng.integers(1, 10_000, n - t - 1)
    for c, v in cols.items():
        table = table.set_column(table.column_names.index(c), c, __import__("pyarrow").array(v))
    pq.write_table(table, path)


def test_features_are_causal_raw(tmp_path):
    """Change every bar after t: the raw (unscaled) feature rows up to t are identical, for any t."""
    a = tmp_path / "a"
    b = tmp_path / "b"
    random_walk_market(a, num_sessions=12, bars_per_session=30, volume=True)
    random_walk_market(b, num_sessions=12, bars_per_session=30, volume=True)
    for t in (0, 17, 29, 30, 200):
        _rewrite_after(b / "NIFTY_5.parquet", t, seed=t)
        fa = _raw_features(a)
        fb = _raw_features(b)
        np.testing.assert_array_equal(fa[: t + 1], fb[: t + 1])
        assert not np.allclose(fa[t + 1:], fb[t + 1:])
        random_walk_market(b, num_sessions=12, bars_per_session=30, volume=True)


def _raw_features(directory):
    cols, meta = data.read_processed(directory / "NIFTY_5.parquet")
    ts = cols["timestamp"]
    minute = (ts - ts.astype("datetime64[D]")).astype("timedelta64[m]").astype(int)
    weekday = (ts.astype("datetime64[D]").astype(int) + 3) % 7
    return features.compute_features(cols["open"], cols["high"], cols["low"], cols["close"], cols["volume"],
                                     minute, weekday, cols["session"], 5)


def test_observations_are_causal_in_validation_and_test(tmp_path):
    """Change every bar after t (t in the validation split): environment observations up to t are identical,
    because the scaler comes from the training split only."""
    a, b = tmp_path / "a", tmp_path / "b"
    random_walk_market(a, num_sessions=20, bars_per_session=25)
    random_walk_market(b, num_sessions=20, bars_per_session=25)
    ma = data.load_market(a, "NIFTY_5")
    lo, hi = ma.split_bars("val")
    t = lo + 30
    _rewrite_after(b / "NIFTY_5.parquet", t)
    mb = data.load_market(b, "NIFTY_5")
    np.testing.assert_array_equal(ma.scaler.mean, mb.scaler.mean)
    np.testing.assert_array_equal(np.asarray(ma.data.features)[: t + 1], np.asarray(mb.data.features)[: t + 1])

    def observations(market):
        params = env.make_params(market, split="val", episode_sessions=None)
        obs0, state = env.reset_to(params, 0)
        actions = jnp.tile(jnp.array([2, 2, 0, 1, 0]), 60)

        def body(s, a):
            o, s, *_ = env.step(jax.random.key(0), s, a, params)
            return s, o

        _, obs = jax.lax.scan(body, state, actions)
        return np.concatenate([np.asarray(obs0)[None], np.asarray(obs)])

    oa, ob = observations(ma), observations(mb)
    k = t - lo  # observation index k is bar lo + k
    np.testing.assert_array_equal(oa[: k + 1], ob[: k + 1])
    assert not np.array_equal(oa[k + 1:], ob[k + 1:])


def test_scaler_from_train_only(tmp_path):
    random_walk_market(tmp_path, num_sessions=20, bars_per_session=25)
    m = data.load_market(tmp_path, "NIFTY_5")
    _, train_end = m.split_bars("train")
    raw = _raw_features(tmp_path)
    np.testing.assert_allclose(m.scaler.mean[: features.NUM_SCALED], raw[:train_end, : features.NUM_SCALED].mean(0))
    # Changing the test split does not move the statistics; changing train does.
    test_lo, _ = m.split_bars("test")
    _rewrite_after(tmp_path / "NIFTY_5.parquet", test_lo, scale=3.0)
    assert np.array_equal(data.load_market(tmp_path, "NIFTY_5").scaler.std, m.scaler.std)
    _rewrite_after(tmp_path / "NIFTY_5.parquet", 10, scale=3.0)
    assert not np.array_equal(data.load_market(tmp_path, "NIFTY_5").scaler.std, m.scaler.std)
    # Training rows are standardised.
    scaled = np.asarray(m.data.features)[:train_end, : features.NUM_SCALED]
    np.testing.assert_allclose(scaled.mean(0), 0.0, atol=0.05)


def test_splits_disjoint_in_time_order(tmp_path):
    random_walk_market(tmp_path, num_sessions=41, bars_per_session=5)
    m = data.load_market(tmp_path, "NIFTY_5")
    assert m.splits["train"] == (0, 29) and m.splits["val"] == (29, 35) and m.splits["test"] == (35, 41)
    bars = [m.split_bars(s) for s in ("train", "val", "test")]
    assert bars[0][0] == 0 and bars[0][1] == bars[1][0] and bars[1][1] == bars[2][0] and bars[2][1] == m.num_bars
    times = [m.timestamps[lo:hi] for lo, hi in bars]
    assert times[0].max() < times[1].min() and times[1].max() < times[2].min()
    sessions = [set(np.asarray(m.data.session)[lo:hi].tolist()) for lo, hi in bars]
    assert not (sessions[0] & sessions[1]) and not (sessions[1] & sessions[2])
    with pytest.raises(InputError):
        data.split_sessions(2)
    with pytest.raises(InputError):
        data.split_sessions(10, (0.5, 0.6, 0.1))


def test_feature_values_hand_checked(tmp_path):
    ts = session_timestamps(3, 4, 5, first_day="2024-01-01")  # Mon, Tue, Wed
    close = np.array([100, 101, 102, 103, 104, 103, 102, 101, 100, 99, 98, 97.0])
    open_ = np.r_[100, close[:-1]]
    write_processed(tmp_path, "X_5", open_, np.maximum(open_, close) + 1, np.minimum(open_, close) - 1, close, ts)
    cols, _ = data.read_processed(tmp_path / "X_5.parquet")
    minute = (cols["timestamp"] - cols["timestamp"].astype("datetime64[D]")).astype("timedelta64[m]").astype(int)
    weekday = (cols["timestamp"].astype("datetime64[D]").astype(int) + 3) % 7
    f = features.compute_features(cols["open"], cols["high"], cols["low"], cols["close"], cols["volume"],
                                  minute, weekday, cols["session"], 5)
    name = {n: i for i, n in enumerate(features.FEATURE_NAMES)}
    assert f[5, name["logret_1"]] == pytest.approx(np.log(103 / 104))
    assert f[5, name["logret_5"]] == pytest.approx(np.log(103 / 100))
    assert f[6, name["logret_session"]] == pytest.approx(np.log(102 / 103))  # session 1 opened at 103
    assert f[4, name["gap"]] == pytest.approx(np.log(103 / 103))
    assert f[0, name["rvol_20"]] == 0.0
    assert f[2, name["rvol_20"]] == pytest.approx(np.sqrt((np.log(1.01) ** 2 + np.log(102 / 101) ** 2) / 3))
    assert f[0, name["range"]] == pytest.approx(np.log(101 / 99))
    # Clock: 09:15 bar of 5 minutes has (375 - 5) / 375 of the session left; Monday encodes as sin(0) = 0.
    assert f[0, name["session_left"]] == pytest.approx(370 / 375)
    assert f[3, name["session_left"]] == pytest.approx(355 / 375)
    assert f[0, name["dow_sin"]] == pytest.approx(0.0) and f[4, name["dow_sin"]] == pytest.approx(np.sin(2 * np.pi / 5))
    assert np.all(f[:, name["volume_z"]] == 0.0)  # no volume in an index


def test_load_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        data.list_symbols(tmp_path / "missing")
    random_walk_market(tmp_path, num_sessions=5, bars_per_session=5)
    with pytest.raises(InputError, match="available: NIFTY_5"):
        data.load_market(tmp_path, "BANKNIFTY")
    (tmp_path / "BAD.parquet").write_bytes(b"not parquet")
    with pytest.raises(InputError, match="unreadable Parquet"):
        data.load_market(tmp_path, "BAD")
