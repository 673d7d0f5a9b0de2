"""Processed Parquet -> `MarketData` on device, time splits by session, and feature scaling from train only.

`load_market(dir, symbol)` reads `{dir}/{symbol}.parquet` (DESIGN section 2), computes the causal features of
`jaxtrade.features`, fits the scaler on the training split's rows only, and returns a host-side `Market`
holding the device arrays (`Market.data`) beside what stays on the host (timestamps, dates, metadata).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Mapping, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pyarrow.parquet as pq
from flax import struct

from jaxtrade import features as F
from jaxtrade.errors import InputError

SPLITS = ("train", "val", "test")
DEFAULT_SPLIT_FRACTIONS = (0.70, 0.15, 0.15)
IST_OFFSET_NS = np.int64((5 * 60 + 30) * 60 * 1_000_000_000)  # Asia/Kolkata has no DST


@struct.dataclass
class MarketData:
    """Device arrays for one symbol. T bars, S sessions, F features."""

    open: jax.Array  # [T] float
    high: jax.Array  # [T]
    low: jax.Array  # [T]
    close: jax.Array  # [T]
    features: jax.Array  # [T, F] float32, scaled with training statistics
    session: jax.Array  # [T] int32, trading-day index from 0
    session_start: jax.Array  # [S] int32, index of each session's first bar
    session_end: jax.Array  # [S] int32, index of each session's last bar (inclusive)


@dataclasses.dataclass
class Market:
    """One symbol: device data plus host-side facts (timestamps never go to the device)."""

    symbol: str
    bar_minutes: int
    data: MarketData
    timestamps: np.ndarray  # [T] datetime64[ns], IST wall-clock (naive), bar start
    minute_of_day: np.ndarray  # [T] int, bar start minute since midnight IST
    session_dates: np.ndarray  # [S] datetime64[D]
    splits: Mapping[str, tuple[int, int]]  # name -> [first session, end session) in time order
    scaler: F.Scaler
    metadata: Mapping[str, str]
    path: Path
    # [T, F] float64 causal features before scaling (host only): lets walk-forward folds refit the scaler on
    # their own training window (`jaxtrade.evaluation.folds`). None for a Market built by hand.
    raw_features: np.ndarray | None = None

    @property
    def num_bars(self) -> int:
        return int(self.timestamps.shape[0])

    @property
    def num_sessions(self) -> int:
        return int(self.session_dates.shape[0])

    @property
    def synthetic(self) -> bool:
        return str(self.metadata.get("synthetic", "false")).lower() in ("true", "1", "yes")

    def split_bars(self, split: str) -> tuple[int, int]:
        """[first bar, end bar) of a split."""
        lo, hi = self.splits[split]
        start = np.asarray(self.data.session_start)
        end = np.asarray(self.data.session_end)
        return int(start[lo]), int(end[hi - 1]) + 1


def list_symbols(processed_dir) -> list[str]:
    d = Path(processed_dir)
    if not d.is_dir():
        raise InputError(f"{d}: processed data directory not found (run data_tools.process or "
                         f"run_backtest.py --process-data first)")
    return sorted(p.stem for p in d.glob("*.parquet"))


def check_split_fractions(fractions: Sequence[float], flag: str = "split fractions") -> np.ndarray:
    """`[3]` train, val, test fractions: non-negative (NaN refused), train > 0, summing to 1; else an InputError
    naming `flag`."""
    try:
        fr = np.asarray(fractions, np.float64)
    except (TypeError, ValueError):
        fr = np.full(1, np.nan)
    if fr.shape != (3,) or not np.all(fr >= 0) or not fr[0] > 0 or not np.isclose(fr.sum(), 1.0):
        raise InputError(f"{flag}: expected three fractions train,val,test (train > 0) summing to 1, got "
                         f"{','.join(str(f) for f in fractions)}")
    return fr


def split_sessions(num_sessions: int, fractions: Sequence[float] = DEFAULT_SPLIT_FRACTIONS,
                   where: str = "") -> dict[str, tuple[int, int]]:
    """Contiguous train / val / test session ranges in time order."""
    fr = check_split_fractions(fractions)
    if num_sessions < 3:
        raise InputError(f"{where}: {num_sessions} sessions; at least 3 are needed for train/val/test splits")
    n_val = max(1, int(round(num_sessions * fr[1]))) if fr[1] > 0 else 0
    n_test = max(1, int(round(num_sessions * fr[2]))) if fr[2] > 0 else 0
    n_train = num_sessions - n_val - n_test
    if n_train < 1:
        raise InputError(f"{where}: {num_sessions} sessions are too few for the split {list(fractions)}")
    return {"train": (0, n_train), "val": (n_train, n_train + n_val),
            "test": (n_train + n_val, num_sessions), "all": (0, num_sessions)}


def read_processed(path: Path):
    """Read a processed Parquet file: (columns as numpy, metadata dict)."""
    try:
        table = pq.read_table(path)
    except FileNotFoundError:
        raise InputError(f"{path}: processed file not found") from None
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise InputError(f"{path}: unreadable Parquet ({str(e).splitlines()[0]})") from None
    names = set(table.column_names)
    missing = [c for c in ("timestamp", "open", "high", "low", "close", "session") if c not in names]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)} (is this a processed file?)")
    raw_meta = table.schema.metadata or {}
    meta = {}
    for k, v in raw_meta.items():
        key = k.decode(errors="replace")
        if key == "pandas" or key.startswith("ARROW"):
            continue
        val = v.decode(errors="replace")
        try:
            parsed = json.loads(val)
            val = parsed if isinstance(parsed, str) else val
        except ValueError:
            pass
        meta[key] = val
    ts = table.column("timestamp")
    if hasattr(ts.type, "tz") and ts.type.tz is not None:
        utc_ns = ts.cast("int64").to_numpy()
        local = (utc_ns + IST_OFFSET_NS).astype("datetime64[ns]")
    else:  # naive timestamps in a processed file are IST wall-clock already
        local = ts.to_numpy().astype("datetime64[ns]")
    cols = {c: table.column(c).to_numpy().astype(np.float64) for c in ("open", "high", "low", "close")}
    cols["volume"] = (table.column("volume").to_numpy().astype(np.float64)
                      if "volume" in names else np.zeros(len(local)))
    cols["session"] = table.column("session").to_numpy().astype(np.int64)
    cols["timestamp"] = local
    return cols, meta


def load_market(processed_dir, symbol: str, *, split_fractions=DEFAULT_SPLIT_FRACTIONS,
                price_dtype=None) -> Market:
    """Load one processed symbol. Prices go to the device as `price_dtype` (default: float64 when x64 is
    enabled, else float32); features are float32."""
    path = Path(processed_dir) / f"{symbol}.parquet"
    if not path.exists():
        available = list_symbols(processed_dir)
        raise InputError(f"{path}: no processed data for symbol {symbol!r}"
                         f" (available: {', '.join(available) or 'none'})")
    cols, meta = read_processed(path)
    n = len(cols["timestamp"])
    if n == 0:
        raise InputError(f"{path}: no rows")
    ts = cols["timestamp"]
    _check_prices(path, cols)
    if np.any(np.diff(ts.astype(np.int64)) <= 0):
        raise InputError(f"{path}: timestamps are not strictly increasing (re-run data_tools.process)")
    session_raw = cols["session"]
    if np.any(np.diff(session_raw) < 0):
        raise InputError(f"{path}: session ids decrease (re-run data_tools.process)")
    # Renumber sessions 0..S-1 in case the file was sliced.
    _, session = np.unique(session_raw, return_inverse=True)
    session = session.astype(np.int32)
    num_sessions = int(session.max()) + 1
    starts = np.searchsorted(session, np.arange(num_sessions), side="left").astype(np.int32)
    ends = (np.searchsorted(session, np.arange(num_sessions), side="right") - 1).astype(np.int32)
    minutes_of_day = ((ts - ts.astype("datetime64[D]")).astype("timedelta64[m]").astype(np.int64))
    days = ts.astype("datetime64[D]")
    weekday = ((days.astype(np.int64) + 3) % 7)  # 1970-01-01 was a Thursday
    bar_minutes = int(meta.get("bar_minutes") or _infer_bar_minutes(ts, session))
    raw = F.compute_features(cols["open"], cols["high"], cols["low"], cols["close"], cols["volume"],
                             minutes_of_day, weekday, session, bar_minutes)
    splits = split_sessions(num_sessions, split_fractions, where=str(path))
    scaler, scaled = scale_features(raw, starts, ends, splits["train"])

    if price_dtype is None:
        price_dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    data = MarketData(
        open=jnp.asarray(cols["open"], price_dtype), high=jnp.asarray(cols["high"], price_dtype),
        low=jnp.asarray(cols["low"], price_dtype), close=jnp.asarray(cols["close"], price_dtype),
        features=jnp.asarray(scaled), session=jnp.asarray(session),
        session_start=jnp.asarray(starts), session_end=jnp.asarray(ends))
    chex.assert_shape(data.features, (n, len(F.FEATURE_NAMES)))
    return Market(symbol=str(meta.get("symbol", symbol)) if meta.get("symbol") == symbol else symbol,
                  bar_minutes=bar_minutes, data=data, timestamps=ts, minute_of_day=minutes_of_day,
                  session_dates=days[starts], splits=splits, scaler=scaler, metadata=meta, path=path,
                  raw_features=raw)


def scale_features(raw: np.ndarray, session_start, session_end, train: tuple[int, int]
                   ) -> tuple[F.Scaler, np.ndarray]:
    """Fit the scaler on the bars of sessions [train[0], train[1]) only and apply it to every bar.

    raw: [T, F] float64 causal features; session_start / session_end: [S] first / last bar (inclusive).
    Returns (scaler, [T, F] float32). The one place that decides which rows a scaler sees: `load_market` passes
    the train split, walk-forward folds their own training windows."""
    lo, hi = train
    first_bar = int(np.asarray(session_start)[lo])
    end_bar = int(np.asarray(session_end)[hi - 1]) + 1
    scaler = F.fit_scaler(raw[first_bar:end_bar])
    return scaler, F.apply_scaler(raw, scaler).astype(np.float32)


def _check_prices(path: Path, cols) -> None:
    """Every price finite and positive (features take logs of them) and every volume finite and >= 0; else an
    InputError naming the first bad row."""
    checks = {k: np.isfinite(cols[k]) & (cols[k] > 0) for k in ("open", "high", "low", "close")}
    checks["volume"] = np.isfinite(cols["volume"]) & (cols["volume"] >= 0)
    ok = np.all(list(checks.values()), axis=0)
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        bad = ", ".join(f"{k}={float(cols[k][i])!r}" for k, good in checks.items() if not good[i])
        raise InputError(f"{path}: row {i} ({str(cols['timestamp'][i])[:16]}): non-positive or non-finite value "
                         f"({bad}); re-run data_tools.process on the raw file")


def _infer_bar_minutes(ts: np.ndarray, session: np.ndarray) -> int:
    gaps = np.diff(ts.astype(np.int64))[session[1:] == session[:-1]] // 60_000_000_000
    if len(gaps) == 0:
        return 1
    values, counts = np.unique(gaps, return_counts=True)
    return int(values[np.argmax(counts)])
