"""The failing examples the raw-file fuzzer (`tests/test_raw_fuzz.py`) found, as regular tests with their
inputs written out (shrunk by hand). Each ran through `data_tools.process` before the fix with the outcome
named in its comment; now it exits 0 with the file's bars, or exits 2 with one line naming the file and row.
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.raw_fuzz import STALE, check_processed, processed_bars, run_command
from tests.raw_layouts import PANDAS, SEED, VENDOR

def run_file(tmp: Path, name: str, data: bytes, stale=()) -> tuple[int, str, str, Path]:
    raw, proc = tmp / "raw", tmp / "processed"
    raw.mkdir(parents=True)
    proc.mkdir()
    (raw / name).write_bytes(data)
    for s in stale:
        (proc / f"{s}.parquet").write_bytes(STALE)
    status, out, err = run_command(raw, proc)
    assert "Traceback" not in err
    return status, out, err, proc


def assert_fails(tmp: Path, name: str, data: bytes, *fragments: str, stale=()) -> str:
    """Exit 2, one line naming the file and every fragment, no processed file left for `stale` symbols."""
    status, out, err, proc = run_file(tmp, name, data, stale or [Path(name).stem])
    assert status == 2, (out, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and f"/raw/{name}" in lines[0], err
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    for s in stale or [Path(name).stem]:
        assert not (proc / f"{s}.parquet").exists(), s
    return lines[0]


def assert_reads_as(tmp: Path, name: str, data: bytes, clean: bytes) -> None:
    """Exit 0, nothing on stderr, and exactly the bars of the unmutated file."""
    status, out, err, proc = run_file(tmp / "mutant", name, data)
    assert status == 0 and err == "", (out, err)
    status, _, err, clean_proc = run_file(tmp / "clean", name, clean)
    assert status == 0, err
    stem = "NIFTY" if name.endswith(".txt") else Path(name).stem
    assert processed_bars(check_processed(proc / f"{stem}.parquet")) == processed_bars(
        check_processed(clean_proc / f"{stem}.parquet"))


# -------------------------------------------------------------------------------------- impossible times

@pytest.mark.parametrize("value,problem", [
    # before: exit 1, "ArrowInvalid: Failed to parse string: '...' as a scalar of type timestamp[ns]"
    ("2024-13-05 09:15:00", "is not a real date and time"), ("2024-02-30 09:15:00", "is not a real date and time"),
    ("2023-02-29 09:15:00", "is not a real date and time"), ("2024-01-05 99:15:00", "is not a real date and time"),
    ("2024-01-05 24:00:00", "is not a real date and time"), ("2024-01-05 09:61:00", "is not a real date and time"),
    ("2024-01-05 09:15:60", "is not a real date and time"), ("0000-01-05 09:15:00", "is not in 1970-2199"),
    ("9999-01-05 09:15:00", "is not in 1970-2199"),
    # before: read as an offset of 100 hours, then "cannot tell the bar size of NIFTY50" (no row named)
    ("2024-01-05 09:15:00+99:99", "has an impossible UTC offset"),
])
def test_iso_timestamp_that_is_no_real_time(tmp_path, value, problem):
    data = PANDAS.replace(b"2024-01-05 09:15:00", value.encode())
    assert_fails(tmp_path, "NIFTY50.csv", data, "NIFTY50.csv row 2:", repr(value), problem)


def test_vendor_file_with_a_header_and_february_30(tmp_path):
    """The issue's case: vendor columns whose dates cannot be real (before: exit 1 with pyarrow's message)."""
    data = (b"symbol,date,time,open,high,low,close,volume,oi\n"
            b"NIFTY,2024-02-29,09:16,51.09,51.16,51.09,51.16,0,0\n"
            b"NIFTY,2024-02-30,09:17,48.38,53.92,48.38,51.65,0,0\n")
    assert_fails(tmp_path, "2024 FEB NIFTY.txt", data, "row 3:", "'2024-02-30 09:17'", "not a real date and time",
                 stale=["NIFTY"])


@pytest.mark.parametrize("date,problem", [
    ("20240230", "is not a real date and time"),   # before: read as 2024-03-01, silently
    ("2024 01 02", "unparseable timestamp"),       # before: read as 2024-01-02, silently
    ("2024022", "unparseable timestamp"),          # before: read as 2024-02-02, silently
    ("00000102", "is not in 1970-2199"),          # before: exit 1, "ArrowInvalid: ... out of bounds timestamp"
])
def test_headerless_vendor_dates_are_not_rolled_over(tmp_path, date, problem):
    data = VENDOR.replace(b"20240229,09:17", date.encode() + b",09:17")
    assert_fails(tmp_path, "2024 FEB NIFTY.txt", data, "row 2:", problem, stale=["NIFTY"])


@pytest.mark.parametrize("first", [b"NIFTY,,09:16", b"NIFTY,2024022,09:16", b"NIFTY,20240229,"])
def test_a_bad_first_vendor_line_is_its_row(tmp_path, first):
    """The layout comes from most of the first lines, not the first alone (before: "no header line, and the first
    line is not the vendor layout", no row, and a stale NIFTY.parquet stayed)."""
    data = VENDOR.replace(b"NIFTY,20240229,09:16", first, 1)
    assert_fails(tmp_path, "2024 FEB NIFTY.txt", data, "2024 FEB NIFTY.txt row 1:", "timestamp", stale=["NIFTY"])


@pytest.mark.parametrize("seconds,tz", [
    (-62135596800, "UTC"),            # year 1; before: exit 1, "ArrowInvalid: ... out of bounds timestamp"
    (253402300799, "Asia/Kolkata"),   # 9999-12-31 23:59:59 UTC, year 10000 in IST; after the first fix: exit 1,
])                                    # "OverflowError: date value out of range" while writing the message
def test_parquet_timestamp_out_of_range(tmp_path, seconds, tz):
    buf = io.BytesIO()
    pq.write_table(pa.table({
        "timestamp": pa.array([1736480700, seconds, 1736480820], pa.timestamp("s", tz=tz)),
        "Open": [100.0] * 3, "High": [101.0] * 3, "Low": [99.0] * 3, "Close": [100.5] * 3}), buf)
    assert_fails(tmp_path, "PQDATA.parquet", buf.getvalue(), "PQDATA.parquet row 2:", "is not in 1970-2199")


@pytest.mark.parametrize("value,fragment", [
    # before: every row was read as milliseconds (the unit came from the largest value): "bar spacing 0.24 s is
    # not a whole number of minutes", no row named
    (b"1736480820000", "reads as milliseconds, the other rows as seconds"),
    # before: beyond int64: a RuntimeWarning on stderr and "bar spacing 2.4e-07 s is not a whole number of minutes"
    (b"17611911000000000000", "reads as nanoseconds, the other rows as seconds"),
    # before: exit 0, the row read as 1914 and dropped as a "special session"
    (b"-1736480820", "is not in 1970-2199"),
])
def test_epoch_row_in_another_unit_or_range(tmp_path, value, fragment):
    data = SEED.replace(b"1736480820", value)
    assert_fails(tmp_path, "Nifty_2.csv", data, "Nifty_2.csv row 3:", fragment)


def test_repeated_header_is_the_row_to_blame(tmp_path):
    """Two exports concatenated: the second header line is named (before: "row 2: unparseable timestamp
    '1736480700'", a good row)."""
    data = SEED + SEED.splitlines(keepends=True)[0] + b"3,1736481060,102.00,103.00,101.50,102.50,0\n"
    assert_fails(tmp_path, "Nifty_2.csv", data, "Nifty_2.csv row 5:", "unparseable timestamp 'datetime'")


# ------------------------------------------------------------------------------------------- bad values

@pytest.mark.parametrize("volume", [b"-1", b"-inf", b"inf"])
def test_negative_or_infinite_volume(tmp_path, volume):
    """Before: written to the processed file as they were."""
    data = VENDOR.replace(b",10,0\n", b"," + volume + b",0\n")
    assert_fails(tmp_path, "2024 FEB NIFTY.txt", data, "row 3:", "is not a finite number >= 0", stale=["NIFTY"])


def test_infinite_prices(tmp_path):
    """Before: a bar of four infinite prices passed the OHLC checks and was written."""
    data = SEED.replace(b"100.50,102.00,100.00,101.50", b"inf,inf,inf,inf")
    assert_fails(tmp_path, "Nifty_2.csv", data, "Nifty_2.csv row 3:", "infinite price (open inf, high inf")


def test_non_ascii_digits_name_their_row(tmp_path):
    """Python's float() reads Arabic-Indic digits, pyarrow does not (before: the message named '50.50', a
    good value, and no row)."""
    data = VENDOR.replace(b"53.92", "\u0661\u0662\u0663".encode())
    line = assert_fails(tmp_path, "2024 FEB NIFTY.txt", data, "row 2:", "in column 'high'", stale=["NIFTY"])
    assert "\u0661\u0662\u0663" in line


# ---------------------------------------------------------------------------------- lines and encodings

@pytest.mark.parametrize("name,clean,mutant", [
    # before: "malformed CSV: expected 7 fields, got 1"
    ("Nifty_2.csv", SEED, SEED.replace(b"\n0,", b"\n \n0,")),
    ("Nifty_2.csv", SEED, SEED + b"\t\n"),
    # before: the header line was read as data (pyarrow's skip_rows counts blank lines)
    ("Nifty_2.csv", SEED, b"\n" + SEED),
    ("2024 FEB NIFTY.txt", b"symbol,date,time,open,high,low,close,volume,oi\n" + VENDOR,
     b"\r\n\r\nsymbol,date,time,open,high,low,close,volume,oi\r\n" + VENDOR.replace(b"\n", b"\r\n")),
    # before: "no header line, and the first line is not the vendor layout"
    ("Nifty_2.csv", SEED, SEED.decode().encode("utf-16")),
    ("Nifty_2.csv", SEED, b"\xfe\xff" + SEED.decode().encode("utf-16-be")),
    # mixed zones, the same instants (09:15 IST written in UTC and in New York time); this one passed before
    ("NIFTY50.csv", PANDAS, PANDAS.replace(b"2024-01-05 09:15:00,", b"2024-01-05 03:45:00Z,").replace(
        b"2024-01-05 09:16:00,", b"2024-01-04 22:46:00-05:00,")),
])
def test_files_that_mean_the_same(tmp_path, name, clean, mutant):
    assert_reads_as(tmp_path, name, mutant, clean)


@pytest.mark.parametrize("data,fragments", [
    # before: "malformed CSV: In CSV column #2: Row #2: CSV conversion error to string: invalid UTF8 data"
    (SEED.replace(b"100.00,101.00", b"100.00\xe9,101.00"), ["Nifty_2.csv row 2:", "not UTF-8 text (byte 0xE9)"]),
    (SEED.decode().encode("utf-16-le"), ["Nifty_2.csv row 1:", "NUL byte", "UTF-16 without a byte-order mark"]),
    # before: row 6 (Python's splitlines counts the vertical tab as a line break; pyarrow does not)
    (SEED + b"\x0bjunk\n", ["Nifty_2.csv row 5:", "expected 7 fields, got 1"]),
    # found by the long profile: a lone carriage return ends a line for the CSV reader (row 5 of 5 such lines),
    # though the file has only 4 line feeds; the fuzzer's own bound on row numbers had counted line feeds only
    (SEED[:-1] + b"\r0\x0b", ["Nifty_2.csv row 5:", "expected 7 fields, got 1"]),
])
def test_undecodable_text_names_the_line(tmp_path, data, fragments):
    assert_fails(tmp_path, "Nifty_2.csv", data, *fragments)


@pytest.mark.parametrize("data,fragment,symbols", [
    # before: the failure went to the symbol '"NIFTY"' (quotes kept), so a stale NIFTY.parquet stayed
    (b"".join(b'"' + b'","'.join(line.split(b",")) + b'"\n' for line in VENDOR.replace(b"53.92", b"1/0")
                                                                            .splitlines()),
     "unparseable number '1/0'", ["NIFTY"]),
    # before: the failure went to the file's stem, so stale NIFTY.parquet and BANKNIFTY.parquet stayed
    (VENDOR + b"BANKNIFTY,20240229,09:16,51.09,51.16,51.09,51.16,0,0\nBANKNIFTY,20240229,09:17,\xe9\n",
     "not UTF-8 text", ["NIFTY", "BANKNIFTY"]),
])
def test_a_broken_vendor_file_fails_its_symbols(tmp_path, data, fragment, symbols):
    assert_fails(tmp_path, "2024 FEB NIFTY.txt", data, fragment, stale=symbols)


def test_a_symbol_with_one_bar_names_its_row(tmp_path):
    """A flipped bit in a symbol field makes a symbol of one bar: the row is named (before: only the file)."""
    data = VENDOR.replace(b"NIFTY,20240229,09:17", b"OIFTY,20240229,09:17")
    status, out, err, proc = run_file(tmp_path, "2024 FEB NIFTY.txt", data)
    assert status == 2 and err.splitlines() == [
        f"error: {tmp_path / 'raw' / '2024 FEB NIFTY.txt'} row 2: cannot tell the bar size of OIFTY: its only bar "
        f"(intraday bars expected)"]
    check_processed(proc / "NIFTY.parquet")


@pytest.mark.parametrize("data,fragment", [
    (gzip.compress(SEED, mtime=0), "gzip-compressed: decompress it first"),
    (b"PK\x03\x04\x14\x00" + bytes(24), "a ZIP archive (an Excel .xlsx workbook?)"),
    (b"PAR1" + bytes(16) + b"PAR1", "a Parquet file: give it a .parquet name"),
])
def test_another_file_type_under_a_csv_name(tmp_path, data, fragment):
    """Not failures (they exited 2 before too) but clearer: before, each said "no header line, and the first
    line is not the vendor layout", nothing of what the file is."""
    assert_fails(tmp_path, "Nifty_2.csv", data, f"Nifty_2.csv: not a CSV/TXT text file: {fragment}")
