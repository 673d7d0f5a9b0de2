"""The PPO -> MoE -> MAML sequence (DESIGN section 4): stages, resume, gates and progression, the final-model
choice, progress and the report. It imports the trainers (`jaxtrade.agents`), the gates, the evaluation and the
backtester; none of them imports it.

    from jaxtrade.pipeline import run_sequence
    run_sequence(config.default_config(), out=sys.stdout)

`context`: one symbol's data and market rules; `stages`: what each stage trains and how it is judged;
`train_stage`: one stage's training, checkpoints and progression; `final`: the final model; `reporting`: the
test-split report; `progress`: the progress line; `sequence`: the whole run.
"""

from jaxtrade.pipeline.sequence import resolve_symbols, run_sequence

__all__ = ["resolve_symbols", "run_sequence"]
