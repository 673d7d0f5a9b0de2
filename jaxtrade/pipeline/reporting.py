"""The sequence's closing report: every symbol's final model (and each stage, and the baselines) backtested on the
report split under the run's market rules, the seed guide's targets, the MoE's expert-by-regime table, what early
stopping kept (and from how many evaluations), and with `--seeds N` the ensemble beside each member."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from jaxtrade import atomic, gates as G, policies, report
from jaxtrade.config import SequenceConfig
from jaxtrade.evaluation import regimes
from jaxtrade.pipeline.stages import expert_regimes, fmt


def write_report(cfg: SequenceConfig, contexts, stage_models, final_models, out, member_sections=None,
                 seed_models=None) -> Path:
    """Backtest the final model (and each stage, and the baselines) on the report split of every symbol;
    `member_sections`: symbol -> `members.report_members` (the ensemble and its members, with `--seeds N`);
    `seed_models`: {symbol: {stage: [each seed's params]}} (`--seeds N`): the final stage's seeds are backtested
    too, for the across-seed interval beside the chosen model."""
    out_dir = Path(cfg.run.output_dir)
    per_symbol, regime_sections, extra_sections = [], [], []
    member_sections = member_sections or {}
    split = cfg.run.report_split
    for symbol, (network, params, best) in final_models.items():
        ctx = contexts[symbol]
        pols = [policies.network_policy(network, params, f"final ({best})", source=f"{symbol}_final_model.pth ({best})")]
        if cfg.run.compare_stages:
            pols += [policies.network_policy(net, prm, stage, source=stage)
                     for stage, (net, prm) in stage_models[symbol].items()]
        pols += [policies.make_baseline(name, max_lots=cfg.env.max_lots, scaler=ctx.market.scaler)
                 for name in policies.BASELINES]
        main, *others = ctx.backtest_many(pols, split)
        report.write_symbol_outputs(main, others, out_dir / symbol)
        per_symbol.append((main, others))
        if symbol in member_sections:
            extra_sections.append(members_section(ctx, split, member_sections[symbol]))
        table = None
        if "moe" in stage_models[symbol]:
            net, prm = stage_models[symbol]["moe"]
            table = dict(expert_regimes(net, prm, ctx, split, out_dir / symbol / "expert_regimes.png"), stage="moe")
            regime_sections.append(regimes.render_expert_regimes(table))
        if cfg.run.tearsheet:
            from jaxtrade import tearsheet
            summary = Path(cfg.run.checkpoint_dir) / cfg.run.run_name / symbol / "summary.json"
            for notice in tearsheet.write_tearsheet(main, others, out_dir / symbol / "tearsheet.html",
                                                    expert_regimes=table,
                                                    adaptation=tearsheet.summary_adaptation(summary)):
                out.write(f"note: {notice}\n")
    header = [f"run {cfg.run.run_name}; split {split}; stages {','.join(cfg.run.stages)}",
              seed_targets_section(per_symbol), *early_stopping_lines(cfg, final_models)]
    if cfg.run.seeds > 1 and seed_models and cfg.run.final_model != "ensemble":  # the ensemble has its own section
        header.append(across_seeds_section(contexts, final_models, stage_models, seed_models, split))
    text = report.render_report(per_symbol, header_lines=header)
    if regime_sections or extra_sections:
        text += "\n" + "\n\n".join(extra_sections + regime_sections) + "\n"
    path = Path(cfg.run.report_file) if cfg.run.report_file else out_dir / f"{cfg.run.run_name}_report.txt"
    atomic.write_text(path, text)
    out.write(text)
    return path


def seed_targets_section(per_symbol) -> str:
    """The seed guide's performance targets (`gates.SEED_TARGETS`) and which the final model meets."""
    lines = [G.seed_targets_header()]
    for main, _ in per_symbol:
        checks = [f"{t.label} {fmt(value)} {'met' if met else 'NOT met'}"
                  for t, value, met in G.seed_target_checks(main.metrics)]
        lines.append(f"  {main.symbol} ({main.split}): " + "; ".join(checks))
    return "\n".join(lines)


def early_stopping_lines(cfg: SequenceConfig, symbols) -> list[str]:
    """What early stopping kept, per symbol and stage, with the number of evaluations it chose from."""
    lines = []
    for symbol in symbols:
        path = Path(cfg.run.checkpoint_dir) / cfg.run.run_name / symbol / "summary.json"
        stages = json.loads(path.read_text()).get("stages", {}) if path.exists() else {}
        members = json.loads(path.read_text()).get("members", {}) if path.exists() else {}
        for stage, rec in stages.items():
            es = rec.get("early_stopping")
            if es and stage in cfg.run.stages:
                lines.append(f"  {symbol} {stage}: {es['why']}")
            for m in (members.get(stage) or [])[1:]:  # the other seeds' members (--seeds N)
                if m.get("early_stopping") and stage in cfg.run.stages:
                    lines.append(f"  {symbol} {stage} seed {m.get('seed')}: {m['early_stopping']['why']}")
    if lines:
        lines.insert(0, f"Early stopping (--eval_every {cfg.run.eval_every}; validation {cfg.run.final_metric} "
                        f"evaluated on device; the kept iteration's validation score is the best of that many, so "
                        f"it is optimistic):")
    return lines


MEMBER_KEYS = ("sharpe", "total_return", "max_drawdown", "win_rate", "profit_factor", "num_trades")


def members_section(ctx, split: str, info: dict) -> str:
    """The ensemble beside each member on `split`, and the members' interval (min..max) and mean."""
    ens_net, ens_params = info["ensemble"]
    pols = [policies.network_policy(ens_net, ens_params, "ensemble")]
    pols += [policies.network_policy(net, prm, f"seed {seed}") for seed, net, prm in info["members"]]
    results = ctx.backtest_many(pols, split)
    rows = []
    for key in MEMBER_KEYS:
        vals = [r.metrics.get(key) for r in results]
        nums = [v for v in vals[1:] if v is not None]
        interval = f"{report.fmt(key, min(nums))} .. {report.fmt(key, max(nums))}" if nums else "n/a"
        mean = report.fmt(key, float(np.mean(nums))) if nums else "n/a"
        rows.append([report.LABELS.get(key, key), *(report.fmt(key, v) for v in vals), interval, mean])
    header = ["metric", f"ensemble ({info['rule']})", *(f"seed {seed}" for seed, _, _ in info["members"]),
              "members min .. max", "members mean"]
    n = len(info["members"])
    return (f"== {ctx.symbol}: the {info['stage']} stage's {n} seeds and their ensemble, {split} split ==\n\n"
            + report.table(header, rows))


def across_seeds_section(contexts, final_models, stage_models, seed_models, split: str) -> str:
    """The final stage's N seeds on the report split: the chosen (best-on-validation) seed beside the median and
    range of all seeds' Sharpe with a 95% bootstrap interval of their mean, and how many models were tried."""
    del stage_models  # the chosen model is final_models'; kept for the call's symmetry with write_report
    from jaxtrade.evaluation import stats

    lines = ["Across seeds (--seeds): the final model is the best seed on validation of the best stage"]
    for symbol, (network, _, best) in final_models.items():
        seeds = seed_models.get(symbol, {}).get(best, [])
        tried = sum(len(v) for v in seed_models.get(symbol, {}).values())
        if len(seeds) < 2:
            continue
        results = contexts[symbol].backtest_many(
            [policies.network_policy(network, p, f"{best} seed {i}") for i, p in enumerate(seeds)], split)
        sharpes = [r.metrics.get("sharpe") for r in results]
        ok = [float(v) for v in sharpes if v is not None]
        if len(ok) >= 2:
            lo, hi = stats.bootstrap_interval("mean", ok, reps=5000)
            spread = (f"{split} Sharpe across {len(seeds)} seeds: median {fmt(float(sorted(ok)[(len(ok) - 1) // 2]))}, "
                      f"range {fmt(min(ok))} .. {fmt(max(ok))}, mean {fmt(sum(ok) / len(ok))} (95% bootstrap "
                      f"[{fmt(lo)}, {fmt(hi)}])")
        else:
            spread = f"{split} Sharpe defined for {len(ok)} of {len(seeds)} seeds"
        lines.append(f"  {symbol}: {spread}; models tried: {tried} ({len(seed_models[symbol])} stage(s) x "
                     f"{len(seeds)} seeds)")
    return "\n".join(lines)
