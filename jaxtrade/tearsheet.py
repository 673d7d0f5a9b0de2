"""One self-contained HTML tear sheet per symbol (docs/outputs.md): the model's metrics beside the baselines,
equity against the baselines, underwater drawdown, monthly returns, rolling Sharpe, the distribution of trade
PnL, PnL by time of day, and, when given, the expert-by-regime table of a mixture-of-experts model and the
before/after numbers of a MAML-adapted one.

    write_tearsheet(result, baselines, "reports/NIFTY/tearsheet.html", expert_regimes=table, adaptation=record)

Plots are PNGs inlined as base64 `data:` URIs (the file opens anywhere, offline). matplotlib is the `report`
extra: without it the page keeps every table and says in one line that the plots were left out. The numbers
come from `jaxtrade.metrics` (the same functions as metrics.json); this module only arranges and draws them.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
from typing import Any, Mapping, Sequence

import numpy as np

from jaxtrade import atomic, metrics as M
from jaxtrade.backtest import BacktestResult
from jaxtrade.report import LABELS, column_name, fmt, session_dates
from jaxtrade.tearsheet_context import find_adaptation, model_extras, summary_adaptation  # noqa: F401 - re-exported

ROLLING_SHARPE_SESSIONS = 20  # about a trading month
TIME_OF_DAY_BUCKET_MIN = 30
NO_MATPLOTLIB = "matplotlib is not installed (pip install 'jaxtrade[report]'): the tear sheet has its tables but no plots"
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


# ------------------------------------------------------------------------------------------ numbers

def monthly_returns(dates, daily) -> tuple[list[int], np.ndarray]:
    """(years, [years, 12] compounded monthly returns, NaN for months without a session)."""
    days = np.asarray(dates, "datetime64[D]")
    d = np.asarray(daily, np.float64)
    if not len(days):
        return [], np.zeros((0, 12))
    months = days.astype("datetime64[M]").astype(np.int64)  # months since 1970-01
    years = sorted({int(m // 12) + 1970 for m in months})
    grid = np.full((len(years), 12), np.nan)
    for m in np.unique(months):
        sel = months == m
        grid[years.index(int(m // 12) + 1970), int(m % 12)] = np.prod(1.0 + d[sel]) - 1.0
    return years, grid


def rolling_sharpe(daily, window: int = ROLLING_SHARPE_SESSIONS, risk_free: float = 0.0) -> np.ndarray:
    """[K] annualised Sharpe of the `window` sessions ending at each session (NaN before a full window or where
    the Sharpe is null), through `metrics.sharpe`."""
    d = np.asarray(daily, np.float64)
    out = np.full(len(d), np.nan)
    for k in range(window - 1, len(d)):
        out[k] = M.sharpe(d[k - window + 1:k + 1], risk_free=risk_free)
    return out


def underwater(equity, initial_capital) -> np.ndarray:
    """[T] drawdown at each bar, 1 - E_t / max(E_0, E_1..E_t) (`metrics.max_drawdown` is its maximum)."""
    e = np.asarray(equity, np.float64)
    return 1.0 - e / np.maximum(np.maximum.accumulate(e), initial_capital)


def pnl_by_time_of_day(timestamps, equity, bucket_minutes: int = TIME_OF_DAY_BUCKET_MIN
                       ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(bucket labels "HH:MM" of the bucket's first minute, summed net PnL per bucket, bars per bucket). A bar's
    PnL is its change in equity (fills at its open, marking and any square-off at its close, net of costs);
    buckets are `bucket_minutes` of bar START time from 09:15 IST."""
    ts = np.asarray(timestamps, "datetime64[m]")
    e = np.asarray(equity, np.float64)
    pnl = np.r_[0.0, np.diff(e)] if len(e) else e
    minute = (ts - ts.astype("datetime64[D]")).astype(np.int64)
    start = 9 * 60 + 15
    bucket = np.maximum(minute - start, 0) // bucket_minutes
    if not len(bucket):
        return [], np.zeros(0), np.zeros(0, np.int64)
    ids = np.arange(int(bucket.max()) + 1)
    sums = np.array([pnl[bucket == i].sum() for i in ids])
    counts = np.array([int((bucket == i).sum()) for i in ids])
    labels = [f"{(start + i * bucket_minutes) // 60:02d}:{(start + i * bucket_minutes) % 60:02d}" for i in ids]
    keep = counts > 0
    return [lb for lb, k in zip(labels, keep) if k], sums[keep], counts[keep]


# ------------------------------------------------------------------------------------------ plots

def _pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _png(fig, plt) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _date_ticks(ax, timestamps, n: int = 6) -> None:
    if len(timestamps):
        ticks = np.linspace(0, len(timestamps) - 1, num=min(n, len(timestamps))).astype(int)
        ax.set_xticks(ticks)
        ax.set_xticklabels([str(timestamps[i])[:10] for i in ticks], fontsize=8)


def _plots(main: BacktestResult, baselines: Sequence[BacktestResult], plt, years, grid, roll,
           tod) -> dict[str, str]:
    out = {}
    e, ts = main.equity["equity"], main.equity["timestamp"]
    x = np.arange(len(e))
    fig, ax = plt.subplots(figsize=(10, 4))
    for b in baselines:
        ax.plot(x, b.equity["equity"], lw=0.8, alpha=0.7, label=column_name(b))
    ax.plot(x, e, lw=1.4, color="black", label=column_name(main))
    ax.axhline(main.initial_capital, color="grey", lw=0.6, ls="--")
    ax.set_ylabel("equity (Rs)")
    ax.legend(loc="best", fontsize=8)
    _date_ticks(ax, ts)
    fig.tight_layout()
    out["equity"] = _png(fig, plt)

    fig, ax = plt.subplots(figsize=(10, 2.6))
    ax.fill_between(x, -100.0 * underwater(e, main.initial_capital), 0.0, color="tab:red", alpha=0.5)
    ax.set_ylabel("drawdown (%)")
    _date_ticks(ax, ts)
    fig.tight_layout()
    out["underwater"] = _png(fig, plt)

    if len(years):
        fig, ax = plt.subplots(figsize=(10, 0.6 + 0.45 * len(years)))
        vmax = max(float(np.nanmax(np.abs(grid))) if np.isfinite(grid).any() else 0.0, 1e-9)
        ax.imshow(100.0 * grid, cmap="RdYlGn", vmin=-100.0 * vmax, vmax=100.0 * vmax, aspect="auto")
        ax.set_xticks(range(12), _MONTHS)
        ax.set_yticks(range(len(years)), [str(y) for y in years])
        for i in range(len(years)):
            for j in range(12):
                if np.isfinite(grid[i, j]):
                    ax.text(j, i, f"{100 * grid[i, j]:.1f}", ha="center", va="center", fontsize=8)
        ax.set_title("monthly returns (%)", fontsize=10)
        fig.tight_layout()
        out["monthly"] = _png(fig, plt)

    if np.isfinite(roll).any():
        fig, ax = plt.subplots(figsize=(10, 2.8))
        days = session_dates(main)
        ax.plot(np.arange(len(roll)), roll, color="tab:blue", lw=1.0)
        ax.axhline(0.0, color="grey", lw=0.6)
        ax.set_ylabel(f"Sharpe, {ROLLING_SHARPE_SESSIONS} sessions")
        _date_ticks(ax, days)
        fig.tight_layout()
        out["rolling_sharpe"] = _png(fig, plt)

    pnl = main.trades["net_pnl"]
    if len(pnl):
        fig, ax = plt.subplots(figsize=(10, 3))
        bins = np.histogram_bin_edges(pnl, bins=min(50, max(10, len(pnl) // 5)))
        ax.hist(pnl[pnl <= 0], bins=bins, color="tab:red", alpha=0.7, label="losing")
        ax.hist(pnl[pnl > 0], bins=bins, color="tab:green", alpha=0.7, label="winning")
        ax.axvline(float(np.mean(pnl)), color="black", lw=1.0, ls="--", label=f"mean {np.mean(pnl):,.0f}")
        ax.set_xlabel("net PnL per round trip (Rs)")
        ax.set_ylabel("trades")
        ax.legend(fontsize=8)
        fig.tight_layout()
        out["trade_pnl"] = _png(fig, plt)

    labels, sums, _ = tod
    if len(labels):
        fig, ax = plt.subplots(figsize=(10, 3))
        ax.bar(range(len(labels)), sums, color=np.where(sums >= 0, "tab:green", "tab:red"))
        ax.set_xticks(range(len(labels)), labels, fontsize=8)
        ax.axhline(0.0, color="grey", lw=0.6)
        ax.set_ylabel("net PnL (Rs)")
        ax.set_xlabel(f"bar start, {TIME_OF_DAY_BUCKET_MIN}-minute buckets (IST)")
        fig.tight_layout()
        out["time_of_day"] = _png(fig, plt)
    return out


# ------------------------------------------------------------------------------------------ HTML

_CSS = """body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:0.85em;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 8px;
text-align:right}th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}.note{color:#a33}
.small{color:#666;font-size:0.85em}img{max-width:100%}"""


def _esc(x) -> str:
    return html.escape(str(x))


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(plots: Mapping[str, str], key: str, alt: str) -> str:
    return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{plots[key]}">' if key in plots else ""


def _metrics_table(main: BacktestResult, baselines: Sequence[BacktestResult]) -> str:
    cols = [main, *baselines]
    rows = []
    for key in (*M.METRIC_KEYS, "final_equity", "sharpe_ci95"):
        vals = []
        for r in cols:
            v = (float(r.equity["equity"][-1]) if key == "final_equity"
                 else (list(r.sharpe_ci) if r.sharpe_ci else None) if key == "sharpe_ci95" else r.metrics.get(key))
            vals.append(fmt(key, v))
        rows.append([LABELS.get(key, key), *vals])
    return _table(["metric", *(column_name(r) + (" *" if i == 0 else "") for i, r in enumerate(cols))], rows)


def _monthly_table(years, grid) -> str:
    rows = []
    for i, y in enumerate(years):
        row = grid[i]
        year_total = np.prod(1.0 + row[np.isfinite(row)]) - 1.0
        rows.append([y, *("" if not np.isfinite(v) else f"{100 * v:.2f}" for v in row), f"{100 * year_total:.2f}"])
    return _table(["year", *_MONTHS, "year"], rows)


def expert_regime_html(table: Mapping[str, Any]) -> str:
    """The MoE expert-by-regime grid (`evaluation.regimes.expert_regime_table`) as an HTML table: rows volatility
    terciles, columns trend; each cell the leading expert, its mean gate probability and the bar count."""
    rows = []
    for vi, vname in enumerate(table["vol_buckets"]):
        cells = []
        for ti in range(len(table["trend_buckets"])):
            lead, bars = table["leader"][vi][ti], table["bars"][vi][ti]
            share = None if lead is None else table["mean_gate"][vi][ti][lead]
            cells.append("-" if lead is None else f"e{lead} ({share:.2f}, {bars} bars)")
        rows.append([f"{vname} volatility", *cells])
    usage = ", ".join(f"e{i} {u:.2f}" if u is not None else f"e{i} n/a" for i, u in enumerate(table["usage"]))
    what = (f"{_esc(table.get('stage', 'model'))} on the {_esc(table.get('split', ''))} split, "
            f"{table['num_experts']} experts; volatility {_esc(table['vol_feature'])} terciles, trend "
            f"{_esc(table['trend_feature'])} beyond +-{table['trend_band']:.2g}; mean gate usage {usage}")
    return f"<p class='small'>{what}</p>" + _table(["", *table["trend_buckets"]], rows)


def _adaptation_rows(pre: Mapping, post: Mapping, keys) -> list[list[str]]:
    rows = []
    for k in keys:
        if k in pre or k in post:
            a, b = pre.get(k), post.get(k)
            rows.append([LABELS.get(k, k), fmt(k, a), fmt(k, b)])
    return rows


def adaptation_html(adaptation: Mapping[str, Any], plots: Mapping[str, str]) -> str:
    """MAML before/after: an `experiments.adapt` record (`before` / `after` backtest metrics) or the MAML
    stage's held-out evaluation (`own` / `cross` with `pre` / `post` episode summaries and the curve)."""
    parts = []
    if "before" in adaptation and "after" in adaptation:
        keys = [k for k in M.METRIC_KEYS if k in adaptation["before"]]
        parts.append(f"<p class='small'>{_esc(adaptation.get('source_model', 'model'))} adapted to "
                     f"{_esc(adaptation.get('symbol', ''))} with {_esc(adaptation.get('steps', '?'))} inner steps; "
                     f"backtest of the {_esc(adaptation.get('split', 'val'))} split before and after</p>")
        parts.append(_table(["metric", "before", "after"],
                            _adaptation_rows(adaptation["before"], adaptation["after"], keys)))
        return "".join(parts)
    for which in ("own", "cross"):
        ev = adaptation.get(which)
        if not ev:
            continue
        sym = adaptation.get(f"{which}_symbol") or ""
        ci = ev.get("improvement_ci95")
        ci_txt = "n/a" if not ci else f"[{ci[0]:.4g}, {ci[1]:.4g}]"
        parts.append(f"<p class='small'>{'trained' if which == 'own' else 'never-trained'} symbol {_esc(sym)}, "
                     f"{_esc(adaptation.get('split', ''))} split: {ev.get('num_tasks')} held-out windows, "
                     f"{ev.get('num_episodes')} paired episodes, {ev.get('adaptation_steps')} inner steps; mean "
                     f"return improvement {fmt('x', ev.get('improvement'))} (95% CI {ci_txt}); adaptation speed "
                     f"{ev.get('adaptation_speed')} steps</p>")
        keys = ("mean_episode_return", "win_rate", "profit_factor", "num_trades", "mean_max_drawdown")
        parts.append(_table(["held-out episodes", "before adaptation", "after"],
                            _adaptation_rows(ev.get("pre", {}), ev.get("post", {}), keys)))
        parts.append(_img(plots, f"curve_{which}", f"adaptation curve {which}"))
    return "".join(parts) or "<p class='small'>no adaptation record</p>"


def _adaptation_plots(adaptation: Mapping[str, Any], plt) -> dict[str, str]:
    out = {}
    for which in ("own", "cross"):
        curve = (adaptation.get(which) or {}).get("adaptation_curve")
        if curve:
            fig, ax = plt.subplots(figsize=(6, 2.6))
            ax.plot(range(len(curve)), curve, marker="o")
            ax.set_xlabel("inner adaptation steps")
            ax.set_ylabel("mean episode return")
            fig.tight_layout()
            out[f"curve_{which}"] = _png(fig, plt)
    return out


def render_tearsheet(main: BacktestResult, baselines: Sequence[BacktestResult] = (), *,
                     expert_regimes: Mapping[str, Any] | None = None, adaptation: Mapping[str, Any] | None = None,
                     plots: bool = True) -> tuple[str, list[str]]:
    """(the HTML page, notices). `plots=False` (or no matplotlib) leaves the figures out."""
    notices = []
    plt = _pyplot() if plots else None
    if plots and plt is None:
        notices.append(NO_MATPLOTLIB)
    dates = session_dates(main)
    years, grid = monthly_returns(dates, main.daily_returns)
    rf = M.daily_risk_free(main.risk_free_rate)
    roll = rolling_sharpe(main.daily_returns, ROLLING_SHARPE_SESSIONS, rf)
    tod = pnl_by_time_of_day(main.equity["timestamp"], main.equity["equity"])
    images: dict[str, str] = {}
    if plt is not None:
        shown = [b for b in baselines if b.policy != "random"]  # a cost sink whose scale flattens every curve
        images = _plots(main, shown, plt, years, grid, roll, tod)
        if adaptation:
            images.update(_adaptation_plots(adaptation, plt))

    m = main
    title = f"{m.symbol}: {column_name(m)} ({m.split} split)"
    notes = [n for n in (m.verdict,) if n]
    if m.synthetic:
        notes.append("SYNTHETIC DATA (data_tools.synth), not market data: these numbers say nothing about any market")
    notes += notices
    hold = m.metrics.get("avg_holding_bars")
    hold_txt = "" if hold is None else f"; average holding {hold:.1f} bars ({hold * m.bar_minutes:.0f} minutes)"
    body = [
        f"<h1>{_esc(title)}</h1>",
        f"<p>{_esc(m.start)} .. {_esc(m.end)} IST, {m.num_bars:,} bars of {m.bar_minutes} minutes, "
        f"{m.num_sessions} sessions; model {_esc(m.policy)}</p>",
        f"<p class='small'>costs {_esc(m.cost_model)}; lot size {m.lot_size:g}; slippage {m.slippage_ticks:g} "
        f"tick(s); initial capital {m.initial_capital:,.0f}; "
        f"{'overnight holding allowed' if m.allow_overnight else 'intraday (flat at each session end)'}; "
        f"risk-free {100 * m.risk_free_rate:g}% a year{_esc(hold_txt)}</p>",
        *(f"<p class='note'>note: {_esc(n)}</p>" for n in notes),
        "<h2>Metrics</h2>", _metrics_table(m, baselines),
        "<p class='small'>Definitions: docs/metrics.md. * = this tear sheet's model. n/a = undefined for this "
        "sample. daily_returns.csv beside this file holds the daily returns.</p>",
        "<h2>Equity against the baselines</h2>", _img(images, "equity", "equity"),
        "<h2>Underwater (drawdown from the running peak, bar level)</h2>", _img(images, "underwater", "drawdown"),
        "<h2>Monthly returns (%)</h2>", _img(images, "monthly", "monthly returns"), _monthly_table(years, grid),
        f"<h2>Rolling Sharpe ({ROLLING_SHARPE_SESSIONS} sessions)</h2>",
        _img(images, "rolling_sharpe", "rolling Sharpe") or
        f"<p class='small'>fewer than {ROLLING_SHARPE_SESSIONS} sessions, or no defined Sharpe</p>",
        f"<h2>Trade PnL ({len(m.trades['net_pnl'])} round trips)</h2>", _img(images, "trade_pnl", "trade PnL"),
        _trade_summary(m),
        "<h2>PnL by time of day</h2>", _img(images, "time_of_day", "PnL by time of day"),
        _table(["bar start (IST)", "net PnL", "bars"], [[lb, f"{s:,.2f}", int(c)] for lb, s, c in zip(*tod)]),
    ]
    if expert_regimes:
        body += ["<h2>Expert by market regime</h2>", expert_regime_html(expert_regimes)]
    if adaptation:
        body += ["<h2>MAML adaptation: before and after</h2>", adaptation_html(adaptation, images)]
    body.append(f"<p class='small'>jaxtrade tear sheet, written {_dt.datetime.now():%Y-%m-%d %H:%M}</p>")
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{_esc(title)}</title>"
            f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n")
    return page, notices


def _trade_summary(m: BacktestResult) -> str:
    pnl = m.trades["net_pnl"]
    if not len(pnl):
        return "<p class='small'>no round trips</p>"
    q = np.percentile(pnl, [5, 25, 50, 75, 95])
    return _table(["", "worst", "5%", "25%", "median", "75%", "95%", "best"],
                  [["net PnL (Rs)", *(f"{v:,.2f}" for v in (pnl.min(), *q, pnl.max()))]])


def write_tearsheet(main: BacktestResult, baselines: Sequence[BacktestResult], path, **kwargs) -> list[str]:
    """Write `path` (tearsheet.html); returns notices (e.g. no matplotlib). kwargs: see `render_tearsheet`."""
    page, notices = render_tearsheet(main, baselines, **kwargs)
    atomic.write_text(path, page)
    return notices
