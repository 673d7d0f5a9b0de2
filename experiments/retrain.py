"""`python -m experiments.retrain --run_dir R --symbol S --processed_data_dir P [--method ppo|maml]`: fine-tune a
run's final model on the sessions appended to S's processed file since the run, keep it only if it beats the old
model on the most recent held-out sessions by `--margin`, and record the lineage in R/S/summary.json
(`jaxtrade.pipeline.retrain`; docs/cli.md).

Exit codes: 0 done (whichever model was kept), 2 bad flags or data (newer sessions overlapping the run's training
data are refused with one line).
"""

from __future__ import annotations

import sys

from absl import flags

FLAGS = flags.FLAGS


def define_flags() -> None:
    if "run_dir" in FLAGS:
        return
    flags.DEFINE_string("run_dir", None, "The run to retrain: checkpoints/<run_name> (holds <symbol>/summary.json).")
    flags.DEFINE_string("symbol", None, "The symbol whose final model is retrained.")
    flags.DEFINE_string("processed_data_dir", "data/processed",
                        "Processed {symbol}.parquet holding the run's sessions with newer ones appended.")
    flags.DEFINE_enum("method", "ppo", ["ppo", "maml"],
                      "ppo: a PPO continuation from the final model; maml: MAML's inner loop on the newer sessions.")
    flags.DEFINE_integer("iterations", None, "PPO iterations of the continuation (default: a tenth of the run's "
                         "--ppo.num_iterations, at least 1).")
    flags.DEFINE_float("margin", 0.1, "Keep the new model only if its held-out --final_metric (the run's) beats the "
                       "old model's by more than this (absolute, in the metric's units).")
    flags.DEFINE_integer("holdout_sessions", 0, "The most recent sessions held out to compare old and new (0: a "
                         "third of the newer sessions, at least 1).")
    flags.DEFINE_string("since", None, "First day (YYYY-MM-DD) of the newer sessions (default: the day after the "
                        "last session the run saw; earlier is refused).")
    flags.DEFINE_integer("retrain_seed", 0, "Key of the fine-tuning rollouts.")


def main(argv) -> int:
    del argv
    from jaxtrade.errors import InputError
    from jaxtrade.pipeline.retrain import retrain

    if not FLAGS.run_dir or not FLAGS.symbol:
        raise InputError("--run_dir and --symbol are required")
    retrain(FLAGS.run_dir, FLAGS.symbol, FLAGS.processed_data_dir, method=FLAGS.method, iterations=FLAGS.iterations,
            margin=FLAGS.margin, holdout_sessions=FLAGS.holdout_sessions, since=FLAGS.since, seed=FLAGS.retrain_seed,
            out=sys.stdout)
    return 0


def run_main(argv=None) -> None:
    from jaxtrade.cli import run
    define_flags()
    run(main, argv)


if __name__ == "__main__":
    run_main()
