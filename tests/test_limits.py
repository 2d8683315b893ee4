"""Hostile sizes: every check is linear in the input, and each limit (docs/spec.md, "Limits") is a
positioned error found before the work it bounds.

The time bounds are generous for a loaded 2-core machine; each test says what the case cost
before the fix (`dagsmith validate`, measured by the issue), far above its bound.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from dagsmith.cli import main
from dagsmith.errors import URL_PASSWORD, SpecError, redact
from dagsmith.spec import check_all, checked_document, document, limits, load_spec, yamlpos

BOUND = 10.0  # seconds

SPEC = """\
dagsmith: 1
pipeline:
  name: probe
sources:
  rows:
    type: csv
    uri: data/rows.csv
training:
  inputs: [rows]
  target: y
  model:
    estimator: sklearn.linear_model.LogisticRegression
evaluation:
  metrics: [accuracy]
"""
LEAK = "contains a URL with a password: secrets never go in a spec"


@pytest.fixture
def project(tmp_path, monkeypatch):
    (tmp_path / ".git").mkdir()  # the include root
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(document.INCLUDE_ROOT_ENV, raising=False)
    return tmp_path


def _errors(path) -> list[tuple]:
    errors, _ = check_all(path)
    return [(d.mark.file, d.mark.line, d.mark.column, d.path, d.message) for d in errors]


def _timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


def _count_reads(monkeypatch) -> list[str]:
    reads: list[str] = []
    real = document.load_file

    def counting(path, display):
        reads.append(display)
        return real(path, display)

    monkeypatch.setattr(document, "load_file", counting)
    return reads


# --- the password-in-URL check -----------------------------------------------------------------

def test_a_long_description_is_checked_in_linear_time(project):
    # Before: 22 s (the pattern backtracked over each run of letters).
    Path("p.yaml").write_text(SPEC.replace("  name: probe\n", "  name: probe\n  description: " + "a" * 120_000 + "\n"))
    (errors, warnings), elapsed = _timed(check_all, "p.yaml")
    assert errors == [] and elapsed < BOUND


@pytest.mark.parametrize("text", [
    "a" * 200_000, "a://" * 50_000, "a://u:" * 50_000, ("a://u:" + "p" * 100) * 2_000, "://:" * 50_000,
    "x" * 100_000 + "://u:" + "p" * 100_000, "s3://u:p" + "@" * 100_000, "a:" * 100_000 + "b@",
])
def test_the_password_finder_is_linear(text):
    start = time.perf_counter()
    for _ in range(5):
        URL_PASSWORD.search(text)
        redact(text)
    assert time.perf_counter() - start < BOUND / 2  # each well under 0.1 s; a backtracking pattern: seconds


def test_the_password_finder_still_finds_what_the_pattern_found():
    found = URL_PASSWORD.search("x" * 50_000 + " see ftp://docs and http://h:80/x then s3://KEY:ab/cd@bucket")
    assert found is not None
    # A port before it on the line: hidden from the port on (the safe side, as the pattern did).
    assert redact("http://h:80/x and s3://KEY:ab/cd@bucket\nmail a@b.c") == "http://h:***@bucket\nmail a@b.c"
    assert redact("s3://u:p@b1 s3://u:q@b2") == "s3://u:***@b2"  # to the last '@' of the line
    assert redact("s3://u:p@b1\ns3://u:q@b2") == "s3://u:***@b1\ns3://u:***@b2"
    assert URL_PASSWORD.search("1abc://u:p@h").start == 1  # the scheme starts with a letter
    assert URL_PASSWORD.search("no scheme://u:p\n@h") is None  # the '@' must be on the line


def test_a_password_after_a_long_text_is_still_caught(project):
    description = "a" * 200_000 + " s3://KEY:ab/cd@bucket"
    Path("p.yaml").write_text(SPEC.replace("  name: probe\n", f"  name: probe\n  description: {description}\n"))
    errors, elapsed = _timed(_errors, "p.yaml")
    assert errors == [("p.yaml", 4, 16, "pipeline.description", errors[0][4])] and LEAK in errors[0][4]
    assert elapsed < BOUND


# --- many errors -----------------------------------------------------------------------------

def test_ten_thousand_unknown_keys_cost_linear_time(project):
    # Before: 34 s with `dagsmith validate` (3,000 keys: 3 s): a list-membership dedup per error.
    Path("p.yaml").write_text(SPEC + "".join(f"zz_unknown_{i}: 1\n" for i in range(10_000)))
    errors, elapsed = _timed(_errors, "p.yaml")
    assert len(errors) == 10_000 and elapsed < BOUND
    assert errors[0] == ("p.yaml", 15, 1, "zz_unknown_0", errors[0][4]) and errors[0][4].startswith("unknown key 'zz_unknown_0'")


# --- environments ------------------------------------------------------------------------------

def test_a_thousand_environments_parse_the_file_once(project, monkeypatch):
    # Before: over 25 s: each environment read and parsed the file again.
    envs = "".join(f"  e{i}:\n    pipeline:\n      description: env {i}\n" for i in range(1_000))
    Path("p.yaml").write_text(SPEC + "environments:\n" + envs)
    reads = _count_reads(monkeypatch)
    (errors, warnings), elapsed = _timed(check_all, "p.yaml")
    assert errors == [] and reads == ["p.yaml"] and elapsed < BOUND


def test_check_all_reports_what_each_environment_check_reports(project):
    bad = "environments:\n  prod:\n    sources:\n      rows:\n        type: parqet\n  dev:\n    pipeline:\n      nmae: x\n"
    Path("p.yaml").write_text(SPEC + bad)
    expected = {}
    for name in (None, "dev", "prod"):
        try:
            checked_document("p.yaml", name)
        except SpecError as exc:
            expected.update(dict.fromkeys(exc.diagnostics))
    errors, _ = check_all("p.yaml")
    assert errors == list(expected) and len(errors) == 2
    assert check_all("p.yaml", ["dev"])[0] == [d for d in errors if d.path.startswith("pipeline")]


def test_check_all_does_not_change_the_loaded_document(project):
    Path("p.yaml").write_text(SPEC + "environments:\n  prod:\n    pipeline:\n      description: prod\n")
    raw = document.load_document(Path("p.yaml"))
    before = repr(raw)
    document.apply_environment(raw, "prod")
    document.merge(raw, raw)
    assert repr(raw) == before


# --- includes --------------------------------------------------------------------------------

def test_a_file_included_twice_on_each_of_16_levels_is_read_once(project, monkeypatch):
    # Before: 63 s (the same files loaded 65,536 times).
    for level in range(16):
        Path(f"f{level}.yaml").write_text(f"include: [f{level + 1}.yaml, f{level + 1}.yaml]\n")
    Path("f16.yaml").write_text("pipeline:\n  description: from the bottom\n")
    Path("p.yaml").write_text("include: f0.yaml\n" + SPEC)
    reads = _count_reads(monkeypatch)
    (errors, _), elapsed = _timed(check_all, "p.yaml")
    assert errors == [] and elapsed < BOUND
    assert sorted(reads) == sorted(["p.yaml"] + [f"f{i}.yaml" for i in range(17)])
    assert load_spec("p.yaml").description == "from the bottom"


def test_an_error_in_a_file_included_many_times_is_reported_once(project):
    Path("bad.yaml").write_text("sources:\n  rows:\n    type: parqet\n    uri: data/rows.parquet\n")
    Path("mid.yaml").write_text("include: [bad.yaml, bad.yaml]\n")
    Path("p.yaml").write_text("include: [mid.yaml, bad.yaml, mid.yaml]\n" + SPEC.replace("sources:\n  rows:\n    type: csv\n    uri: data/rows.csv\n", ""))
    errors = _errors("p.yaml")
    assert [e[:4] for e in errors] == [("bad.yaml", 3, 11, "sources.rows.type")]


def test_a_thousand_deep_include_chain_stops_at_the_depth_limit(project):
    # Before: RecursionError (a traceback).
    for level in range(1_000):
        Path(f"f{level}.yaml").write_text(f"include: f{level + 1}.yaml\n")
    Path("f1000.yaml").write_text("x: 1\n")
    Path("p.yaml").write_text("include: f0.yaml\n" + SPEC)
    errors, elapsed = _timed(_errors, "p.yaml")
    last = limits.MAX_INCLUDE_DEPTH - 1  # p.yaml is depth 0, f0.yaml depth 1...
    assert errors == [(f"f{last}.yaml", 1, 10, "include",
                       f"includes nested too deeply: more than {limits.MAX_INCLUDE_DEPTH} levels of files including files")]
    assert elapsed < BOUND


def test_includes_as_deep_as_the_limit_are_fine(project):
    depth = limits.MAX_INCLUDE_DEPTH
    for level in range(1, depth):
        Path(f"f{level}.yaml").write_text(f"include: f{level + 1}.yaml\n")
    Path(f"f{depth}.yaml").write_text("pipeline:\n  description: deepest\n")
    Path("p.yaml").write_text("include: f1.yaml\n" + SPEC)
    assert load_spec("p.yaml").description == "deepest"
    Path(f"f{depth}.yaml").write_text(f"include: f{depth + 1}.yaml\n")
    Path(f"f{depth + 1}.yaml").write_text("pipeline:\n  description: too deep\n")
    assert [e[:4] for e in _errors("p.yaml")] == [(f"f{depth}.yaml", 1, 10, "include")]


def test_the_number_of_included_files_is_limited(project):
    count = limits.MAX_INCLUDE_FILES + 10
    for i in range(count):
        Path(f"i{i}.yaml").write_text(f"x{i}: 1\n")
    Path("p.yaml").write_text("include:\n" + "".join(f"  - i{i}.yaml\n" for i in range(count)) + SPEC)
    index = limits.MAX_INCLUDE_FILES - 1  # p.yaml itself is one of the files
    assert _errors("p.yaml") == [("p.yaml", 2 + index, 5, f"include[{index}]",
                                  f"too many included files: a spec may read at most {limits.MAX_INCLUDE_FILES} files, itself included")]


@pytest.mark.skipif(not hasattr(os, "mkfifo") or not os.path.exists("/dev/zero"), reason="no FIFOs or /dev/zero")
def test_a_device_or_a_pipe_is_refused_without_reading_it(project):
    os.mkfifo("pipe.yaml")  # reading it would block
    Path("p.yaml").write_text("include: pipe.yaml\n" + SPEC)
    errors, elapsed = _timed(_errors, "p.yaml")
    assert [e[:4] for e in errors] == [("p.yaml", 1, 10, "include")] and "is not a regular file" in errors[0][4]
    Path("zero.yaml").symlink_to("/dev/zero")  # reading it would never end
    assert _errors("zero.yaml") == [("zero.yaml", 1, 1, "", "not a regular file (a folder, a device or a pipe cannot be a spec)")]
    assert elapsed < BOUND


# --- file size -------------------------------------------------------------------------------

def test_a_file_over_the_size_limit_is_refused_before_it_is_read(project, monkeypatch):
    with open("p.yaml", "wb") as file:
        file.write(SPEC.encode())
        file.truncate(limits.MAX_FILE_BYTES + 1)  # sparse: nothing is written
    reads = _count_reads(monkeypatch)
    message = f"file too large: {limits.MAX_FILE_BYTES + 1:,} bytes, at most {limits.MAX_FILE_BYTES:,}"
    assert _errors("p.yaml") == [("p.yaml", 1, 1, "", message)] and reads == []
    Path("q.yaml").write_text("include: p.yaml\n" + SPEC)
    assert _errors("q.yaml") == [("p.yaml", 1, 1, "", message)]


def test_validate_time_per_kilobyte_stays_flat(project):
    """The same spec shape at 50 KB and 1 MB: the time per KB must not grow much."""
    def spec(steps: int) -> str:
        return SPEC + "features:\n" + "".join(
            f"  feature_{i}:\n    inputs: [rows]\n    transform: pkg.features:make_{i}\n"
            f"    description: {'feature text ' * 8}\n" for i in range(steps))
    per_kb = []
    for steps in (400, 8_000):
        Path("p.yaml").write_text(spec(steps))
        size_kb = Path("p.yaml").stat().st_size / 1000
        (errors, _), elapsed = _timed(check_all, "p.yaml")
        assert errors == []
        per_kb.append(elapsed / size_kb)
    assert per_kb[1] < 3 * per_kb[0] + 0.001  # 20x the input: at most 3x the time per KB (noise)


# --- steps -----------------------------------------------------------------------------------

def _features(count: int) -> str:
    return "features:\n" + "".join(f"  f{i}:\n    inputs: [rows]\n    transform: pkg.mod:fn\n" for i in range(count))


def test_fifty_thousand_steps_are_refused_quickly(project):
    # Before: 24 s (validated in full).
    Path("p.yaml").write_text(SPEC + _features(50_000))
    errors, elapsed = _timed(_errors, "p.yaml")
    assert errors == [("p.yaml", 15, 1, "features", f"too many steps: 50,001 sources, features, validations and steps together, at most {limits.MAX_STEPS:,}")]
    assert elapsed < BOUND


def test_steps_from_includes_add_up(project, monkeypatch):
    monkeypatch.setattr(limits, "MAX_STEPS", 100)  # each file is checked alone, then the merged spec
    half = limits.MAX_STEPS // 2 + 1
    Path("a.yaml").write_text(_features(half))
    Path("b.yaml").write_text(_features(half).replace("  f", "  g"))
    Path("p.yaml").write_text("include: [a.yaml, b.yaml]\n" + SPEC)
    errors = _errors("p.yaml")
    assert [e[:4] for e in errors] == [("b.yaml", 1, 1, "features")] and "too many steps: 103 " in errors[0][4]


def test_a_spec_at_the_step_limit_validates(project, capsys):
    Path("p.yaml").write_text(SPEC + _features(limits.MAX_STEPS - 1))  # + the source
    start = time.perf_counter()
    assert main(["validate", "p.yaml"]) == 0
    assert time.perf_counter() - start < 3 * BOUND  # a few seconds on an idle machine


# --- text ------------------------------------------------------------------------------------

def test_a_text_over_the_length_limit_is_refused(project):
    long = "x" * (limits.MAX_TEXT_LENGTH + 1)
    Path("p.yaml").write_text(SPEC.replace("  name: probe\n", f"  name: probe\n  description: {long}\n"))
    assert _errors("p.yaml") == [("p.yaml", 4, 16, "pipeline.description",
                                  f"text too long: {limits.MAX_TEXT_LENGTH + 1:,} characters, at most {limits.MAX_TEXT_LENGTH:,}")]
    Path("p.yaml").write_text(SPEC + f"? {long}\n: 1\n")  # YAML takes a key this long only as `? KEY`
    errors = _errors("p.yaml")
    assert [e[:3] for e in errors] == [("p.yaml", 15, 3)] and errors[0][4].startswith("key too long")


def test_a_text_at_the_length_limit_is_fine(project):
    Path("p.yaml").write_text(SPEC.replace("  name: probe\n", f"  name: probe\n  description: {'x' * limits.MAX_TEXT_LENGTH}\n"))
    (errors, _), elapsed = _timed(check_all, "p.yaml")
    assert errors == [] and elapsed < BOUND


def test_aliases_cannot_multiply_text_past_the_total_limit(project):
    text = "x" * 900_000
    uses = limits.MAX_TOTAL_TEXT // len(text) + 2
    Path("p.yaml").write_text(SPEC + f"x-big: &big {text}\nx-uses:\n" + "".join(f"  - *big\n" for _ in range(uses)))
    errors, elapsed = _timed(_errors, "p.yaml")
    assert len(errors) == 1 and errors[0][4].startswith(f"too much text: more than {limits.MAX_TOTAL_TEXT:,} characters")
    # The use that goes over, placed (as every alias is) at its anchor's line.
    assert errors[0][:4] == ("p.yaml", 15, 8, f"x-uses[{limits.MAX_TOTAL_TEXT // len(text) - 1}]") and elapsed < BOUND


def test_the_yaml_loader_leaves_the_garbage_collector_as_it_was():
    import gc

    assert gc.isenabled()
    yamlpos.load_text("a: 1\n", "x.yaml")
    assert gc.isenabled()
    with pytest.raises(SpecError):
        yamlpos.load_text("a: [\n", "x.yaml")
    assert gc.isenabled()
    gc.disable()
    try:
        yamlpos.load_text("a: 1\n", "x.yaml")
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_cli_validate_checks_many_environments_and_errors_in_linear_time(tmp_path):
    """`dagsmith validate` itself (one parse for every environment; errors gathered in one pass).
    Before: 1,000 environments over 25 s, 10,000 unknown keys 34 s."""
    import subprocess
    import sys
    import time
    from pathlib import Path

    exe = str(Path(sys.executable).parent / "dagsmith")
    envs = "".join(f"  e{i}: {{defaults: {{retries: {i % 5}}}}}\n" for i in range(1000))
    spec = tmp_path / "envs.yaml"
    spec.write_text("dagsmith: 1\npipeline: {name: p}\nsources: {a: {type: csv, uri: a.csv}}\nenvironments:\n" + envs)
    started = time.monotonic()
    result = subprocess.run([exe, "validate", str(spec)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 15
    keys = tmp_path / "keys.yaml"
    keys.write_text("dagsmith: 1\npipeline: {name: p}\n" + "".join(f"k{i}: 1\n" for i in range(10000)))
    started = time.monotonic()
    result = subprocess.run([exe, "validate", str(keys)], capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.count("unknown key") == 10000
    assert time.monotonic() - started < 15
