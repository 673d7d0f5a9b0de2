"""The sequence's closing report: every symbol's final model (and each stage, and the baselines) backtested on the
report split under the run's market rules, the seed guide's targets, and the MoE's expert-by-regime table."""

from __future__ import annotations

from pathlib import Path

from jaxtrade import atomic, gates as G, policies, report
from jaxtrade.config import SequenceConfig
from jaxtrade.evaluation import regimes
from jaxtrade.pipeline.stages import expert_regimes, fmt


def write_report(cfg: SequenceConfig, contexts, stage_models, final_models, out) -> Path:
    """Backtest the final model (and each stage, and the baselines) on the report split of every symbol."""
    out_dir = Path(cfg.run.output_dir)
    per_symbol, regime_sections = [], []
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
              seed_targets_section(per_symbol)]
    text = report.render_report(per_symbol, header_lines=header)
    if regime_sections:
        text += "\n" + "\n\n".join(regime_sections) + "\n"
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
