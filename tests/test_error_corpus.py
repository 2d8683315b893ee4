"""The error corpus: every file in tests/errors/ is a bad spec with its exact diagnostics.

Each corpus file starts with a comment header:

    # What the mistake is, in one line.
    # env: prod                      (optional: load with --env prod)
    # params: name=value other=2     (optional: load with --param name=value ...)
    # expect: 7:5 training.sweep.method: must be one of: grid, random; got text 'gird'; did you mean 'grid'?
    # expect: includes/x.yaml:3:9 sources.events.type: ...   (a diagnostic in another file,
                                                              relative to tests/errors/)

The test loads the file the way the CLI does (relative path, from the repository root) and
compares the full list of diagnostics: position, spec path, message and hint. An expect line's
path is `<root>` for a diagnostic about the whole document.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from dagsmith.cli import main
from dagsmith.errors import SpecError
from dagsmith.spec import load_spec

REPO_ROOT = Path(__file__).resolve().parents[1]
CORPUS = REPO_ROOT / "tests" / "errors"
CORPUS_FILES = sorted(CORPUS.glob("*.yaml"))
EXPECT = re.compile(r"^# expect: (?:(?P<file>[^\s:]+):)?(?P<line>\d+):(?P<col>\d+) (?P<path>\S+): (?P<message>.+)$")


def _header(path: Path) -> tuple[list[tuple], str | None, dict[str, str]]:
    expected, env, params = [], None, {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        if line.startswith("# expect:"):
            match = EXPECT.match(line)
            assert match, f"{path.name}: malformed expect line: {line}"
            file = (Path("tests/errors") / match["file"]).as_posix() if match["file"] else _relative(path)
            expected.append((file, int(match["line"]), int(match["col"]), match["path"], match["message"]))
        elif line.startswith("# env:"):
            env = line.partition(":")[2].strip()
        elif line.startswith("# params:"):
            params.update(pair.split("=", 1) for pair in line.partition(":")[2].split())
    return expected, env, params


def _relative(path: Path) -> str:
    return path.relative_to(REPO_ROOT).as_posix()


def _actual(error: SpecError) -> list[tuple]:
    return [
        (d.mark.file, d.mark.line, d.mark.column, d.path or "<root>", d.message + (f"; {d.hint}" if d.hint else ""))
        for d in error.diagnostics
    ]


def test_corpus_is_big_enough():
    assert len(CORPUS_FILES) >= 45


@pytest.mark.parametrize("path", CORPUS_FILES, ids=[p.name for p in CORPUS_FILES])
def test_error_corpus(path: Path, monkeypatch):
    expected, env, params = _header(path)
    assert expected, f"{path.name} has no '# expect:' header"
    monkeypatch.chdir(REPO_ROOT)
    with pytest.raises(SpecError) as caught:
        load_spec(_relative(path), env=env, params=params or None)
    assert _actual(caught.value) == expected


@pytest.mark.parametrize("text, message", [
    ("", "the file is empty"),
    ("  \n\n\t\n", "the file is empty"),
    ("# nothing here yet\n\n", "the file has only comments"),
])
def test_empty_files(tmp_path, monkeypatch, text, message):
    monkeypatch.chdir(tmp_path)
    Path("pipeline.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(SpecError) as caught:
        load_spec("pipeline.yaml")
    assert _actual(caught.value) == [
        ("pipeline.yaml", 1, 1, "<root>", f"{message}; a spec needs at least `dagsmith: 1` and `pipeline: {{name: ...}}`"),
    ]


@pytest.mark.parametrize("name", ["008-duplicate-top-level-key.yaml", "011-unknown-nested-key.yaml", "047-connection-url-with-password.yaml"])
def test_cli_prints_the_same_diagnostics(name, monkeypatch, capsys):
    path = CORPUS / name
    expected, _, _ = _header(path)
    monkeypatch.chdir(REPO_ROOT)
    assert main(["validate", _relative(path)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines == [f"{file}:{line}:{col}: error: {where}: {message}" for file, line, col, where, message in expected]


@pytest.mark.parametrize("name, secret", [
    ("047-connection-url-with-password.yaml", "hunter2"),
    ("048-source-uri-password.yaml", "s3cr3t-Pa55"),
    ("072-secret-in-env.yaml", "Tr0ub4dor"),
    ("082-password-in-a-key.yaml", "hunter2"),
])
def test_passwords_are_never_echoed(name, secret, monkeypatch, capsys):
    monkeypatch.chdir(REPO_ROOT)
    assert secret in (CORPUS / name).read_text(encoding="utf-8")  # the spec does leak it...
    assert main(["validate", "--format", "json", _relative(CORPUS / name)]) == 2
    out = capsys.readouterr()
    assert secret not in out.out and secret not in out.err  # ...dagsmith never repeats it


def test_expect_headers_never_contain_secrets():
    for path in CORPUS_FILES:
        for expected in _header(path)[0]:
            assert not re.search(r"://[^/\s:@]*:[^/\s@*]+@", expected[4]), f"{path.name}: a password in an expected message"


def test_corpus_file_names():
    for path in CORPUS_FILES:
        assert re.fullmatch(r"\d{3}[a-z]?-[a-z0-9-]+\.yaml", path.name), path.name
    assert os.path.isdir(CORPUS / "includes")
