"""Backtest trained models or baselines over a split: the seed's `run_backtest.py` (DESIGN sections 5, 6, 9).

    python -m experiments.backtest [--process-data] [--raw-data-dir D] [--processed-data-dir D]
        [--symbols S ... | all] [--initial-capital X] [--report-file F] [--output-dir DIR]
        [--split train|val|test|all] [--policy NAME | --model PATH] [--cost-model M] [--cost-bps B]
        [--slippage-ticks N] [--lot-size N] [--dated-lots] [--max-lots N] [--allow-overnight]
        [--square-off-time HH:MM] [--split-fractions A,B,C] [--checkpoint-dir D] [--run NAME] [--tearsheet]
        [--risk-free-rate R]

With neither --model nor --policy each symbol's model is found by the loading priority
(`jaxtrade.checkpoints.find_model`): in the most recent run under --checkpoint-dir holding a finished model of the
symbol (or in --run), final > maml > moe > ppo, each as its `.pth` file or else its Orbax checkpoint; the output
names what was loaded and from which run, which run was chosen when several hold models, and which partly
finished stage was skipped and why. A symbol with no model at all runs the momentum baseline instead, and the
output says so. The flat, buy-and-hold, random and momentum baselines always run beside it, under the same
market rules. A trained model runs under the rules it trained with (the `EnvConfig` its file records: costs,
lots, slippage, capital, square-off, split fractions, ...); a market-rule flag given on the command line
overrides one of them and says so. Outputs are staged under temporary names and moved into place only when every
symbol has finished, so a failed run leaves no report that looks complete.
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
# The market-rule flags (EnvConfig fields; episode_sessions does not apply: a backtest is one episode).
ENV_FIELDS = ("cost_model", "cost_bps", "slippage_ticks", "lot_size", "dated_lots", "max_lots", "initial_capital",
              "allow_overnight", "square_off_time", "split_fractions")


def flag_of(field: str) -> str:
    """The command's spelling of an EnvConfig field's flag (the seed's dashes)."""
    return "--" + field.replace("_", "-")


def define_flags() -> None:
    """Define this command's flags (idempotent: safe to call from several entry points or tests)."""
    def define(fn, name, *args, **kwargs):
        if name not in FLAGS:
            fn(name, *args, **kwargs)

    from jaxtrade import sharding
    sharding.define_flags(hosts=False)
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
    model_note = ". A trained model uses its own training setting unless this flag is given."
    define(flags.DEFINE_enum, "cost_model", "nse_futures", list(COST_MODELS), "Transaction-cost model" + model_note)
    define(flags.DEFINE_float, "cost_bps", 1.0, "Basis points of turnover for --cost-model bps" + model_note)
    define(flags.DEFINE_float, "slippage_ticks", 0.0,
           "Slippage per fill in ticks (0.05 points), against the trader" + model_note)
    define(flags.DEFINE_float, "lot_size", None,
           "Units per lot (default: the symbol's current NSE lot; 1 for an unknown symbol)" + model_note)
    define(flags.DEFINE_boolean, "dated_lots", False,
           "Trade the NSE lot size in force on each session's date" + model_note)
    define(flags.DEFINE_boolean, "allow_overnight", False, "Hold positions across sessions" + model_note)
    define(flags.DEFINE_string, "square_off_time", "",
           "Time (HH:MM, IST) from which bars are forced flat (default: the session's last bar)" + model_note)
    define(flags.DEFINE_list, "split_fractions", ["0.7", "0.15", "0.15"],
           "Train, validation and test shares of the sessions" + model_note)
    define(flags.DEFINE_string, "checkpoint_dir", "checkpoints", "Where trained runs are looked for.")
    define(flags.DEFINE_string, "run", None,
           "Load models from this run ({checkpoint_dir}/{run}) instead of the most recent run holding the symbol's "
           "model.")
    define(flags.DEFINE_integer, "max_lots", 1, "Largest position in lots (actions -max_lots..max_lots)" + model_note)
    define(flags.DEFINE_integer, "seed", 0, "Seed of the random baseline.")
    define(flags.DEFINE_boolean, "plots", True, "Write equity.png per symbol (needs matplotlib).")
    define(flags.DEFINE_boolean, "tearsheet", False,
           "Also write {output_dir}/{symbol}/tearsheet.html: one self-contained page of plots and tables "
           "(plots need matplotlib).")
    define(flags.DEFINE_float, "risk_free_rate", 0.0,
           "Annual risk-free rate (0.065 = 6.5%) that Sharpe and Sortino subtract, per session compounded.")


def _check_flags() -> None:
    F = FLAGS
    if F.lot_size is not None and not F.lot_size > 0:  # EnvConfig's 0 (= the NSE lot) is not a lot size to type
        raise InputError(f"--lot-size must be positive, got {F.lot_size:g}")
    if not -1.0 < F.risk_free_rate < 1.0:
        raise InputError(f"--risk-free-rate: expected an annual rate as a fraction (0.065 for 6.5%), got "
                         f"{F.risk_free_rate:g}")
    from jaxtrade.config import env_overrides
    env_overrides(F, ENV_FIELDS, flag_of)  # every market-rule flag checked before any work
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


def _find_model(symbol: str, shared_model):
    """(a trained model's Policy or None (a baseline, decided once the market is loaded), lines saying what was
    chosen: the loading priority's notes first, then the choice)."""
    from jaxtrade import checkpoints as C, policies as P
    F = FLAGS
    if shared_model is not None:
        return shared_model, [f"model {shared_model.source}"]
    if F.policy:
        return None, [f"policy {F.policy}"]
    search = C.find_model(F.checkpoint_dir, symbol, run=F.run)
    if search.found is not None:
        return (P.load_policy(search.found.path),
                [*search.notes, f"model {search.found.describe()} ({C.PRIORITY_TEXT})"])
    return None, [*search.notes, f"no trained model ({search.looked} not found): ran the momentum baseline instead"]


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


def symbol_setup(processed_dir, symbol: str, model, given: dict, split: str, seed: int = 0,
                 risk_free_rate: float = 0.0):
    """(float64 market, BacktestConfig, lines to print) for one symbol: the model's own market rules (its
    recorded EnvConfig) with `given` (the market-rule flags typed) overriding them, each said once; without a
    model, the seed's defaults with `given`. The market is split as the rules say."""
    import jax.numpy as jnp

    from jaxtrade import backtest as B, env as E
    from jaxtrade.policies import rules_for_model

    rules, lines = rules_for_model(getattr(model, "env_config", None), B.BACKTEST_ENV, given, flag_of)
    market = E.market_for(rules, processed_dir, symbol, price_dtype=jnp.float64)
    return market, B.BacktestConfig(env=rules, split=split, seed=seed, risk_free_rate=risk_free_rate), lines


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
    from jaxtrade import sharding
    sharding.setup_from_flags()  # jax.distributed and the device mesh, before any computation
    if F.process_data:
        _process_data()
    processed_dir = Path(F.processed_data_dir)
    symbols = _symbols(processed_dir)

    import logging
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)  # no "Unable to initialize TPU" line
    from jaxtrade import backtest as B
    B.enable_x64()
    from jaxtrade import policies as P, report as R

    from jaxtrade.config import env_overrides
    given = env_overrides(F, ENV_FIELDS, flag_of)
    shared_model = _load_model_flag() if F.model else None
    found = {symbol: _find_model(symbol, shared_model) for symbol in symbols}  # every model loaded up front

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
        for symbol in symbols:
            t_sym = time.perf_counter()
            model, chosen = found[symbol]
            market, config, lines = symbol_setup(processed_dir, symbol, model, given, F.split, F.seed,
                                                 F.risk_free_rate)
            rules = config.env
            policy = model or P.make_baseline(F.policy or "momentum", max_lots=rules.max_lots, scaler=market.scaler)
            for line in chosen:
                print(f"{symbol}: {line}", flush=True)
            chosen_lines += [f"{symbol}: {line}" for line in chosen]
            for line in lines:
                print(f"{symbol}: {line}", flush=True)
            capitals[symbol] = rules.initial_capital
            others = [P.make_baseline(name, max_lots=rules.max_lots, scaler=market.scaler)
                      for name in P.BASELINES if name != policy.name or policy.source]
            main_result, *baselines = B.backtest_many(market, [policy, *others], config)
            notices += R.write_symbol_outputs(main_result, baselines, staging / symbol, plot=F.plots)
            if F.tearsheet:
                notices += _write_tearsheet(market, policy, config, main_result, baselines,
                                            staging / symbol / "tearsheet.html")
            per_symbol.append((main_result, baselines))
            print(f"{symbol}: {F.split} split {main_result.start[:10]} .. {main_result.end[:10]}, "
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
        for symbol in symbols:
            _replace_dir(staging / symbol, out_dir / symbol)
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
