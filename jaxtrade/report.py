"""Backtest reports: the text report (one table per symbol: model beside the baselines, and an aggregate),
per-symbol files (`equity.parquet`, `trades.parquet`, `metrics.json`, `equity.png`), DESIGN section 6.

matplotlib is optional (the `report` extra) and imported only when a PNG is drawn.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa

from jaxtrade import atomic, metrics as M
from jaxtrade.backtest import EQUITY_COLUMNS, BacktestResult, timestamps_utc_ns
from jaxtrade.jsonio import write_json_atomic

IST = "Asia/Kolkata"
PCT = {"total_return", "cagr", "max_drawdown", "win_rate", "exposure", "annual_volatility", "var_95", "cvar_95",
       "cost_to_gross_pnl", "mean_max_drawdown"}
RUPEES = {"avg_trade_pnl", "total_costs", "final_equity", "net_pnl"}
LABELS = {"total_return": "total return", "cagr": "CAGR", "sharpe": "Sharpe", "sortino": "Sortino",
          "max_drawdown": "max drawdown", "calmar": "Calmar", "num_trades": "trades", "win_rate": "win rate",
          "profit_factor": "profit factor", "avg_trade_pnl": "avg trade PnL", "total_costs": "total costs",
          "exposure": "exposure", "final_equity": "final equity", "sharpe_ci95": "Sharpe 95% CI",
          "annual_volatility": "annual volatility", "max_drawdown_duration": "max DD duration (sessions)",
          "skew": "skew", "kurtosis": "excess kurtosis", "var_95": "daily VaR 95%", "cvar_95": "daily CVaR 95%",
          "turnover": "turnover (x capital/session)", "avg_holding_bars": "avg holding (bars)",
          "cost_to_gross_pnl": "costs / gross PnL", "mean_episode_return": "mean episode return",
          "mean_max_drawdown": "mean max drawdown"}


def fmt(key: str, value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if key == "sharpe_ci95":
        return f"[{value[0]:.2f}, {value[1]:.2f}]"
    if key in ("num_trades", "max_drawdown_duration"):
        return f"{int(value):,}"
    if key in ("turnover", "avg_holding_bars"):
        return f"{value:,.2f}"
    if key in PCT:
        return f"{100.0 * value:.2f}%"
    if key in RUPEES:
        return f"{value:,.2f}"
    return f"{value:.3f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)  # noqa: E731
                               for i, (c, w) in enumerate(zip(r, widths)))
    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


table = _table  # the plain-text table, for other report sections


def column_name(result: BacktestResult) -> str:
    return Path(result.policy).name if ("/" in result.policy or result.policy.endswith(".pth")) else result.policy


def symbol_section(main: BacktestResult, baselines: Sequence[BacktestResult]) -> str:
    cols = [main, *baselines]
    header = ["metric", *(column_name(r) + (" *" if i == 0 else "") for i, r in enumerate(cols))]
    rows = []
    for key in (*M.METRIC_KEYS, "final_equity", "sharpe_ci95"):
        vals = []
        for r in cols:
            v = (float(r.equity["equity"][-1]) if key == "final_equity"
                 else (list(r.sharpe_ci) if r.sharpe_ci else None) if key == "sharpe_ci95" else r.metrics[key])
            vals.append(fmt(key, v))
        rows.append([LABELS.get(key, key), *vals])
    m = main
    lines = [
        f"== {m.symbol} ==" + ("   [SYNTHETIC DATA: not market data]" if m.synthetic else ""),
        f"period: {m.start} .. {m.end} IST ({m.split} split), {m.num_bars:,} bars, {m.num_sessions} sessions",
        f"costs: {m.cost_model}; lot size {m.lot_size:g}{' (dated NSE lots)' if m.env.dated_lots else ''}; slippage "
        f"{m.slippage_ticks:g} tick(s); initial capital {m.initial_capital:,.0f}; " + (
            'overnight holding allowed' if m.allow_overnight else
            f'flat from {m.env.square_off_time} IST' if m.env.square_off_time else 'intraday (flat at each session end)'),
        f"* = {'model ' + m.policy if m.policy != column_name(m) else 'chosen policy ' + m.policy}",
        "",
        _table(header, rows),
    ]
    notes = []
    for r in baselines:
        ruin = ruin_date(r)
        if ruin:
            notes.append(f"{column_name(r)}: equity fell to zero or below on {ruin}: the account was ruined "
                         f"(position too large for the capital); its ratios after that are meaningless")
    if m.verdict:
        notes.append(f"{column_name(m)}: {m.verdict}")
    if m.synthetic:
        notes.append("the data is the SYNTHETIC default (data_tools.synth), not market data: these numbers say "
                     "nothing about any real market")
    if notes:
        lines += ["", *("note: " + n for n in notes)]
    return "\n".join(lines)


def ruin_date(r: BacktestResult) -> str | None:
    e = r.equity["equity"]
    hit = np.flatnonzero(e <= 0)
    if len(hit) == 0:
        return None
    return str(np.datetime_as_string(r.equity["timestamp"][hit[0]], unit="m")).replace("T", " ")


def aggregate_section(per_symbol: Sequence[tuple[BacktestResult, Sequence[BacktestResult]]]) -> str:
    """Across symbols, per policy column: mean of total return and Sharpe, worst drawdown, and trade
    statistics pooled over all symbols' round trips."""
    if not per_symbol:
        return ""
    by_col: dict[str, list[BacktestResult]] = {}
    order: list[str] = []
    for main, baselines in per_symbol:
        for i, r in enumerate([main, *baselines]):
            name = "model/policy *" if i == 0 else column_name(r)
            if name not in by_col:
                by_col[name] = []
                order.append(name)
            by_col[name].append(r)
    rows_spec = [("symbols", "num"), ("mean total return", "total_return"), ("mean Sharpe", "sharpe"),
                 ("worst max drawdown", "max_drawdown"), ("trades (pooled)", "num_trades"),
                 ("win rate (pooled)", "win_rate"), ("profit factor (pooled)", "profit_factor"),
                 ("net PnL (sum)", "net_pnl"), ("total costs (sum)", "total_costs")]
    rows = []
    for label, key in rows_spec:
        vals = []
        for name in order:
            rs = by_col[name]
            pnl = np.concatenate([r.trades["net_pnl"] for r in rs]) if rs else np.zeros(0)
            n, w, gp, gl = M.trade_stats(pnl)
            if key == "num":
                vals.append(str(len(rs)))
                continue
            if key in ("total_return", "sharpe"):
                xs = [r.metrics[key] for r in rs if r.metrics[key] is not None]
                v = float(np.mean(xs)) if xs else None
            elif key == "max_drawdown":
                v = max(r.metrics[key] for r in rs)
            elif key == "num_trades":
                v = n
            elif key == "win_rate":
                v = M.to_python(M.win_rate(w, n))
            elif key == "profit_factor":
                v = M.to_python(M.profit_factor(gp, gl))
            elif key == "net_pnl":
                v = float(sum(r.equity["equity"][-1] - r.initial_capital for r in rs))
            else:
                v = float(sum(r.metrics["total_costs"] for r in rs))
            vals.append(fmt(key, v))
        rows.append([label, *vals])
    return "== aggregate across symbols ==\n\n" + _table(["", *order], rows)


def render_report(per_symbol: Sequence[tuple[BacktestResult, Sequence[BacktestResult]]],
                  header_lines: Sequence[str] = ()) -> str:
    parts = ["jaxtrade backtest report", *header_lines, ""]
    for main, baselines in per_symbol:
        parts += [symbol_section(main, baselines), ""]
    if len(per_symbol) > 1:
        parts += [aggregate_section(per_symbol), ""]
    rates = sorted({r.risk_free_rate for main, baselines in per_symbol for r in (main, *baselines)}) or [0.0]
    rf = "risk-free 0" if rates == [0.0] else "risk-free " + ", ".join(f"{100 * x:g}%" for x in rates) + " a year"
    parts.append(f"Metrics: docs/metrics.md (daily returns from each session's last equity; 252 sessions a "
                 f"year; {rf}; n/a = undefined for this sample). Sharpe CI: seeded stationary block "
                 "bootstrap of daily returns (Politis-Romano, mean block max(5, sqrt(n)), 2000 resamples).")
    return "\n".join(parts) + "\n"


# ------------------------------------------------------------------------------------------ files

def _ts_array(local_ist) -> pa.Array:
    return pa.array(timestamps_utc_ns(local_ist), pa.int64()).cast(pa.timestamp("ns", tz=IST))


def _meta(r: BacktestResult) -> dict:
    return {"symbol": r.symbol, "model": r.policy, "split": r.split, "cost_model": r.cost_model,
            "lot_size": f"{r.lot_size:g}", "initial_capital": f"{r.initial_capital:g}",
            "slippage_ticks": f"{r.slippage_ticks:g}", "env_config": json.dumps(r.env.to_dict()),
            "synthetic": "true" if r.synthetic else "false", "created_by": "jaxtrade.backtest"}


_INT_COLUMNS = ("position", "target")


def equity_table(r: BacktestResult) -> pa.Table:
    """DESIGN section 6's columns, then those that make the file replayable alone (`backtest.EQUITY_COLUMNS`)."""
    e = r.equity
    cols = {"timestamp": _ts_array(e["timestamp"])}
    for c in EQUITY_COLUMNS[1:]:
        cols[c] = pa.array(e[c], pa.int32() if c in _INT_COLUMNS else pa.float64())
    return pa.table(cols).replace_schema_metadata(_meta(r))


def trades_table(r: BacktestResult) -> pa.Table:
    tr = r.trades
    cols = {"entry_time": _ts_array(tr["entry_time"]), "exit_time": _ts_array(tr["exit_time"]),
            "side": pa.array(tr["side"], pa.int8())}
    for c in ("lots", "entry_price", "exit_price", "gross_pnl", "costs", "net_pnl"):
        cols[c] = pa.array(tr[c], pa.float64())
    return pa.table(cols).replace_schema_metadata(_meta(r))


def write_symbol_outputs(main: BacktestResult, baselines: Sequence[BacktestResult], directory,
                         plot: bool = True) -> list[str]:
    """Write `equity.parquet`, `trades.parquet`, `metrics.json` and (with matplotlib) `equity.png` of `main`
    into `directory`. Returns notices (e.g. no matplotlib)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    atomic.write_parquet(equity_table(main), d / "equity.parquet")
    atomic.write_parquet(trades_table(main), d / "trades.parquet")
    rec = main.metrics_record()
    rec["baselines"] = {column_name(b): dict(b.metrics, sharpe_ci95=list(b.sharpe_ci) if b.sharpe_ci else None)
                        for b in baselines}
    rec["env_stats"] = main.env_stats
    write_json_atomic(d / "metrics.json", rec)
    write_daily_returns(main, d / "daily_returns.csv")
    notices = []
    if plot and not plot_equity(main, d / "equity.png", baselines):
        notices.append("matplotlib is not installed (pip install 'jaxtrade[report]'): no equity.png written")
    return notices


def session_dates(r: BacktestResult) -> np.ndarray:
    """[sessions] datetime64[D]: the date of each session of a result, in the order of `r.daily_returns`."""
    days = np.asarray(r.equity["timestamp"]).astype("datetime64[D]")
    return days[M.session_last_rows(days)]


def write_daily_returns(r: BacktestResult, path) -> None:
    """`date,returns`: one row per session, the day's return (from its last bar's equity, the first against the
    initial capital) at full precision, as quantstats and empyrical read it:
    `pandas.read_csv(path, index_col="date", parse_dates=True)["returns"]`."""
    lines = ["date,returns"]
    lines += [f"{day},{float(ret)!r}" for day, ret in zip(session_dates(r), r.daily_returns)]
    atomic.write_text(path, "\n".join(lines) + "\n")


def plot_equity(main: BacktestResult, path, baselines: Sequence[BacktestResult] = ()) -> bool:
    """Equity (model and the flat / buy-and-hold / momentum baselines) and the model's drawdown. False when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    e = main.equity["equity"]
    x = np.arange(len(e))
    peak = np.maximum(np.maximum.accumulate(e), main.initial_capital)
    dd = 1.0 - e / peak
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    for b in baselines:
        if b.policy == "random":  # a cost sink whose scale would flatten every other curve
            continue
        ax1.plot(x, b.equity["equity"], lw=0.8, alpha=0.6, label=column_name(b))
    ax1.plot(x, e, lw=1.4, color="black", label=column_name(main))
    ax1.axhline(main.initial_capital, color="grey", lw=0.6, ls="--")
    title = f"{main.symbol} {main.split} split, {main.start[:10]} .. {main.end[:10]}"
    if main.synthetic:
        title += "  [SYNTHETIC DATA]"
    ax1.set_title(title)
    ax1.set_ylabel("equity (Rs)")
    ax1.legend(loc="best", fontsize=8)
    ax2.fill_between(x, -100.0 * dd, 0.0, color="tab:red", alpha=0.5)
    ax2.set_ylabel("drawdown (%)")
    ticks = np.linspace(0, len(e) - 1, num=min(6, len(e))).astype(int)
    ax2.set_xticks(ticks)
    ax2.set_xticklabels([str(main.equity["timestamp"][i])[:10] for i in ticks], fontsize=8)
    fig.tight_layout()
    atomic.save_figure(fig, path, dpi=110)
    plt.close(fig)
    return True
