"""`dagsmith.step` (issue 23): user code reads only the tables and models its step declares,
writes only its declared outputs (all of them, or the step fails naming the missing one), and
sees the one environment contract; features and training read a custom step's output by name."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from dagsmith.runtime.context import StepFailed
from dagsmith.runtime.store import Store

from runtime_testing import RUN, Pipeline

CODE = '''
import json, os, pathlib
import pyarrow as pa
from dagsmith import step


def good():
    rows = step.read_table("rows")
    rows["double"] = rows["x"] * 2
    step.write_table("prepared", rows)
    step.write_table("extra", pa.table({"n": [len(rows)]}))       # a pyarrow Table too
    names = ("DAGSMITH_STORE", "DAGSMITH_IR", "DAGSMITH_STEP", "DAGSMITH_RUN_ID", "DAGSMITH_RUN_DATE",
             "DAGSMITH_PARAMS", "DAGSMITH_ROOT")
    seen = {name: os.environ.get(name) for name in names}
    seen["ir_step_ids"] = [s["id"] for s in json.loads(pathlib.Path(seen["DAGSMITH_IR"]).read_text())["steps"]]
    seen["api"] = [step.step_id, step.run_id, step.run_date, step.store_uri, step.params]
    pathlib.Path(os.environ["SEEN"]).write_text(json.dumps(seen))


def reads_undeclared():
    step.read_table("other")


def writes_undeclared():
    step.write_table("other", step.read_table("rows"))


def writes_a_list():
    step.write_table("prepared", [1, 2])


def forgets_one():
    step.write_table("prepared", step.read_table("rows"))


def strays():
    step.write_table("prepared", step.read_table("rows"))
    step.write_table("extra", step.read_table("rows"))
    pathlib.Path(os.environ["DAGSMITH_OUTPUTS"], "notes.txt").write_text("not a declared table")


def loads_production():
    step.load_model("production")


def loads_trained():
    step.load_model("trained")
'''

SPEC = """
dagsmith: 1
pipeline: {name: api}
params: {k: {type: integer, default: 3}}
sources:
  rows: {type: csv, uri: rows.csv}
  other: {type: csv, uri: other.csv}
features:
  summary:
    inputs: [prepared]
    sql: SELECT count(*) AS n, sum(double) AS total FROM prepared
training:
  inputs: [prepared]
  target: y
  split: {test_size: 0.25, seed: 1}
  model: {estimator: sklearn.linear_model.LogisticRegression}
steps:
  prep:
    inputs: [rows]
    outputs: [prepared, extra]
    run: {python: "usercode:FUNCTION"}
"""

ROWS = pd.DataFrame({"x": [float(i) for i in range(20)], "y": [i % 2 for i in range(20)]})


@pytest.fixture(autouse=True)
def fresh_module():
    """Each test imports its own folder's usercode.py (the runtime puts the spec folder on sys.path)."""
    import sys

    yield
    sys.modules.pop("usercode", None)


def pipeline(tmp_path, function: str, spec: str = SPEC) -> Pipeline:
    (tmp_path / "usercode.py").write_text(CODE)
    return Pipeline(tmp_path, spec.replace("FUNCTION", function), {"rows": ROWS, "other": ROWS})


def test_a_step_reads_and_writes_what_it_declares_and_features_and_training_read_its_output(tmp_path, monkeypatch):
    monkeypatch.setenv("SEEN", str(tmp_path / "seen.json"))
    p = pipeline(tmp_path, "good")
    result = p.run("prep")
    assert result["tables"] == {"prepared": 20, "extra": 1}
    manifest = p.store.manifest(Store.step_key(RUN, "prep"))
    assert sorted(manifest["files"]) == ["tables/extra.parquet", "tables/prepared.parquet"]
    assert p.run("summary")["rows"] == 1  # a SQL feature reads the step's output by its name
    assert p.ctx("summary").read_table("summary").to_pydict() == {"n": [20], "total": [380.0]}
    assert p.run("train")["rows"]["train"] == 15  # training too (runtime/data.py, through the producer)
    seen = json.loads((tmp_path / "seen.json").read_text())
    assert seen["DAGSMITH_STORE"] == p.store.uri and seen["DAGSMITH_STEP"] == "prep"
    assert (seen["DAGSMITH_RUN_ID"], seen["DAGSMITH_RUN_DATE"]) == (RUN, "2024-06-03")
    assert json.loads(seen["DAGSMITH_PARAMS"]) == {"k": 3} and seen["DAGSMITH_ROOT"] == str(tmp_path.resolve())
    # no IR file was given (as when it is read from S3): the step got a local copy, gone afterwards
    assert seen["ir_step_ids"] == [s.id for s in p.ir.steps] and not Path(seen["DAGSMITH_IR"]).exists()
    assert seen["api"] == ["prep", RUN, "2024-06-03", p.store.uri, {"k": 3}]
    assert "DAGSMITH_STEP" not in os.environ  # the process's environment is given back


def test_the_ir_file_the_step_was_read_from_is_the_one_user_code_gets(tmp_path, monkeypatch):
    from dagsmith.runtime import make_context, run_step

    monkeypatch.setenv("SEEN", str(tmp_path / "seen.json"))
    p = pipeline(tmp_path, "good")
    (tmp_path / "api.ir.json").write_text(p.ir.dumps())
    env = {"DAGSMITH_RUN_ID": RUN, "DAGSMITH_ROOT": str(tmp_path)}
    run_step(make_context(p.ir, "prep", p.store, None, env, ir_path=str(tmp_path / "api.ir.json")))
    assert json.loads((tmp_path / "seen.json").read_text())["DAGSMITH_IR"] == str(tmp_path / "api.ir.json")


@pytest.mark.parametrize("function, message", [
    ("reads_undeclared", "step 'prep' reads table 'other', which it does not declare: add it to steps.prep.inputs "
                         "(declared inputs: rows)"),
    ("writes_undeclared", "step 'prep' writes table 'other', which it does not declare: add it to steps.prep.outputs "
                          "(declared outputs: prepared, extra)"),
    ("writes_a_list", "write_table('prepared', ...) takes a pandas DataFrame or a pyarrow Table, not list"),
    ("forgets_one", "step 'prep' declares the output table(s) 'extra' but did not write them: "
                    "call dagsmith.step.write_table(name, frame) for each"),
    ("strays", "step 'prep' wrote notes.txt into its outputs folder (DAGSMITH_OUTPUTS): only its declared output "
               "tables go there, through dagsmith.step.write_table"),
    ("loads_production", "step 'prep' loads model 'production', which it does not declare: add it to steps.prep.inputs "
                         "(declared inputs: rows)"),
    ("loads_trained", "step 'prep' loads model 'trained', which it does not declare"),
])
def test_what_a_step_does_not_declare_is_refused_by_name_and_nothing_is_committed(tmp_path, function, message):
    p = pipeline(tmp_path, function)
    with pytest.raises(StepFailed) as caught:
        p.run("prep")
    assert message in str(caught.value)
    assert p.store.manifest(Store.step_key(RUN, "prep")) is None  # a failed step publishes nothing


def test_outside_a_step_the_api_says_where_it_works(monkeypatch):
    from dagsmith import step

    for name in ("DAGSMITH_IR", "DAGSMITH_STEP"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(StepFailed, match="works inside a pipeline's custom step"):
        step.read_table("rows")
    with pytest.raises(AttributeError):
        step.no_such_thing  # noqa: B018


def test_caching_covers_python_steps_with_outputs_only(tmp_path, monkeypatch):
    from dagsmith.runner.cache import cache_key

    monkeypatch.setenv("SEEN", str(tmp_path / "seen.json"))
    p = pipeline(tmp_path, "good", SPEC + """
  notify: {run: {python: "usercode:good"}}
  shell:
    outputs: [shell_out]
    run: {command: [python, x.py]}
""")
    p.run("prep")  # its key needs its inputs' fingerprints
    assert cache_key(p.ctx("prep"), p.ir) is not None
    assert cache_key(p.ctx("notify"), p.ir) is None and cache_key(p.ctx("shell"), p.ir) is None
    before = cache_key(p.ctx("prep"), p.ir)
    (tmp_path / "usercode.py").write_text(CODE + "\n# changed\n")
    assert cache_key(p.ctx("prep"), p.ir) != before  # the module's code is in the key


def test_a_registry_input_is_cached_by_the_version_its_alias_points_at(tmp_path):
    from dagsmith.runner.cache import cache_key

    spec = SPEC.replace("    inputs: [rows]\n    outputs", "    inputs: [rows, model: production]\n    outputs") + \
        "deployment: {model_name: churn}\n"
    p = pipeline(tmp_path, "good", spec)
    assert p.ir.step("prep").inputs == ("table:rows", "registry:production")
    # no production version yet: not cached (the step itself fails saying so)
    assert cache_key(p.ctx("prep"), p.ir) is None
    from dagsmith.runtime import registry

    keys = []
    for version, content in ((1, "one"), (2, "two")):
        staging = p.store.stage(registry.version_key("churn", version))
        staging.path("model.joblib").write_text(content)
        p.store.commit(staging)
        registry.write_aliases(p.store, "churn", {**registry.empty_aliases(), "production": version})
        keys.append(cache_key(p.ctx("prep"), p.ir))
    assert None not in keys and keys[0] != keys[1]  # production moved: the step runs again


def test_a_step_without_declared_io_gets_the_store_ir_and_root_too(tmp_path):
    """The issue's first symptom: a custom step's environment had no store (KeyError:
    'DAGSMITH_STORE' locally; under Airflow not even DAGSMITH_ROOT)."""
    import sys

    program = ("import json, os; names = ('DAGSMITH_STORE', 'DAGSMITH_IR', 'DAGSMITH_ROOT', 'DAGSMITH_STEP'); "
               "open('env.json', 'w').write(json.dumps({n: os.environ.get(n) for n in names}))")
    spec = SPEC + "  plain: {run: {command: [%s, -c, %s]}}\n" % (json.dumps(sys.executable), json.dumps(program))
    p = pipeline(tmp_path, "good", spec)
    p.run("plain")
    env = json.loads((tmp_path / "env.json").read_text())
    assert env["DAGSMITH_STORE"] == p.store.uri and env["DAGSMITH_ROOT"] == str(tmp_path.resolve())
    assert env["DAGSMITH_STEP"] == "plain" and env["DAGSMITH_IR"].endswith("api.ir.json")


def test_load_model_calls_the_model_api_with_the_declared_reference(tmp_path, monkeypatch):
    """dagsmith.step.load_model hands a declared reference to dagsmith.model (helper B's module:
    load_trained(ctx) for this run's model, load_model(store, name, alias_or_version) for the
    registry's); stood in here so this checks only what dagsmith.step passes it."""
    import sys
    import types

    calls = []
    fake = types.ModuleType("dagsmith.model")
    fake.load_trained = lambda ctx: calls.append(("trained", ctx.step.id)) or "this run's model"
    fake.load_model = lambda store, name, ref: calls.append(("registry", store, name, ref)) or f"{name} {ref}"
    monkeypatch.setitem(sys.modules, "dagsmith.model", fake)
    (tmp_path / "usercode.py").write_text(CODE + '''

def loads_models():
    import pathlib
    (pathlib.Path(os.environ["DAGSMITH_ROOT"]) / "models.json").write_text(json.dumps([step.load_model(), step.load_model("production"), step.load_model(3)]))
    step.write_table("prepared", step.read_table("rows"))
    step.write_table("extra", step.read_table("rows"))
''')
    spec = """
dagsmith: 1
pipeline: {name: api}
sources:
  rows: {type: csv, uri: rows.csv}
training:
  inputs: [rows]
  target: y
  model: {estimator: sklearn.linear_model.LogisticRegression}
deployment: {model_name: churn}
steps:
  prep:
    inputs: [rows, {model: trained}, model: production, model: 3]
    outputs: [prepared, extra]
    run: {python: "usercode:loads_models"}
"""
    p = Pipeline(tmp_path, spec, {"rows": ROWS})
    assert p.ir.step("prep").inputs == ("table:rows", "model:train", "registry:production", "registry:3")
    p.commit_tables(RUN, {"train": ROWS})  # stands for the trained model's manifest (prep waits for train)
    p.run("prep")
    assert json.loads((tmp_path / "models.json").read_text()) == ["this run's model", "churn production", "churn 3"]
    assert calls == [("trained", "prep"), ("registry", p.store.uri, "churn", "production"), ("registry", p.store.uri, "churn", 3)]


def test_a_module_may_use_the_api_when_it_is_imported(tmp_path):
    (tmp_path / "atimport.py").write_text(
        "from dagsmith import step\nROWS = step.read_table('rows')\n\n\ndef main():\n"
        "    step.write_table('prepared', ROWS)\n    step.write_table('extra', ROWS)\n")
    p = Pipeline(tmp_path, SPEC.replace("usercode:FUNCTION", "atimport:main"), {"rows": ROWS, "other": ROWS})
    assert p.run("prep")["tables"] == {"prepared": 20, "extra": 20}


def test_load_model_gives_the_real_trained_and_deployed_models(tmp_path):
    """dagsmith.step.load_model with the real dagsmith.model: this run's model and the registry's
    production (the version deploy just registered) predict the same on raw rows, and equal
    dagsmith.load_model's answers outside any step."""
    (tmp_path / "usercode.py").write_text(CODE + '''

def scores():
    rows = step.read_table("rows")
    features = rows[["x"]]
    trained, production = step.load_model("trained"), step.load_model("production")
    out = rows.assign(trained=list(trained.predict(features)), production=list(production.predict(features)),
                      version=production.version)
    step.write_table("scored", out)
''')
    spec = """
dagsmith: 1
pipeline: {name: api}
sources:
  rows: {type: csv, uri: rows.csv}
training:
  inputs: [rows]
  target: y
  split: {test_size: 0.25, seed: 1}
  model: {estimator: sklearn.linear_model.LogisticRegression}
deployment: {model_name: api-model}
steps:
  score:
    after: [deploy]
    inputs: [rows, {model: trained}, model: production]
    outputs: [scored]
    run: {python: "usercode:scores"}
"""
    rows = pd.DataFrame({"x": [float(i) for i in range(20)], "y": [int(i >= 10) for i in range(20)]})
    p = Pipeline(tmp_path, spec, {"rows": rows})
    for step_id in ("train", "deploy", "score"):  # the source table is given (Pipeline)
        p.run(step_id)
    scored = p.ctx("score").read_table("scored").to_pandas()
    assert list(scored["trained"]) == list(scored["production"]) and set(scored["version"]) == {1}
    import dagsmith

    outside = dagsmith.load_model(p.store.uri, "api-model", "production")
    assert list(outside.predict(rows[["x"]])) == list(scored["production"])
    assert list(scored["production"]) == [int(x >= 10) for x in range(20)]  # a separable toy: the model got it


def test_a_versions_lineage_names_the_user_step_whose_table_the_model_was_trained_from(tmp_path, monkeypatch):
    monkeypatch.setenv("SEEN", str(tmp_path / "seen.json"))
    (tmp_path / "usercode.py").write_text(CODE)
    spec = SPEC.replace("FUNCTION", "good") + "deployment: {model_name: api-model}\n"
    p = Pipeline(tmp_path, spec, {"rows": ROWS, "other": ROWS})
    for step_id in ("prep", "train", "deploy"):
        p.run(step_id)
    from dagsmith.runtime import registry

    lineage = registry.read_version_json(p.store, "api-model", 1, "lineage.json")
    prep = p.store.manifest(Store.step_key(RUN, "prep"))
    assert lineage["steps"] == {"prep": prep["fingerprint"]}
