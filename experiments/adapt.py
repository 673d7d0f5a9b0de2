"""Adapt a trained model to a symbol (possibly never trained on) or to recent data with MAML's inner loop.

    python -m experiments.adapt --model M --symbol S --processed_data_dir P [--output_dir O] [--steps N]

`--model`: a jaxtrade `.pth` file or an Orbax stage directory (`checkpoints/{run}/{symbol}/{stage}`, its latest
step; its meta's "network" entry rebuilds the network), read by the one model loader (`policies.load_model`).
It adapts and compares under the market rules the model trained with (the `EnvConfig` its file records); a
market-rule flag given on the command line overrides one of them and says so. Support data: the symbol's most recent
`--support_sessions` sessions of the training split (0: the whole training split), i.e. the sessions just
before validation. `--steps` inner SGD steps (default: the MAML stage's `inner_loop_steps`, 7) on the PPO-style
inner loss of support rollouts collected once with the given model (`jaxtrade.agents.maml.adapt_on_support`, the
inner loop of training).
Writes an Orbax checkpoint (`{output_dir}/orbax`, meta with "network") and `{output_dir}/{symbol}_adapted.pth`
(default output directory `checkpoints/adapted/{symbol}`), and prints the validation-split backtest metrics
(float64 money) before and after adaptation side by side.
"""

from __future__ import annotations

from pathlib import Path

from absl import flags

from jaxtrade import cli
from jaxtrade.data import SPLITS
from jaxtrade.env import EnvConfig
from jaxtrade.flag_help import field_docs, flag_definition, sentence

FLAGS = flags.FLAGS
# The market-rule flags: every EnvConfig field, under its own name (--cost_model, --slippage_ticks, ...).
ENV_FIELDS = ("cost_model", "cost_bps", "slippage_ticks", "lot_size", "dated_lots", "max_lots", "initial_capital",
              "episode_sessions", "allow_overnight", "square_off_time", "split_fractions")
# Without rules recorded in the model file: the EnvConfig defaults at the seed's Rs 1 lakh.
ADAPT_ENV = EnvConfig(initial_capital=100_000.0)


def flag_of(field: str) -> str:
    return f"--{field}"


def define_flags() -> None:
    """This command's flags (idempotent: other commands' flags of the same name are left as they are)."""
    def define(fn, name, *args):
        if name not in FLAGS:
            fn(name, *args)

    define(flags.DEFINE_string, "model", None, "A jaxtrade .pth file or an Orbax stage directory.")
    define(flags.DEFINE_string, "symbol", None, "Symbol to adapt to (its processed Parquet file).")
    define(flags.DEFINE_string, "processed_data_dir", "data/processed", "Folder of processed Parquet files.")
    define(flags.DEFINE_string, "output_dir", None, "Output folder (default: checkpoints/adapted/{symbol}).")
    define(flags.DEFINE_integer, "steps", None, "Inner adaptation steps (default: --maml.inner_loop_steps's, 7).")
    define(flags.DEFINE_float, "inner_learning_rate", None,
           "Inner SGD step size (default: --maml.inner_learning_rate's, 0.1).")
    define(flags.DEFINE_integer, "support_sessions", 20,
           "Most recent training sessions used as support data (0: all).")
    define(flags.DEFINE_integer, "support_num_envs", 64, "Parallel support episodes.")
    define(flags.DEFINE_integer, "support_num_steps", 256, "Support rollout length (steps per episode).")
    define(flags.DEFINE_enum, "split", "val", list(SPLITS), "Split the before/after backtests run on.")
    define(flags.DEFINE_integer, "seed", 0, "Random seed of the support rollouts.")
    for field in ENV_FIELDS:
        default = getattr(ADAPT_ENV, field)
        help_text = (f"{sentence(field_docs(EnvConfig)[field])} Default: the model's own training setting, else "
                     f"{default if default != '' else 'none'}.")
        fn, args = flag_definition(EnvConfig, field, default, help_text)
        define(fn, field, *args)


def adapt_rules(model_meta, given: dict):
    """(the EnvConfig to adapt and compare under, lines to print): the model's recorded rules, `given` (the
    market-rule flags typed) overriding them with a notice each."""
    from jaxtrade.policies import model_env_config, rules_for_model

    return rules_for_model(model_env_config(model_meta, "--model"), ADAPT_ENV, given, flag_of)


def build_envs(rules: EnvConfig, processed_dir, symbol: str, split: str, seed: int = 0):
    """(float32 market, the training split's EnvParams for the support rollouts, float64 market, the backtest
    config of the before/after comparison): everything from `rules` through `env.env_params`."""
    import jax
    import jax.numpy as jnp

    from jaxtrade import backtest as B, env as E

    market = E.market_for(rules, processed_dir, symbol)
    support = E.env_params(rules, market, "train")
    with jax.enable_x64(True):
        market64 = E.market_for(rules, processed_dir, symbol, price_dtype=jnp.float64)
    return market, support, market64, B.BacktestConfig(env=rules, split=split, seed=seed)


def _fmt(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def main(argv) -> int:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxtrade import backtest as B, env as E, export
    from jaxtrade.agents import maml
    from jaxtrade.agents.ppo import PPOConfig
    from jaxtrade.checkpoints import StageCheckpointer
    from jaxtrade.errors import InputError
    from jaxtrade.jsonio import to_json
    from jaxtrade.policies import load_model, network_policy

    if not FLAGS.model or not FLAGS.symbol:
        raise InputError("--model and --symbol are required")
    from jaxtrade.config import env_overrides
    given = env_overrides(FLAGS, ENV_FIELDS, flag_of)
    cfg = maml.MAMLConfig()
    steps = cfg.inner_loop_steps if FLAGS.steps is None else FLAGS.steps
    if steps < 1:
        raise InputError(f"--steps must be >= 1 (adaptation steps), got {steps}")
    from jaxtrade.data import SPLITS
    if FLAGS.split not in SPLITS:
        raise InputError(f"--split: unknown split {FLAGS.split!r} (choose from {', '.join(SPLITS)})")
    lr = cfg.inner_learning_rate if FLAGS.inner_learning_rate is None else FLAGS.inner_learning_rate
    cfg = cfg.replace(inner_loop_steps=steps, inner_learning_rate=lr, support_num_envs=FLAGS.support_num_envs,
                      support_num_steps=FLAGS.support_num_steps)
    model = load_model(FLAGS.model)
    params, network, model_meta = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), model.params), \
        model.network, model.config
    # The model adapts and is compared under the rules it trained with (its position features, for one, are a
    # percentage of its training capital); a market-rule flag overrides one of them with a notice.
    rules, lines = adapt_rules(model_meta, given)
    for line in lines:
        print(line)

    market, env_params, market64, bt_cfg = build_envs(rules, FLAGS.processed_data_dir, FLAGS.symbol, FLAGS.split,
                                                    FLAGS.seed)
    export.check_observation(model_meta, list(E.OBS_NAMES), f"--model {FLAGS.model}")
    lo, hi = market.splits["train"]
    n_actions = int(network.num_actions)
    if n_actions != env_params.num_actions:
        raise InputError(f"--max_lots={rules.max_lots} gives {env_params.num_actions} actions but the model has "
                         f"{n_actions}")
    sup_lo = lo if FLAGS.support_sessions <= 0 else max(lo, hi - FLAGS.support_sessions)
    if hi - sup_lo < rules.episode_sessions:
        raise InputError(f"{FLAGS.symbol}: the support range has {hi - sup_lo} sessions, fewer than "
                         f"--episode_sessions={rules.episode_sessions}")
    support_params = maml.with_range(env_params, sup_lo, hi)

    @jax.jit
    def run_adapt(p, key):
        (adapted, losses), traj = maml.adapt_on_support(network.apply, p, support_params, key, cfg, PPOConfig())
        return adapted, losses, maml.window_return(traj)

    adapted, losses, support_return = run_adapt(params, jax.random.key(FLAGS.seed))
    losses = np.asarray(losses)

    out_dir = Path(FLAGS.output_dir or f"checkpoints/adapted/{FLAGS.symbol}")
    out_dir.mkdir(parents=True, exist_ok=True)
    net_cfg = export.network_config(network, obs_dim=len(E.OBS_NAMES))
    with jax.enable_x64(True):
        results = {}
        for name, p in (("before", params), ("after", adapted)):
            pol = network_policy(network, p, f"{name} adaptation", source=str(FLAGS.model))
            results[name] = B.backtest(market64, pol, bt_cfg).metrics
    record = {"source_model": str(FLAGS.model), "symbol": FLAGS.symbol, "steps": steps, "inner_learning_rate": lr,
              "env_config": rules.to_dict(),
              "support_sessions": [int(sup_lo), int(hi)], "support_return": float(support_return),
              "inner_losses": [float(x) for x in losses], "split": FLAGS.split,
              "before": results["before"], "after": results["after"]}
    ckpt = StageCheckpointer(out_dir / "orbax", keep=1)
    ckpt.save(steps, {"params": adapted},
              {"stage": "adapted", "symbol": FLAGS.symbol, "network": net_cfg, "iteration": steps,
               "complete": True, "record": to_json(record), "env_config": rules.to_dict()})
    ckpt.close()
    pth = export.export_pth(out_dir / f"{FLAGS.symbol}_adapted.pth", adapted, network, symbol=FLAGS.symbol,
                            stage="adapted", obs_names=list(E.OBS_NAMES), scaler=market.scaler.to_dict(),
                            metrics=results["after"], env_config=rules.to_dict(),
                            extra={k: v for k, v in to_json(record).items()
                                   if k not in ("before", "after", "env_config")})
    print(f"adapted {FLAGS.model} to {FLAGS.symbol}: {steps} inner steps (lr {lr:g}) on support sessions "
          f"[{sup_lo}, {hi}) of the training split ({cfg.support_num_envs} x {cfg.support_num_steps} steps); "
          f"inner loss {losses[0] if len(losses) else float('nan'):.4f} -> "
          f"{losses[-1] if len(losses) else float('nan'):.4f}")
    keys = [k for k in results["before"] if isinstance(results["before"][k], (int, float, type(None)))]
    print(f"{FLAGS.split} split ({FLAGS.symbol}):")
    print(f"  {'metric':<16} {'before':>12} {'after':>12}")
    for k in keys:
        print(f"  {k:<16} {_fmt(results['before'][k]):>12} {_fmt(results['after'][k]):>12}")
    print(f"checkpoint: {out_dir / 'orbax'}\nmodel: {pth}")
    return 0


def run_main(argv=None) -> None:
    define_flags()
    cli.run(main, argv)


if __name__ == "__main__":
    run_main()
