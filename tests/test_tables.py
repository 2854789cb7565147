"""The one number formatter and table writer: one spelling of a missing number, `|` escaped, raw CSV values."""

from __future__ import annotations

import csv
import math

from kss_lora import tables


def test_one_spelling_for_missing_numbers():
    for bad in (None, math.nan, math.inf, -math.inf, "x"):
        assert tables.fmt_num(bad) == tables.MISSING
        assert tables.fmt_p(bad) == tables.MISSING
        assert tables.fmt_pct(bad) == tables.MISSING
        assert tables.fmt_mean_std(bad, 0.1) == tables.MISSING
    assert tables.fmt_general(math.nan) == tables.MISSING and tables.fmt_general(None) == tables.MISSING
    assert tables.fmt_ci(0.1, math.nan) == tables.MISSING


def test_number_forms():
    assert tables.fmt_num(0.12345) == "0.1235" and tables.fmt_num(0.1, 2, signed=True) == "+0.10"
    assert tables.fmt_p(0.00001) == "<0.0001" and tables.fmt_p(0.03456) == "0.0346"
    assert tables.fmt_mean_std(1.0, 0.5, 2) == "1.00 ± 0.50" and tables.fmt_mean_std(1.0, math.nan, 2) == "1.00"
    assert tables.fmt_pct(-0.034) == "-3.4%" and tables.fmt_ci(-0.01, 0.02, 3) == "[-0.010, +0.020]"
    assert tables.fmt_general(0.000123) == "1.23e-04" and tables.fmt_general(12.3456) == "12.35"
    assert tables.fmt_general(3) == "3" and tables.fmt_general("abc") == "abc"
    assert tables.fmt_label(0.1) == "0.1" and tables.fmt_label(1e-5) == "1e-05" and tables.fmt_label(8) == "8"


def test_markdown_table_escapes_pipes_and_formats_numbers():
    md = tables.markdown_table([{"a": "x | y", "b": math.nan}, {"a": "z", "b": 0.5}])
    lines = md.splitlines()
    assert lines[0] == "| a | b |" and lines[1] == "|---|---|"
    assert lines[2] == "| x \\| y | – |" and lines[3] == "| z | 0.5 |"
    assert tables.markdown_table([], empty="_none_") == "_none_"
    assert tables.markdown_table([{"a": 1, "b": 2}], ["b"]).splitlines()[2] == "| 2 |"


def test_write_csv_keeps_raw_values_and_first_seen_columns(tmp_path):
    path = tables.write_csv(tmp_path / "sub" / "t.csv", [{"a": 0.123456789}, {"b": "x", "a": math.nan}])
    rows = list(csv.DictReader(path.open()))
    assert list(rows[0]) == ["a", "b"] and rows[0]["a"] == "0.123456789" and rows[1]["a"] == "nan"
