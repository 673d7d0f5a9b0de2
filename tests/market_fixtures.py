"""Small processed-Parquet markets for tests (DESIGN section 2's format), built from explicit prices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def session_timestamps(num_sessions: int, bars_per_session: int, bar_minutes: int,
                       first_day: str = "2024-01-01") -> np.ndarray:
    """IST wall-clock bar START times, weekdays only, from 09:15."""
    days = np.busday_offset(first_day, np.arange(num_sessions), roll="forward")
    start = days.astype("datetime64[m]")[:, None] + np.timedelta64(9 * 60 + 15, "m")
    return (start + np.arange(bars_per_session) * np.timedelta64(bar_minutes, "m")).ravel()


def timestamps_for_sessions(lengths, bar_minutes: int = 5, first_day: str = "2024-01-01") -> np.ndarray:
    """IST wall-clock bar START times for consecutive weekday sessions of the given numbers of bars, from 09:15."""
    days = np.busday_offset(first_day, np.arange(len(lengths)), roll="forward").astype("datetime64[m]")
    return np.concatenate([day + np.timedelta64(9 * 60 + 15, "m") + np.arange(n) * np.timedelta64(bar_minutes, "m")
                           for day, n in zip(days, lengths)])


def write_processed(directory, symbol: str, open_, high, low, close, timestamps_ist, *,
                    volume=None, bar_minutes: int = 5, synthetic: bool = False) -> Path:
    ts = np.asarray(timestamps_ist, dtype="datetime64[m]")
    days = ts.astype("datetime64[D]")
    _, session = np.unique(days, return_inverse=True)
    utc = (ts - np.timedelta64(330, "m")).astype("datetime64[ns]")
    n = len(ts)
    table = pa.table({
        "timestamp": pa.array(utc.astype(np.int64), pa.int64()).cast(pa.timestamp("ns", tz="Asia/Kolkata")),
        "open": np.asarray(open_, np.float64), "high": np.asarray(high, np.float64),
        "low": np.asarray(low, np.float64), "close": np.asarray(close, np.float64),
        "volume": np.zeros(n) if volume is None else np.asarray(volume, np.float64),
        "session": session.astype(np.int32),
    })
    table = table.replace_schema_metadata({
        "symbol": symbol, "bar_minutes": str(bar_minutes), "source": "tests", "rows_in": str(n),
        "rows_out": str(n), "synthetic": "true" if synthetic else "false"})
    path = Path(directory) / f"{symbol}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def random_walk_market(directory, symbol: str = "NIFTY_5", num_sessions: int = 40, bars_per_session: int = 75,
                       bar_minutes: int = 5, seed: int = 0, level: float = 20000.0, vol: float = 1e-3,
                       volume: bool = False) -> Path:
    rng = np.random.default_rng(seed)
    n = num_sessions * bars_per_session
    close = level * np.exp(np.cumsum(rng.normal(0.0, vol, n)))
    open_ = np.r_[level, close[:-1]] * np.exp(rng.normal(0.0, vol / 4, n))
    high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0.0, vol / 2, n)))
    low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0.0, vol / 2, n)))
    vol_col = rng.integers(100, 1000, n).astype(np.float64) if volume else None
    ts = session_timestamps(num_sessions, bars_per_session, bar_minutes)
    return write_processed(directory, symbol, open_, high, low, close, ts, volume=vol_col,
                           bar_minutes=bar_minutes)
