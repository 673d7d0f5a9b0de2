"""Small valid raw files of every layout `data_tools.process` reads, drawn by hypothesis, each with the processed
bars it must give: the starting points of the fuzz test (`tests/raw_mutations.py` breaks them)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import strategies as st

NS = 10**9
IST_OFFSET_NS = 19_800 * NS
OPEN_MIN = 9 * 60 + 15
# small hand-written files, for the tests that need one file spelled out
SEED = (b",datetime,open,high,low,close,volume\n"
        b"0,1736480700,100.00,101.00,99.50,100.50,0\n"
        b"1,1736480820,100.50,102.00,100.00,101.50,0\n"
        b"2,1736480940,101.50,102.50,101.00,102.00,0\n")
PANDAS = (b"Datetime,Open,High,Low,Close,Adj Close,Volume\n"
          b"2024-01-05 09:15:00,47.91,55.58,47.91,52.73,52.73,298\n"
          b"2024-01-05 09:16:00,48.77,52.65,47.98,50.00,50.00,0\n")
VENDOR = (b"NIFTY,20240229,09:16,51.09,51.16,51.09,51.16,0,0\n"
          b"NIFTY,20240229,09:17,48.38,53.92,48.38,51.65,0,0\n"
          b"NIFTY,20240229,09:18,50.00,50.50,49.00,49.50,10,0\n")
WEEKDAYS = [d for d in np.arange(np.datetime64("2024-01-01"), np.datetime64("2025-12-31"))
            if d.astype("datetime64[D]").item().weekday() < 5]


@dataclass
class Bars:
    """Bars of one symbol: start times (IST wall clock, as datetime64[m]) and price strings."""
    starts: list                 # numpy datetime64[m], IST wall clock
    prices: list                 # (open, high, low, close) strings with 2 decimals
    volumes: list                # int

    def utc_ns(self, k: int, shift_min: int = 0) -> int:
        wall = (self.starts[k] + np.timedelta64(shift_min, "m")).astype("datetime64[ns]").astype(np.int64)
        return int(wall) - IST_OFFSET_NS

    def expected(self, with_volume: bool = True) -> list[tuple]:
        return [(self.utc_ns(k),) + tuple(float(p) for p in self.prices[k])
                + (float(self.volumes[k]) if with_volume else 0.0,) for k in range(len(self.starts))]


@st.composite
def bars(draw, minutes: Optional[int] = None) -> tuple[Bars, int]:
    bm = minutes or draw(st.sampled_from([1, 2, 5]))
    first = draw(st.integers(0, len(WEEKDAYS) - 4))
    days = [WEEKDAYS[first + k] for k in sorted(draw(st.sets(st.integers(0, 3), min_size=1, max_size=3)))]
    per_day = draw(st.integers(2, 4))
    level = draw(st.integers(5_000, 6_000_000))               # paise
    starts, prices, volumes = [], [], []
    for d in days:
        for j in range(per_day):
            starts.append(d.astype("datetime64[m]") + np.timedelta64(OPEN_MIN + j * bm, "m"))
            o, c = level + draw(st.integers(-500, 500)), level + draw(st.integers(-500, 500))
            h, lo = max(o, c) + draw(st.integers(0, 300)), min(o, c) - draw(st.integers(0, 300))
            prices.append(tuple(f"{x / 100:.2f}" for x in (o, h, lo, c)))
            volumes.append(draw(st.integers(0, 10_000)))
    return Bars(starts, prices, volumes), bm


@dataclass
class TextFile:
    """A CSV/TXT file as a model: header lines and rows of fields (a str row is a raw line, "" blank)."""
    name: str
    layout: str
    header: list                 # list of header lines, each a list of fields
    rows: list                   # data rows: list of fields, or a raw line (str)
    roles: list                  # the role of each column: datetime, date, time, open, ..., index, extra
    expected: dict               # symbol -> processed bars (list of tuples) the valid file gives
    delimiter: str = ","
    newline: str = "\n"
    final_newline: bool = True
    leading_blank: int = 0
    quote: bool = False
    encoding: str = "utf-8"

    def line_of(self, r: int) -> int:
        """1-based line number of data row r."""
        return self.leading_blank + len(self.header) + r + 1

    def render(self) -> bytes:
        def line(fields):
            if isinstance(fields, str):
                return fields
            return self.delimiter.join(f'"{f}"' if self.quote else f for f in fields)
        lines = [""] * self.leading_blank + [line(h) for h in self.header] + [line(r) for r in self.rows]
        text = self.newline.join(lines) + (self.newline if self.final_newline else "")
        if self.encoding == "utf-16-be-bom":
            return b"\xfe\xff" + text.encode("utf-16-be")
        return text.encode(self.encoding, "replace")   # latin-1: what it cannot hold becomes "?"


@dataclass
class ParquetFile:
    name: str
    layout: str
    columns: list                # [(name, pyarrow array)]
    expected: dict

    def render(self) -> bytes:
        buf = io.BytesIO()
        pq.write_table(pa.table({n: a for n, a in self.columns}) if len({n for n, _ in self.columns}) == len(
            self.columns) else pa.Table.from_arrays([a for _, a in self.columns], [n for n, _ in self.columns]),
            buf)
        return buf.getvalue()


def _hhmm(t) -> str:
    return str(t)[11:16]


@st.composite
def vendor_file(draw) -> TextFile:
    """SYMBOL,YYYYMMDD,HH:MM,O,H,L,C,V,OI, headerless, bars labelled by their END minute, a pre-open bar."""
    b, bm = draw(bars())
    symbols = ["NIFTY"] + (["BANKNIFTY"] if draw(st.booleans()) else [])
    rows = []
    for sym in symbols:
        d0 = b.starts[0].astype("datetime64[D]")
        rows.append([sym, str(d0).replace("-", ""), "09:08"] + list(b.prices[0]) + ["0", "0"])   # pre-open
        for k, t in enumerate(b.starts):
            end = t + np.timedelta64(bm, "m")
            rows.append([sym, str(end)[:10].replace("-", ""), _hhmm(end)] + list(b.prices[k])
                        + [str(b.volumes[k]), "0"])
    if len(symbols) == 2:                      # interleave, as a mixed vendor file
        n = len(rows) // 2
        rows = [r for pair in zip(rows[:n], rows[n:]) for r in pair]
    roles = ["symbol", "date", "time", "open", "high", "low", "close", "volume", "oi"]
    return TextFile("2024 JAN NIFTY.txt", "vendor", [], rows, roles, {s: b.expected() for s in symbols})


@st.composite
def seed_file(draw) -> TextFile:
    """The seed system's raw file: pandas index column, `datetime` epoch seconds of the bar start, volume 0."""
    bm = draw(st.sampled_from([2, 5]))
    b, _ = draw(bars(bm))
    name = "Nifty_2" if bm == 2 else "Bank_Nifty_5"
    rows = [[str(k), str(b.utc_ns(k) // NS)] + list(b.prices[k]) + ["0"] for k in range(len(b.starts))]
    roles = ["index", "datetime", "open", "high", "low", "close", "volume"]
    return TextFile(f"{name}.csv", "seed", [[""] + roles[1:]], rows, roles, {name: b.expected(False)})


def _iso(b: Bars, k: int, zone: str) -> str:
    if zone == "+00:00":
        t = b.starts[k] - np.timedelta64(330, "m")
    else:
        t = b.starts[k]
    return str(t.astype("datetime64[s]")).replace("T", " ") + ("" if zone == "naive" else zone)


@st.composite
def pandas_file(draw) -> TextFile:
    """pandas/yfinance single-header exports: naive, +05:30 or UTC timestamps, or separate Date and Time."""
    b, _ = draw(bars())
    variant = draw(st.sampled_from(["naive", "+05:30", "+00:00", "date_time"]))
    if variant == "date_time":
        roles = ["date", "time", "open", "high", "low", "close", "volume"]
        header = ["Date", "Time", "Open", "High", "Low", "Close", "Volume"]
        rows = [[str(t)[:10], _hhmm(t) + ":00"] + list(b.prices[k]) + [str(b.volumes[k])]
                for k, t in enumerate(b.starts)]
    else:
        roles = ["datetime", "open", "high", "low", "close", "extra", "volume"]
        header = ["Datetime", "Open", "High", "Low", "Close", "Adj Close", "Volume"]
        rows = [[_iso(b, k, variant)] + list(b.prices[k]) + [b.prices[k][3], str(b.volumes[k])]
                for k in range(len(b.starts))]
    return TextFile("NIFTY50.csv", f"pandas-{variant}", [header], rows, roles, {"NIFTY50": b.expected()})


@st.composite
def yfinance_file(draw) -> TextFile:
    """yfinance >= 0.2.51: `Price,...` / `Ticker,...` / `Datetime,,,...` header lines, then the bars."""
    b, _ = draw(bars())
    zone = draw(st.sampled_from(["+05:30", "+00:00"]))
    roles = ["datetime", "close", "high", "low", "open", "volume"]
    header = [["Price", "Close", "High", "Low", "Open", "Volume"], ["Ticker"] + ["^NSEI"] * 5,
              ["Datetime"] + [""] * 5]
    rows = [[_iso(b, k, zone), b.prices[k][3], b.prices[k][1], b.prices[k][2], b.prices[k][0], str(b.volumes[k])]
            for k in range(len(b.starts))]
    return TextFile("NSEI.csv", "yfinance", header, rows, roles, {"NSEI": b.expected()})


@st.composite
def parquet_file(draw) -> ParquetFile:
    b, _ = draw(bars())
    utc = np.array([b.utc_ns(k) for k in range(len(b.starts))], np.int64)
    kind = draw(st.sampled_from(["utc", "ist", "naive", "ms", "s", "iso"]))
    ts = {"utc": lambda: pa.array(utc, pa.timestamp("ns", tz="UTC")),
          "ist": lambda: pa.array(utc, pa.timestamp("ns", tz="Asia/Kolkata")),
          "naive": lambda: pa.array(utc + IST_OFFSET_NS, pa.timestamp("ns")),
          "ms": lambda: pa.array(utc // 10**6),
          "s": lambda: pa.array(utc // NS),
          "iso": lambda: pa.array([_iso(b, k, "+05:30") for k in range(len(utc))])}[kind]()
    cols = [("timestamp", ts)] + [(n, pa.array([float(p[i]) for p in b.prices]))
                                  for i, n in enumerate(("Open", "High", "Low", "Close"))]
    cols.append(("Volume", pa.array(b.volumes, pa.int64())))
    return ParquetFile("PQDATA.parquet", f"parquet-{kind}", cols, {"PQDATA": b.expected()})


TEXT_LAYOUTS = {"vendor": vendor_file, "seed": seed_file, "pandas": pandas_file, "yfinance": yfinance_file}
LAYOUTS = {**TEXT_LAYOUTS, "parquet": parquet_file}
