"""Source reader options and declared types on real-world files (issue 24): rows appended with
CRLF to an LF csv, pandas' null list, declared types enforced (file, line, column), csv dialect
options, xlsx / json / jsonl sources, and the options in the cache key."""

from __future__ import annotations

import csv
import io
import json
import sys

import pytest

from dagsmith.runtime.context import StepFailed

from runtime_testing import Pipeline


def _source(tmp_path, source: str, name: str = "shuttles"):
    """A compiled spec whose feature reads the source; returns (pipeline, run the source -> table)."""
    spec = f"""
        dagsmith: 1
        pipeline: {{name: shuttles}}
        sources:
          {name}: {source}
        features:
          f: {{inputs: [{name}], sql: "select * from {name}"}}
    """
    pipeline = Pipeline(tmp_path, spec, tables={})

    def read():
        pipeline.run(name)
        return pipeline.ctx("f").read_table(name)

    return pipeline, read


def _rows(table) -> list[dict]:
    return table.to_pylist()


def test_crlf_rows_appended_to_an_lf_csv_read_like_pandas(tmp_path):
    """Python's csv module writes \\r\\n: rows it appends to a \\n file made DuckDB's sniffer fail
    ("Error when sniffing file"); the dialect is now explicit and line endings may mix."""
    (tmp_path / "shuttles.csv").write_text("id,price,name\n1,2.5,a\n2,3.5,b\n", newline="")
    with open(tmp_path / "shuttles.csv", "a", newline="") as handle:
        csv.writer(handle).writerows([[3, "4.5", "c"], [4, "5.5", "d"]])
    assert b"\r\n" in (tmp_path / "shuttles.csv").read_bytes() and b"b\n" in (tmp_path / "shuttles.csv").read_bytes()
    _, read = _source(tmp_path, "{type: csv, uri: shuttles.csv}")
    table = read()
    assert _rows(table) == [{"id": 1, "price": 2.5, "name": "a"}, {"id": 2, "price": 3.5, "name": "b"},
                            {"id": 3, "price": 4.5, "name": "c"}, {"id": 4, "price": 5.5, "name": "d"}]
    import pandas as pd

    assert pd.read_csv(tmp_path / "shuttles.csv").to_dict("records") == _rows(table)


def test_na_in_a_numeric_column_without_declared_types_is_a_null_in_a_number_column(tmp_path):
    """palmerpenguins writes NA for a missing measurement: with pandas' null list the column is
    numbers with nulls, not text (which one-hot encoding would turn into hundreds of columns)."""
    (tmp_path / "penguins.csv").write_text(
        "species,bill_length_mm,body_mass_g,sex\nAdelie,39.1,3750,male\nAdelie,NA,NA,NA\nGentoo,46.1,,female\n"
        "Gentoo,N/A,5000,null\n")
    _, read = _source(tmp_path, "{type: csv, uri: penguins.csv}")
    table = read()
    assert str(table.schema.field("bill_length_mm").type) == "double"
    assert str(table.schema.field("body_mass_g").type) == "int64"
    assert table.column("bill_length_mm").to_pylist() == [39.1, None, 46.1, None]
    assert table.column("body_mass_g").to_pylist() == [3750, None, None, 5000]
    assert table.column("sex").to_pylist() == ["male", None, "female", None]


def test_na_in_a_declared_double_column_is_null_and_null_values_replace_the_list(tmp_path):
    (tmp_path / "penguins.csv").write_text("id,mass\n1,3750\n2,NA\n3,-\n")
    _, read = _source(tmp_path, "{type: csv, uri: penguins.csv, columns: {mass: double, id: string}}")
    with pytest.raises(StepFailed) as failed:  # '-' is not in the default list
        read()
    assert "line 4 of penguins.csv, column 'mass': '-' is not a double" in str(failed.value)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "penguins.csv").write_text("id,mass\n1,3750\n2,NA\n3,-\n")
    _, read = _source(tmp_path / "b", "{type: csv, uri: penguins.csv, null_values: ['-', NA], columns: {mass: double, id: string}}")
    table = read()
    assert table.column("mass").to_pylist() == [3750.0, None, None]
    assert table.column("id").to_pylist() == ["1", "2", "3"]  # declared string: not inferred as a number
    assert str(table.schema.field("mass").type) == "double"


def test_a_bad_value_names_the_file_line_and_column_or_is_null_with_on_bad_value_null(tmp_path):
    rows = "id,engines,price,day\n1,2,1.5,2024-01-02\n2,3.5,2.5,2024-01-03\n3,x,abc,someday\n4,4,1e3,2024-02-30\n"
    (tmp_path / "shuttles.csv").write_text(rows)
    declared = "columns: {engines: integer, price: double, day: date}"
    _, read = _source(tmp_path, f"{{type: csv, uri: shuttles.csv, {declared}}}")
    with pytest.raises(StepFailed) as failed:
        read()
    message = str(failed.value)
    # line 3: 3.5 is not a whole number (a plain cast would round it to 4)
    assert "line 3 of shuttles.csv, column 'engines': '3.5' is not an integer (2 values of this column do not)" in message
    assert "line 4 of shuttles.csv, column 'price': 'abc' is not a double" in message
    assert "line 4 of shuttles.csv, column 'day': 'someday' is not a date (2 values of this column do not)" in message
    assert "on_bad_value: null" in message
    (tmp_path / "n").mkdir()
    (tmp_path / "n" / "shuttles.csv").write_text(rows)
    _, read = _source(tmp_path / "n", f"{{type: csv, uri: shuttles.csv, {declared}, on_bad_value: null}}")
    table = read()
    assert table.column("engines").to_pylist() == [2, None, None, 4]
    assert table.column("price").to_pylist() == [1.5, 2.5, None, 1000.0]
    assert [str(d) if d else None for d in table.column("day").to_pylist()] == ["2024-01-02", "2024-01-03", None, None]
    assert str(table.schema.field("engines").type) == "int64"


def test_csv_dialect_options(tmp_path):
    """delimiter, quote, escape, skip_rows, header: false and encoding, all explicit."""
    text = "exported by a tool\nsecond preamble line\nid;name;price\n1;'a;b';2,5\n2;'it\\'s';3\n"
    (tmp_path / "shuttles.csv").write_bytes(text.replace("a;b", "é;b").encode("latin-1"))
    _, read = _source(tmp_path, "{type: csv, uri: shuttles.csv, delimiter: ';', quote: \"'\", escape: '\\',"
                                " skip_rows: 2, encoding: latin-1, columns: {id: integer}}")
    assert _rows(read()) == [{"id": 1, "name": "é;b", "price": "2,5"}, {"id": 2, "name": "it's", "price": "3"}]
    (tmp_path / "h").mkdir()
    (tmp_path / "h" / "shuttles.csv").write_text("1,a\n2,b\n")
    _, read = _source(tmp_path / "h", "{type: csv, uri: shuttles.csv, header: false, columns: {column0: string}}")
    assert _rows(read()) == [{"column0": "1", "column1": "a"}, {"column0": "2", "column1": "b"}]


def test_a_declared_column_not_in_the_file_is_an_error(tmp_path):
    (tmp_path / "shuttles.csv").write_text("id,price\n1,2\n")
    _, read = _source(tmp_path, "{type: csv, uri: shuttles.csv, columns: {prices: double}}")
    with pytest.raises(StepFailed, match=r"declared column\(s\) 'prices' not in the csv data \(its columns: id, price\)"):
        read()


def test_an_unreadable_csv_names_the_reader_error_and_the_spec_options(tmp_path):
    (tmp_path / "shuttles.csv").write_bytes("id,name\n1,\u00e9t\u00e9\n".encode("utf-16"))
    _, read = _source(tmp_path, "{type: csv, uri: shuttles.csv}")
    with pytest.raises(StepFailed) as failed:
        read()
    lines = str(failed.value).splitlines()
    assert lines[0].startswith("source 'shuttles' (shuttles.csv): cannot read csv: ")
    assert lines[1].startswith("hint: set the source's delimiter, quote, escape, encoding")
    (tmp_path / "u").mkdir()
    (tmp_path / "u" / "shuttles.csv").write_bytes("id,name\n1,\u00e9t\u00e9\n".encode("utf-16"))
    _, read = _source(tmp_path / "u", "{type: csv, uri: shuttles.csv, encoding: utf-16}")
    assert _rows(read()) == [{"id": 1, "name": "été"}]


def test_the_run_table_shows_the_whole_first_line_and_the_hint():
    from rich.console import Console

    from dagsmith.runner.progress import summary

    error = ("source 'shuttles' (data/shuttles.csv): cannot read csv: Invalid Input Error: Error when sniffing file "
             "\"data/shuttles.csv\".\nhint: set the source's delimiter, quote, escape, encoding, header or skip_rows\n"
             "It was not possible to automatically detect the CSV parsing dialect")
    record = {"run_id": "r1", "pipeline": "p", "status": "failed",
              "steps": {"shuttles": {"state": "failed", "attempts": 1, "error": error}}}
    console = Console(file=io.StringIO(), width=400, color_system=None)
    summary(record, console)
    text = console.file.getvalue()
    assert "Error when sniffing file \"data/shuttles.csv\"." in text
    assert "hint: set the source's delimiter" in text
    assert "It was not possible" not in text  # the rest is in run.json


def test_xlsx_source_by_sheet_name_and_index_with_declared_types(tmp_path):
    openpyxl = pytest.importorskip("openpyxl")
    book = openpyxl.Workbook()
    book.active.title = "notes"
    book.active.append(["nothing here"])
    sheet = book.create_sheet("shuttles")
    for row in (["id", "price", "engines", "name"], [1, 2.5, 2, "a"], [2, "NA", 3, "b"], [3, 4, "4", None]):
        sheet.append(row)
    book.save(tmp_path / "book.xlsx")
    _, read = _source(tmp_path, "{type: xlsx, uri: book.xlsx, sheet: shuttles, columns: {engines: integer}}")
    table = read()
    assert _rows(table) == [{"id": 1, "price": 2.5, "engines": 2, "name": "a"},
                            {"id": 2, "price": None, "engines": 3, "name": "b"},
                            {"id": 3, "price": 4.0, "engines": 4, "name": None}]
    assert str(table.schema.field("engines").type) == "int64" and str(table.schema.field("price").type) == "double"
    (tmp_path / "i").mkdir()
    book.save(tmp_path / "i" / "book.xlsx")
    _, read = _source(tmp_path / "i", "{type: xlsx, uri: book.xlsx, sheet: 1, columns: {name: integer}}")
    with pytest.raises(StepFailed, match=r"row 2 of book.xlsx, column 'name': 'a' is not an integer"):
        read()
    (tmp_path / "m").mkdir()
    book.save(tmp_path / "m" / "book.xlsx")
    _, read = _source(tmp_path / "m", "{type: xlsx, uri: book.xlsx, sheet: prices}")
    with pytest.raises(StepFailed, match=r"^source 'shuttles' \(book.xlsx\): book.xlsx has no sheet 'prices'; sheets: notes, shuttles"):
        read()


def test_xlsx_without_openpyxl_names_the_extra(tmp_path, monkeypatch):
    (tmp_path / "book.xlsx").write_bytes(b"PK")
    monkeypatch.setitem(sys.modules, "openpyxl", None)
    _, read = _source(tmp_path, "{type: xlsx, uri: book.xlsx}")
    with pytest.raises(StepFailed, match=r"^source 'shuttles' \(book.xlsx\): an xlsx source needs openpyxl: pip install 'dagsmith\[xlsx\]'"):
        read()


def test_json_array_and_jsonl_sources_with_declared_types(tmp_path):
    rows = [{"id": 1, "price": 2.5, "when": "2024-01-02"}, {"id": 2, "price": "3", "when": None},
            {"id": 3, "price": None, "when": "2024-01-04"}]
    (tmp_path / "shuttles.json").write_text(json.dumps(rows))
    _, read = _source(tmp_path, "{type: json, uri: shuttles.json, columns: {price: double, when: date}}")
    table = read()
    assert table.column("price").to_pylist() == [2.5, 3.0, None]
    assert str(table.schema.field("when").type) == "date32[day]"
    (tmp_path / "l").mkdir()
    (tmp_path / "l" / "shuttles.jsonl").write_text("\n".join(json.dumps(r) for r in rows + [{"id": 4, "price": "NA"}]) + "\n")
    _, read = _source(tmp_path / "l", "{type: jsonl, uri: shuttles.jsonl, columns: {price: double}}")
    with pytest.raises(StepFailed, match=r"line 4 of shuttles.jsonl, column 'price': 'NA' is not a double"):
        read()
    (tmp_path / "n").mkdir()
    (tmp_path / "n" / "shuttles.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    _, read = _source(tmp_path / "n", "{type: jsonl, uri: shuttles.jsonl}")
    table = read()  # undeclared: a column of mixed kinds (2.5, "3") is text, as written
    assert table.column("price").to_pylist() == ["2.5", "3", None] and table.column("id").to_pylist() == [1, 2, 3]


def test_reader_options_are_in_the_step_config_and_the_cache_key(tmp_path):
    from dagsmith.runner.cache import cache_key

    (tmp_path / "shuttles.csv").write_text("id,price\n1,NA\n")
    first, _ = _source(tmp_path, "{type: csv, uri: shuttles.csv}")
    second, _ = _source(tmp_path, "{type: csv, uri: shuttles.csv, null_values: ['']}")
    assert second.ir.step("shuttles").config["null_values"] == [""]
    assert cache_key(first.ctx("shuttles"), first.ir) != cache_key(second.ctx("shuttles"), second.ir)


def test_xlsx_cells_keep_their_kinds_and_a_glob_of_csv_files_reads_with_the_same_options(tmp_path):
    import datetime as dt

    openpyxl = pytest.importorskip("openpyxl")
    book = openpyxl.Workbook()
    for row in (["day", "ok", "n"], [dt.datetime(2024, 1, 2), True, 1], [None, None, "NA"], [dt.datetime(2024, 1, 3), False, 2]):
        book.active.append(row)
    book.save(tmp_path / "book.xlsx")
    _, read = _source(tmp_path, "{type: xlsx, uri: book.xlsx}")
    table = read()
    assert table.column("ok").to_pylist() == [True, None, False] and table.column("n").to_pylist() == [1, None, 2]
    assert table.column("day").to_pylist()[0] == dt.datetime(2024, 1, 2)
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "a.csv").write_bytes(b"id;price\n1;NA\n")
    (tmp_path / "g" / "b.csv").write_bytes(b"id;price;extra\r\n2;x;e\r\n3;4.5;f\n")
    _, read = _source(tmp_path / "g", "{type: csv, uri: '*.csv', delimiter: ';', columns: {price: double}}")
    with pytest.raises(StepFailed, match=r"line 2 of b.csv, column 'price': 'x' is not a double"):
        read()
    (tmp_path / "g" / "b.csv").write_bytes(b"id;price;extra\r\n2;3;e\r\n3;4.5;f\n")
    assert _rows(read()) == [{"id": 1, "price": None, "extra": None}, {"id": 2, "price": 3.0, "extra": "e"},
                             {"id": 3, "price": 4.5, "extra": "f"}]


def test_a_row_with_extra_values_or_an_open_quote_is_an_error_with_its_line_never_a_dropped_value(tmp_path):
    """DuckDB's lenient mode would drop the third value of `3,4,5` and read an unclosed quote to
    the end of the file: the reader stays strict, and says which line."""
    for folder, text, expected in (("extra", "a,b\n1,2\n3,4,5\n8,9\n", r"Line: 3; Original Line: 3,4,5; Expected Number of Columns: 2 Found: 3\n"),
                                   ("quote", 'a,b\n1,2\n7,"x\n8,9\n', r"(?s)Line: 3.*7,\"x")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "shuttles.csv").write_text(text)
        _, read = _source(tmp_path / folder, "{type: csv, uri: shuttles.csv}")
        with pytest.raises(StepFailed, match=expected) as failed:
            read()
        assert str(failed.value).startswith("source 'shuttles' (shuttles.csv): cannot read csv: ")


def test_crlf_rows_appended_past_the_sniffer_sample_and_in_a_quoted_value(tmp_path):
    """The sniffer reads the first rows only: CRLF rows after 25,000 LF rows still read."""
    body = "".join(f"{i},{i * 0.5}\n" for i in range(25_000))
    (tmp_path / "big.csv").write_bytes(("id,price\n" + body).encode() + b'25000,1.5\r\n25001,"2.5"\r\n')
    _, read = _source(tmp_path, "{type: csv, uri: big.csv, columns: {price: double}}")
    table = read()
    assert table.num_rows == 25_002 and table.column("price").to_pylist()[-2:] == [1.5, 2.5]
    assert (tmp_path / "big.csv").read_bytes().endswith(b'"2.5"\r\n')  # the user's file is left as it is


def test_a_row_past_the_sniffer_sample_that_breaks_the_dialect_names_its_line(tmp_path):
    body = "".join(f"{i},{i * 0.5}\n" for i in range(25_000))
    (tmp_path / "big.csv").write_text("id,price\n" + body + "25000,1.5,extra\n")
    _, read = _source(tmp_path, "{type: csv, uri: big.csv, columns: {price: double}}")
    with pytest.raises(StepFailed, match=r"(?s)^source 'shuttles' \(big.csv\): cannot read csv: .*Line: 25002; Original Line: 25000,1.5,extra; Expected Number of Columns: 2 Found: 3\nhint: "):
        read()


def test_without_a_header_xlsx_and_csv_name_columns_alike(tmp_path):
    openpyxl = pytest.importorskip("openpyxl")
    book = openpyxl.Workbook()
    book.active.append(list(range(12)))
    book.save(tmp_path / "wide.xlsx")
    _, read = _source(tmp_path, "{type: xlsx, uri: wide.xlsx, header: false, columns: {column11: string}}")
    xlsx = read()
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "wide.csv").write_text(",".join(map(str, range(12))) + "\n")
    _, read = _source(tmp_path / "c", "{type: csv, uri: wide.csv, header: false, columns: {column11: string}}")
    assert read().column_names == xlsx.column_names == [f"column{i:02d}" for i in range(12)]
    assert xlsx.column("column11").to_pylist() == ["11"]
