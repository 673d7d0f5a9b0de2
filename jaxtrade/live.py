"""Bar-by-bar inference: a trained model fed one bar at a time, as a live trading loop would (docs/live.md).

    policy = LivePolicy.load("checkpoints/default/models/NIFTY_5_final_model.pth", bar_minutes=5)
    policy.warm_up(history)                          # earlier bars, oldest first: features only, no decisions
    for bar in feed:                                 # each bar once it has closed: (timestamp, o, h, l, c, v)
        target = policy.step(*bar)                   # signed lots to hold from the next bar's open

A `LivePolicy` keeps what the backtester's environment would know at that bar's close: the causal feature
state (`features.FeatureStream`, the batch features' formulas over the same running sums), the position (lots,
units, average entry price: the unrealised-PnL input), and the session clock. It assumes its decisions fill as
the environment fills them: at the next bar's open plus slippage, with the position squared off at the close of
the session's last bar (the bar ending at 15:30 IST) unless the model trained with overnight holding. A broker
that filled elsewhere is told with `fill(lots, price)`; the next observation then uses that fill.

Timestamps are bar START times. A `numpy.datetime64` or naive `datetime` is IST wall-clock time (as processed
data holds it); an aware `datetime` is converted; an int or float is Unix epoch seconds. A bar that is not after
the previous one, starts outside the regular session (09:15-15:30 IST) or has impossible prices is refused
with a one-line `LiveInputError`; the policy's state is left as it was.

Decisions equal the backtester's on every bar of a split when the policy is warmed up on every earlier bar of
the same file (the features' longest memory is the ATR's EWMA, whose start is forgotten to 1e-18 after 300
bars) and the session ends on the clock (`experiments.replay` checks it).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from typing import Any, Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxtrade import contracts, env as E, features as F
from jaxtrade.errors import InputError

IST = _dt.timezone(_dt.timedelta(hours=5, minutes=30))
_EPOCH = np.datetime64("1970-01-01T00:00", "m")


class LiveInputError(InputError):
    """A bar the policy refuses (out of order, outside the session, impossible prices): one line."""


def ist_minute(timestamp) -> np.datetime64:
    """A bar's start as IST wall-clock `datetime64[m]` (see the module docstring for the accepted forms)."""
    if isinstance(timestamp, np.datetime64):
        return timestamp.astype("datetime64[m]")
    if isinstance(timestamp, str):
        try:
            timestamp = _dt.datetime.fromisoformat(timestamp)
        except ValueError:
            raise LiveInputError(f"timestamp {timestamp!r}: not an ISO date and time") from None
    if isinstance(timestamp, _dt.datetime):
        if timestamp.tzinfo is not None:
            timestamp = timestamp.astimezone(IST).replace(tzinfo=None)
        return np.datetime64(timestamp.replace(second=0, microsecond=0), "m")
    if isinstance(timestamp, (int, float, np.integer, np.floating)) and not isinstance(timestamp, bool):
        return (np.datetime64(int(timestamp), "s") + np.timedelta64(330, "m")).astype("datetime64[m]")
    raise LiveInputError(f"timestamp {timestamp!r}: expected a datetime, numpy datetime64, ISO text or epoch "
                         f"seconds")


def _fmt(t: np.datetime64) -> str:
    return str(t).replace("T", " ")


@dataclasses.dataclass
class Position:
    """What the environment's state holds about the position (env.EnvState's lots, units, entry_price)."""

    lots: int = 0
    units: float = 0.0
    entry_price: float = 0.0


class LivePolicy:
    """A trained policy fed one bar at a time. Build it with `LivePolicy.load` (a .pth file or an Orbax stage
    directory, through `policies.load_policy`) or from a `policies.Policy` and its settings."""

    def __init__(self, policy, *, scaler: F.Scaler, bar_minutes: int, lot_size: float, initial_capital: float,
                 max_lots: int = 1, slippage_ticks: float = 0.0, tick_size: float = contracts.TICK_SIZE,
                 allow_overnight: bool = False):
        if policy.num_actions is not None and policy.num_actions != 2 * max_lots + 1:
            raise InputError(f"{policy.source or policy.name}: the model has {policy.num_actions} actions but "
                             f"max_lots={max_lots} gives {2 * max_lots + 1}")
        for name, value in (("bar_minutes", bar_minutes), ("lot_size", lot_size), ("initial_capital", initial_capital)):
            if not value > 0:
                raise InputError(f"{name} must be positive, got {value}")
        self.policy = policy
        self.scaler = scaler
        self.bar_minutes = int(bar_minutes)
        self.lot_size = float(lot_size)
        self.initial_capital = float(initial_capital)
        self.max_lots = int(max_lots)
        self.slippage = float(slippage_ticks) * float(tick_size)
        self.allow_overnight = bool(allow_overnight)
        self.notes: list[str] = []  # what the policy assumed where the feed was irregular
        act = policy.act
        self._act = jax.jit(lambda key, obs: act(key, obs))  # a loaded model's act is a callable object
        self._key = jax.random.key(0)  # trained models act greedily; the key is not used
        self._features = F.FeatureStream(self.bar_minutes)
        self.position = Position()
        self.last_time: np.datetime64 | None = None
        self.last_close = np.nan
        self.bars_seen = 0
        self.pending: int | None = None  # the last decision: lots to hold from the next bar's open
        self._reported: tuple[int, float] | None = None
        self.last_obs: np.ndarray | None = None

    # -------------------------------------------------------------------------------------- loading

    @classmethod
    def load(cls, model, *, bar_minutes: int, symbol: str | None = None, scaler: F.Scaler | None = None,
             lot_size: float | None = None, initial_capital: float | None = None, max_lots: int | None = None,
             slippage_ticks: float | None = None, allow_overnight: bool | None = None) -> "LivePolicy":
        """A trained model as a LivePolicy. Settings not given come from the model's training settings (its
        capital, slippage, max lots, overnight rule, lot size), else the symbol's current NSE lot; the feature
        scaling from the model file (an Orbax checkpoint records none: pass `scaler`, e.g. `market.scaler`)."""
        from jaxtrade import export, policies as P

        policy = P.load_policy(model) if not isinstance(model, P.Policy) else model
        config = policy.config or {}
        where = policy.source or policy.name
        export.check_observation(config, list(E.OBS_NAMES), where)
        if scaler is None:
            if not isinstance(config.get("scaler"), Mapping):
                raise InputError(f"{where}: the model records no feature scaling (an Orbax checkpoint does not): "
                                 f"pass the training data's scaler (jaxtrade.data.load_market(...).scaler)")
            try:
                scaler = F.Scaler.from_dict(config["scaler"])
            except (KeyError, ValueError) as e:
                raise InputError(f"{where}: {e}") from None
        env = policy.env_config.to_dict() if policy.env_config else {}  # the market rules it trained under
        symbol = symbol or config.get("symbol")
        if lot_size is None:
            lot_size = float(env.get("lot_size") or 0.0) or (contracts.lot_size(symbol or "") or 1.0)
        if max_lots is None:
            max_lots = int(env.get("max_lots") or ((policy.num_actions or 3) - 1) // 2)
        return cls(policy, scaler=scaler, bar_minutes=bar_minutes, lot_size=lot_size,
                   initial_capital=initial_capital if initial_capital is not None
                   else float(env.get("initial_capital") or 100_000.0),
                   max_lots=max_lots,
                   slippage_ticks=slippage_ticks if slippage_ticks is not None else float(env.get("slippage_ticks") or 0.0),
                   allow_overnight=allow_overnight if allow_overnight is not None else bool(env.get("allow_overnight")))

    # -------------------------------------------------------------------------------------- feeding bars

    def _check(self, t: np.datetime64, o, h, lo, c, v) -> tuple[int, bool]:
        """(minute of day, whether a new session starts) or a LiveInputError."""
        minute = int((t - t.astype("datetime64[D]")).astype(np.int64))
        if not F.SESSION_OPEN_MIN <= minute < F.SESSION_CLOSE_MIN:
            raise LiveInputError(f"bar at {_fmt(t)} IST starts outside the regular session 09:15-15:30 IST")
        if self.last_time is not None and t <= self.last_time:
            raise LiveInputError(f"bar at {_fmt(t)} IST is not after the previous bar ({_fmt(self.last_time)}): bars "
                                 f"must arrive once each, in time order")
        prices = np.array([o, h, lo, c], np.float64)
        if not (np.all(np.isfinite(prices)) and np.all(prices > 0) and lo <= min(o, c) and max(o, c) <= h
                and np.isfinite(v) and v >= 0):
            raise LiveInputError(f"bar at {_fmt(t)} IST: impossible prices or volume (open {o}, high {h}, low {lo}, "
                                 f"close {c}, volume {v}); need 0 < low <= open, close <= high and volume >= 0")
        new_session = self.last_time is None or t.astype("datetime64[D]") != self.last_time.astype("datetime64[D]")
        return minute, new_session

    def session_last(self, minute_of_day: int) -> bool:
        """Whether a bar starting at `minute_of_day` is its session's last (it ends at or after 15:30 IST)."""
        return minute_of_day + self.bar_minutes >= F.SESSION_CLOSE_MIN

    def _features_of(self, t, o, h, lo, c, v, minute, new_session) -> np.ndarray:
        weekday = int((t.astype("datetime64[D]").astype(np.int64) + 3) % 7)  # 1970-01-01 was a Thursday
        return self._features.update(o, h, lo, c, v, minute, weekday, new_session)

    def _advance(self, t, c) -> None:
        self.last_time, self.last_close = t, float(c)
        self.bars_seen += 1

    def warm_up(self, bars: Iterable) -> int:
        """Feed earlier bars (oldest first, each `(timestamp, open, high, low, close[, volume])`) through the
        feature state without deciding or trading. Returns the number of bars fed."""
        if self.pending is not None or self.position.lots:
            raise InputError("warm_up: the policy has already traded; warm up before the first step")
        n = 0
        for bar in bars:
            ts, o, h, lo, c, *rest = bar
            v = float(rest[0]) if rest else 0.0
            t = ist_minute(ts)
            minute, new_session = self._check(t, o, h, lo, c, v)
            self._features_of(t, o, h, lo, c, v, minute, new_session)
            self._advance(t, c)
            n += 1
        return n

    def fill(self, lots: int, price: float) -> None:
        """The broker's fill of the last decision: `lots` held from the next bar's open, bought or sold at `price`
        (instead of the next open plus slippage). Call it before feeding that next bar."""
        if self.pending is None:
            raise InputError("fill: there is no decision to fill yet")
        self._reported = (int(lots), float(price))

    def _trade_to(self, lots: int, fill_price: float) -> None:
        """env.step's position update for an order filled at `fill_price`, to `lots`."""
        p = self.position
        target_units = lots * self.lot_size
        qty = target_units - p.units
        if qty == 0:
            return
        was_open, is_open = p.units != 0, target_units != 0
        closes = was_open and (not is_open or np.sign(target_units) != np.sign(p.units))
        opens = is_open and (not was_open or closes)
        adding = is_open and (not was_open or closes or abs(target_units) > abs(p.units))
        if opens:
            p.entry_price = fill_price
        elif adding:
            p.entry_price = (p.entry_price * abs(p.units) + fill_price * abs(qty)) / max(abs(target_units), 1e-300)
        p.units, p.lots = target_units, lots

    def step(self, timestamp, open_: float, high: float, low: float, close: float, volume: float = 0.0, *,
             session_last: bool | None = None) -> int:
        """Feed the bar that just closed; returns the target position in signed lots for the next bar (filled
        at its open; at a session's last bar, the target for the next session's first bar).

        `session_last`: whether this is the session's last bar (the position is squared off at its close);
        default: by the clock (the bar ends at or after 15:30 IST). Pass True on a day the exchange closes early."""
        t = ist_minute(timestamp)
        o, h, lo, c, v = (float(x) for x in (open_, high, low, close, volume))
        minute, new_session = self._check(t, o, h, lo, c, v)
        p = self.position
        if new_session and p.units and not self.allow_overnight:
            self.notes.append(f"{_fmt(self.last_time)}: the session ended before 15:30 IST with {p.lots} lot(s) open; "
                              f"counted as squared off at that bar's close, as the environment does")
            p.units, p.lots = 0.0, 0
        if self.pending is not None:
            if self._reported is not None:
                self._trade_to(*self._reported)
            else:
                qty = self.pending * self.lot_size - p.units
                self._trade_to(self.pending, o + self.slippage * float(np.sign(qty)))
        self.pending, self._reported = None, None
        last = self.session_last(minute) if session_last is None else bool(session_last)
        if last and not self.allow_overnight:
            p.units, p.lots = 0.0, 0  # squared off at this close (the entry price stays, as in env.step)
        row = self.scaler.apply(self._features_of(t, o, h, lo, c, v, minute, new_session)).astype(np.float32)
        upnl = p.units * (c - p.entry_price) / self.initial_capital * 100.0
        obs = np.concatenate([row, np.array([np.float32(p.lots) / self.max_lots, upnl], np.float32)])
        action = int(self._act(self._key, jnp.asarray(obs)))
        self._advance(t, c)
        self.last_obs = obs
        self.pending = action - self.max_lots
        return self.pending

    def state(self) -> dict[str, Any]:
        """A snapshot for logs: last bar, position, pending decision, bars seen."""
        return {"last_bar": None if self.last_time is None else _fmt(self.last_time), "lots": self.position.lots,
                "units": self.position.units, "entry_price": self.position.entry_price, "target": self.pending,
                "bars_seen": self.bars_seen}


def bars_of(columns: Mapping[str, np.ndarray], lo: int = 0, hi: int | None = None):
    """`(timestamp, open, high, low, close, volume)` tuples of rows [lo, hi) of processed columns
    (`jaxtrade.data.read_processed`)."""
    hi = len(columns["timestamp"]) if hi is None else hi
    cols = [columns[k] for k in ("timestamp", "open", "high", "low", "close", "volume")]
    for i in range(lo, hi):
        yield tuple(col[i] for col in cols)



# ------------------------------------------------------------------------------------- live log vs backtest

def read_decision_log(path) -> tuple[np.ndarray, np.ndarray]:
    """A log of decisions taken live: CSV with a header naming at least `timestamp` (the bar the decision was taken
    at: its START, IST wall-clock ISO text like `2024-01-05 09:15`, or Unix epoch seconds) and `target` (the signed
    lots decided, what `LivePolicy.step` returned); other columns are ignored (`experiments.replay --output`
    writes such a file). Returns (times datetime64[m] [N], targets int64 [N]); a malformed row is a one-line
    `LiveInputError` naming the file and row."""
    import csv
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise LiveInputError(f"--decisions: {path} not found")
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise LiveInputError(f"{path}: empty (expected a header with timestamp,target)")
    header = [h.strip().lower() for h in rows[0]]
    if "timestamp" not in header or "target" not in header:
        raise LiveInputError(f"{path}: the header {','.join(rows[0])!r} needs columns timestamp and target")
    it, ig = header.index("timestamp"), header.index("target")
    times, targets = [], []
    for n, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        try:
            raw_t, raw_g = row[it].strip(), row[ig].strip()
            times.append(ist_minute(int(raw_t) if raw_t.lstrip("-").isdigit() else raw_t))
            targets.append(int(raw_g))
        except (IndexError, ValueError, LiveInputError) as e:
            why = e if isinstance(e, LiveInputError) else "expected a timestamp and an integer target"
            raise LiveInputError(f"{path} row {n}: {why}") from None
    times_a = np.array(times, "datetime64[m]")
    if len(times_a) and np.any(np.diff(times_a.astype(np.int64)) <= 0):
        bad = int(np.flatnonzero(np.diff(times_a.astype(np.int64)) <= 0)[0]) + 3
        raise LiveInputError(f"{path} row {bad}: timestamp {_fmt(times_a[bad - 2])} is not after the previous row's")
    return times_a, np.array(targets, np.int64)


def compare_with_backtest(times: np.ndarray, targets: np.ndarray, bar_times: np.ndarray, backtested: np.ndarray,
                          where: str = "the split") -> dict[str, Any]:
    """Logged live decisions against the backtest's on the same bars. `bar_times` [B]: the split's bar starts
    (datetime64); `backtested` [B - 1]: the lots the backtest decided at each bar but the last (which decides for
    a bar the backtest never reaches). A logged time that is not a bar of the split is a `LiveInputError`.
    Returns {"compared", "equal", "differ": [(time, live, backtest)], "unlogged": bars without a log entry,
    "last_bar": logged decisions at the split's last bar (not compared)}."""
    bars = np.asarray(bar_times).astype("datetime64[m]")
    idx = np.searchsorted(bars, times)
    unknown = np.flatnonzero((idx >= len(bars)) | (bars[np.minimum(idx, len(bars) - 1)] != times))
    if len(unknown):
        raise LiveInputError(f"decision log entry {int(unknown[0]) + 1} ({_fmt(times[unknown[0]])}) is not a bar of "
                             f"{where} ({_fmt(bars[0])} .. {_fmt(bars[-1])})")
    last = idx == len(bars) - 1
    i, live = idx[~last], targets[~last]
    bt = np.asarray(backtested, np.int64)[i]
    diff = np.flatnonzero(live != bt)
    return {"compared": int(len(i)), "equal": int(len(i) - len(diff)),
            "differ": [(_fmt(bars[i[k]]), int(live[k]), int(bt[k])) for k in diff],
            "unlogged": int(len(bars) - len(idx)), "last_bar": int(last.sum())}
