"""What the processor says about one processed symbol: the summary block it prints, the file metadata it writes,
and the warnings from how the raw timestamps were read (`RawChunk.ts_info`): more than half of the rows outside
the session (naive timestamps that are not IST: `--source-tz`), how day/month dates were read (`--date-order`)
and whether every day and month is <= 12, so that the other order would read them too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from data_tools.columns import RawChunk
from data_tools.session import DROP_REASONS, IST
from data_tools.timestamps import DATE_ORDERS

DROP_LABELS = {"exact_duplicates": "exact duplicates", "pre_open": "pre-open",
               "post_close": "post-close/after-hours", "special_sessions": "special sessions"}


def short_sources(names: Sequence[str]) -> str:
    names = list(names)
    if len(names) <= 4:
        return ", ".join(names)
    return f"{len(names)} files ({names[0]}, {names[1]}, ..., {names[-1]})"


@dataclass
class SymbolSummary:
    symbol: str                    # processed symbol (file stem of the output)
    raw_symbol: str
    sources: list                  # raw file names
    rows_in: int
    rows_out: int
    dropped: dict                  # reason -> rows (DROP_REASONS)
    special_days: int
    sessions: int
    first: str                     # first bar start, IST
    last: str                      # last bar start, IST
    source_bar_minutes: int
    bar_minutes: int
    label: str                     # "start" or "end"
    label_detected: bool
    label_shift_minutes: int
    synthetic: bool
    output: Path
    resampled: bool = False
    dates: str = ""                # how day/month dates were read, e.g. "day-first (DD/MM/YYYY)"
    warnings: list = field(default_factory=list)

    def metadata(self) -> dict:
        return {
            "symbol": self.symbol, "raw_symbol": self.raw_symbol, "bar_minutes": self.bar_minutes,
            "source_bar_minutes": self.source_bar_minutes, "source": short_sources(self.sources),
            "source_files": len(self.sources), "source_names": list(self.sources), "rows_in": self.rows_in, "rows_out": self.rows_out,
            "dropped": self.dropped, "sessions": self.sessions, "first": self.first, "last": self.last,
            "timezone": IST, "bar_label": self.label, "label_shift_minutes": self.label_shift_minutes,
            "synthetic": "true" if self.synthetic else "false", "created_by": "data_tools.process",
        }

    def render(self) -> str:
        tag = "  [SYNTHETIC DATA]" if self.synthetic else ""
        how = "detected" if self.label_detected else "--bar-label"
        if self.label == "end":
            labels = f"bar end ({how}), shifted {self.label_shift_minutes:+d} min to bar start"
        else:
            labels = f"bar start ({how}), no shift"
        bars = f"{self.bar_minutes}-minute bars"
        if self.resampled:
            bars += f", resampled from {self.source_bar_minutes}-minute"
        drops = ", ".join(f"{DROP_LABELS[k]} {self.dropped[k]:,}" for k in DROP_REASONS)
        if self.special_days:
            drops += f" ({self.special_days} day{'s' if self.special_days != 1 else ''})"
        lines = [
            f"{self.symbol}{tag}",
            f"  rows in {self.rows_in:,} -> rows out {self.rows_out:,} ({bars})",
            f"  dropped: {drops}",
            f"  labels: {labels}",
            f"  range: {self.first} .. {self.last} IST, {self.sessions:,} sessions",
            f"  source: {short_sources(self.sources)}",
            f"  output: {self.output}",
        ]
        if self.dates:
            lines.insert(4, f"  dates: read {self.dates}")
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def read_notes(parts: list[RawChunk], rows_in: int, outside: int) -> tuple[str, list]:
    """The summary's `dates` text and warnings from how the timestamps were read (`RawChunk.ts_info`); `outside`
    is the number of rows outside the regular session."""
    infos = [p.ts_info for p in parts]
    warnings = []
    if outside * 2 > rows_in:
        head = f"{outside / rows_in:.0%} of rows fall outside 09:15-15:30 IST"
        tzs = sorted({i["naive_tz"] for i in infos if "naive_tz" in i})
        if tzs == [IST]:
            warnings.append(f"{head}; if the timestamps are not IST, pass --source-tz UTC (or their time zone)")
        elif tzs:
            warnings.append(f"{head}; timestamps without a zone were read as {', '.join(tzs)} "
                            f"(--source-tz): check that zone")
        else:
            warnings.append(f"{head} (the timestamps carry their zone)")
    layouts = sorted({i["date_layout"] for i in infos if i.get("date_layout")})
    dates = ""
    if layouts:
        order = "dmy" if layouts[0].startswith("DD") else "mdy"
        other = "mdy" if order == "dmy" else "dmy"
        dates = f"{DATE_ORDERS[order]} ({', '.join(layouts)})"
        if all(i.get("date_ambiguous") for i in infos if i.get("date_layout")):
            swapped = ", ".join(x.replace("DD", "@").replace("MM", "DD").replace("@", "MM") for x in layouts)
            warnings.append(f"dates read {dates}, but every day and month is <= 12, so they could be "
                            f"{DATE_ORDERS[other]} ({swapped}): if consecutive sessions show up a month "
                            f"apart (few sessions over a long range), pass --date-order {other}")
    return dates, warnings
