"""Deterministic synthetic NSE index bars, clearly labelled synthetic (DESIGN section 2, "Embedded default").

    python -m data_tools.synth [--raw-data-dir data/raw] [--seed 0] [--years 3]

Writes `Nifty_2.parquet` (NIFTY-like, 2-minute bars) and `Bank_Nifty_5.parquet` (BANKNIFTY-like, 5-minute
bars) in the seed system's raw layout (`datetime` = int64 Unix epoch seconds of the bar START, open, high,
low, close, volume = 0), with Parquet metadata `synthetic=true`, `generator=data_tools.synth`, `seed`.

The model, per trading day (weekdays less a handful of holidays), simulated at 1 minute and aggregated:
- a market-wide Markov chain of volatility regimes (calm / normal / turbulent, persistent for weeks) and a
  second chain of drift regimes (bear / flat / bull), with a weak pull of the level towards a centre so the
  index stays in a plausible band (NIFTY ~18000-25000, BANKNIFTY ~40000-55000);
- intraday volatility seasonality (U-shape: busy open, quiet lunch, busier close);
- an overnight gap at each session's first bar, and rare jumps (news shocks) inside the session;
- BANKNIFTY shares the market shocks (correlation ~0.85) with a higher volatility;
- 1-minute high/low drawn around open/close, prices on the 0.05 tick, so every bar has consistent OHLC.
Same seed -> byte-identical files.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

SESSION_MINUTES = 375                      # 09:15 .. 15:30
IST_OFFSET_S = 19_800
OPEN_MIN = 9 * 60 + 15
START_DATE = dt.date(2022, 1, 3)
TICK = 0.05
FIXED_HOLIDAYS = ((1, 26), (8, 15), (10, 2), (12, 25), (5, 1))   # Republic Day, Independence Day, ...

# name, bar minutes, centre level, volatility multiplier, weight on the market shock
INSTRUMENTS = (
    ("Nifty_2", 2, 21_500.0, 1.0, 1.0),
    ("Bank_Nifty_5", 5, 47_000.0, 1.3, 0.85),
)
VOL_REGIMES = np.array([0.0055, 0.0095, 0.019])         # daily volatility: calm, normal, turbulent
VOL_TRANSITIONS = np.array([[0.975, 0.025, 0.000],
                            [0.015, 0.970, 0.015],
                            [0.000, 0.060, 0.940]])
DRIFT_REGIMES = np.array([-0.0012, 0.0, 0.0010])          # daily drift: bear, flat, bull
DRIFT_TRANSITIONS = np.array([[0.96, 0.04, 0.00],
                              [0.02, 0.96, 0.02],
                              [0.00, 0.04, 0.96]])


def trading_days(years: float, rng: np.random.Generator) -> list[dt.date]:
    end = START_DATE + dt.timedelta(days=int(round(365.25 * years)))
    days = []
    d = START_DATE
    while d < end:
        if d.weekday() < 5 and (d.month, d.day) not in FIXED_HOLIDAYS:
            days.append(d)
        d += dt.timedelta(days=1)
    # a few more exchange holidays a year (festivals move with the calendar): drawn from the seed
    n_extra = int(round(6 * years))
    drop = set(rng.choice(len(days), size=min(n_extra, len(days) // 10), replace=False).tolist())
    return [d for i, d in enumerate(days) if i not in drop]


def _markov(rng: np.random.Generator, p: np.ndarray, n: int, start: int) -> np.ndarray:
    u = rng.random(n)
    cum = np.cumsum(p, axis=1)
    out = np.empty(n, np.int64)
    s = start
    for i in range(n):  # n ~ 750 days: cheap
        s = int(np.searchsorted(cum[s], u[i], side="right"))
        s = min(s, len(p) - 1)
        out[i] = s
    return out


def _u_shape() -> np.ndarray:
    t = np.arange(SESSION_MINUTES, dtype=np.float64)
    m = 1.0 + 1.6 * np.exp(-t / 18.0) + 0.7 * np.exp(-(SESSION_MINUTES - 1 - t) / 25.0) \
        - 0.25 * np.exp(-((t - 190.0) / 70.0) ** 2)
    return m / np.sqrt(np.mean(m ** 2))       # mean variance 1: the daily vol is preserved


def simulate(seed: int = 0, years: float = 3.0) -> dict:
    """Simulate 1-minute bars for every instrument. Returns {name: dict of arrays} and the day list."""
    rng = np.random.default_rng([seed, 20250110])
    days = trading_days(years, rng)
    n_days = len(days)
    vol_state = _markov(rng, VOL_TRANSITIONS, n_days, 1)
    drift_state = _markov(rng, DRIFT_TRANSITIONS, n_days, 1)
    u = _u_shape()
    market = rng.standard_normal((n_days, SESSION_MINUTES))
    market_gap = rng.standard_normal(n_days)
    # day open (09:15) as epoch seconds
    day_epoch = np.array([(d - dt.date(1970, 1, 1)).days * 86_400 + OPEN_MIN * 60 - IST_OFFSET_S for d in days],
                         dtype=np.int64)
    out = {"days": days, "vol_state": vol_state, "drift_state": drift_state}
    for k, (name, _, centre, vol_mult, beta) in enumerate(INSTRUMENTS):
        r = np.random.default_rng([seed, 7919, k])
        idio = r.standard_normal((n_days, SESSION_MINUTES))
        z = beta * market + np.sqrt(1.0 - beta ** 2) * idio
        daily_vol = VOL_REGIMES[vol_state] * vol_mult * np.exp(0.15 * r.standard_normal(n_days))
        minute_sigma = daily_vol[:, None] / np.sqrt(SESSION_MINUTES) * u[None, :]
        rets = z * minute_sigma
        # rare intraday jumps, larger in turbulent regimes
        jumps = r.random((n_days, SESSION_MINUTES)) < 0.0004
        rets = rets + jumps * r.standard_normal((n_days, SESSION_MINUTES)) * daily_vol[:, None] * 0.8
        # overnight gaps: mostly small, sometimes a few percent
        gap = (beta * market_gap + np.sqrt(1 - beta ** 2) * r.standard_normal(n_days)) * daily_vol * 0.35
        big = r.random(n_days) < 0.02
        gap = gap + big * r.standard_normal(n_days) * 0.015 * vol_mult
        drift = DRIFT_REGIMES[drift_state] * vol_mult
        # sequential over days only: mean reversion of the level towards the centre
        log_close = np.empty((n_days, SESSION_MINUTES))
        log_open0 = np.empty(n_days)
        level = np.log(centre) + r.normal(0.0, 0.05)
        for d in range(n_days):
            pull = 0.03 * (np.log(centre) - level)
            start = level + (gap[d] if d else 0.0)
            log_open0[d] = start
            path = start + np.cumsum(rets[d] + (drift[d] + pull) / SESSION_MINUTES)
            log_close[d] = path
            level = path[-1]
        log_open = np.concatenate([log_open0[:, None], log_close[:, :-1]], axis=1)
        # within-minute excursion beyond open/close
        wick = minute_sigma * 0.6
        up = np.abs(r.standard_normal((n_days, SESSION_MINUTES))) * wick
        dn = np.abs(r.standard_normal((n_days, SESSION_MINUTES))) * wick
        o = np.exp(log_open)
        c = np.exp(log_close)
        h = np.maximum(o, c) * np.exp(up)
        lo = np.minimum(o, c) * np.exp(-dn)
        o, h, lo, c = (np.round(np.round(a / TICK) * TICK, 2) for a in (o, h, lo, c))
        lo = np.minimum(lo, np.minimum(o, c))       # rounding keeps order, this only guards float ties
        h = np.maximum(h, np.maximum(o, c))
        out[name] = {"open": o, "high": h, "low": lo, "close": c, "day_epoch": day_epoch}
    return out


def aggregate(bars: dict, minutes: int) -> dict:
    """(days, 375) 1-minute arrays -> flat N-minute bars anchored at 09:15 (last partial bin kept)."""
    n_days = bars["open"].shape[0]
    starts = np.arange(0, SESSION_MINUTES, minutes)
    o = bars["open"][:, starts]
    c = bars["close"][:, np.minimum(starts + minutes, SESSION_MINUTES) - 1]
    h = np.maximum.reduceat(bars["high"], starts, axis=1)
    lo = np.minimum.reduceat(bars["low"], starts, axis=1)
    t = bars["day_epoch"][:, None] + starts[None, :] * 60
    n = n_days * len(starts)
    return {"datetime": t.reshape(n).astype(np.int64), "open": o.reshape(n), "high": h.reshape(n),
            "low": lo.reshape(n), "close": c.reshape(n), "volume": np.zeros(n)}


def generate(raw_dir="data/raw", seed: int = 0, years: float = 3) -> list[Path]:
    """Write the synthetic raw files; returns their paths. Same seed -> byte-identical files."""
    raw_dir = Path(raw_dir)
    raw_dir.mkdir(parents=True, exist_ok=True)
    sim = simulate(seed, years)
    paths = []
    for name, minutes, *_ in INSTRUMENTS:
        cols = aggregate(sim[name], minutes)
        table = pa.table({k: pa.array(v) for k, v in cols.items()})
        meta = {"synthetic": "true", "generator": "data_tools.synth", "seed": str(int(seed)),
                "years": str(years), "symbol": name, "bar_minutes": str(minutes),
                "description": "SYNTHETIC data (regime-switching model), not market data"}
        table = table.replace_schema_metadata(meta)
        path = raw_dir / f"{name}.parquet"
        tmp = path.with_name(f".{path.name}.tmp")
        pq.write_table(table, tmp, compression="zstd")
        tmp.replace(path)
        paths.append(path)
    return paths


def ensure_default_data(raw_dir="data/raw", processed_dir="data/processed", out="stdout"):
    """For a fresh clone: generate the synthetic raw files when `raw_dir` holds no data files, and process
    `raw_dir` when `processed_dir` lacks processed files for them. Returns the ProcessResult, or None when
    nothing had to be done. Raises InputError when processing fails. `out` defaults to sys.stdout (at call
    time); pass None for silence."""
    from jaxtrade.errors import InputError
    from data_tools.process import process_directory
    from data_tools.readers import list_raw_files

    if isinstance(out, str) and out == "stdout":
        out = sys.stdout
    raw_dir, processed_dir = Path(raw_dir), Path(processed_dir)
    generated = False
    if not raw_dir.is_dir() or not list_raw_files(raw_dir):
        others = sorted(p.name for p in raw_dir.iterdir() if not p.name.startswith(".")) if raw_dir.is_dir() else []
        if others:
            # The user's own folder with files we cannot read: say so rather than mix synthetic data into it.
            from data_tools.readers import RAW_SUFFIXES
            raise InputError(f"{raw_dir}: no readable raw data files (found {', '.join(others[:5])}"
                             f"{', ...' if len(others) > 5 else ''}; readable: {', '.join(sorted(RAW_SUFFIXES))}); "
                             f"convert them, or point --raw-data-dir at an empty or new folder for the synthetic default")
        paths = generate(raw_dir)
        generated = True
        if out is not None:
            out.write(f"no raw data in {raw_dir}: generated SYNTHETIC data "
                      f"({', '.join(p.name for p in paths)})\n")
    expected = [processed_dir / f"{p.stem}.parquet" for p in list_raw_files(raw_dir)
                if p.stem in {name for name, *_ in INSTRUMENTS}]
    have_any = processed_dir.is_dir() and any(processed_dir.glob("*.parquet"))
    if not generated and have_any and all(p.exists() for p in expected):
        return None
    result = process_directory(raw_dir, processed_dir, out=out, err=None)
    if not result.ok:
        what, msg = result.failures[0]
        more = f" (and {len(result.failures) - 1} more)" if len(result.failures) > 1 else ""
        raise InputError(f"{msg}{more}")
    return result


def _main(argv) -> int:
    from absl import flags
    F = flags.FLAGS
    if F.years <= 0:
        from jaxtrade.errors import InputError
        raise InputError(f"--years must be positive, not {F.years}")
    paths = generate(F.raw_data_dir, seed=F.seed, years=F.years)
    for p in paths:
        n = pq.read_metadata(p).num_rows
        print(f"wrote {p} ({n:,} bars, SYNTHETIC, seed {F.seed})")
    return 0


if __name__ == "__main__":
    from absl import flags
    from jaxtrade.cli import run
    flags.DEFINE_string("raw_data_dir", "data/raw", "Directory to write the synthetic raw files to.")
    flags.DEFINE_integer("seed", 0, "Random seed (same seed -> identical files).")
    flags.DEFINE_float("years", 3.0, "Years of trading days to simulate.")
    run(_main)
