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

Planted-edge markets (`--market`), one symbol each, for checking that the learners find an edge that is there
(and invent none where there is none); every bar return follows a known rule, so the optimal policy is known:

    python -m data_tools.synth --market ar1 [--ar_coef 0.5] [--sign_block 0] [--bar_minutes 5] [--bar_vol 0.001]
    python -m data_tools.synth --market vol_regime [--ar_coef 0.5] [--calm_vol 0.0007] [--turbulent_vol 0.0018]

- `ar1` (symbol `AR1_{N}`): N-minute bar log returns r_t = c r_{t-1} + sqrt(1 - c^2) bar_vol e_t inside each
  session (stationary: every bar's return has standard deviation bar_vol; the process restarts each session),
  each bar opening at the previous bar's close, a small overnight gap at a session's first bar. With c > 0
  the optimal rule is one-bar momentum (hold the sign of the last bar's return; `--policy momentum_1` in the
  backtester), with c < 0 its reverse; `--ar_coef 0` is a pure random walk (nothing to learn).
  `--sign_block K` gives each block of K consecutive sessions its own sign of the coefficient (+c or -c):
  a family of tasks for meta-learning, the sign visible only in the returns themselves. The signs are
  balanced: each pair of consecutive blocks holds one of each, in random order.
- `vol_regime` (symbol `VOLREG_{N}`): each session is calm or turbulent (a two-state Markov chain over
  sessions that stays with probability `--regime_stay`); turbulent sessions have bar volatility
  `--turbulent_vol` and momentum (+c), calm sessions `--calm_vol` and mean reversion (-c). Nothing but the
  volatility tells the regimes apart, so a policy must read the causal volatility features (rvol_20,
  range, atr_14) to trade each regime's rule.
Both are random walks in level (no pull to a centre, no drift), with high/low wicks scaled by the bar's
volatility and prices on the 0.05 tick. The per-session truth (`ar_coef` by session, `regime`) is returned by
`planted_market` and written into the file's metadata (`session_ar_coef`, `session_regime`). Same options and
seed -> byte-identical files.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from jaxtrade import atomic

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


# ---------------------------------------------------------------------------------------------------------
# Planted-edge markets (module docstring): one symbol each, every bar return from a known rule.

MARKETS = ("default", "ar1", "vol_regime")
REGIMES = ("calm", "turbulent")


@dataclasses.dataclass(frozen=True)
class PlantedOptions:
    """Options of the planted-edge markets (`--market ar1 | vol_regime`); see the module docstring."""

    ar_coef: float = 0.5            # |c| < 1: lag-1 autocorrelation of bar returns (sign per regime / block)
    bar_minutes: int = 5
    bar_vol: float = 0.001          # ar1: standard deviation of a bar's log return
    sign_block: int = 0             # ar1: sessions per block with its own sign of c, balanced (0: c everywhere)
    calm_vol: float = 0.0007        # vol_regime: bar volatility of calm sessions (mean reversion, -c)
    turbulent_vol: float = 0.0018   # vol_regime: bar volatility of turbulent sessions (momentum, +c)
    regime_stay: float = 0.9        # vol_regime: probability that the next session keeps the regime
    gap_vol: float = 2.0            # overnight gap's standard deviation, in units of the session's bar vol
    level: float = 20_000.0         # first open

    def check(self) -> None:
        """One InputError naming the flag, for a value the generator cannot use."""
        from jaxtrade.errors import InputError

        if not -1.0 < self.ar_coef < 1.0:
            raise InputError(f"--ar_coef must be in (-1, 1), got {self.ar_coef}")
        if not 1 <= self.bar_minutes <= SESSION_MINUTES:
            raise InputError(f"--bar_minutes must be in 1..{SESSION_MINUTES}, got {self.bar_minutes}")
        for name in ("bar_vol", "calm_vol", "turbulent_vol", "level"):
            if not getattr(self, name) > 0:
                raise InputError(f"--{name} must be positive, got {getattr(self, name)}")
        if self.sign_block < 0:
            raise InputError(f"--sign_block must be >= 0 (0: no sign flips), got {self.sign_block}")
        if not 0.0 <= self.regime_stay <= 1.0:
            raise InputError(f"--regime_stay must be in [0, 1], got {self.regime_stay}")
        if not self.gap_vol >= 0:
            raise InputError(f"--gap_vol must be >= 0, got {self.gap_vol}")


@dataclasses.dataclass
class PlantedMarket:
    """A generated planted-edge market: raw columns (the seed's layout) and the per-session truth."""

    symbol: str
    bar_minutes: int
    columns: dict            # datetime (int64 epoch s, bar start), open, high, low, close, volume: [T]
    session_ar_coef: np.ndarray   # [S] the lag-1 coefficient in force in each session
    session_vol: np.ndarray       # [S] the bar volatility of each session
    session_regime: np.ndarray | None  # [S] int: index into REGIMES (vol_regime only)
    metadata: dict


def _ar_sessions(rng: np.random.Generator, coef: np.ndarray, vol: np.ndarray, bars: int, gap_vol: float,
                 level: float):
    """[S, bars] OHLC of sessions whose bar log returns are a stationary AR(1) with lag-1 coefficient
    coef[s] and standard deviation vol[s], restarted each session; each bar opens at the previous close."""
    n = len(coef)
    eps = rng.standard_normal((n, bars))
    rets = np.empty((n, bars))
    rets[:, 0] = vol * eps[:, 0]
    innov = np.sqrt(1.0 - coef ** 2) * vol
    for t in range(1, bars):  # vectorised over sessions; `bars` is at most 375
        rets[:, t] = coef * rets[:, t - 1] + innov * eps[:, t]
    gaps = rng.standard_normal(n) * gap_vol * vol
    gaps[0] = 0.0
    # log open of each session's first bar: previous session's last close plus the gap
    session_move = rets.sum(1)
    first_open = np.log(level) + np.cumsum(gaps) + np.r_[0.0, np.cumsum(session_move)[:-1]]
    log_close = first_open[:, None] + np.cumsum(rets, axis=1)
    log_open = np.concatenate([first_open[:, None], log_close[:, :-1]], axis=1)
    wick = np.abs(rng.standard_normal((2, n, bars))) * 0.5 * vol[:, None]
    o, c = np.exp(log_open), np.exp(log_close)
    h = np.maximum(o, c) * np.exp(wick[0])
    lo = np.minimum(o, c) * np.exp(-wick[1])
    o, h, lo, c = (np.round(np.round(a / TICK) * TICK, 2) for a in (o, h, lo, c))
    return o, np.maximum(h, np.maximum(o, c)), np.minimum(lo, np.minimum(o, c)), c


def planted_market(market: str, seed: int = 0, years: float = 1.0, options: PlantedOptions | None = None,
                   symbol: str | None = None) -> PlantedMarket:
    """Simulate a planted-edge market (`ar1` or `vol_regime`); deterministic in (market, seed, years, options)."""
    opt = options or PlantedOptions()
    opt.check()
    if market not in ("ar1", "vol_regime"):
        raise ValueError(f"planted_market: unknown market {market!r} (ar1 or vol_regime)")
    rng = np.random.default_rng([seed, 20250110, MARKETS.index(market)])
    days = trading_days(years, rng)
    n_days = len(days)
    bars = -(-SESSION_MINUTES // opt.bar_minutes)
    regime = None
    if market == "ar1":
        vol = np.full(n_days, opt.bar_vol)
        coef = np.full(n_days, opt.ar_coef)
        if opt.sign_block > 0:
            # Balanced: each pair of consecutive blocks holds one block of each sign, in random order, so no
            # stretch of the data (a training split) leans to one sign by more than one block.
            n_blocks = -(-n_days // opt.sign_block)
            first = np.where(rng.random(-(-n_blocks // 2)) < 0.5, 1.0, -1.0)
            signs = np.stack([first, -first], axis=1).reshape(-1)[:n_blocks]
            coef = coef * np.repeat(signs, opt.sign_block)[:n_days]
        name = symbol or f"AR1_{opt.bar_minutes}"
        what = (f"AR(1) bar returns, coefficient {opt.ar_coef:g}"
                + (f" with its sign drawn per block of {opt.sign_block} sessions" if opt.sign_block else "")
                + f", bar volatility {opt.bar_vol:g}")
    else:
        p = np.array([[opt.regime_stay, 1.0 - opt.regime_stay], [1.0 - opt.regime_stay, opt.regime_stay]])
        regime = _markov(rng, p, n_days, int(rng.integers(2)))
        vol = np.where(regime == 1, opt.turbulent_vol, opt.calm_vol)
        coef = np.where(regime == 1, abs(opt.ar_coef), -abs(opt.ar_coef))
        name = symbol or f"VOLREG_{opt.bar_minutes}"
        what = (f"volatility regimes by session: turbulent (bar vol {opt.turbulent_vol:g}) with momentum "
                f"(AR(1) {abs(opt.ar_coef):g}), calm (bar vol {opt.calm_vol:g}) with mean reversion "
                f"(AR(1) {-abs(opt.ar_coef):g}), staying with probability {opt.regime_stay:g}")
    o, h, lo, c = _ar_sessions(rng, coef, vol, bars, opt.gap_vol, opt.level)
    day_epoch = np.array([(d - dt.date(1970, 1, 1)).days * 86_400 + OPEN_MIN * 60 - IST_OFFSET_S for d in days],
                         dtype=np.int64)
    t = day_epoch[:, None] + np.arange(bars)[None, :] * opt.bar_minutes * 60
    n = n_days * bars
    cols = {"datetime": t.reshape(n), "open": o.reshape(n), "high": h.reshape(n), "low": lo.reshape(n),
            "close": c.reshape(n), "volume": np.zeros(n)}
    meta = {"synthetic": "true", "generator": "data_tools.synth", "market": market, "seed": str(int(seed)),
            "years": str(years), "symbol": name, "bar_minutes": str(opt.bar_minutes),
            "options": json.dumps(dataclasses.asdict(opt), sort_keys=True),
            "session_ar_coef": json.dumps([float(x) for x in coef]),
            "description": f"SYNTHETIC planted-edge market ({what}), not market data"}
    if regime is not None:
        meta["session_regime"] = json.dumps({"regimes": list(REGIMES), "by_session": regime.tolist()})
    return PlantedMarket(symbol=name, bar_minutes=opt.bar_minutes, columns=cols, session_ar_coef=coef,
                         session_vol=vol, session_regime=regime, metadata=meta)


def _write_raw(path: Path, cols: dict, meta: dict) -> Path:
    table = pa.table({k: pa.array(v) for k, v in cols.items()}).replace_schema_metadata(meta)
    return atomic.write_parquet(table, path, compression="zstd")


def generate(raw_dir="data/raw", seed: int = 0, years: float = 3, market: str = "default",
             options: PlantedOptions | None = None, symbol: str | None = None) -> list[Path]:
    """Write the synthetic raw files; returns their paths. `market="default"` writes the embedded default
    (`Nifty_2`, `Bank_Nifty_5`); `ar1` / `vol_regime` one planted-edge symbol (`options`, `symbol`). Same
    arguments -> byte-identical files."""
    raw_dir = Path(raw_dir)
    if market != "default":
        sim = planted_market(market, seed, years, options, symbol)
        raw_dir.mkdir(parents=True, exist_ok=True)
        return [_write_raw(raw_dir / f"{sim.symbol}.parquet", sim.columns, sim.metadata)]
    raw_dir.mkdir(parents=True, exist_ok=True)
    sim = simulate(seed, years)
    paths = []
    for name, minutes, *_ in INSTRUMENTS:
        cols = aggregate(sim[name], minutes)
        meta = {"synthetic": "true", "generator": "data_tools.synth", "seed": str(int(seed)),
                "years": str(years), "symbol": name, "bar_minutes": str(minutes),
                "description": "SYNTHETIC data (regime-switching model), not market data"}
        paths.append(_write_raw(raw_dir / f"{name}.parquet", cols, meta))
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
    from jaxtrade.errors import InputError

    F = flags.FLAGS
    if F.years <= 0:
        raise InputError(f"--years must be positive, not {F.years}")
    if F.market not in MARKETS:
        raise InputError(f"--market must be one of {', '.join(MARKETS)}, not {F.market!r}")
    options = None
    planted_flags = ["symbol"] + [f.name for f in dataclasses.fields(PlantedOptions)]
    given = [f"--{name}" for name in planted_flags if F[name].present]
    if F.market == "default" and given:
        raise InputError(f"{', '.join(given)}: only for a planted-edge market (--market ar1 or vol_regime)")
    if F.market != "default":
        options = PlantedOptions(**{f.name: F[f.name].value for f in dataclasses.fields(PlantedOptions)})
        options.check()
    paths = generate(F.raw_data_dir, seed=F.seed, years=F.years, market=F.market, options=options,
                     symbol=F.symbol or None)
    for p in paths:
        md = pq.read_metadata(p)
        what = md.metadata[b"description"].decode()
        print(f"wrote {p} ({md.num_rows:,} bars, SYNTHETIC, seed {F.seed}): {what}")
    return 0


if __name__ == "__main__":
    from absl import flags
    from jaxtrade.cli import run
    flags.DEFINE_string("raw_data_dir", "data/raw", "Directory to write the synthetic raw files to.")
    flags.DEFINE_integer("seed", 0, "Random seed (same seed -> identical files).")
    flags.DEFINE_float("years", 3.0, "Years of trading days to simulate.")
    flags.DEFINE_string("market", "default", "default (Nifty_2 and Bank_Nifty_5), or a planted-edge market: "
                        "ar1 (AR(1) bar returns) or vol_regime (momentum when turbulent, mean reversion when calm).")
    flags.DEFINE_string("symbol", "", "Symbol (file stem) of a planted-edge market (default AR1_N / VOLREG_N).")
    _d = PlantedOptions()
    flags.DEFINE_float("ar_coef", _d.ar_coef, "ar1 / vol_regime: lag-1 autocorrelation of bar returns, in (-1, 1).")
    flags.DEFINE_integer("bar_minutes", _d.bar_minutes, "ar1 / vol_regime: bar length in minutes.")
    flags.DEFINE_float("bar_vol", _d.bar_vol, "ar1: standard deviation of a bar's log return.")
    flags.DEFINE_integer("sign_block", _d.sign_block, "ar1: sessions per block with its own random sign of "
                         "--ar_coef (0: no flips).")
    flags.DEFINE_float("calm_vol", _d.calm_vol, "vol_regime: bar volatility of calm (mean-reverting) sessions.")
    flags.DEFINE_float("turbulent_vol", _d.turbulent_vol, "vol_regime: bar volatility of turbulent (trending) "
                       "sessions.")
    flags.DEFINE_float("regime_stay", _d.regime_stay, "vol_regime: probability that a session keeps the "
                       "previous session's regime.")
    flags.DEFINE_float("gap_vol", _d.gap_vol, "ar1 / vol_regime: overnight gap's standard deviation in bar vols.")
    flags.DEFINE_float("level", _d.level, "ar1 / vol_regime: the first open.")
    run(_main)
