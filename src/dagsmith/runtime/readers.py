"""How a source's files become a table: csv, json, jsonl and xlsx with their spec options, and
declared column types enforced (docs/spec.md, "How a CSV is read").

CSV, JSON and JSONL are read by DuckDB with the dialect set explicitly (never sniffed: a sniffer
guesses wrong on a file whose rows were appended with other line endings, and such a file is read
from a copy with one line ending); xlsx by openpyxl (the `xlsx` extra). A declared column is read as text and converted here, so a value that does not
convert is reported with its file, line and column, or becomes null with `on_bad_value: null`.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from .context import StepFailed

# What counts as null in a csv (and in an xlsx text cell) unless `null_values` says otherwise:
# pandas' default list (pandas._libs.parsers.STR_NA_VALUES, pandas 2.x), written out so that it
# does not change with the installed pandas. docs/spec.md lists it.
DEFAULT_NULL_VALUES = (
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
)

# A declared type -> the DuckDB type its values convert to.
COLUMN_TYPES = {
    "string": "VARCHAR", "integer": "BIGINT", "double": "DOUBLE", "number": "DOUBLE",
    "boolean": "BOOLEAN", "date": "DATE", "timestamp": "TIMESTAMP",
}

HINT = ("hint: set the source's delimiter, quote, escape, encoding, header or skip_rows in the spec "
        "(docs/spec.md, \"How a CSV is read\")")


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _convert(expression: str, kind: str) -> str:
    """SQL converting a text value to a declared type; NULL when it does not convert. An integer
    must be whole: TRY_CAST('3.5' AS BIGINT) would round it to 4."""
    if kind == "string":
        return expression
    if kind == "integer":
        return (f"CASE WHEN TRY_CAST({expression} AS DOUBLE) = TRY_CAST({expression} AS BIGINT) "
                f"THEN TRY_CAST({expression} AS BIGINT) END")
    return f"TRY_CAST({expression} AS {COLUMN_TYPES[kind]})"


def read(con, fmt: str, files: list[Path], config: dict, label: str, scratch: Path) -> str:
    """The SELECT on `con` of the files of one source as one table, its declared columns checked
    (unless `on_bad_value: null`) and converted; the caller runs it (sources.py streams it with
    COPY) inside `reading(label, fmt)`. `label`: how messages name the source; `scratch`: a folder
    for a file's normalized copy (mixed line endings)."""
    import duckdb

    declared = dict(config.get("columns") or {})
    try:
        views = [_load(con, fmt, path, config, declared, index, scratch) for index, path in enumerate(files)]
    except duckdb.Error as exc:
        raise StepFailed(_reader_error(label, fmt, exc)) from None
    except StepFailed as exc:  # the xlsx reader's: which source it was
        raise StepFailed(f"{label}: {exc}") from None
    present = list(dict.fromkeys(c for view, _ in views for c in con.table(view).columns))
    missing = [c for c in declared if c not in present]
    if missing:
        raise StepFailed(f"{label}: declared column(s) {', '.join(map(repr, missing))} not in the {fmt} data "
                         f"(its columns: {', '.join(present)})")
    union = " UNION ALL BY NAME ".join(f"SELECT * FROM {view}" for view, _ in views)
    select = ", ".join(
        (f"{_convert(_quoted(c), declared[c])} AS {_quoted(c)}" if c in declared else _quoted(c)) for c in present
    )
    with reading(label, fmt):  # a row past the sniffer's sample that breaks the dialect fails here, in a query
        if config.get("on_bad_value", "fail") == "fail":
            for (view, path) in views:
                _check(con, view, path, fmt, config, declared, label)
    return f"SELECT {select} FROM ({union})"


@contextmanager
def reading(label: str, fmt: str):
    """A DuckDB error while a source's files are read, as the StepFailed that names the source
    and the line (and, for csv, the options that set the dialect)."""
    import duckdb

    try:
        yield
    except duckdb.Error as exc:
        raise StepFailed(_reader_error(label, fmt, exc)) from None


# Lines of a DuckDB reader error that say what is wrong on the line it names: kept on the first
# line of the message (the one the run table shows).
_DETAIL = ("Original Line:", "Expected Number of Columns", "Error when converting column")


def _reader_error(label: str, fmt: str, exc: Exception) -> str:
    lines = str(exc).splitlines() or [type(exc).__name__]
    details = [line.strip() for line in lines[1:6] if line.startswith(_DETAIL)]
    lines = [lines[0]] + [line for line in lines[1:] if line.strip() not in details]
    head = f"{label}: cannot read {fmt}: {'; '.join([lines[0]] + details)}"
    return "\n".join([head, HINT] + lines[1:]) if fmt == "csv" else "\n".join([head] + lines[1:])


def _load(con, fmt: str, path: Path, config: dict, declared: dict, index: int, scratch: Path) -> tuple[str, Path]:
    """A view of one file, its declared columns as text; returns (view name, path)."""
    view = f"dagsmith_file_{index}"
    if fmt == "xlsx":
        frame = _xlsx_frame(path, config)
        con.register(view + "_frame", frame)
        relation = con.sql(f"SELECT * FROM {view}_frame")
    elif fmt == "csv":
        source = _one_line_ending(path, scratch / f"{index}-{path.name}")
        relation = _csv(con, source, path, config, types=None)
        text = {c: "VARCHAR" for c in declared if c in relation.columns}
        if text:
            relation = _csv(con, source, path, config, types=text)
    else:
        relation = con.sql("SELECT * FROM read_json($f, format=$format)",
                           params={"f": str(path), "format": "array" if fmt == "json" else "newline_delimited"})
    as_text = {c: t for c, t in zip(relation.columns, relation.types)}
    select = []
    for column in relation.columns:
        kind = str(as_text[column])
        if kind == "JSON":  # JSON values of mixed kinds (2.5 and "3"): their text, without quotes
            select.append(f"json_extract_string({_quoted(column)}, '$') AS {_quoted(column)}")
        elif column in declared and kind != "VARCHAR":
            select.append(f"CAST({_quoted(column)} AS VARCHAR) AS {_quoted(column)}")
        else:
            select.append(_quoted(column))
    relation.create_view(view + "_raw")
    # row_number() over a plain scan is the file's order (DuckDB keeps insertion order by default)
    con.sql(f"CREATE OR REPLACE TEMP VIEW {view} AS SELECT {', '.join(select)} FROM {view}_raw")
    con.sql(f"CREATE OR REPLACE TEMP VIEW {view}_numbered AS SELECT row_number() OVER () AS __dagsmith_row, * FROM {view}")
    return view, path


def _csv(con, path: Path, original: Path, config: dict, types: dict | None):
    """DuckDB's read_csv with every dialect option explicit, in strict mode: a row with more or
    fewer values than the header, or a quote never closed, is an error (with its line), never a
    dropped value. `original`: the user's file, when `path` is its normalized copy."""
    import duckdb

    params = {
        "f": str(path),
        "delim": config.get("delimiter", ","),
        "quote": config.get("quote", '"'),
        "escape": config.get("escape", config.get("quote", '"')),
        "header": bool(config.get("header", True)),
        "nullstr": list(config.get("null_values", DEFAULT_NULL_VALUES)),
        "skip": int(config.get("skip_rows", 0)),
        "encoding": config.get("encoding", "utf-8"),
    }
    args = ", ".join(f"{key}=${key}" for key in params if key != "f")
    if types:
        params["types"] = types
        args += ", types=$types"
    try:
        return con.sql(f"SELECT * FROM read_csv($f, {args})", params=params)
    except duckdb.Error as exc:
        if "sniffing file" not in str(exc):
            raise
        # DuckDB's sniffer (it still infers the types) says only that it found no dialect; read
        # every value as text with the header's names to find the row that breaks the dialect.
        found = _first_bad_row(con, path, params, args)
        if found:
            raise duckdb.InvalidInputException(found.replace(str(path), str(original))) from None
        raise


def _first_bad_row(con, path: Path, params: dict, args: str) -> str | None:
    """DuckDB's own error for the first row that breaks the dialect, read with the header's names
    and every column as text (no sniffing); None when it reads (the sniffer failed for another reason)."""
    import csv

    import duckdb

    escape = params["escape"]
    try:
        with open(path, encoding=params["encoding"].replace("latin-1", "latin_1"), newline="") as handle:
            rows = csv.reader(handle, delimiter=params["delim"], quotechar=params["quote"],
                              escapechar=None if escape == params["quote"] else escape, doublequote=escape == params["quote"])
            for _ in range(params["skip"]):
                next(handle, None)
            first = next(rows, None)
    except (OSError, UnicodeError, csv.Error):
        return None
    if not first:
        return None
    names = first if params["header"] else [f"column{i}" for i in range(len(first))]
    text = {name: "VARCHAR" for name in dict.fromkeys(names)}
    given = {k: v for k, v in params.items() if k != "types"}
    try:
        con.sql(f"SELECT count(*) FROM read_csv($f, {args.replace(', types=$types', '')}, auto_detect=false, "
                f"columns=$columns)", params={**given, "columns": text}).fetchall()
    except duckdb.Error as exc:
        return str(exc)
    return None


def _one_line_ending(path: Path, copy: Path) -> Path:
    r"""`path`, or a copy of it with every \r\n made \n when its rows end both ways (Python's csv
    module appends \r\n rows to a \n file): DuckDB's strict mode takes one line ending per file,
    and its lenient mode would drop a row's extra values without a word. One pass over the bytes."""
    chunk_size = 1 << 24
    crlf = lf = 0
    with open(path, "rb") as handle:
        carry = b""
        while block := handle.read(chunk_size):
            block = carry + block
            carry = b"\r" if block.endswith(b"\r") else b""
            block = block[:-1] if carry else block
            crlf += block.count(b"\r\n")
            lf += block.count(b"\n")
            if crlf and lf > crlf:
                break
    if not crlf or lf == crlf:
        return path
    with open(path, "rb") as source, open(copy, "wb") as target:
        carry = b""
        while block := source.read(chunk_size):
            block = carry + block
            carry = b"\r" if block.endswith(b"\r") else b""
            target.write((block[:-1] if carry else block).replace(b"\r\n", b"\n"))
        target.write(carry)
    return copy


def _line(row: int, fmt: str, config: dict) -> str:
    """Where a data row is in its file, as a person finds it."""
    if fmt == "json":
        return f"object {row} of the array"
    if fmt == "jsonl":
        return f"line {row}"
    line = row + int(config.get("skip_rows", 0)) + (1 if config.get("header", True) else 0)
    return f"{'row' if fmt == 'xlsx' else 'line'} {line}"


def _check(con, view: str, path: Path, fmt: str, config: dict, declared: dict, label: str) -> None:
    """Every declared column's values convert, or a StepFailed naming the first that does not
    in each column (file, line or row, column, value)."""
    problems = []
    columns = [c for c in declared if c in con.table(view).columns]
    for column in columns:
        name = _quoted(column)
        bad = f"{name} IS NOT NULL AND ({_convert(name, declared[column])}) IS NULL"
        found = con.sql(f"SELECT __dagsmith_row, {name}, count(*) OVER () FROM {view}_numbered WHERE {bad} "
                        f"ORDER BY __dagsmith_row LIMIT 1").fetchall()
        if found:
            row, value, count = found[0]
            more = f" ({count} values of this column do not)" if count > 1 else ""
            problems.append(f"{_line(row, fmt, config)} of {path.name}, column {column!r}: {value!r} is not "
                            f"{'an' if declared[column] == 'integer' else 'a'} {declared[column]}{more}")
    if problems:
        raise StepFailed(f"{label}: {'; '.join(problems)}\nfix the data, change the declared type, or set "
                         f"`on_bad_value: null` to read such values as nulls")


def _xlsx_frame(path: Path, config: dict):
    """One sheet as a pandas frame: the header row's names, cells as openpyxl gives them (numbers,
    text, dates); text cells in the null list are nulls; a column of mixed kinds becomes text."""
    try:
        import openpyxl
    except ImportError:
        raise StepFailed("an xlsx source needs openpyxl: pip install 'dagsmith[xlsx]' (in the environment "
                         "that runs dagsmith)") from None
    import pandas as pd

    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises zipfile, KeyError, InvalidFileException...
        raise StepFailed(f"cannot open {path.name} as an xlsx workbook: {type(exc).__name__}: {exc}") from None
    try:
        sheet = config.get("sheet", 0)
        if isinstance(sheet, int):
            if sheet >= len(book.sheetnames):
                raise StepFailed(f"{path.name} has {len(book.sheetnames)} sheet(s): no sheet {sheet} (0 is the first); "
                                 f"sheets: {', '.join(book.sheetnames)}")
            sheet = book.sheetnames[sheet]
        elif sheet not in book.sheetnames:
            raise StepFailed(f"{path.name} has no sheet {sheet!r}; sheets: {', '.join(book.sheetnames)}")
        rows = [list(r) for r in book[sheet].iter_rows(values_only=True)]
    finally:
        book.close()
    rows = rows[int(config.get("skip_rows", 0)):]
    nulls = set(config.get("null_values", DEFAULT_NULL_VALUES))
    rows = [[None if isinstance(v, str) and v in nulls else v for v in r] for r in rows]
    while rows and all(v is None for v in rows[-1]):  # openpyxl may report formatted empty rows
        rows.pop()
    width = max((len(r) for r in rows), default=0)
    rows = [r + [None] * (width - len(r)) for r in rows]
    digits = len(str(max(width - 1, 0)))  # DuckDB's names for a csv without a header: column00..column11
    if config.get("header", True) and rows:
        names = [str(v) if v is not None else f"column{i:0{digits}d}" for i, v in enumerate(rows[0])]
        rows = rows[1:]
    else:
        names = [f"column{i:0{digits}d}" for i in range(width)]
    frame = pd.DataFrame(rows, columns=names, dtype=object)
    for name in names:
        values = frame[name].dropna()
        kinds = {bool if isinstance(v, bool) else float if isinstance(v, (int, float)) else type(v) for v in values}
        if len(kinds) > 1:
            frame[name] = frame[name].map(lambda v: None if v is None else str(v))
        else:
            frame[name] = frame[name].infer_objects()
    return frame
