"""Which expert of a mixture leads in which market regime (DESIGN section 4, stage 2): a greedy pass through a
split, each bar bucketed by volatility terciles and trend, the gate's mean probabilities per bucket; the
heat-map PNG and the report's text table.

    table = expert_regime_table(network, params, market, "val", env_params=...)
    plot_expert_regimes(table, "expert_regimes.png"); print(render_expert_regimes(table))
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from jaxtrade import env as trading_env
from jaxtrade import atomic
from jaxtrade.features import FEATURE_NAMES
from jaxtrade.networks import MoEActorCritic


VOL_BUCKETS = ("low", "mid", "high")
TREND_BUCKETS = ("down", "sideways", "up")


def _float_or_none(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def gate_trace(network: MoEActorCritic, params, env_params) -> dict[str, np.ndarray]:
    """Greedy run through one episode from `reset_to(env_params, 0)` (build `env_params` with
    `episode_sessions=None` to cover the whole split): per decision bar, `bar` index `[N]`, `gate_probs`
    `[N, E]`, `action` `[N]`. Host numpy arrays."""
    start = int(env_params.session_start[int(env_params.split_lo)])
    end = int(env_params.session_end[int(env_params.split_lo) + int(env_params.episode_sessions) - 1])
    n_steps = end - start

    @jax.jit
    def run(params, env_params):
        obs0, s0 = trading_env.reset_to(env_params, 0)
        key = jax.random.key(0)

        def body(carry, _):
            obs, s = carry
            d = network.apply(params, obs, method=network.details)
            action = jnp.argmax(d["logits"], -1).astype(jnp.int32)
            obs2, s2, _, _, _ = trading_env.step(key, s, action, env_params)
            return (obs2, s2), (s.t, d["gate_probs"], action)

        _, out = jax.lax.scan(body, (obs0, s0), None, length=n_steps)
        return out

    bar, gate, action = jax.device_get(run(params, env_params))
    return {"bar": np.asarray(bar), "gate_probs": np.asarray(gate), "action": np.asarray(action)}


def expert_regime_table(network: MoEActorCritic, params, market, split: str = "val", *, env_params=None,
                        vol_feature: str = "rvol_20", trend_feature: str = "logret_60",
                        trend_band: float = 0.5) -> dict:
    """Which expert leads in which market regime, on `split` (greedy evaluation through the env).

    Every decision bar of the split is bucketed by volatility terciles of `vol_feature` (unscaled with
    `market.scaler`; edges are the split's own 1/3 and 2/3 quantiles) and by trend: `trend_feature`
    (unscaled) below -band is "down", above +band "up", else "sideways", with band = `trend_band` x the
    split's standard deviation of that feature. For each of the 3 x 3 cells: bar count, mean gate
    probabilities and the leading expert (argmax of the mean; None for an empty cell).
    `env_params`: default `env.env_params(EnvConfig(), market, split, whole_split=True)` (the split as one
    episode under the default rules); the sequence passes its own.
    Returns a JSON-serialisable dict: `cells` (a list of per-cell dicts) and the same as 3 x 3 grids
    `leader`, `bars`, `mean_gate` (rows = vol low/mid/high, columns = trend down/sideways/up), plus
    `usage` (mean gate over all bars) and the bucket edges.
    """
    if env_params is None:
        config = trading_env.EnvConfig(split_fractions=market.split_fractions)
        env_params = trading_env.env_params(config, market, split, whole_split=True)
    trace = gate_trace(network, params, env_params)
    bars, gate = trace["bar"], trace["gate_probs"]
    num_experts = gate.shape[-1]
    feats = np.asarray(market.data.features)[bars].astype(np.float64)
    mean, std = np.asarray(market.scaler.mean), np.asarray(market.scaler.std)
    names = list(FEATURE_NAMES)
    for f in (vol_feature, trend_feature):
        if f not in names:
            raise ValueError(f"expert_regime_table: unknown feature {f!r}")
    iv, it = names.index(vol_feature), names.index(trend_feature)
    vol = feats[:, iv] * std[iv] + mean[iv]
    trend = feats[:, it] * std[it] + mean[it]
    vol_edges = np.quantile(vol, [1 / 3, 2 / 3]) if len(vol) else np.zeros(2)
    vol_bucket = np.digitize(vol, vol_edges)  # 0, 1, 2
    band = float(trend_band * np.std(trend)) if len(trend) else 0.0
    trend_bucket = np.where(trend < -band, 0, np.where(trend > band, 2, 1))

    cells, leader, counts, mean_gate = [], [], [], []
    for vi, vname in enumerate(VOL_BUCKETS):
        row_l, row_c, row_g = [], [], []
        for ti, tname in enumerate(TREND_BUCKETS):
            mask = (vol_bucket == vi) & (trend_bucket == ti)
            n = int(mask.sum())
            g = gate[mask].mean(0) if n else np.full(num_experts, np.nan)
            lead = int(np.argmax(g)) if n else None
            g_list = [_float_or_none(x) for x in g]
            cells.append({"vol": vname, "trend": tname, "bars": n, "leader": lead, "mean_gate": g_list,
                          "long_share": _float_or_none(np.mean(trace["action"][mask] > env_params.max_lots))
                          if n else None})
            row_l.append(lead)
            row_c.append(n)
            row_g.append(g_list)
        leader.append(row_l)
        counts.append(row_c)
        mean_gate.append(row_g)
    return {
        "symbol": market.symbol, "split": split, "num_bars": int(len(bars)), "num_experts": int(num_experts),
        "vol_feature": vol_feature, "trend_feature": trend_feature,
        "vol_buckets": list(VOL_BUCKETS), "trend_buckets": list(TREND_BUCKETS),
        "vol_edges": [float(x) for x in vol_edges], "trend_band": band,
        "usage": [_float_or_none(x) for x in (gate.mean(0) if len(gate) else np.full(num_experts, np.nan))],
        "cells": cells, "leader": leader, "bars": counts, "mean_gate": mean_gate,
    }


def plot_expert_regimes(table: Mapping[str, Any], path) -> str | None:
    """Heat maps (one panel per expert) of the mean gate probability in each volatility x trend cell, the
    leading expert's cells starred, bar counts in the first panel. Returns the path, or None (with a log
    notice) when matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logging.warning("plot_expert_regimes: matplotlib is not installed; skipping %s "
                        "(pip install 'jaxtrade[report]')", path)
        return None
    num_experts = int(table["num_experts"])
    g = np.array([[[np.nan if x is None else x for x in cell] for cell in row] for row in table["mean_gate"]],
                 dtype=np.float64)  # [3 vol, 3 trend, E]
    fig, axes = plt.subplots(1, num_experts, figsize=(3.2 * num_experts + 1.0, 3.4), squeeze=False)
    im = None
    for e, ax in enumerate(axes[0]):
        im = ax.imshow(g[:, :, e], vmin=0.0, vmax=1.0, cmap="viridis", origin="lower")
        ax.set_xticks(range(3), table["trend_buckets"])
        ax.set_yticks(range(3), table["vol_buckets"])
        ax.set_xlabel("trend")
        if e == 0:
            ax.set_ylabel("volatility")
        ax.set_title(f"expert {e}")
        for vi in range(3):
            for ti in range(3):
                val = g[vi, ti, e]
                if np.isnan(val):
                    continue
                star = "*" if table["leader"][vi][ti] == e else ""
                text = f"{val:.2f}{star}"
                if e == 0:
                    text += f"\nn={table['bars'][vi][ti]}"
                ax.text(ti, vi, text, ha="center", va="center", fontsize=8,
                        color="white" if val < 0.6 else "black")
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="mean gate probability")
    fig.suptitle(f"{table.get('symbol', '')} {table.get('split', '')}: expert gate by regime (* = leader)")
    atomic.save_figure(fig, path, dpi=100)
    plt.close(fig)
    return str(path)


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def render_expert_regimes(table: Mapping[str, Any]) -> str:
    """A text table: rows volatility terciles, columns trend; each cell the leading expert and its gate share."""
    vols, trends = table["vol_buckets"], table["trend_buckets"]
    lines = [f"Expert leading each market condition ({table['symbol']}, {table['split']} split, "
             f"{table['num_experts']} experts; cell = leader (mean gate prob, bars)); overall usage "
             + ", ".join(f"e{i} {_fmt(u)}" for i, u in enumerate(table["usage"])) + ":",
             "  " + "vol / trend".ljust(14) + "".join(f"{t:>22}" for t in trends)]
    for vi, vname in enumerate(vols):
        cells = []
        for ti in range(len(trends)):
            lead, bars = table["leader"][vi][ti], table["bars"][vi][ti]
            if lead is None:
                cells.append(f"{'-':>22}")
            else:
                share = table["mean_gate"][vi][ti][lead]
                cells.append(f"{f'e{lead} ({share:.2f}, {bars})':>22}")
        lines.append(f"  {vname + ' vol':<14}" + "".join(cells))
    return "\n".join(lines)
