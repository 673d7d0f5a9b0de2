"""Transaction-cost models: `zero`, `bps`, and NSE presets for index futures and index options.

Every rate is a named field of `CostParams` (a pytree, so a cost model can be `vmap`ped or changed without
recompiling), and each preset keeps, beside its numbers, where each number came from and the date it was read
(`CostModel.sources`), so that a report can say what a backtest assumed. Rates change by circular or budget:
`cost_model(name, as_of=date)` picks the securities-transaction-tax rate in force on that date; the other rates
are the current ones (brokers' notes and exchange circulars, read 2026-11; docs/environment.md lists them).

All amounts are rupees; `qty` is signed units (lots x lot size, + buy, - sell); `price` is the fill price
(for options presets: the option premium).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
from typing import Mapping

import jax.numpy as jnp
from flax import struct

from jaxtrade.errors import InputError

FACTS = "nse-facts.md (brokers' notes, exchange circulars, news; collected Nov 2026)"
READ_ON = "2026-11-25"


@struct.dataclass
class CostParams:
    """Per-order charges. Rates are fractions of traded value (0.0001 = 1 bp)."""

    brokerage_rate: float = 0.0  # fraction of turnover, capped per order by brokerage_cap
    brokerage_cap: float = math.inf  # rupees per executed order
    brokerage_per_order: float = 0.0  # flat rupees per executed order (bps model's fixed part; options' Rs 20)
    stt_sell_rate: float = 0.0  # securities transaction tax on sell value
    stt_buy_rate: float = 0.0
    exchange_txn_rate: float = 0.0  # NSE transaction charge, each side
    ipft_rate: float = 0.0  # NSE investor protection fund trust, each side
    sebi_rate: float = 0.0  # SEBI turnover fee, each side
    stamp_buy_rate: float = 0.0  # stamp duty, buy side only
    gst_rate: float = 0.0  # on brokerage + transaction charge + IPFT + SEBI fee


@dataclasses.dataclass(frozen=True)
class CostModel:
    name: str
    params: CostParams
    sources: Mapping[str, str]  # field -> "value: source, effective date; read on"

    def describe(self) -> str:
        lines = [f"cost model {self.name}:"]
        for field in dataclasses.fields(CostParams):
            value = getattr(self.params, field.name)
            if value == 0.0 and field.name not in self.sources:
                continue
            src = self.sources.get(field.name, "")
            lines.append(f"  {field.name} = {value:g}" + (f"  ({src})" if src else ""))
        return "\n".join(lines)


def order_cost(params: CostParams, qty, price):
    """Total charges in rupees for executing `qty` units (signed) at `price`. Zero when qty == 0.

    Shapes: qty and price broadcast together (scalars inside a vmapped env step).
    """
    turnover = jnp.abs(qty) * price
    is_order = qty != 0
    buy_value = jnp.where(qty > 0, turnover, 0.0)
    sell_value = jnp.where(qty < 0, turnover, 0.0)
    brokerage = jnp.minimum(params.brokerage_rate * turnover, params.brokerage_cap)
    brokerage = jnp.where(is_order, brokerage + params.brokerage_per_order, 0.0)
    stt = params.stt_sell_rate * sell_value + params.stt_buy_rate * buy_value
    exchange = (params.exchange_txn_rate + params.ipft_rate) * turnover
    sebi = params.sebi_rate * turnover
    stamp = params.stamp_buy_rate * buy_value
    gst = params.gst_rate * (brokerage + exchange + sebi)
    return brokerage + stt + exchange + sebi + stamp + gst


# Securities transaction tax on index futures / options (sell side), by effective date.
_STT_FUTURES = ((_dt.date(1900, 1, 1), 0.000125, "0.0125% before 1 Oct 2024"),
                (_dt.date(2024, 10, 1), 0.0002, "0.02% from 1 Oct 2024"),
                (_dt.date(2026, 4, 1), 0.0005, "0.05% from 1 Apr 2026 (Budget 2026)"))
_STT_OPTIONS = ((_dt.date(1900, 1, 1), 0.000625, "0.0625% of premium before 1 Oct 2024"),
                (_dt.date(2024, 10, 1), 0.001, "0.1% of premium from 1 Oct 2024"),
                (_dt.date(2026, 4, 1), 0.0015, "0.15% of premium from 1 Apr 2026 (Budget 2026)"))


def _in_force(schedule, as_of: _dt.date):
    current = schedule[0]
    for entry in schedule:
        if entry[0] <= as_of:
            current = entry
    return current


def _nse(kind: str, as_of: _dt.date | None) -> CostModel:
    as_of = as_of or _dt.date.today()
    futures = kind == "futures"
    _, stt, stt_note = _in_force(_STT_FUTURES if futures else _STT_OPTIONS, as_of)
    read = f"read {READ_ON}"
    if futures:
        params = CostParams(brokerage_rate=0.0003, brokerage_cap=20.0, stt_sell_rate=stt,
                            exchange_txn_rate=0.0000173, ipft_rate=0.000001, sebi_rate=0.000001,
                            stamp_buy_rate=0.00002, gst_rate=0.18)
        sources = {
            "brokerage_rate": f"0.03% per order, typical discount broker; {FACTS}; {read}",
            "brokerage_cap": f"Rs 20 per executed order cap; {FACTS}; {read}",
            "stt_sell_rate": f"STT {stt_note}, rate as of {as_of}; {FACTS}",
            "exchange_txn_rate": f"NSE 0.00173% of turnover each side, flat from 1 Oct 2024; {FACTS}; {read}",
            "ipft_rate": f"NSE IPFT 0.0001% each side; {FACTS}; {read}",
            "sebi_rate": f"SEBI Rs 10 per crore each side; {FACTS}; {read}",
            "stamp_buy_rate": f"stamp duty 0.002% of buy value since 1 Jul 2020; {FACTS}; {read}",
            "gst_rate": f"GST 18% of brokerage + exchange + SEBI charges; {FACTS}; {read}",
        }
        return CostModel("nse_futures", params, sources)
    params = CostParams(brokerage_per_order=20.0, stt_sell_rate=stt, exchange_txn_rate=0.0003503,
                        ipft_rate=0.000005, sebi_rate=0.000001, stamp_buy_rate=0.00003, gst_rate=0.18)
    sources = {
        "brokerage_per_order": f"Rs 20 per executed order, typical discount broker; {FACTS}; {read}",
        "stt_sell_rate": f"STT {stt_note}, rate as of {as_of}; {FACTS}",
        "exchange_txn_rate": f"NSE 0.03503% of premium each side, from 1 Oct 2024; {FACTS}; {read}",
        "ipft_rate": f"NSE IPFT 0.0005% of premium; {FACTS}; {read}",
        "sebi_rate": f"SEBI Rs 10 per crore of premium each side; {FACTS}; {read}",
        "stamp_buy_rate": f"stamp duty 0.003% of buy premium since 1 Jul 2020; {FACTS}; {read}",
        "gst_rate": f"GST 18% of brokerage + exchange + SEBI charges; {FACTS}; {read}",
    }
    return CostModel("nse_options", params, sources)


COST_MODELS = ("zero", "bps", "nse_futures", "nse_options")


def cost_model(name: str, *, bps: float = 1.0, fixed_per_order: float = 0.0,
               as_of: _dt.date | None = None) -> CostModel:
    """Build a named cost model. `bps`: proportional rate in basis points of turnover (model `bps`)."""
    if name == "zero":
        return CostModel("zero", CostParams(), {})
    if name == "bps":
        params = CostParams(brokerage_rate=bps * 1e-4, brokerage_per_order=fixed_per_order)
        return CostModel(f"bps({bps:g}bp+{fixed_per_order:g}/order)", params,
                         {"brokerage_rate": f"{bps:g} bp of turnover (user)",
                          "brokerage_per_order": f"Rs {fixed_per_order:g} per order (user)"})
    if name == "nse_futures":
        return _nse("futures", as_of)
    if name == "nse_options":
        return _nse("options", as_of)
    raise InputError(f"--cost_model: unknown cost model {name!r} (choose from {', '.join(COST_MODELS)})")
