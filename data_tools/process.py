"""Raw bar files -> processed Parquet (DESIGN section 2, "Data").

    python -m data_tools.process --raw-data-dir D --processed-data-dir P [--symbols S ...]
        [--bar-minutes N] [--bar-label auto|start|end] [--source-tz TZ] [--date-order dmy|mdy]

Per symbol: parse, sort by time, drop exact duplicates, reject conflicting duplicates, detect the bar size and
bar-END labels (shifted to bar START), keep the regular session 09:15 <= start < 15:30 IST (pre-open,
post-close/after-hours and special sessions are dropped and counted), optionally resample to N-minute bars
anchored at 09:15 (the last partial bin is kept), check OHLC sanity, and write `{P}/{symbol}.parquet`
atomically.

The summary warns when more than half of a symbol's rows fall outside the session (naive timestamps that are
not IST: `--source-tz`), says how day/month dates were read (`--date-order`, default dmy: DD/MM/YYYY), and
warns when every day and month is <= 12, so that the other order would read them too.

Naming: the processed symbol is the raw symbol. With `--bar-minutes N` different from the raw bar size the
bars are resampled and the name gets `_{N}`; a raw name that already ends in `_{raw bar size}` has that suffix
replaced (`Nifty_2` at 10 minutes -> `Nifty_10`, never `Nifty_2_10`). `--bar-minutes` equal to the raw bar
size keeps the name and the bars as they are (`Nifty_2 --bar-minutes 2` -> `Nifty_2`). A smaller N, or one
that is not a multiple of the raw bar size, fails that symbol.

A symbol that fails leaves no processed file behind (a stale one from an earlier run is deleted); the other
symbols are still written; the command exits 2. A raw file that cannot be read fails every symbol it held: those
its rows name and those an earlier run wrote from it (metadata `source_names` of the processed files).

This module is the command; the work is done by `data_tools.directory` (the run over a raw directory), which uses
`readers` (raw files), `symbol` (one symbol: `bars`, `session`, `naming`, `summary`) and `output`.
"""

from __future__ import annotations

from data_tools.directory import process_directory
from data_tools.output import read_processed_metadata
from data_tools.session import IST

__all__ = ["LIST_FLAGS", "define_flags", "main", "process_directory", "read_processed_metadata"]


# ------------------------------------------------------------------------------------------------- CLI

def define_flags(flag_values=None) -> None:
    """This command's flags, on `flag_values` (default: absl's global FLAGS)."""
    from absl import flags
    fv = flags.FLAGS if flag_values is None else flag_values
    flags.DEFINE_string("raw_data_dir", "data/raw", "Directory of raw bar files (CSV, TXT, Parquet).", flag_values=fv)
    flags.DEFINE_string("processed_data_dir", "data/processed", "Where {symbol}.parquet files are written.",
                        flag_values=fv)
    flags.DEFINE_list("symbols", None, "Symbols to process (default: all found).", flag_values=fv)
    flags.DEFINE_integer("bar_minutes", None, "Resample to N-minute bars anchored at 09:15 (default: as is).",
                         flag_values=fv)
    flags.DEFINE_enum("bar_label", "auto", ["auto", "start", "end"],
                      "Whether raw timestamps label bar starts or ends (auto: detect).", flag_values=fv)
    flags.DEFINE_string("source_tz", IST, "Time zone of timestamps that carry none.", flag_values=fv)
    flags.DEFINE_enum("date_order", "dmy", ["dmy", "mdy"],
                      "How to read day/month dates such as 1/8/2024: dmy (DD/MM/YYYY) or mdy (MM/DD/YYYY).",
                      flag_values=fv)


LIST_FLAGS = ["symbols"]


def main(argv, flag_values=None) -> int:
    """The command: exit code 0 when every symbol was written, 2 when any failed (DESIGN section 9)."""
    from absl import flags
    F = flags.FLAGS if flag_values is None else flag_values
    result = process_directory(F.raw_data_dir, F.processed_data_dir, symbols=F.symbols,
                               bar_minutes=F.bar_minutes, bar_label=F.bar_label, source_tz=F.source_tz,
                               date_order=F.date_order)
    return 0 if result.ok else 2


def run_main(argv=None) -> None:
    from jaxtrade.cli import run
    define_flags()
    run(main, argv, list_flags=LIST_FLAGS)


if __name__ == "__main__":
    run_main()
