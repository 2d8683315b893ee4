"""Spec -> IR: the step graph, fan-outs, gates, validation guards, triggers, params, round trip."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dagsmith_testing import EXAMPLES, REPO, compile_path
from dagsmith.errors import SpecError
from dagsmith.ir import IR, FanOut

CHURN = "examples/churn/pipeline.yaml"


def deps(ir: IR) -> dict[str, tuple[str, ...]]:
    return {step.id: step.depends_on for step in ir.steps}


def test_churn_step_graph(in_repo):
    ir = compile_path(CHURN)
    graph = deps(ir)
    assert [s.kind for s in ir.steps].count("train") == 1
    # training waits for the table AND for every validation of it
    assert set(graph["train"]) == {"churn_features", "churn_features_complete", "churn_features_plausible"}
    assert graph["select"] == ("train",)
    assert graph["evaluate"] == ("select",)
    assert graph["gate"] == ("evaluate",)
    assert graph["deploy"] == ("gate",)
    assert graph["notify"] == ("deploy",)  # after: [deploy]
    assert ir.downstream("gate") == {"deploy", "notify"}
    # edges come from references, and the order is a topological one
    seen = set()
    for step in ir.steps:
        assert set(step.depends_on) <= seen
        seen.add(step.id)


def test_sweep_is_one_fanout_step(in_repo):
    ir = compile_path(CHURN)
    train = ir.step("train")
    assert train.fanout is not None and train.fanout.method == "grid"
    assert train.fanout.size == train.fanout.trials == 6
    assert ir.step("select").config == {"metric": "roc_auc", "goal": "max", "per_partition": False}


def test_runtime_partitions_get_a_plan_step(in_repo):
    ir = compile_path("examples/forecast/pipeline.yaml")
    train = ir.step("train")
    assert train.fanout.partition_by == "region"
    assert train.fanout.partitions is None and train.fanout.size is None
    assert train.fanout.items_from == "plan" and "plan" in train.depends_on
    assert train.fanout.trials == 50
    assert ir.step("plan").kind == "plan"


def test_static_partitions_times_trials(write_spec):
    path = write_spec("""
dagsmith: 1
pipeline: {name: p}
sources: {sales: {type: csv, uri: s.csv}}
training:
  inputs: [sales]
  target: y
  partition_by: region
  partitions: [de, fr, us]
  model: {estimator: sklearn.linear_model.Ridge}
  sweep:
    method: random
    samples: 7
    seed: 3
    parameters: {alpha: {low: 0.001, high: 10, log: true}}
    select: {metric: r2, goal: max}
evaluation: {metrics: [r2]}
""")
    fan = compile_path(path).step("train").fanout
    assert (fan.size, fan.trials, fan.partitions, fan.items_from, fan.seed) == (21, 7, ("de", "fr", "us"), None, 3)


def test_minimal_has_no_fanout_or_gate(in_repo):
    ir = compile_path("examples/minimal/pipeline.yaml")
    assert [s.id for s in ir.steps] == ["applicants", "train", "evaluate"]
    assert ir.step("train").fanout is None
    assert ir.step("evaluate").depends_on == ("train",)


@pytest.mark.parametrize("example", EXAMPLES)
def test_json_round_trip_is_exact(example, in_repo):
    ir = compile_path(f"examples/{example}/pipeline.yaml")
    again = IR.loads(ir.dumps())
    assert again == ir
    assert again.dumps() == ir.dumps()


def test_step_fields(in_repo):
    ir = compile_path(CHURN)
    step = ir.step("customers")
    assert step.origin == ("sources", "customers") and ir.step("churn_features_complete").origin == ("validation", 0)
    assert (step.retries, step.retry_delay, step.timeout) == (2, 300, 3600)
    assert step.resources == {"cpu": "1", "memory": "2Gi"}
    assert ir.step("notify").retries == 0  # the step's own value beats defaults
    assert ir.ir_version == 2
    assert "spec_dir" not in ir.pipeline  # where the spec is is not part of the IR


def test_gates_and_champion_challenger(in_repo):
    gates = compile_path(CHURN).step("gate").config["gates"]
    assert {"metric": "roc_auc", "op": ">=", "value": 0.75} in gates
    assert any(g.get("compare_to") == "production" and "delta" in g for g in gates)


GATED = """
dagsmith: 1
pipeline: {name: gated}
params:
  min_auc: {type: number, default: 0.8}
  max_drop: {type: integer, default: 0}
sources:
  rows: {type: csv, uri: rows.csv}
training:
  inputs: [rows]
  target: y
  model: {estimator: sklearn.linear_model.LogisticRegression}
evaluation:
  metrics: [roc_auc, f1_macro, "metrics:lift", {name: my_auc, function: "metrics:auc", needs: proba, params: {max_fpr: 0.1}}]
  gates:
    - {metric: roc_auc, op: ">=", value: "${params.min_auc}"}
    - {metric: my_auc, compare_to: production, op: ">=", delta: "${params.max_drop}"}
    - {metric: "metrics:lift", op: ">", value: 1}
deployment: {model_name: churn}
"""


def test_metrics_and_param_thresholds_in_the_ir(write_spec):
    ir = compile_path(write_spec(GATED))
    evaluate = ir.step("evaluate").config
    assert evaluate["metrics"] == ["roc_auc", "f1_macro", "metrics:lift", "my_auc"]
    assert evaluate["metric_functions"] == {
        "metrics:lift": {"function": "metrics:lift", "needs": "prediction", "params": {}},
        "my_auc": {"function": "metrics:auc", "needs": "proba", "params": {"max_fpr": 0.1}},
    }
    gates = ir.step("gate").config["gates"]
    assert gates[0]["value"] == "${params.min_auc}" and gates[1]["delta"] == "${params.max_drop}"  # filled in per run
    assert IR.from_json(ir.to_json()) == ir
    # without user metrics the IR is as before: no metric_functions key
    plain = compile_path(write_spec(GATED.replace(', "metrics:lift", {name: my_auc, function: "metrics:auc", needs: proba, params: {max_fpr: 0.1}}', "")
                                    .replace("my_auc", "roc_auc").replace('    - {metric: "metrics:lift", op: ">", value: 1}\n', ""), "plain.yaml"))
    assert "metric_functions" not in plain.step("evaluate").config


def test_the_scorer_names_are_the_installed_scikit_learns():
    from sklearn.metrics import get_scorer_names

    from dagsmith import metricnames

    assert sorted(metricnames.SCORERS) == sorted(get_scorer_names())


def test_triggers_and_params(in_repo):
    ir = compile_path(CHURN)
    assert ir.triggers["schedule"] == "0 3 * * 1"
    (trigger,) = ir.triggers["on_new_data"]
    assert trigger["source"] == "events" and trigger["min_interval"] == 6 * 3600
    assert trigger["uri"] == "data/events.csv" and trigger["queue"].startswith("https://sqs.")
    assert ir.params["lookback_days"] == {"type": "integer", "default": 30, "required": False, "description": None, "enum": None}


def test_param_override_is_typed(in_repo):
    ir = compile_path(CHURN, params={"lookback_days": "60"})
    assert ir.params["lookback_days"]["default"] == 60
    with pytest.raises(SpecError, match="'sixty' is not an integer"):
        compile_path(CHURN, params={"lookback_days": "sixty"})
    with pytest.raises(SpecError, match="no such parameter.*did you mean 'lookback_days'"):
        compile_path(CHURN, params={"lookback_day": "1"})


def test_environment_overlay(in_repo):
    base, prod = compile_path(CHURN), compile_path(CHURN, env="prod")
    assert prod.step("events").config["uri"].startswith("s3://")
    assert prod.step("events").retries > base.step("events").retries
    with pytest.raises(SpecError, match=r"unknown environment 'prd' \(known: dev, prod\); did you mean 'prod'\?"):
        compile_path(CHURN, env="prd")


def test_environment_null_deletes(write_spec):
    path = write_spec("""
dagsmith: 1
pipeline: {name: p}
sources: {a: {type: csv, uri: a.csv}}
triggers: {schedule: "@daily"}
environments:
  dev: {triggers: null}
""")
    assert compile_path(path).triggers["schedule"] == "@daily"
    assert compile_path(path, env="dev").triggers["schedule"] is None


def test_include_merges_and_positions_point_into_the_included_file(write_spec):
    write_spec("sources:\n  a: {type: csv, uri: a.csv}\ndefaults: {retries: 3}\n", "common/base.yaml")
    write_spec("defaults: {retires: 1}\n", "common/bad.yaml")
    path = write_spec("dagsmith: 1\ninclude: common/base.yaml\npipeline: {name: p}\ndefaults: {retries: 1}\n")
    ir = compile_path(path)
    assert ir.step("a").retries == 1  # the including file wins
    bad = write_spec("dagsmith: 1\ninclude: [common/bad.yaml]\npipeline: {name: p}\n", "bad.yaml")
    with pytest.raises(SpecError) as info:
        compile_path(bad)
    assert info.value.lines() == ["common/bad.yaml:1:12: error: defaults.retires: unknown key 'retires'; did you mean 'retries'?"]


def test_yaml_12_booleans_keep_on_a_key(write_spec):
    """PyYAML reads `on:` as True; the spec's validation.on must stay a key."""
    path = write_spec("""
dagsmith: 1
pipeline: {name: p}
sources: {a: {type: csv, uri: a.csv}}
validation:
  - name: ok
    on: a
    expectations: [{expect_table_row_count_to_be_between: {min_value: 1}}]
""")
    assert compile_path(path).step("ok").config["table"] == "a"


def test_custom_step_after_train_waits_for_select(write_spec):
    path = write_spec("""
dagsmith: 1
pipeline: {name: p}
sources: {a: {type: csv, uri: a.csv}}
training:
  inputs: [a]
  target: y
  model: {estimator: sklearn.linear_model.Ridge}
  sweep: {method: grid, parameters: {alpha: [1, 2]}, select: {metric: r2, goal: max}}
steps:
  report: {after: [train], run: {python: "my.mod:report"}}
  first: {run: {command: [echo, "$(touch /tmp/x)"]}}
""")
    ir = compile_path(path)
    assert ir.step("report").depends_on == ("select",)
    assert ir.step("first").depends_on == ()
    assert ir.step("first").config == {"command": ["echo", "$(touch /tmp/x)"]}


def test_custom_steps_declare_what_they_read_and_write_and_edges_follow(write_spec):
    """Issue 23: a custom step's inputs and outputs are IR artifacts; whoever reads its output
    table waits for it (features, validations, training, other steps), `model: trained` waits
    for the model step, a registry alias adds no edge; the order stays topological."""
    path = write_spec("""
dagsmith: 1
pipeline: {name: p}
sources: {people: {type: csv, uri: people.csv}}
features:
  wide: {inputs: [people], sql: SELECT * FROM people}
  scored_plus: {inputs: [scores], sql: SELECT * FROM scores}
validation:
  - {name: scores_ok, on: scores, expectations: [{expect_table_row_count_to_be_between: {min_value: 1}}]}
training:
  inputs: [scored_plus]
  target: y
  model: {estimator: sklearn.linear_model.Ridge}
  sweep: {method: grid, parameters: {alpha: [1, 2]}, select: {metric: r2, goal: max}}
deployment: {model_name: m}
steps:
  report:
    inputs: [scores, {model: trained}, model: production, {model: 3}]
    outputs: [summary]
    run: {command: [python, report.py]}
  score:
    inputs: [wide]
    outputs: [scores, extra]
    run: {python: "scoring:main"}
""")
    ir = compile_path(path)
    score = ir.step("score")
    assert (score.depends_on, score.inputs, score.outputs) == (("wide",), ("table:wide",), ("table:scores", "table:extra"))
    assert ir.step("scores_ok").depends_on == ("score",)
    assert ir.step("scored_plus").depends_on == ("score", "scores_ok")  # and the output's validation
    report = ir.step("report")
    assert report.inputs == ("table:scores", "model:select", "registry:production", "registry:3")
    assert report.depends_on == ("score", "select")
    assert report.outputs == ("table:summary",)
    assert ir.producer("table:scores") == ir.producer("table:extra") == "score"
    assert ir.producer("table:wide") == "wide" and ir.producer("registry:production") == "production"
    # the deployed model's lineage reaches through the custom step to the source
    assert "table:scores" in ir.step("deploy").inputs and "table:people" in ir.step("deploy").inputs
    ids = [s.id for s in ir.steps]
    assert ids.index("score") < ids.index("scores_ok") < ids.index("scored_plus") < ids.index("train")
    assert IR.loads(ir.dumps()) == ir


def test_an_output_table_is_no_task_so_it_may_look_like_a_step_id(write_spec):
    """Backends name tasks after steps (a-b and a_b are both `a-b` on Kubernetes); a step's output
    table is no task, so only real ids are checked for that clash."""
    path = write_spec("""
dagsmith: 1
pipeline: {name: p}
sources: {people: {type: csv, uri: people.csv}}
steps:
  a-b: {inputs: [people], outputs: [a_b], run: {python: "m:f"}}
""")
    assert compile_path(path).step("a-b").outputs == ("table:a_b",)


def test_secrets_and_connections_are_names(write_spec):
    path = write_spec("""
dagsmith: 1
pipeline: {name: p}
defaults: {secrets: [API_TOKEN]}
sources: {customers: {type: sql, connection: warehouse, query: "SELECT 1"}}
""")
    step = compile_path(path).step("customers")
    assert step.connections == ("warehouse",) and step.secrets == ("API_TOKEN",)


def test_determinism_across_hash_seeds(tmp_path):
    """Same spec, same bytes, whatever PYTHONHASHSEED (two fresh interpreters)."""
    outputs = []
    for seed in ("1", "12345"):
        out = tmp_path / seed
        env = {**os.environ, "PYTHONHASHSEED": seed}
        subprocess.run(
            [sys.executable, "-m", "dagsmith.cli", "compile", CHURN, "--target", "ir", "-o", str(out)],
            cwd=REPO, env=env, check=True, capture_output=True,
        )
        outputs.append((out / "churn-model.ir.json").read_bytes())
    assert outputs[0] == outputs[1]
    text = outputs[0].decode()
    assert str(REPO) not in text and "/tmp" not in text  # no absolute paths


def test_ir_bytes_do_not_depend_on_the_working_directory(tmp_path, monkeypatch):
    """The same spec compiled from two folders is the same IR, byte for byte."""
    texts = []
    for cwd in (REPO, REPO / "examples"):
        monkeypatch.chdir(cwd)
        texts.append(compile_path(str(Path(os.path.relpath(REPO / CHURN, cwd)))).dumps())
    assert texts[0] == texts[1]


def test_predict_steps_read_their_model_after_it_exists(write_spec):
    """predict: `trained` after select (the model it reads), an alias after deploy (so
    `production` is the model as this run left it), a version number with no wait; the input
    table's validations guard it like any reader of the table; scores may be validated and read."""
    path = write_spec("""
dagsmith: 1
pipeline: {name: p}
sources: {rows: {type: csv, uri: r.csv}, fresh: {type: csv, uri: f.csv}}
validation:
  - {name: fresh_ok, on: fresh, expectations: [{expect_column_to_exist: {column: x}}]}
  - {name: scores_ok, on: scores, expectations: [{expect_column_to_exist: {column: prediction}}]}
training:
  inputs: [rows]
  target: y
  model: {estimator: sklearn.linear_model.LogisticRegression}
  sweep: {method: grid, parameters: {C: [0.1, 1]}, select: {metric: accuracy, goal: max}}
evaluation: {metrics: [accuracy]}
deployment: {model_name: m}
predict:
  scores: {model: production, input: fresh}
  mine: {model: trained, input: fresh, output_columns: [prediction], batch_rows: 500}
  old: {model: 3, input: scores}
steps:
  notify: {after: [scores], run: {python: "a.b:c"}}
""")
    ir = compile_path(path)
    graph = deps(ir)
    assert graph["scores"] == ("deploy", "fresh", "fresh_ok")
    assert graph["mine"] == ("fresh", "fresh_ok", "select")
    assert graph["old"] == ("scores", "scores_ok")
    assert graph["scores_ok"] == ("scores",) and graph["notify"] == ("scores",)
    scores, mine, old = ir.step("scores"), ir.step("mine"), ir.step("old")
    assert scores.kind == "predict" and scores.inputs == ("table:fresh", "registry:production")
    assert scores.outputs == ("table:scores",) and scores.origin == ("predict", "scores")
    assert scores.config == {"model": "production", "model_name": "m", "input": "fresh",
                             "output_columns": ["prediction", "probability"], "batch_rows": 10000}
    assert mine.inputs == ("table:fresh", "model:select") and mine.config["output_columns"] == ["prediction"]
    assert old.inputs == ("table:scores", "registry:3") and old.config["batch_rows"] == 10000
    assert IR.from_json(ir.to_json()) == ir


ROWS_SPEC = """
dagsmith: 1
pipeline: {name: p}
sources: {rows: {type: csv, uri: r.csv}, fresh: {type: csv, uri: f.csv}}
training:
  inputs: [rows]
  target: y
  model: {estimator: sklearn.linear_model.LogisticRegression}
  sweep: {method: grid, parameters: {C: [0.1, 1]}, select: {metric: accuracy, goal: max}}
deployment: {model_name: m}
predict:
  scores: {model: production, input: fresh, rows_per_task: ROWS}
  plain: {model: trained, input: fresh}
"""


def test_predict_rows_per_task_is_a_row_fanout_whose_ranges_task_reads_the_input(write_spec):
    """rows_per_task: the predict step is ONE fan-out (method rows, size found at run time from
    the input's row count), the ranges task of the plan waits for what the step reads (its input,
    and deploy for `production`); without it nothing changes (no fanout, no new JSON key)."""
    from dagsmith.backends.plan import build_plan, ranges_task_id

    ir = compile_path(write_spec(ROWS_SPEC.replace("ROWS", "5000")))
    scores = ir.step("scores")
    assert scores.fanout == FanOut(method="rows", parameters={}, trials=1, size=None, rows_per_item=5000)
    assert deps(ir)["scores"] == ("deploy", "fresh") and scores.inputs == ("table:fresh", "registry:production")
    assert ir.step("plain").fanout is None
    data = ir.to_json()
    steps = {s["id"]: s for s in data["steps"]}
    assert steps["scores"]["fanout"]["rows_per_item"] == 5000 and steps["scores"]["fanout"]["method"] == "rows"
    assert "rows_per_item" not in steps["train"]["fanout"]  # other fan-outs' JSON is as it was
    assert IR.from_json(data) == ir
    plan = build_plan(ir, max_ranges=50)
    listing = plan.task(ranges_task_id("scores"))
    assert listing.upstream == ("deploy", "fresh") and plan.task("scores").maps_over == listing.id
    assert plan.task("scores").upstream == (listing.id,) and plan.task("scores").command.takes_item
    from dagsmith.graphviz import label
    from dagsmith.report.graph import fanout_text

    assert label(scores) == "scores (predict) x 1 per 5000 rows" and fanout_text(scores) == "x1 per 5000 rows"


@pytest.mark.parametrize("value", ["999", "0", "1000.5", "'2000'"])
def test_rows_per_task_is_an_integer_of_at_least_1000(write_spec, value):
    with pytest.raises(SpecError) as info:
        compile_path(write_spec(ROWS_SPEC.replace("ROWS", value)))
    assert "predict.scores.rows_per_task" in str(info.value) and "pipeline.yaml:12:" in str(info.value)
