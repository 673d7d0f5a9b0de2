"""Synthetic markets of a chosen length for the benchmark suite, written in the processed layout (DESIGN
section 2) so that the suite loads them through `jaxtrade.data.load_market`, the path users' data takes.

    path = write_random_walk(directory, num_bars=1_000_000)      # {directory}/SYNTH_1.parquet
    market = load_market(directory, "SYNTH_1")

A geometric random walk of 1-minute bars, 375 per session (09:15-15:30 IST) on consecutive business days,
with a slow volatility cycle so that features vary; labelled synthetic in the file's metadata. The columns are
built one at a time and freed before the write, so writing a 10-million-bar file holds about one copy of the
table (~0.6 GB); the memory that matters is what loading it costs (features in float64), which the suite
measures.
"""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np

BARS_PER_SESSION = 375  # the NSE session at 1-minute bars
SYMBOL = "SYNTH_1"
FIRST_DAY = "1980-01-01"  # 10 million bars span ~106 years of business days


def random_walk_columns(num_bars: int, *, seed: int = 0, bars_per_session: int = BARS_PER_SESSION) -> dict:
    """The processed columns of a `num_bars`-bar random walk (the last session may be partial).

    Returns {"utc_ns": [T] int64, "open", "high", "low", "close": [T] float64, "session": [T] int32}."""
    if num_bars < 3 * bars_per_session:
        raise ValueError(f"random_walk_columns: {num_bars} bars are fewer than 3 sessions of {bars_per_session} "
                         f"(the train/val/test split needs 3)")
    rng = np.random.default_rng(seed)
    n = int(num_bars)
    sessions = -(-n // bars_per_session)
    # Per-minute volatility ~6e-4 with a slow cycle (0.5x .. 1.5x) over ~60 sessions.
    cycle = 1.0 + 0.5 * np.sin(np.arange(sessions) * (2 * np.pi / 60.0))
    vol = np.repeat(6e-4 * cycle, bars_per_session)[:n]
    log_ret = rng.standard_normal(n) * vol
    close = 20_000.0 * np.exp(np.cumsum(log_ret))
    del log_ret
    open_ = np.empty(n)
    open_[0] = 20_000.0
    open_[1:] = close[:-1]
    open_ *= np.exp(rng.standard_normal(n) * (vol / 4))
    high = np.maximum(open_, close) * (1 + np.abs(rng.standard_normal(n)) * (vol / 2))
    low = np.minimum(open_, close) * (1 - np.abs(rng.standard_normal(n)) * (vol / 2))
    del vol
    days = np.busday_offset(FIRST_DAY, np.arange(sessions), roll="forward").astype("datetime64[m]")
    open_minute = np.timedelta64(9 * 60 + 15 - 330, "m")  # 09:15 IST in UTC
    session = np.repeat(np.arange(sessions, dtype=np.int32), bars_per_session)[:n]
    minute = np.tile(np.arange(bars_per_session, dtype=np.int64), sessions)[:n]
    utc_ns = ((days[session] + open_minute).astype("datetime64[ns]").astype(np.int64)
              + minute * 60_000_000_000)
    return {"utc_ns": utc_ns, "open": open_, "high": high, "low": low, "close": close, "session": session}


def write_random_walk(directory, num_bars: int, *, seed: int = 0, symbol: str = SYMBOL) -> Path:
    """Write `{directory}/{symbol}.parquet` (processed layout, 1-minute bars, `synthetic=true`)."""
    import pyarrow as pa
    from jaxtrade import atomic

    cols = random_walk_columns(num_bars, seed=seed)
    n = len(cols["close"])
    arrays = {"timestamp": pa.array(cols.pop("utc_ns"), pa.int64()).cast(pa.timestamp("ns", tz="Asia/Kolkata"))}
    for name in ("open", "high", "low", "close"):
        arrays[name] = pa.array(cols.pop(name))
    arrays["volume"] = pa.array(np.zeros(n))
    arrays["session"] = pa.array(cols.pop("session"))
    table = pa.table(arrays).replace_schema_metadata({
        "symbol": symbol, "bar_minutes": "1", "source": "experiments.bench_market (synthetic random walk)",
        "rows_in": str(n), "rows_out": str(n), "synthetic": "true", "seed": str(seed)})
    del arrays
    path = Path(directory) / f"{symbol}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_parquet(table, path)
    del table
    gc.collect()
    return path
