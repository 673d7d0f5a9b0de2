"""Feed a split bar by bar through `jaxtrade.live.LivePolicy` and check its decisions against the backtester's.

    python -m experiments.replay --model M --processed_data_dir P --symbol S [--split test] [--output F.csv]

    python -m experiments.replay --model M --processed_data_dir P --symbol S --decisions LIVE.csv [--split test]

`--model`: a jaxtrade .pth file or an Orbax stage directory. The policy is warmed up on every bar of the file
before the split (features only), then fed the split's bars one at a time, as a live loop would; each decision
is compared with the one `run_backtest.py` makes at the same bar with the same settings (the model's training
capital, slippage, max lots and overnight rule unless a flag says otherwise). Prints the agreement and how long a
bar took; `--output` writes every bar's decision beside the backtester's as CSV.

With `--decisions`, the decisions are not recomputed: the log of decisions a live loop took (CSV with `timestamp`,
the bar's start in IST or epoch seconds, and `target`, the signed lots decided; `jaxtrade.live.read_decision_log`)
is compared with the backtest's on the same bars, and every bar where they differ is listed with both decisions and
a note that after the first difference the positions (inputs of later decisions) may differ too.

Exit codes: 0 every decision equal, 1 some differ (each listed, with what the policy assumed), 2 bad flags or
data: a bar out of order or outside the session is refused with one line.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from absl import flags

from jaxtrade import atomic
from jaxtrade.errors import InputError

FLAGS = flags.FLAGS
ENV_FIELDS = ("initial_capital", "slippage_ticks", "lot_size", "max_lots", "cost_model")  # the rules' flags here


def define_flags() -> None:
    def define(fn, name, *args, **kwargs):
        if name not in FLAGS:
            fn(name, *args, **kwargs)

    define(flags.DEFINE_string, "model", None, "A trained model: a .pth file or an Orbax stage directory.")
    define(flags.DEFINE_string, "processed_data_dir", "data/processed", "Processed {symbol}.parquet files.")
    define(flags.DEFINE_string, "symbol", None, "The symbol whose split is replayed.")
    define(flags.DEFINE_enum, "split", "test", ["train", "val", "test", "all"], "Which split to replay.")
    define(flags.DEFINE_float, "initial_capital", 100_000.0,
           "Capital in rupees (default: the model's training capital when its file records it).")
    define(flags.DEFINE_float, "slippage_ticks", None, "Slippage per fill in ticks (default: the model's training "
           "slippage, else 0).")
    define(flags.DEFINE_float, "lot_size", None, "Units per lot (default: the model's, else the symbol's current "
           "NSE lot; 1 for an unknown symbol).")
    define(flags.DEFINE_integer, "max_lots", None, "Largest position in lots (default: the model's).")
    define(flags.DEFINE_enum, "cost_model", "nse_futures", ["zero", "bps", "nse_futures", "nse_options"],
           "The backtester's cost model (costs do not change decisions).")
    define(flags.DEFINE_enum, "scaler", "model", ["model", "data"],
           "Feature scaling: the model file's (what a live loop has) or this data's training split (what the "
           "backtester uses; needed for an Orbax checkpoint, which records none).")
    define(flags.DEFINE_string, "output", None, "CSV of every bar's decision beside the backtester's.")
    define(flags.DEFINE_string, "decisions", None, "A log of decisions taken live (CSV: timestamp,target): report "
           "where they differ from the backtest's on the same bars instead of feeding the bars again.")


def main(argv) -> int:
    del argv
    F = FLAGS
    if not F.model or not F.symbol:
        raise InputError("--model and --symbol are required")
    if not Path(F.model).exists():
        raise InputError(f"--model: {F.model} not found")

    import logging
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
    import jax.numpy as jnp
    import numpy as np

    from jaxtrade import backtest as B, contracts, data as D, policies as P
    from jaxtrade.live import LivePolicy, bars_of

    B.enable_x64()
    from jaxtrade import env as E
    from jaxtrade.config import env_overrides

    policy = P.load_policy(F.model)
    # The backtest side runs under the model's own market rules (its recorded EnvConfig), flags overriding.
    rules, lines = P.rules_for_model(policy.env_config, B.BACKTEST_ENV,
                                     env_overrides(F, ENV_FIELDS, lambda f: f"--{f}"), lambda f: f"--{f}")
    for line in lines:
        print(line)
    market = E.market_for(rules, F.processed_data_dir, F.symbol, price_dtype=jnp.float64)
    capital, slippage, max_lots, overnight = (rules.initial_capital, rules.slippage_ticks, rules.max_lots,
                                              rules.allow_overnight)
    lot_size = rules.lot_size or contracts.lot_size(market.symbol) or 1.0
    scaler = market.scaler if F.scaler == "data" else None
    if scaler is None and not isinstance((policy.config or {}).get("scaler"), dict):
        print(f"note: {Path(F.model).name} records no feature scaling (an Orbax checkpoint): using "
              f"{market.symbol}'s training split, as --scaler data would")
        scaler = market.scaler
    live = LivePolicy.load(policy, bar_minutes=market.bar_minutes, symbol=market.symbol, scaler=scaler,
                           lot_size=lot_size, initial_capital=capital, max_lots=max_lots, slippage_ticks=slippage,
                           allow_overnight=overnight)
    if not (np.array_equal(live.scaler.mean, market.scaler.mean) and np.array_equal(live.scaler.std, market.scaler.std)):
        print(f"note: the model's feature scaling differs from {market.symbol}'s training split, which the backtester "
              f"uses: decisions may differ (--scaler data uses the data's)")
    columns, _ = D.read_processed(market.path)
    lo, hi = market.split_bars(F.split)
    if F.decisions:
        return compare_log(F.decisions, market, policy, rules, lo, hi)
    t0 = time.perf_counter()
    warm = live.warm_up(bars_of(columns, 0, lo))
    t1 = time.perf_counter()
    decisions = np.array([live.step(*bar) for bar in bars_of(columns, lo, hi)], np.int64)
    t2 = time.perf_counter()
    config = B.BacktestConfig(env=rules, split=F.split)
    result = B.backtest(market, policy, config)

    backtested = np.asarray(result.target[1:], np.int64)  # the lots each decision set, bars lo .. hi-2
    mine = decisions[:-1]  # the split's last bar decides for a bar the backtest never reaches
    differ = np.flatnonzero(mine != backtested)
    ts = market.timestamps[lo:hi]
    if F.output:
        out = Path(F.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        rows = ["timestamp,open,high,low,close,target,backtest_target"]
        for i in range(hi - lo):
            bt = str(backtested[i]) if i < len(backtested) else ""
            rows.append(f"{str(ts[i])[:16].replace('T', ' ')},{columns['open'][lo + i]!r},{columns['high'][lo + i]!r},"
                        f"{columns['low'][lo + i]!r},{columns['close'][lo + i]!r},{decisions[i]},{bt}")
        atomic.write_text(out, "\n".join(rows) + "\n")
    per_bar = (t2 - t1) / max(hi - lo, 1) * 1e6
    print(f"{market.symbol} {F.split} split: {hi - lo:,} bars fed one at a time through {Path(F.model).name} after "
          f"{warm:,} warm-up bars ({t1 - t0:.1f} s); {per_bar:,.0f} us a bar")
    for note in live.notes[:5]:
        print(f"note: {note}")
    if len(live.notes) > 5:
        print(f"note: ... and {len(live.notes) - 5} more")
    if not len(differ):
        print(f"decisions equal the backtester's on all {len(mine):,} bars that decide"
              + (f"; written to {F.output}" if F.output else ""))
        return 0
    for i in differ[:10]:
        print(f"differs at {str(ts[i])[:16].replace('T', ' ')}: live {mine[i]:+d}, backtest {backtested[i]:+d}")
    print(f"decisions differ on {len(differ):,} of {len(mine):,} bars", file=sys.stderr)
    return 1


def compare_log(log_path, market, policy, rules, lo: int, hi: int) -> int:
    """`--decisions`: the live log against the backtest on the same bars (see the module docstring)."""
    import numpy as np

    from jaxtrade import backtest as B
    from jaxtrade.live import compare_with_backtest, read_decision_log

    times, targets = read_decision_log(log_path)
    result = B.backtest(market, policy, B.BacktestConfig(env=rules, split=FLAGS.split))
    backtested = np.asarray(result.target[1:], np.int64)
    where = f"{market.symbol}'s {FLAGS.split} split"
    c = compare_with_backtest(times, targets, market.timestamps[lo:hi], backtested, where)
    print(f"{Path(log_path).name}: {len(times):,} live decisions on {where} ({hi - lo:,} bars; {c['unlogged']:,} "
          f"without a logged decision); compared on {c['compared']:,}: equal on {c['equal']:,}, differ on "
          f"{len(c['differ']):,}" + (f"; {c['last_bar']} at the split's last bar not compared (the backtest never "
                                    f"trades on it)" if c["last_bar"] else ""))
    if not c["differ"]:
        return 0
    first = c["differ"][0][0]
    for t, live, bt in c["differ"][:10]:
        print(f"differs at {t}: live {live:+d}, backtest {bt:+d}")
    if len(c["differ"]) > 10:
        print(f"... and {len(c['differ']) - 10:,} more")
    print(f"note: from {first} on the live position may differ from the backtest's, so later decisions see other "
          f"position inputs; the first difference is the one to explain (fills, scaling, missed bars)")
    print(f"live decisions differ from the backtest's on {len(c['differ']):,} of {c['compared']:,} bars, first at "
          f"{first}", file=sys.stderr)
    return 1


def run_main(argv=None) -> None:
    from jaxtrade.cli import run
    define_flags()
    run(main, argv)


if __name__ == "__main__":
    run_main()
