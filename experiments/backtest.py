"""Backtest trained models or baselines over a split: the seed's `run_backtest.py` (DESIGN sections 5, 6, 9).

    python -m experiments.backtest [--process-data] [--raw-data-dir D] [--processed-data-dir D]
        [--symbols S ... | all] [--initial-capital X] [--report-file F] [--output-dir DIR]
        [--split train|val|test|all] [--policy NAME | --model PATH] [--cost-model M] [--slippage-ticks N]
        [--lot-size N] [--allow-overnight] [--checkpoint-dir D] [--run NAME] [--tearsheet]
        [--risk-free-rate R]

With neither --model nor --policy each symbol's model is found by the loading priority
(`jaxtrade.checkpoints.find_model`): in the most recent run under --checkpoint-dir holding a finished model of the
symbol (or in --run), final > maml > moe > ppo, each as its `.pth` file or else its Orbax checkpoint; the output
names what was loaded and from which run, which run was chosen when several hold models, and which partly
finished stage was skipped and why. A symbol with no model at all runs the momentum baseline instead, and the
output says so. The flat, buy-and-hold, random and momentum baselines always run beside it. Outputs are staged
under temporary names and moved into place only when every symbol has finished, so a failed run leaves no report
that looks complete.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

from absl import flags

from jaxtrade.errors import InputError

FLAGS = flags.FLAGS
DEFAULT_RAW_DIR = "data/raw"
SPLITS = ("train", "val", "test", "all")
COST_MODELS = ("zero", "bps", "nse_futures", "nse_options")


def define_flags() -> None:
    """Define this command's flags (idempotent: safe to call from several entry points or tests)."""
    def define(fn, name, *args, **kwargs):
        if name not in FLAGS:
            fn(name, *args, **kwargs)

    define(flags.DEFINE_boolean, "process_data", False,
           "Process raw data into the processed directory first (data_tools); with the default raw directory "
           "absent or empty, generate the SYNTHETIC default market.")
    define(flags.DEFINE_string, "raw_data_dir", DEFAULT_RAW_DIR, "Raw bar files (CSV, TXT, Parquet).")
    define(flags.DEFINE_string, "processed_data_dir", "data/processed", "Processed {symbol}.parquet files.")
    define(flags.DEFINE_list, "symbols", None, "Symbols to backtest, or 'all' (default: all processed).")
    define(flags.DEFINE_float, "initial_capital", 100_000.0,
           "Starting capital in rupees (a trained model that records its training capital runs at that instead, "
           "unless this flag is given).")
    define(flags.DEFINE_string, "report_file", None,
           "Text report path (default: {output_dir}/backtest_report.txt); it is also printed.")
    define(flags.DEFINE_string, "output_dir", "reports", "Per-symbol outputs go to {output_dir}/{symbol}/.")
    define(flags.DEFINE_enum, "split", "test", list(SPLITS), "Which split to backtest.")
    define(flags.DEFINE_string, "policy", None,
           "A baseline to backtest as the main policy: flat, buy_and_hold, random, momentum (momentum_N for "
           "N in 1, 5, 15, 60).")
    define(flags.DEFINE_string, "model", None, "A trained model: a .pth file or an Orbax stage directory.")
    define(flags.DEFINE_enum, "cost_model", "nse_futures", list(COST_MODELS), "Transaction-cost model.")
    define(flags.DEFINE_float, "slippage_ticks", 0.0, "Slippage per fill in ticks (0.05 points), against you.")
    define(flags.DEFINE_float, "lot_size", None,
           "Units per lot (default: the symbol's current NSE lot; 1 for an unknown symbol).")
    define(flags.DEFINE_boolean, "allow_overnight", False, "Hold positions across sessions (default intraday).")
    define(flags.DEFINE_string, "checkpoint_dir", "checkpoints", "Where trained runs are looked for.")
    define(flags.DEFINE_string, "run", None,
           "Load models from this run ({checkpoint_dir}/{run}) instead of the most recent run holding the symbol's "
           "model.")
    define(flags.DEFINE_integer, "max_lots", 1, "Largest position in lots (actions -max_lots..max_lots).")
    define(flags.DEFINE_integer, "seed", 0, "Seed of the random baseline.")
    define(flags.DEFINE_boolean, "plots", True, "Write equity.png per symbol (needs matplotlib).")
    define(flags.DEFINE_boolean, "tearsheet", False,
           "Also write {output_dir}/{symbol}/tearsheet.html: one self-contained page of plots and tables "
           "(plots need matplotlib).")
    define(flags.DEFINE_float, "risk_free_rate", 0.0,
           "Annual risk-free rate (0.065 = 6.5%) that Sharpe and Sortino subtract, per session compounded.")


def _check_flags() -> None:
    F = FLAGS
    if not F.initial_capital > 0:
        raise InputError(f"--initial-capital must be positive, got {F.initial_capital:g}")
    if not F.slippage_ticks >= 0:
        raise InputError(f"--slippage-ticks must be >= 0, got {F.slippage_ticks:g}")
    if F.lot_size is not None and not F.lot_size > 0:
        raise InputError(f"--lot-size must be positive, got {F.lot_size:g}")
    if F.max_lots < 1:
        raise InputError(f"--max-lots must be >= 1, got {F.max_lots}")
    if not -1.0 < F.risk_free_rate < 1.0:
        raise InputError(f"--risk-free-rate: expected an annual rate as a fraction (0.065 for 6.5%), got "
                         f"{F.risk_free_rate:g}")
    if F.model and F.policy:
        raise InputError("--model and --policy: give one of them, not both")
    if F.run is not None and (F.model or F.policy):
        raise InputError(f"--run: picks the run whose models are loaded; it does not combine with "
                         f"{'--model' if F.model else '--policy'}")
    if F.run is not None:
        from jaxtrade.checkpoints import run_directory
        run_directory(F.checkpoint_dir, F.run)  # a clear error before any data is processed
    if F.policy:
        from jaxtrade.policies import is_baseline, make_baseline
        if not is_baseline(F.policy):
            make_baseline(F.policy)  # raises the InputError listing the choices
    if F.model and not Path(F.model).exists():
        raise InputError(f"--model: {F.model} not found")
    if F.report_file:
        parent = Path(F.report_file).parent
        if parent.exists() and not parent.is_dir():
            raise InputError(f"--report-file: {parent} is not a directory")
        if Path(F.report_file).is_dir():
            raise InputError(f"--report-file: {F.report_file} is a directory")
    out = Path(F.output_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"--output-dir: {out} exists and is not a directory")


def _process_data() -> None:
    F = FLAGS
    try:
        from data_tools.process import process_directory
        from data_tools.readers import list_raw_files
        from data_tools.synth import ensure_default_data
    except ImportError as e:
        raise InputError(f"--process-data: data_tools is not available ({e})") from None
    raw, processed = Path(F.raw_data_dir), Path(F.processed_data_dir)
    if F.raw_data_dir == DEFAULT_RAW_DIR and (not raw.is_dir() or not list_raw_files(raw)):
        ensure_default_data(raw, processed, out=sys.stdout)
        return
    symbols = None if not F.symbols or [s.lower() for s in F.symbols] == ["all"] else list(F.symbols)
    result = process_directory(raw, processed, symbols=symbols, out=sys.stdout, err=None)
    if not result.ok:
        what, msg = result.failures[0]
        more = f" (and {len(result.failures) - 1} more failure(s))" if len(result.failures) > 1 else ""
        raise InputError(f"--process-data: {msg}{more}")


def _symbols(processed_dir: Path) -> list[str]:
    from jaxtrade.data import list_symbols
    F = FLAGS
    available = list_symbols(processed_dir)
    if not F.symbols or [s.lower() for s in F.symbols] == ["all"]:
        if not available:
            raise InputError(f"{processed_dir}: no processed symbols (run with --process-data)")
        return available
    if "all" in [s.lower() for s in F.symbols]:
        raise InputError("--symbols: 'all' cannot be combined with symbol names")
    by_lower: dict[str, list[str]] = {}
    for name in available:
        by_lower.setdefault(name.lower(), []).append(name)
    # `--symbols nifty` names NIFTY when that is the only match in another case (data_tools.process upper-cases).
    wanted = [s if s in available or len(by_lower.get(s.lower(), [])) != 1 else by_lower[s.lower()][0]
              for s in F.symbols]
    missing = [s for s in wanted if s not in available]
    if missing:
        raise InputError(f"--symbols: no processed data for {', '.join(missing)} in {processed_dir} "
                         f"(available: {', '.join(available) or 'none'})")
    return list(dict.fromkeys(wanted))


def _choose_policy(market, shared_model):
    """(policy, lines saying what was chosen: notes first, then the choice)."""
    from jaxtrade import checkpoints as C, policies as P
    F = FLAGS
    if shared_model is not None:
        return shared_model, [f"model {shared_model.source}"]
    if F.policy:
        return P.make_baseline(F.policy, max_lots=F.max_lots, scaler=market.scaler), [f"policy {F.policy}"]
    search = C.find_model(F.checkpoint_dir, market.symbol, run=F.run)
    if search.found is not None:
        return (P.load_policy(search.found.path),
                [*search.notes, f"model {search.found.describe()} ({C.PRIORITY_TEXT})"])
    return (P.make_baseline("momentum", max_lots=F.max_lots, scaler=market.scaler),
            [*search.notes, f"no trained model ({search.looked} not found): ran the momentum baseline instead"])


def _load_model_flag():
    """The --model policy; a stage directory whose latest checkpoint is not finished loads as asked, said."""
    from jaxtrade import checkpoints as C, policies as P
    path = Path(FLAGS.model)
    if path.is_dir():
        finished, why = C.stage_status(path)
        if finished is False:
            print(f"notice: --model {path}: {why}; loading that checkpoint as asked, not a finished stage",
                  flush=True)
    return P.load_policy(path)


def _config_for(policy, config):
    """(the backtest config for `policy`, lines to print). A trained model acts as in training only at its training
    capital (its unrealised-PnL feature is a percentage of capital), so without `--initial-capital` the
    model's own capital is used; cost and slippage stay the flags' (the seed's defaults) and a difference from
    training is said."""
    import dataclasses

    from jaxtrade.policies import model_capital
    env = getattr(policy, "training_env", None)
    if not env:
        return config, []
    capital, line = model_capital(env, FLAGS.initial_capital, FLAGS["initial_capital"].present, "--initial-capital")
    config = dataclasses.replace(config, initial_capital=capital)
    lines = [line] if line else []
    differs = []
    if env.get("slippage_ticks") is not None and float(env["slippage_ticks"]) != config.slippage_ticks:
        differs.append(f"slippage {float(env['slippage_ticks']):g} ticks (here {config.slippage_ticks:g})")
    if env.get("cost_model") and env["cost_model"] != config.cost_model:
        differs.append(f"cost model {env['cost_model']} (here {config.cost_model})")
    if differs:
        lines.append(f"trained with {', '.join(differs)}: pass --slippage-ticks / --cost-model to backtest as "
                     f"trained")
    return config, lines


def _write_tearsheet(market, policy, config, main_result, baselines, path) -> list[str]:
    """tearsheet.html for one symbol, with the expert-by-regime table of a mixture-of-experts model and the
    before/after numbers of an adapted one when the model file gives them."""
    from jaxtrade import backtest as B, tearsheet

    extras = {}
    if policy.source and Path(policy.source).exists():
        extras = tearsheet.model_extras(policy.source, market, B.build_env(market, config)[0], config.split)
    return tearsheet.write_tearsheet(main_result, baselines, path, plots=FLAGS.plots, **extras)


def _replace_dir(src: Path, dst: Path) -> None:
    trash = None
    if dst.exists():
        trash = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        dst.rename(trash)
    src.rename(dst)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)


def main(argv) -> int:
    del argv
    F = FLAGS
    t0 = time.perf_counter()
    _check_flags()
    if F.process_data:
        _process_data()
    processed_dir = Path(F.processed_data_dir)
    symbols = _symbols(processed_dir)

    import logging
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)  # no "Unable to initialize TPU" line
    from jaxtrade import backtest as B
    B.enable_x64()
    import jax.numpy as jnp
    from jaxtrade import policies as P, report as R
    from jaxtrade.data import load_market

    markets = [load_market(processed_dir, s, price_dtype=jnp.float64) for s in symbols]
    shared_model = _load_model_flag() if F.model else None
    config = B.BacktestConfig(split=F.split, cost_model=F.cost_model, slippage_ticks=F.slippage_ticks,
                              lot_size=F.lot_size, allow_overnight=F.allow_overnight,
                              initial_capital=F.initial_capital, max_lots=F.max_lots, seed=F.seed,
                              risk_free_rate=F.risk_free_rate)

    out_dir = Path(F.output_dir)
    report_path = Path(F.report_file) if F.report_file else out_dir / "backtest_report.txt"
    for flag, d in (("--output-dir", out_dir), ("--report-file", report_path.parent)):
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(f"{flag}: cannot create directory {d} ({e.strerror or e})") from None
    staging = out_dir / f".staging-{os.getpid()}"
    report_tmp = report_path.with_name(f".{report_path.name}.tmp-{os.getpid()}")
    committed = False
    try:
        staging.mkdir()
        per_symbol, notices, capitals, chosen_lines = [], [], {}, []
        for market in markets:
            t_sym = time.perf_counter()
            policy, chosen = _choose_policy(market, shared_model)
            for line in chosen:
                print(f"{market.symbol}: {line}", flush=True)
            chosen_lines += [f"{market.symbol}: {line}" for line in chosen]
            sym_config, lines = _config_for(policy, config)
            for line in lines:
                print(f"{market.symbol}: {line}", flush=True)
            capitals[market.symbol] = sym_config.initial_capital
            others = [P.make_baseline(name, max_lots=F.max_lots, scaler=market.scaler)
                      for name in P.BASELINES if name != policy.name or policy.source]
            main_result, *baselines = B.backtest_many(market, [policy, *others], sym_config)
            notices += R.write_symbol_outputs(main_result, baselines, staging / market.symbol, plot=F.plots)
            if F.tearsheet:
                notices += _write_tearsheet(market, policy, sym_config, main_result, baselines,
                                            staging / market.symbol / "tearsheet.html")
            per_symbol.append((main_result, baselines))
            print(f"{market.symbol}: {F.split} split {main_result.start[:10]} .. {main_result.end[:10]}, "
                  f"{main_result.num_bars:,} bars, {main_result.num_sessions} sessions; "
                  f"{1 + len(baselines)} policies in {time.perf_counter() - t_sym:.1f} s", flush=True)
        if len(set(capitals.values())) == 1:
            capital = f"initial capital {next(iter(capitals.values())):,.0f}"
        else:
            capital = "initial capital " + ", ".join(f"{s} {c:,.0f}" for s, c in capitals.items())
        header = [f"split: {F.split}; symbols: {', '.join(symbols)}; {capital}", *chosen_lines]
        text = R.render_report(per_symbol, header)
        report_tmp.write_text(text)
        # Commit: every symbol's directory, then the report (the last file to appear).
        for market in markets:
            _replace_dir(staging / market.symbol, out_dir / market.symbol)
        report_tmp.replace(report_path)
        committed = True
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if not committed:
            report_tmp.unlink(missing_ok=True)
    print()
    print(text, end="")
    for n in dict.fromkeys(notices):
        print(f"notice: {n}")
    print(f"report: {report_path}; per-symbol files: {out_dir}/{{{','.join(symbols)}}}/ "
          f"({time.perf_counter() - t0:.1f} s)")
    return 0


def run_main(argv=None) -> None:
    from jaxtrade.cli import run
    define_flags()
    run(main, argv, list_flags=["symbols"])


if __name__ == "__main__":
    run_main()
