"""Raw timestamps -> UTC instants (int64 nanoseconds), for the readers.

Accepted: Arrow timestamp and date columns, epoch numbers (seconds, milliseconds, microseconds or nanoseconds,
told apart by magnitude; every row of a file in the same unit), and text: ISO-8601 with an optional zone
(`+05:30`, `Z`), a few common day/month (`date_order`: dmy or mdy) or compact layouts, or epoch digits.
Timestamps without a zone are wall-clock time in the given zone. Every instant must lie in 1970-2199 and be a
real date and time: February 30, month 13 or hour 24 are errors naming the row, never rolled into the next
day or month. Everything is vectorised (pyarrow.compute / numpy); Python loops or bisection over rows happen
only while building an error message.

`info`, when given, records how timestamps were read (see `data_tools.readers`): `naive_tz`, `date_layout`,
`date_ambiguous`.
"""

from __future__ import annotations

import re
from typing import Callable, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from data_tools.errors import FileError

NS_PER_S = 1_000_000_000
YEARS = (1970, 2200)                                  # accepted instants: [1970-01-01, 2200-01-01) UTC
MAX_S = int((np.datetime64("2200-01-01") - np.datetime64("1970-01-01")) / np.timedelta64(1, "s"))
EPOCH_UNITS = ("seconds", "milliseconds", "microseconds", "nanoseconds")
_UNIT_LIMITS = (1e11, 1e14, 1e17)                     # magnitude below which a number is s, ms, us (else ns)
_PER_S = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": NS_PER_S}

_ISO_RE = (r"^(?P<dt>\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)\s*"
           r"(?P<tz>Z|UTC|[+-]\d{2}:?\d{2})?$")
_NUMBER_RE = r"^-?\d+(\.\d+)?$"
_FALLBACK_FORMATS = (
    "%Y%m%d %H:%M:%S", "%Y%m%d %H:%M",
    "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M",
    "%d-%m-%Y %H:%M:%S", "%d-%m-%Y %H:%M",
    "%d/%m/%Y %H:%M:%S", "%d/%m/%Y %H:%M",
    "%Y/%m/%d %H:%M:%S", "%Y/%m/%d %H:%M",
    "%d-%b-%Y %H:%M:%S", "%d-%b-%Y %H:%M",
)
# what each directive of a format reads, to check the parsed fields against the text (pyarrow's strptime
# rolls February 30 into March 1 and second 60 into the next minute)
_DIRECTIVES = {"%Y": r"(?P<Y>\d{1,4})", "%m": r"(?P<m>\d{1,2})", "%d": r"(?P<d>\d{1,2})",
               "%H": r"(?P<H>\d{1,2})", "%M": r"(?P<M>\d{1,2})", "%S": r"(?P<S>\d{1,2})", "%b": r"[A-Za-z]{3}"}
_FIELDS = {"Y": pc.year, "m": pc.month, "d": pc.day, "H": pc.hour, "M": pc.minute, "S": pc.second}
DATE_ORDERS = {"dmy": "day-first", "mdy": "month-first"}


# ------------------------------------------------------------------------------------------------ helpers

def first_failure(n: int, fails: Callable[[int, int], bool]) -> int:
    """The first index i < n such that `fails(0, i + 1)` (a check of rows [0, i]) is true, by bisection,
    given that `fails(0, n)` is true. Error path only: O(log n) vectorised checks."""
    lo, hi = 0, n
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fails(0, mid):
            hi = mid
        else:
            lo = mid
    return hi - 1


def _np(a) -> np.ndarray:
    return np.asarray(a.to_numpy(zero_copy_only=False))


def check_seconds(secs: np.ndarray, path, rows: np.ndarray, shown: Callable[[int], str], what: str) -> None:
    """Every value (UTC seconds since the epoch; NaN counts as bad) lies in 1970-2199."""
    with np.errstate(invalid="ignore"):
        bad = ~((secs >= 0) & (secs < MAX_S))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise FileError(path, f"timestamp {shown(i)} ({what}) is not in {YEARS[0]}-{YEARS[1] - 1}",
                        row=int(rows[i]))


def epoch_to_ns(x: np.ndarray, path, rows: np.ndarray, what: str) -> np.ndarray:
    """Epoch numbers -> int64 ns. The unit (s, ms, us, ns) is told by magnitude; a row whose magnitude says
    another unit than most rows do is an error (one mistyped row must not rescale the whole file)."""
    x = np.asarray(x)
    xf = x.astype(np.float64)
    finite = np.isfinite(xf)
    if not finite.all():
        i = int(np.flatnonzero(~finite)[0])
        raise FileError(path, f"missing or non-finite timestamp ({what})", row=int(rows[i]))
    unit = np.searchsorted(_UNIT_LIMITS, np.abs(xf), side="right")
    major = int(np.bincount(unit, minlength=4).argmax())
    odd = unit != major
    if odd.any():
        i = int(np.flatnonzero(odd)[0])
        raise FileError(path, f"epoch timestamp {x[i].item()!r} reads as {EPOCH_UNITS[unit[i]]}, the other rows as "
                              f"{EPOCH_UNITS[major]} ({what})", row=int(rows[i]))
    check_seconds(xf / 1000.0 ** major, path, rows, lambda i: repr(x[i].item()), what)
    scale = 1000 ** (3 - major)
    if x.dtype.kind in "iu":
        return x.astype(np.int64) * scale
    return np.round(xf * scale).astype(np.int64)


def _timestamp_to_ns(col: pa.Array, path, rows, what: str) -> np.ndarray:
    """An Arrow timestamp column (any unit; tz-aware: UTC instants, naive: wall clock) -> int64 ns of the same
    clock, range-checked as if UTC (the zone is at most a day away from the limits)."""
    per_s = _PER_S[col.type.unit]
    ints = _np(pc.cast(col, pa.int64())).astype(np.int64)
    secs = ints / per_s
    check_seconds(secs, path, rows, lambda i: _show(col, ints, i), what)
    return ints * (NS_PER_S // per_s)


def _show(col: pa.Array, ints: np.ndarray, i: int) -> str:
    """Row i of a timestamp column for a message (Python's datetime holds only years 1-9999)."""
    try:
        return repr(str(col[i].as_py()))
    except (OverflowError, ValueError):
        return f"{int(ints[i])} ({col.type.unit} since 1970-01-01)"


def naive_ns_to_utc(wall_ns: np.ndarray, tz: str) -> np.ndarray:
    """Wall-clock ns in `tz` -> UTC ns."""
    if tz in ("UTC", "Etc/UTC"):
        return wall_ns
    naive = pa.array(wall_ns, pa.timestamp("ns"))
    out = pc.assume_timezone(naive, tz, ambiguous="earliest", nonexistent="earliest")
    return _np(pc.cast(out, pa.int64())).astype(np.int64)


def fallback_formats(date_order: str) -> tuple:
    if date_order == "mdy":
        return tuple(f.replace("%d-%m", "%m-%d").replace("%d/%m", "%m/%d") for f in _FALLBACK_FORMATS)
    return _FALLBACK_FORMATS


def date_layout(fmt: str) -> str:
    """'%d/%m/%Y %H:%M' -> 'DD/MM/YYYY'."""
    return (fmt.split(" ")[0].replace("%d", "DD").replace("%m", "MM").replace("%Y", "YYYY")
            .replace("%b", "Mon"))


def _note_dates(info: Optional[dict], fmt: str, parsed: pa.Array) -> None:
    """Record a day/month layout (DD/MM/YYYY, MM-DD-YYYY, ...) and whether the other order would fit too."""
    layout = date_layout(fmt)
    if info is None or layout[:2] not in ("DD", "MM") or layout[2] not in "/-" or "Mon" in layout:
        return
    day, month = pc.day(parsed), pc.month(parsed)
    info["date_layout"] = layout
    info["date_ambiguous"] = bool(pc.max(day).as_py() <= 12 and pc.max(month).as_py() <= 12
                                  and not pc.all(pc.equal(day, month)).as_py())


def _format_regex(fmt: str) -> str:
    """A regular expression with a named group per field of `fmt` (a compact YYYYMMDD date: fixed widths)."""
    def directives(part: str) -> str:
        out = re.escape(part)
        for d, r in _DIRECTIVES.items():
            out = out.replace(re.escape(d), r)
        return out.replace(r"\ ", r"\s+")
    compact = r"(?P<Y>\d{4})(?P<m>\d{2})(?P<d>\d{2})"
    return "^" + compact.join(directives(part) for part in fmt.split("%Y%m%d")) + "$"


def _fields_agree(s: pa.Array, fmt: str, parsed: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(shaped, same): where `s` has the layout of `fmt` (by a regular expression), and where the fields it
    writes equal those of `parsed`."""
    pattern = _format_regex(fmt)
    fields = pc.extract_regex(s, pattern)
    shaped_arr = pc.is_valid(fields)
    shaped = _np(shaped_arr).astype(bool)
    same = shaped.copy()
    if shaped.any():
        for name, getter in _FIELDS.items():
            if f"(?P<{name}>" in pattern:
                text = pc.cast(pc.if_else(shaped_arr, fields.field(name), "0"), pa.int64())
                same &= _np(pc.equal(text, pc.fill_null(getter(parsed), -1))).astype(bool)
    return shaped, same


def _read_format(s: pa.Array, fmt: str, everything: bool = False):
    """Parse `s` with `fmt`. Returns (parsed, ok, impossible): `ok` where the text has the layout and its
    fields are a real date and time, `impossible` (None unless `everything`, for error messages) where it has
    the layout but not a real date or time.

    strptime checks each field's range (day 1-31, second 0-60) and then normalises, so only two things roll
    over: day 29-31 past the month's end (-> day 1-3 of the next month) and second 60 (-> second 0); and it
    takes fewer digits than a compact YYYYMMDD date has. Only rows that could be such are checked field by
    field against the text."""
    parsed = pc.strptime(s, format=fmt, unit="s", error_is_null=True)
    read = _np(pc.is_valid(parsed)).astype(bool)
    if everything:
        shaped, same = _fields_agree(s, fmt, parsed)
        ok = read & same
        return parsed, ok, shaped & ~ok
    if not read.all():
        return parsed, read, None
    suspect = _np(pc.less_equal(pc.day(parsed), 3)).astype(bool)
    if fmt.startswith("%Y%m%d"):       # strptime reads 2024022 as 2024-02-02: the date must be 8 digits
        suspect |= _np(pc.not_equal(pc.find_substring(s, " "), 8)).astype(bool)
    if "%S" in fmt:
        suspect |= _np(pc.equal(pc.second(parsed), 0)).astype(bool)
    ok = np.ones(len(s), bool)
    if suspect.any():
        idx = pa.array(np.flatnonzero(suspect))
        ok[idx.to_numpy()] = _fields_agree(s.take(idx), fmt, parsed.take(idx))[1]
    return parsed, ok, None


# --------------------------------------------------------------------------------------------- text

def parse_time_strings(s: pa.Array, tz: str, path, rows: np.ndarray, what: str, date_order: str = "dmy",
                       info: Optional[dict] = None) -> np.ndarray:
    """Strings -> UTC ns (see the module docstring)."""
    s = pc.utf8_trim_whitespace(s)
    valid = _np(pc.and_(pc.is_valid(s), pc.not_equal(s, ""))).astype(bool) if len(s) else np.zeros(0, bool)
    if not valid.all():
        i = int(np.flatnonzero(~valid)[0])
        raise FileError(path, f"missing timestamp ({what})", row=int(rows[i]))
    if len(s) == 0:
        return np.zeros(0, np.int64)
    numeric = _np(pc.match_substring_regex(s, _NUMBER_RE)).astype(bool)
    if numeric.all():
        try:
            x = _np(pc.cast(s, pa.int64()))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):   # decimals, or beyond int64
            x = _np(pc.cast(s, pa.float64()))
        return epoch_to_ns(x, path, rows, what)
    m = pc.extract_regex(s, _ISO_RE)
    iso = _np(pc.is_valid(m)).astype(bool)
    if iso.all():
        return _iso_to_utc(s, m, tz, path, rows, what, info)
    # not one layout for every row: the layout that reads most rows names the first row it cannot read
    formats = fallback_formats(date_order)
    for fmt in formats:
        parsed, ok, _ = _read_format(s, fmt)
        if ok.all():
            _note_dates(info, fmt, parsed)
            if info is not None:
                info["naive_tz"] = tz
            secs = _np(pc.cast(parsed, pa.int64())).astype(np.int64)
            check_seconds(secs.astype(np.float64), path, rows, lambda i: repr(s[i].as_py()), what)
            return naive_ns_to_utc(secs * NS_PER_S, tz)
    candidates = [("an epoch number", numeric, None), ("ISO", iso, None)]
    candidates += [(date_layout(fmt),) + _read_format(s, fmt, everything=True)[1:] for fmt in formats]
    _, ok, impossible = max(candidates, key=lambda c: int(c[1].sum()))
    i = int(np.flatnonzero(~ok)[0])
    if impossible is not None and impossible[i]:
        raise FileError(path, f"timestamp {s[i].as_py()!r} ({what}) is not a real date and time", row=int(rows[i]))
    hint = ""
    other = "mdy" if date_order == "dmy" else "dmy"
    for fmt in fallback_formats(other):
        if fmt not in formats and _read_format(s, fmt)[1].all():
            hint = (f"; dates are read {DATE_ORDERS[date_order]}, but they all read as {date_layout(fmt)}: "
                    f"pass --date-order {other}")
            break
    raise FileError(path, f"unparseable timestamp {s[i].as_py()!r} ({what}){hint}", row=int(rows[i]))


def _iso_to_utc(s: pa.Array, m: pa.StructArray, tz: str, path, rows, what: str, info: Optional[dict]):
    dt = pc.replace_substring(m.field("dt"), "T", " ")
    try:
        naive = pc.cast(dt, pa.timestamp("ns"))
    except pa.ArrowInvalid:
        i = first_failure(len(dt), lambda a, b: arrow_fails(lambda: pc.cast(dt.slice(a, b - a),
                                                                             pa.timestamp("ns"))))
        try:
            pc.cast(dt.slice(i, 1), pa.timestamp("s"))
            problem = f"is not in {YEARS[0]}-{YEARS[1] - 1}"
        except pa.ArrowInvalid:
            problem = "is not a real date and time"
        raise FileError(path, f"timestamp {s[i].as_py()!r} ({what}) {problem}", row=int(rows[i]))
    naive_ns = _np(pc.cast(naive, pa.int64())).astype(np.int64)
    check_seconds(naive_ns / NS_PER_S, path, rows, lambda i: repr(s[i].as_py()), what)
    tzs = m.field("tz")
    has_tz = _np(pc.and_(pc.is_valid(tzs), pc.not_equal(pc.fill_null(tzs, ""), ""))).astype(bool)
    out = np.empty(len(s), np.int64)
    if has_tz.any():
        z = pc.replace_substring(pc.fill_null(tzs, "+0000"), ":", "")
        z = pc.if_else(pc.or_(pc.or_(pc.equal(z, "Z"), pc.equal(z, "UTC")), pc.equal(z, "")), "+0000", z)
        sign = np.where(_np(pc.starts_with(z, "-")).astype(bool), -1, 1)
        hh = _np(pc.cast(pc.utf8_slice_codeunits(z, 1, 3), pa.int64()))
        mm = _np(pc.cast(pc.utf8_slice_codeunits(z, 3, 5), pa.int64()))
        bad = has_tz & ((hh > 14) | (mm > 59))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise FileError(path, f"timestamp {s[i].as_py()!r} ({what}) has an impossible UTC offset",
                            row=int(rows[i]))
        off_ns = sign * (hh * 60 + mm) * 60 * NS_PER_S
        out[has_tz] = (naive_ns - off_ns)[has_tz]
    if (~has_tz).any():
        out[~has_tz] = naive_ns_to_utc(naive_ns, tz)[~has_tz]
        if info is not None:
            info["naive_tz"] = tz
    return out


def arrow_fails(fn) -> bool:
    """Whether `fn()` raises pyarrow's error for a value it cannot convert (error path: bisection)."""
    try:
        fn()
        return False
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return True


# ------------------------------------------------------------------------------------------- columns

def column_to_utc_ns(col, name: str, tz: str, path, rows, date_order: str = "dmy",
                     info: Optional[dict] = None) -> np.ndarray:
    """A timestamp column of any type (timestamp, date, number, text) -> UTC ns."""
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    t = col.type
    if pa.types.is_dictionary(t):
        col = col.dictionary_decode()
        t = col.type
    if (pa.types.is_timestamp(t) or pa.types.is_date(t) or pa.types.is_integer(t)
            or pa.types.is_floating(t)) and col.null_count:
        i = int(np.flatnonzero(_np(pc.is_null(col)).astype(bool))[0])
        raise FileError(path, f"missing timestamp ({name})", row=int(rows[i]))
    if pa.types.is_timestamp(t):
        ns = _timestamp_to_ns(col, path, rows, name)
        if t.tz is not None:
            return ns
        if info is not None:
            info["naive_tz"] = tz
        return naive_ns_to_utc(ns, tz)
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return epoch_to_ns(_np(col), path, rows, name)
    if pa.types.is_date(t):
        ns = _timestamp_to_ns(pc.cast(pc.cast(col, pa.date32()), pa.timestamp("s")), path, rows, name)
        if info is not None:
            info["naive_tz"] = tz
        return naive_ns_to_utc(ns, tz)
    if not (pa.types.is_string(t) or pa.types.is_large_string(t)):
        try:
            col = pc.cast(col, pa.string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise FileError(path, f"column {name!r} has type {t}, not a timestamp") from None
    return parse_time_strings(col, tz, path, rows, name, date_order, info)
