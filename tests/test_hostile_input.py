"""Hostile input: what validate accepts works downstream, includes stay in the project, no
secret reaches any output, crashes leave nothing behind. (Spec errors are in tests/errors/.)"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dagsmith.cli import main
from dagsmith.errors import URL_PASSWORD, redact
from dagsmith.output import write_files
from dagsmith.spec.schema_check import pipeline_schema

MARKER = "Zq7hostileMARKER"


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def cli(cwd: Path, *args, **env) -> tuple[int, str, str]:
    """`dagsmith ARGS` in a fresh process: the environment of a run is the one given here (an
    in-process runner may reuse step workers started with an earlier environment)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSMITH_CONN_", "DAGSMITH_INCLUDE"))}
    result = subprocess.run([sys.executable, "-m", "dagsmith.cli", *map(str, args)], cwd=cwd, capture_output=True,
                            text=True, env=environ | env, timeout=300)
    return result.returncode, result.stdout, result.stderr


def _project(tmp_path: Path, *, git: bool = True) -> Path:
    project = tmp_path / "project"
    (project / "specs").mkdir(parents=True)
    if git:
        (project / ".git").mkdir()
    return project


SPEC = "dagsmith: 1\npipeline:\n  name: probe\n"


# --- A. includes stay inside the project ---------------------------------------------------------

def test_include_outside_the_work_tree_is_refused_and_quotes_nothing(capsys, tmp_path, monkeypatch):
    project = _project(tmp_path)
    secret = tmp_path / "secret.yaml"
    secret.write_text(f"{MARKER}: [unclosed\n")  # a YAML error would quote this line
    spec = project / "specs" / "p.yaml"
    spec.write_text(f"include: ../../secret.yaml\n{SPEC}")
    monkeypatch.chdir(project)
    code, out, err = run(capsys, "validate", "specs/p.yaml")
    assert code == 2 and MARKER not in out + err
    assert "include: included file '../../secret.yaml' leaves the include root" in err
    # An absolute path out of the root, too.
    spec.write_text(f"include: [{secret}]\n{SPEC}")
    code, out, err = run(capsys, "validate", "specs/p.yaml")
    assert code == 2 and MARKER not in out + err and "leaves the include root" in err


def test_include_symlink_leaving_the_root_is_refused(capsys, tmp_path, monkeypatch):
    project = _project(tmp_path)
    (tmp_path / "secret.yaml").write_text(f"{MARKER}: [unclosed\n")
    (project / "specs" / "link.yaml").symlink_to(tmp_path / "secret.yaml")
    (project / "specs" / "p.yaml").write_text(f"include: link.yaml\n{SPEC}")
    monkeypatch.chdir(project)
    code, out, err = run(capsys, "validate", "specs/p.yaml")
    assert code == 2 and MARKER not in out + err
    assert "included file 'link.yaml' leaves the include root" in err


def test_include_inside_the_work_tree_with_dotdot_works(capsys, tmp_path, monkeypatch):
    project = _project(tmp_path)
    (project / "common.yaml").write_text("pipeline:\n  description: shared\n")
    (project / "specs" / "p.yaml").write_text(f"include: ../common.yaml\n{SPEC}")
    monkeypatch.chdir(project)
    assert run(capsys, "validate", "specs/p.yaml")[0] == 0


def test_without_git_the_root_is_the_spec_folder_widened_by_env(capsys, tmp_path, monkeypatch):
    project = _project(tmp_path, git=False)
    (project / "common.yaml").write_text("pipeline:\n  description: shared\n")
    (project / "specs" / "p.yaml").write_text(f"include: ../common.yaml\n{SPEC}")
    monkeypatch.chdir(project)
    monkeypatch.delenv("DAGSMITH_INCLUDE_ROOT", raising=False)
    code, _, err = run(capsys, "validate", "specs/p.yaml")
    assert code == 2 and "leaves the include root 'specs'" in err
    monkeypatch.setenv("DAGSMITH_INCLUDE_ROOT", str(project))
    assert run(capsys, "validate", "specs/p.yaml")[0] == 0


@pytest.mark.parametrize("kind", ["device", "fifo"])
def test_include_of_a_non_regular_file_is_refused_before_reading(capsys, tmp_path, monkeypatch, kind):
    project = _project(tmp_path)
    if kind == "fifo":
        os.mkfifo(project / "specs" / "pipe.yaml")  # reading it would block forever
    else:
        (project / "specs" / "pipe.yaml").symlink_to("/dev/zero")
    monkeypatch.setenv("DAGSMITH_INCLUDE_ROOT", "/dev")
    (project / "specs" / "p.yaml").write_text(f"include: pipe.yaml\n{SPEC}")
    monkeypatch.chdir(project)
    code, _, err = run(capsys, "validate", "specs/p.yaml")
    assert code == 2 and "included file 'pipe.yaml' is not a regular file" in err
    code, _, err = run(capsys, "validate", "specs/pipe.yaml")
    assert code == 2 and "not a regular file" in err


# --- B. what validate accepts works downstream -------------------------------------------------

# A value each end-anchored pattern of the published schema accepts.
SAMPLES = {
    "^[A-Za-z][A-Za-z0-9_-]*$": "events",
    "^([0-9]+[smhd])+$": "5m",
    "^[A-Za-z_][A-Za-z0-9_]*$": "TOKEN",
    "^[^/\\s]+$": "_SUCCESS",
    "^[A-Za-z_][A-Za-z0-9_]*(\\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$": "pkg.mod:fn",
    "^[a-z0-9]([a-z0-9-]*[a-z0-9])?$": "probe",
    "^[A-Za-z0-9][A-Za-z0-9_.-]*$": "churn",
    "^[A-Za-z0-9][A-Za-z0-9_-]*$": "prod",
    "^[A-Za-z0-9_.-]+$": "my_dag",
    "^[A-Za-z0-9_-]{1,80}$": "churn-sfn",
    "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$": "pipeline-runner",
    "^[a-zA-Z0-9](-*[a-zA-Z0-9])*$": "churn-endpoint",
    "^[a-z]([-a-z0-9]*[a-z0-9])?$": "churn",
    "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$": "ml",
    "^[a-z]{2}(-[a-z]+)+-[0-9]+$": "eu-west-1",
    "^ml\\.[a-z0-9]+\\.[a-z0-9]+$": "ml.m5.large",
    "^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]{1,512}$": "arn:aws:iam::123456789012:role/sagemaker",
    "^\\$\\{params\\.[A-Za-z_][A-Za-z0-9_]*\\}$": "${params.min_auc}",  # a gate's value or delta
}


def _patterns(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "pattern" and isinstance(value, str):
                yield value
            else:
                yield from _patterns(value)
    elif isinstance(node, list):
        for item in node:
            yield from _patterns(item)


def test_every_schema_pattern_refuses_a_trailing_newline():
    patterns = set(_patterns(pipeline_schema()))
    anchored = {p for p in patterns if "$" in p}
    assert patterns - anchored == {"^arn:"}  # a prefix check only
    for pattern in anchored:
        base = pattern.removesuffix("(?!\\n)")
        sample = SAMPLES[base]
        assert re.search(pattern, sample), pattern
        assert not re.search(pattern, sample + "\n"), f"{pattern!r} accepts {sample + chr(10)!r}"


def test_value_languages_refuse_a_trailing_newline_and_non_ascii_digits():
    from dagsmith.naming import airflow_id
    from dagsmith.spec.values import check_class_path, check_cron, check_function_ref, parse_duration, parse_quantity

    for check, good in ((parse_duration, "5m"), (check_cron, "0 3 * * *"), (lambda v: parse_quantity(v, "memory"), "1Gi"),
                        (check_function_ref, "pkg.mod:fn"), (check_class_path, "sklearn.linear_model.Ridge")):
        check(good)
        with pytest.raises(ValueError):
            check(good + "\n")
    for bad in ("٠ ٣ * * *", "*/١ * * * *", "0 ３ * * *"):
        with pytest.raises(ValueError):
            check_cron(bad)
    with pytest.raises(ValueError):
        parse_duration("５m")
    assert airflow_id("é") == "_"


def test_full_width_param_is_not_an_integer(capsys, write_spec):
    spec = write_spec(SPEC + "params:\n  n: {type: integer, default: 1}\n  x: {type: number, default: 1}\n")
    for pair in ("n=１２", "n=٣", "x=１.５"):
        code, out, err = run(capsys, "compile", spec, "-t", "ir", "-o", "-", "--param", pair)
        assert code == 2 and "(digits 0-9 only)" in err, (pair, err)


def test_durations_are_bounded_and_airflow_compiles_the_largest(capsys, write_spec, tmp_path):
    spec = write_spec(SPEC + "defaults:\n  timeout: 1157d\nsteps:\n  s:\n    run: {command: [\"true\"]}\n")
    code, _, err = run(capsys, "compile", spec, "-t", "airflow", "-o", tmp_path / "out")
    assert code == 0, err
    spec = write_spec(SPEC + "defaults:\n  timeout: 50000d\nsteps:\n  s:\n    run: {command: [\"true\"]}\n")
    code, _, err = run(capsys, "compile", spec, "-t", "airflow", "-o", tmp_path / "out2")
    assert code == 2 and "pipeline.yaml:5:12: error: defaults.timeout: duration '50000d' is too long" in err


def test_long_pipeline_name_and_surrogates_are_positioned_errors_not_internal(capsys, write_spec, tmp_path):
    spec = write_spec(f"dagsmith: 1\npipeline:\n  name: {'p' * 300}\n")
    code, _, err = run(capsys, "compile", spec, "-t", "airflow", "-o", tmp_path / "out")
    assert code == 2 and "pipeline.yaml:3:9: error: pipeline.name: too long: 300 characters, at most 63" in err
    spec = write_spec('dagsmith: 1\npipeline:\n  name: probe\n  description: "x \\udc80"\n')
    code, _, err = run(capsys, "compile", spec, "-t", "ir", "-o", tmp_path / "out")
    assert code == 2 and "pipeline.yaml:4:16: error: pipeline.description: contains a lone surrogate" in err


def test_a_101_character_tag_is_refused_at_its_position_by_the_airflow_backend(capsys, write_spec, tmp_path):
    spec = write_spec(SPEC + f"  tags: [ok, {'t' * 101}]\nsteps:\n  s:\n    run: {{command: [\"true\"]}}\n")
    code, _, err = run(capsys, "compile", spec, "--target", "airflow", "-o", tmp_path / "out")
    assert code == 2 and err.startswith("pipeline.yaml:4:14: error: pipeline.tags[1]: tag ")
    assert "longer than the 100 characters Airflow allows" in err and not (tmp_path / "out").exists()


def test_output_naming_an_existing_file_is_a_clear_error(capsys, write_spec, tmp_path):
    spec = write_spec(SPEC + "steps:\n  s:\n    run: {command: [\"true\"]}\n")
    (tmp_path / "afile").write_text("keep me")
    for output in ("afile", "afile/sub"):
        code, out, err = run(capsys, "compile", spec, "-t", "ir", "-o", output)
        assert code == 2 and err.startswith(f"cannot write to {output}: ") and "internal error" not in err, err
    assert (tmp_path / "afile").read_text() == "keep me"


STEP_SPEC = SPEC + "steps:\n  s:\n    run: {command: [\"true\"]}\n"


def test_unwritable_workdir_is_a_clear_error_and_the_record_says_failed(capsys, write_spec, tmp_path):
    (tmp_path / "rows.csv").write_text("x\n1\n")
    spec = write_spec(SPEC + "sources:\n  rows: {type: csv, uri: rows.csv}\n")
    (tmp_path / "afile").write_text("")
    code, _, err = run(capsys, "run", spec, "--workdir", "afile/sub")
    assert code == 2 and err.startswith("cannot write to the workdir afile/sub: ") and "internal error" not in err
    # The run folder can be written, the cache cannot (root ignores chmod: a FILE where a folder goes).
    (tmp_path / "wd").mkdir()
    (tmp_path / "wd" / "cache").write_text("")
    code, _, err = run(capsys, "run", spec, "--workdir", "wd")
    assert code == 2 and "cannot write to the workdir wd: " in err and "internal error" not in err, err
    [record] = (tmp_path / "wd" / "runs").glob("*/run.json")
    data = json.loads(record.read_text())
    assert data["status"] == "failed" and data["ended"] and "cannot write to the workdir" in data["error"]


SQL_SPEC = SPEC + "sources:\n  rows:\n    type: sql\n    connection: warehouse\n    query: select 1 as x\n"


def _run_record(workdir: Path) -> tuple[dict, str]:
    [record] = workdir.glob("runs/*/run.json")
    return json.loads(record.read_text()), record.read_text()


def test_missing_database_driver_names_the_package(capsys, write_spec, tmp_path, monkeypatch):
    pytest.importorskip("sqlalchemy")
    try:
        import psycopg  # noqa: F401
        pytest.skip("psycopg is installed")
    except ImportError:
        pass
    spec = write_spec(SQL_SPEC)
    code, out, err = cli(tmp_path, "run", spec, "--workdir", "wd", DAGSMITH_CONN_WAREHOUSE=f"postgresql://user:{MARKER}@127.0.0.1:9/db")
    assert code == 1 and MARKER not in out + err
    data, text = _run_record(tmp_path / "wd")
    error = data["steps"]["rows"]["error"]
    assert "pip install psycopg[binary]" in error and "Traceback" not in text and MARKER not in text


def test_mistyped_connection_url_is_never_repeated(capsys, write_spec, tmp_path, monkeypatch):
    spec = write_spec(SQL_SPEC)
    code, out, err = cli(tmp_path, "run", spec, "--workdir", "wd", DAGSMITH_CONN_WAREHOUSE=f"postgresql//user:{MARKER}@host/db")
    assert code == 1 and MARKER not in out + err
    data, text = _run_record(tmp_path / "wd")
    assert MARKER not in text
    assert "DAGSMITH_CONN_WAREHOUSE is neither a URL" in data["steps"]["rows"]["error"]
    code, out, err = cli(tmp_path, "runs", "show", data["run_id"], "--workdir", "wd")
    assert code == 0 and MARKER not in out + err


# --- C. no secret in any output -----------------------------------------------------------------

@pytest.mark.parametrize("text", [
    f"s3://KEY:ab/{MARKER}@bucket/x", f"s3://KEY:{MARKER}+x@bucket/x", f"postgresql://u:two {MARKER}@h/db",
    f"https://u:{MARKER}@h/a", f"https://u:a@b{MARKER}@h/a",
])
def test_url_password_is_caught_and_redacted_whatever_its_characters(text):
    assert URL_PASSWORD.search(text)
    assert MARKER not in redact(text) and "***" in redact(text)


def test_redact_hides_a_password_without_a_scheme():
    assert redact(f"postgresql//u:{MARKER}@h/db") == "postgresql//u:***@h/db"
    assert redact("mail a@b.com, see http://h:80/x") == "mail a@b.com, see http://h:80/x"


def _all_bytes(*folders: Path) -> bytes:
    out = b""
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file() and not path.is_symlink():
                out += path.name.encode() + b"\0" + path.read_bytes()
    return out


def test_canary_secret_appears_in_no_output(capsys, tmp_path, monkeypatch):
    """A marker in every way a secret can enter; none of validate, compile, run, runs show writes it."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".git").mkdir()
    seen = []  # (code, stdout, stderr) of every command

    def call(*args, **env):
        result = cli(tmp_path, *args, API_TOKEN=f"token-{MARKER}", **env) if args[0] in ("run", "runs") else run(capsys, *args)
        seen.append(result)
        return result

    clean = (SPEC + "params:\n  url: {type: string, default: none}\n"
             "sources:\n  rows:\n    type: sql\n    connection: warehouse\n    query: select 1 as x\n"
             "steps:\n  uses-secret:\n    secrets: [API_TOKEN]\n"
             "    run: {command: [python, -c, \"import os; assert os.environ['API_TOKEN'].endswith('" + MARKER[-6:] + "')\"]}\n")
    (tmp_path / "p.yaml").write_text(clean)
    overlay = "environments:\n  leaky:\n    pipeline:\n      description: \"at s3://K:x/" + MARKER + "@bucket/p\"\n"
    (tmp_path / "env.yaml").write_text(clean + overlay)
    leaky = SPEC.replace("name: probe", f"name: probe\n  description: 'see postgresql://u:a b/{MARKER}@h/db'")
    (tmp_path / "leaky.yaml").write_text(leaky + "sources:\n  a:\n    type: csv\n    uri: \"https://u:" + MARKER + "+1@h/a.csv\"\n")
    out_dir, workdir = tmp_path / "out", tmp_path / "wd"

    # Secrets in the spec text, an overlay, a --param: errors that do not repeat them.
    for spec, extra in (("leaky.yaml", ()), ("env.yaml", ("--env", "leaky"))):
        assert call("validate", spec, *extra)[0] == 2
        for target in ("ir", "airflow"):
            assert call("compile", spec, "-t", target, "-o", out_dir / target, *extra)[0] == 2
        assert call("run", spec, "--workdir", workdir, *extra)[0] == 2
    param = ("--param", f"url=postgresql://u:{MARKER}/x@h/db")
    assert call("compile", "p.yaml", "-t", "ir", "-o", out_dir / "ir", *param)[0] == 2
    assert call("run", "p.yaml", "--workdir", workdir, *param)[0] == 2

    # A clean spec: the connection and the secret come from the environment.
    assert call("validate", "p.yaml")[0] == 0
    for target in ("ir", "airflow"):
        assert call("compile", "p.yaml", "-t", target, "-o", out_dir / target)[0] == 0
    for connection in (f"postgresql://user:{MARKER}@127.0.0.1:9/db", f"postgresql//user:{MARKER}@h/db",
                       f"duckdb:///nowhere/{MARKER}.db", str(tmp_path / f"missing-{MARKER}.duckdb")):
        assert call("run", "p.yaml", "--workdir", workdir, DAGSMITH_CONN_WAREHOUSE=connection)[0] == 1
    for run_id in sorted(p.parent.name for p in workdir.glob("runs/*/run.json")):
        assert call("runs", "show", run_id, "--workdir", workdir)[0] in (0, 1)
        assert call("runs", "show", run_id, "--workdir", workdir, "--format", "json")[0] in (0, 1)
    records = [json.loads(p.read_text()) for p in workdir.glob("runs/*/run.json")]
    assert any(r["steps"]["uses-secret"]["state"] == "succeeded" for r in records)  # the step got it
    assert all(r["steps"]["rows"]["state"] == "failed" for r in records)

    printed = "".join(out + err for _, out, err in seen)
    assert MARKER not in printed
    written = _all_bytes(out_dir, workdir)
    assert written and MARKER.encode() not in written


# --- D. crashes leave nothing behind ------------------------------------------------------------

def test_stale_staged_files_are_swept_on_the_next_write(tmp_path):
    out = tmp_path / "dags"
    out.mkdir()
    stale = out / ".probe.py.ab12cd_x.tmp"
    fresh = out / ".probe.py.zz12cd_y.tmp"  # a write in progress right now: kept
    other = out / ".notes.tmp"  # not ours
    for path in (stale, fresh, other):
        path.write_text("half")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    os.utime(other, (old, old))
    write_files(out, {"probe.py": "x = 1\n"})
    assert not stale.exists() and fresh.exists() and other.exists()
    assert (out / "probe.py").read_text() == "x = 1\n"


def test_a_lone_surrogate_in_a_param_value_is_a_positioned_error(capsys, write_spec):
    spec = write_spec(SPEC + "params:\n  label: {type: string, default: x}\n")
    code, out, err = run(capsys, "compile", spec, "-t", "ir", "-o", "-", "--param", "label=a\udc80")
    assert code == 2 and out == "" and "pipeline.yaml:5:34: error: params.label.default: contains a lone surrogate" in err


def test_no_compiled_name_pattern_ends_with_a_bare_dollar():
    """`$` also matches before a final newline: module-level patterns use fullmatch (no `$`) or
    end with `$(?!\\n)`. (yamlpos's resolvers are PyYAML's and only see plain scalars.)"""
    import importlib
    import pkgutil

    import dagsmith

    checked = 0
    for info in pkgutil.walk_packages(dagsmith.__path__, "dagsmith."):
        if info.name.startswith(("dagsmith.serving", "dagsmith.spec.yamlpos", "dagsmith.runtime.distributed", "dagsmith.estimators")):
            continue
        try:
            module = importlib.import_module(info.name)
        except ImportError:
            continue
        for name, value in vars(module).items():
            if isinstance(value, re.Pattern):
                checked += 1
                assert not value.pattern.endswith("$") or value.pattern.endswith("\\$"), f"{info.name}.{name}: {value.pattern}"
    assert checked >= 4


def test_runs_show_redacts_an_old_record(capsys, tmp_path):
    folder = tmp_path / "wd" / "runs" / "r1"
    folder.mkdir(parents=True)
    record = {"run_id": "r1", "pipeline": "probe", "status": "failed", "started": "2026-01-01T00:00:00+00:00", "ended": None,
              "params": {}, "metrics": {}, "gates": [], "validation": {}, "steps": {
                  "rows": {"state": "failed", "attempts": 1, "started": None, "ended": None,
                           "error": f"could not parse postgresql//u:{MARKER}@h/db"}}}
    (folder / "run.json").write_text(json.dumps(record))
    for fmt in ("text", "json"):
        code, out, err = run(capsys, "runs", "show", "r1", "--workdir", tmp_path / "wd", "--format", fmt)
        assert MARKER not in out + err and "u:***@h/db" in out + err, (fmt, out, err)


def test_a_run_id_is_an_id_never_a_path(capsys, tmp_path, monkeypatch):
    """runs show, report, run --resume and a step's DAGSMITH_RUN_ID take a run id, never a path:
    nothing outside the workdir (or the store) is read, shown or written (issue 22, finding 13)."""
    from dagsmith.runtime import make_context
    from dagsmith.runtime.context import StepFailed

    workdir = tmp_path / "work" / "wd"
    (workdir / "runs").mkdir(parents=True)
    outside = tmp_path / "work" / "outside"
    outside.mkdir()
    record = {"run_id": MARKER, "pipeline": MARKER, "status": "failed", "started": "2026-01-01T00:00:00+00:00", "ended": None,
              "params": {}, "metrics": {}, "gates": [], "validation": {}, "steps": {}}
    (outside / "run.json").write_text(json.dumps(record))
    (outside / "probe.ir.json").write_text("{}")
    for bad in ("../../outside", "../outside/../../outside", str(outside), "..", ".", "a/b", "a\\b", "r 1", "r1\n", ""):
        for args in (("runs", "show", bad), ("runs", "show", bad, "--format", "json"), ("report", bad), ("run", "p.yaml", "--resume", bad)):
            code, out, err = run(capsys, *args, "--workdir", workdir)
            assert code == 2 and MARKER not in out + err, (args, code, out, err)
            assert "not a run id" in err, (args, err)
    assert not (outside / "report.html").exists()

    # A folder of the workdir whose name is no run id is not listed as a run.
    (workdir / "runs" / "not an id").mkdir()
    (workdir / "runs" / "not an id" / "run.json").write_text(json.dumps({**record, "run_id": "not an id"}))
    code, out, err = run(capsys, "runs", "list", "--workdir", workdir)
    assert code == 0 and MARKER not in out

    # The step runtime: DAGSMITH_RUN_ID names the run's folder in the store.
    from dagsmith.compiler import compile_spec
    from dagsmith.runtime.store import LocalStore
    from dagsmith.spec import load_spec

    spec = tmp_path / "p.yaml"
    spec.write_text(SPEC + "sources:\n  rows: {type: csv, uri: rows.csv}\n")
    ir = compile_spec(load_spec(spec))
    for bad in ("../../outside", "/tmp/x", "a/b"):
        with pytest.raises(StepFailed, match="not a run id"):
            make_context(ir, "rows", LocalStore(tmp_path / "store"), environ={"DAGSMITH_RUN_ID": bad})
    for good in ("20261125-101500-a1b2c3", "manual__2026-11-25T10:15:00+00:00", "probe-x7k2p", "r1"):
        assert make_context(ir, "rows", LocalStore(tmp_path / "store"), environ={"DAGSMITH_RUN_ID": good}).values.run_id == good


CONNECTION_PIECES = [  # a connection value: pieces a client library prints apart from the whole
    f"http://127.0.0.1:9/{MARKER}Path/?token={MARKER}tok",
    f"https://u:{MARKER}pw@h:9/a/{MARKER}/b?x=1&key={MARKER}#{MARKER}frag",
    f"http://h/{MARKER}%20space/;params?q={MARKER}+plus",
]


@pytest.mark.parametrize("value", CONNECTION_PIECES)
def test_every_piece_of_a_connection_value_is_hidden(value):
    """Issue 22, finding 9: the literal replacement of the whole URL missed the pieces MLflow split
    it into (`url: /SecretPath/?token=...`), percent-encoded or decoded."""
    from urllib.parse import quote, unquote, urlsplit

    from dagsmith.errors import hide_connections, hide_value

    parts = urlsplit(value)
    texts = [
        f"API request to {value}/api/2.0/x failed: Max retries exceeded with url: {parts.path}?{parts.query}/api/2.0/x",
        f"url: {quote(parts.path)} query {unquote(parts.query)} {quote(unquote(parts.path), safe='')} fragment {parts.fragment}",
    ]
    for text in texts:
        hidden = hide_value(text, value, "DAGSMITH_CONN_TRACKING")
        assert MARKER not in hidden and "***" in hidden, hidden
        assert MARKER not in hide_connections(text, {"DAGSMITH_CONN_TRACKING": value})
    assert hide_value(f"to {value} failed", value, "DAGSMITH_CONN_X") == "to $DAGSMITH_CONN_X failed"
    # short pieces are hidden where they stand alone, not inside other words
    assert hide_value("v1 /ab/ xabx", "http://h/ab/v1", "V") == "*** /***/ xabx"


def test_mlflow_secrets_in_the_url_reach_no_output(tmp_path):
    """A tracking URI with its secrets in the path and query, a server that cannot be reached:
    the deploy step fails, and nothing of the URI but its host is on the console, in run.json or
    in report.html."""
    pytest.importorskip("mlflow")
    import numpy as np

    rng = np.random.default_rng(0)
    rows = ["x1,x2,y", *(f"{a:.3f},{b:.3f},{int(a + b > 0)}" for a, b in rng.normal(size=(60, 2)))]
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "rows.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "p.yaml").write_text(SPEC + """sources:
  rows: {type: csv, uri: data/rows.csv}
training:
  inputs: [rows]
  target: y
  model: {estimator: sklearn.linear_model.LogisticRegression}
evaluation:
  metrics: [accuracy]
deployment:
  model_name: m
  target: local
  mlflow: {connection: tracking}
""")
    value = f"http://user:{MARKER}pw@127.0.0.1:9/{MARKER}Path/?token={MARKER}tok"
    code, out, err = cli(tmp_path, "run", "p.yaml", "--workdir", "wd", DAGSMITH_CONN_TRACKING=value,
                         MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="5")
    data, text = _run_record(tmp_path / "wd")
    assert code == 1 and data["steps"]["deploy"]["state"] == "failed", (out, err)
    assert "mlflow (tracking)" in data["steps"]["deploy"]["error"] and "127.0.0.1" in data["steps"]["deploy"]["error"]
    assert MARKER not in out + err and MARKER not in text, (out, err, text)
    [report] = (tmp_path / "wd").glob("runs/*/report.html")
    assert MARKER not in report.read_text(encoding="utf-8")
    for fmt in ("text", "json"):
        code, out, err = cli(tmp_path, "runs", "show", data["run_id"], "--workdir", "wd", "--format", fmt)
        assert MARKER not in out + err


def test_a_step_outcome_for_the_orchestrator_hides_every_piece_of_a_connection(tmp_path, monkeypatch):
    """The failed step's outcome file (Step Functions' task failure cause, Argo's output) holds the
    error of whatever library failed: no part of a connection set in DAGSMITH_CONN_* reaches it."""
    from dagsmith.compiler import compile_spec
    from dagsmith.runtime.commands import main_step
    from dagsmith.spec import load_spec

    (tmp_path / "helpers.py").write_text(
        "def boom():\n"
        f"    raise RuntimeError('Max retries exceeded with url: /{MARKER}Path/?token={MARKER}tok/api/2.0')\n")
    (tmp_path / "p.yaml").write_text(SPEC + "steps:\n  boom: {run: {python: 'helpers:boom'}}\n")
    ir_file = tmp_path / "p.ir.json"
    ir_file.write_text(compile_spec(load_spec(tmp_path / "p.yaml")).dumps())
    monkeypatch.setenv("DAGSMITH_CONN_TRACKING", f"http://127.0.0.1:9/{MARKER}Path/?token={MARKER}tok")
    monkeypatch.setenv("DAGSMITH_ROOT", str(tmp_path))
    outcome = tmp_path / "outcome.json"
    with pytest.raises(RuntimeError):
        main_step(str(ir_file), "boom", None, str(tmp_path / "store"), outcome=str(outcome))
    data = json.loads(outcome.read_text())
    assert data["status"] == "failed" and "Max retries exceeded with url: ***" in data["error"]
    assert MARKER not in outcome.read_text()


def test_a_library_error_quoting_a_connection_piece_reaches_no_output_of_a_run(tmp_path):
    """Whatever step fails with a library's text quoting pieces of a connection (here user code,
    retried once): the console's progress lines, run.json and report.html show none of them."""
    (tmp_path / "helpers.py").write_text(
        "def boom():\n"
        f"    raise RuntimeError('Max retries exceeded with url: /{MARKER}Path/?token={MARKER}tok/api/2.0')\n")
    (tmp_path / "p.yaml").write_text(SPEC + "steps:\n  boom: {run: {python: 'helpers:boom'}, retries: 1, retry_delay: 0s}\n")
    value = f"http://127.0.0.1:9/{MARKER}Path/?token={MARKER}tok"
    code, out, err = cli(tmp_path, "run", "p.yaml", "--workdir", "wd", DAGSMITH_CONN_TRACKING=value)
    data, text = _run_record(tmp_path / "wd")
    assert code == 1 and "Max retries exceeded with url: ***" in data["steps"]["boom"]["error"], (out, err)
    assert "retrying" in out + err and MARKER not in out + err and MARKER not in text
    [report] = (tmp_path / "wd").glob("runs/*/report.html")
    assert MARKER not in report.read_text(encoding="utf-8")
