"""The scenario table: what every backend must do exactly as the local runner does.

A Scenario builds its spec and data into a fresh folder per backend: `build(folder, backends,
shared)`, where `backends` is a `backends:` section giving every backend a map limit of MAP_LIMIT
and `shared` a folder of the session. It runs once per backend, with `params` overridden at run
time and `run_date` as the logical date. Then
- `check(outcome, adapter)` asserts what must hold on EVERY backend, the local runner included;
- the test compares each backend's Outcome.compared() and `observe(outcome)` (named values: what
  the steps wrote) with the local run's, name by name.
Specs are written as JSON (YAML reads it as the same strings), so hostile text reaches them exactly.
"""

from __future__ import annotations

import csv
import json
import random
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from .adapters import Adapter, Outcome

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable  # custom steps run without a shell: an absolute interpreter, no PATH lookup


@dataclass(frozen=True)
class Scenario:
    name: str
    build: Callable[[Path, dict, Path], Path]  # (folder, backends options, session folder) -> spec
    check: Callable[[Outcome, Adapter], None]
    observe: Callable[[Outcome], dict] = lambda outcome: {}  # {name: value}, compared with the local run's
    env: str | None = None
    params: dict = field(default_factory=dict)
    run_date: str | None = None
    slow: bool = False  # a local run over ~5 s (every non-local run is slow anyway)


# --- data and specs ----------------------------------------------------------------------------

N_PEOPLE = 150


def people() -> list[dict]:
    """Deterministic rows: x in 0..49, region a/b/c, a binary label y mostly (not always) x > 24."""
    rng = random.Random(20240229)
    rows = []
    for i in range(N_PEOPLE):
        x = i % 50
        y = int(x + rng.gauss(0, 8) > 24)
        rows.append({"id": i + 1, "x": x, "region": "abc"[i % 3], "noise": round(rng.random(), 4), "y": y})
    return rows


def write_people(folder: Path) -> None:
    lines = ["id,x,region,noise,y"] + [f"{r['id']},{r['x']},{r['region']},{r['noise']},{r['y']}" for r in people()]
    (folder / "people.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_spec(folder: Path, spec: dict) -> Path:
    text = json.dumps({"dagsmith": 1, **spec}, indent=1, ensure_ascii=False)
    # Unicode stays raw, except what YAML 1.1 reads as a line break even inside quotes
    for char in ("\x85", "\u2028", "\u2029"):
        text = text.replace(char, f"\\u{ord(char):04x}")
    path = folder / "pipeline.yaml"
    path.write_text(text + "\n", encoding="utf-8")
    return path


SOURCE = {"people": {"type": "csv", "uri": "people.csv"}}
MODEL = {"estimator": "sklearn.linear_model.LogisticRegression", "params": {"max_iter": 500}}


def writer(filename: str, names: tuple = ()) -> list[str]:
    """argv of a custom step writing JSON {argv, env} (what it got: the run's variables and
    `names`) to FILENAME in its cwd."""
    program = (
        "import json, os, sys\n"
        f"names = ('DAGSMITH_RUN_ID', 'DAGSMITH_RUN_DATE', 'DAGSMITH_PARAMS', *{tuple(names)!r})\n"
        "data = {'argv': sys.argv[1:], 'env': {k: os.environ.get(k) for k in names}}\n"
        f"open({filename!r}, 'w', encoding='utf-8').write(json.dumps(data, ensure_ascii=False))\n"
    )
    return [PY, "-c", program]


def marker(filename: str) -> list[str]:
    return [PY, "-c", f"open({filename!r}, 'w').write('ran')"]


def all_succeeded(outcome: Outcome) -> None:
    assert outcome.status == "succeeded", (outcome.status, outcome.native)
    assert set(outcome.steps.values()) == {"succeeded"}, outcome.native


# --- 1. the examples ---------------------------------------------------------------------------


@cache
def example_snapshot(example: str, base: Path) -> Path:
    """A copy of examples/EXAMPLE with its data made there by its own make_data.py (which writes
    next to itself), once per session: every backend sees the same spec and data, and nothing is
    written into the source tree."""
    target = base / f"example-{example}"
    shutil.copytree(REPO / "examples" / example, target, ignore=shutil.ignore_patterns("data", "__pycache__", ".dagsmith", "build"))
    subprocess.run([sys.executable, str(target / "make_data.py")], check=True, capture_output=True)
    return target


def example(name: str, narrow: Callable[[Path], None] | None = None) -> Callable[[Path, dict, Path], Path]:
    """The example as shipped; `narrow` may cut its data down in the scenario's own copy."""
    def build(folder: Path, backends: dict, shared: Path) -> Path:
        shutil.copytree(example_snapshot(name, shared), folder, dirs_exist_ok=True)
        if narrow:
            narrow(folder)
        return folder / "pipeline.yaml"

    return build


FORECAST_REGIONS = 6


def first_regions(folder: Path) -> None:
    """The forecast example's sales of its first FORECAST_REGIONS regions only. The scenario proves
    that partitions found at run time x the dev grid run, gate and deploy alike on every backend;
    40 regions proved nothing more and cost ~10 minutes of CI across the four backends (the scale of
    a fan-out is the fanout-over-map-limit scenario's job)."""
    sales = folder / "data" / "sales.csv"
    with sales.open(newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    column = header.index("region")
    keep = sorted({row[column] for row in body})[:FORECAST_REGIONS]
    assert len(keep) == FORECAST_REGIONS, keep
    with sales.open("w", newline="") as f:
        csv.writer(f).writerows([header, *(row for row in body if row[column] in keep)])


def check_minimal(outcome: Outcome, adapter: Adapter) -> None:
    all_succeeded(outcome)
    assert set(outcome.steps) == {"applicants", "train", "evaluate"}
    assert set(outcome.metrics) == {"accuracy", "roc_auc"} and outcome.metrics["roc_auc"] > 0.7, outcome.metrics
    assert outcome.rows == {"applicants": 400}
    assert outcome.deployed is None  # no deployment section


def check_churn(outcome: Outcome, adapter: Adapter) -> None:
    all_succeeded(outcome)
    assert outcome.items == {"train": 6}  # the 2 x 3 grid
    assert set(outcome.metrics) == {"roc_auc", "accuracy", "log_loss", "f1"} and outcome.metrics["roc_auc"] >= 0.75
    assert outcome.gate == "passed" and len(outcome.gates) == 2
    assert set(outcome.validation) == {"churn_features_complete", "churn_features_plausible"}
    assert all(v["success"] for v in outcome.validation.values())
    assert list(outcome.deployed or {}) == ["churn"] and len(outcome.deployed["churn"]) == 64


def check_forecast(outcome: Outcome, adapter: Adapter) -> None:
    all_succeeded(outcome)
    assert outcome.items == {"train": FORECAST_REGIONS * 2}  # regions found at run time x the dev grid
    assert len(outcome.metrics) == FORECAST_REGIONS and all(set(m) == {"mean_absolute_error", "r2"} for m in outcome.metrics.values())
    assert outcome.gate == "passed" and len(outcome.gates) == FORECAST_REGIONS
    assert list(outcome.deployed or {}) == ["demand-forecast"]


def check_spaceflights(outcome: Outcome, adapter: Adapter) -> None:
    """The Kedro port: user code's declared output table, written through dagsmith.step, is
    validated; the regression is gated by a threshold from params, and deployed."""
    all_succeeded(outcome)
    assert set(outcome.metrics) == {"r2", "mean_absolute_error"} and outcome.metrics["r2"] > 0.7, outcome.metrics
    assert outcome.gate == "passed"
    report = outcome.tables["capacity_report/tables/passenger_capacity_by_type.parquet"]
    assert [r["shuttle_type"] for r in report] == ["Type A1", "Type F5", "Type V5"], report
    assert outcome.validation["capacity_report_ok"]["success"]
    assert list(outcome.deployed or {}) == ["spaceflights-price"]


def check_penguins(outcome: Outcome, adapter: Adapter) -> None:
    """The TFX port: a shipped transform and trainer module, TFX's two gates, and BulkInferrer:
    every new penguin scored by the production model just deployed (the test compares the scores
    row by row with the local run's: equal on every backend)."""
    all_succeeded(outcome)
    assert outcome.metrics["accuracy"] > 0.9 and outcome.gate == "passed" and len(outcome.gates) == 2
    scores = outcome.tables["penguin_scores/table.parquet"]
    assert len(scores) == 60 and {r["model_version"] for r in scores} == {1}
    assert {r["prediction"] for r in scores} == {"Adelie", "Chinstrap", "Gentoo"}
    assert all(0.3 < r["probability"] <= 1.0 for r in scores)
    assert list(outcome.deployed or {}) == ["penguin"]


# --- 2. a failing gate -------------------------------------------------------------------------


def build_gate(folder: Path, backends: dict, shared: Path) -> Path:
    write_people(folder)
    return write_spec(folder, {
        "pipeline": {"name": "conf-gate"},
        "sources": SOURCE,
        "training": {"inputs": ["people"], "target": "y", "split": {"test_size": 0.3, "seed": 1}, "model": MODEL},
        "evaluation": {"metrics": ["accuracy"], "gates": [{"metric": "accuracy", "op": ">=", "value": 0.999}]},
        "deployment": {"model_name": "conf-gate", "target": "local"},
        "steps": {
            "after_deploy": {"after": ["deploy"], "run": {"command": marker("after_deploy.ran")}},
            "beside": {"after": ["evaluate"], "run": {"command": marker("beside.ran")}},
        },
    })


def check_gate(outcome: Outcome, adapter: Adapter) -> None:
    assert outcome.status == "gated", (outcome.status, outcome.native)
    assert 0.5 < outcome.metrics["accuracy"] < 0.999, outcome.metrics  # the gate really fails
    assert outcome.gate == "failed" and outcome.gates[0]["threshold"] == 0.999
    assert outcome.steps == {
        "people": "succeeded", "train": "succeeded", "evaluate": "succeeded", "gate": "succeeded",
        "deploy": "skipped", "after_deploy": "skipped", "beside": "succeeded",
    }, outcome.native
    assert outcome.deployed is None
    assert not (outcome.root / "after_deploy.ran").exists() and (outcome.root / "beside.ran").exists()


# --- 3. a failing `on_failure: fail` validation ------------------------------------------------


def build_validation(folder: Path, backends: dict, shared: Path) -> Path:
    write_people(folder)
    return write_spec(folder, {
        "pipeline": {"name": "conf-validation"},
        "sources": SOURCE,
        "features": {"adults": {"inputs": ["people"], "sql": "SELECT * FROM people WHERE x >= 0"}},
        "validation": [
            {"name": "impossible", "on": "adults", "on_failure": "fail",
             "expectations": [{"expect_table_row_count_to_be_between": {"min_value": 1000000}}]},
            {"name": "lenient", "on": "adults", "on_failure": "warn",
             "expectations": [{"expect_column_values_to_be_between": {"column": "x", "min_value": 100}}]},
        ],
        "training": {"inputs": ["adults"], "target": "y", "model": MODEL},
        "evaluation": {"metrics": ["accuracy"]},
        "deployment": {"model_name": "conf-validation"},
        "steps": {
            "after_deploy": {"after": ["deploy"], "run": {"command": marker("after_deploy.ran")}},
            "beside": {"after": ["adults"], "run": {"command": marker("beside.ran")}},
        },
    })


def check_validation(outcome: Outcome, adapter: Adapter) -> None:
    assert outcome.status == "failed", (outcome.status, outcome.native)
    assert outcome.steps == {
        "people": "succeeded", "adults": "succeeded", "beside": "succeeded",
        "impossible": "failed", "lenient": "succeeded",  # a failed `warn` validation goes on
        "train": "not_run", "evaluate": "not_run", "deploy": "not_run", "after_deploy": "not_run",
    }, outcome.native
    assert outcome.validation["impossible"]["success"] is False and outcome.validation["lenient"]["success"] is False
    assert outcome.metrics == {} and outcome.deployed is None
    assert (outcome.root / "beside.ran").exists() and not (outcome.root / "after_deploy.ran").exists()


# --- 3b. a failing step beside an independent branch -----------------------------------------


def build_branch(folder: Path, backends: dict, shared: Path) -> Path:
    """`boom` fails at once while `slow` (independent of it) still runs; `after_slow` can only start
    after the failure: a backend that stops scheduling at the first failure (Argo's default
    failFast) never starts it."""
    write_people(folder)
    return write_spec(folder, {
        "pipeline": {"name": "conf-branch"},
        "sources": SOURCE,
        "steps": {
            "boom": {"after": ["people"], "run": {"command": [PY, "-c", "raise SystemExit(3)"]}},
            "after_boom": {"after": ["boom"], "run": {"command": marker("after_boom.ran")}},
            "slow": {"after": ["people"], "run": {"command": [PY, "-c", "import time; time.sleep(3); open('slow.ran', 'w').write('ran')"]}},
            "after_slow": {"after": ["slow"], "run": {"command": marker("after_slow.ran")}},
        },
    })


def check_branch(outcome: Outcome, adapter: Adapter) -> None:
    assert outcome.status == "failed", (outcome.status, outcome.native)
    assert outcome.steps == {"people": "succeeded", "boom": "failed", "after_boom": "not_run",
                             "slow": "succeeded", "after_slow": "succeeded"}, outcome.native
    assert (outcome.root / "after_slow.ran").exists() and not (outcome.root / "after_boom.ran").exists()


# --- 4. a fan-out wider than the backend's map limit -------------------------------------------

MAP_LIMIT = 2
TRIALS = [0.001, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0]


def build_fanout(folder: Path, backends: dict, shared: Path) -> Path:
    write_people(folder)
    return write_spec(folder, {
        "pipeline": {"name": "conf-fanout"},
        "sources": SOURCE,
        "training": {"inputs": ["people"], "target": "y", "model": MODEL,
                     "sweep": {"method": "grid", "parameters": {"C": TRIALS}, "select": {"metric": "accuracy", "goal": "max"}}},
        "evaluation": {"metrics": ["accuracy", "roc_auc"]},
        "deployment": {"model_name": "conf-fanout"},
        "backends": backends,  # every backend's option for a map limit of MAP_LIMIT
    })


def check_fanout(outcome: Outcome, adapter: Adapter) -> None:
    all_succeeded(outcome)
    assert outcome.items == {"train": len(TRIALS)}  # every trial ran
    if outcome.instances is not None and adapter.map_limit_options(MAP_LIMIT) is not None:
        assert 1 <= outcome.instances["train"] <= MAP_LIMIT, outcome.native  # within the limit
    assert list(outcome.deployed or {}) == ["conf-fanout"]


# --- 5. partitions found at run time -----------------------------------------------------------


def build_partitions(folder: Path, backends: dict, shared: Path) -> Path:
    write_people(folder)
    return write_spec(folder, {
        "pipeline": {"name": "conf-partitions"},
        "sources": SOURCE,
        "training": {"inputs": ["people"], "target": "y", "partition_by": "region", "model": MODEL,
                     "sweep": {"method": "grid", "parameters": {"C": [0.1, 1.0]}, "select": {"metric": "accuracy", "goal": "max"}}},
        "evaluation": {"metrics": ["accuracy"], "gates": [{"metric": "accuracy", "op": ">=", "value": 0.0}]},
        "deployment": {"model_name": "conf-partitions"},
    })


def check_partitions(outcome: Outcome, adapter: Adapter) -> None:
    all_succeeded(outcome)
    assert "plan" in outcome.steps  # the partitions are listed by a step, at run time
    assert outcome.items == {"train": 3 * 2}  # regions a, b, c x 2 trials
    assert sorted(outcome.metrics) == ["a", "b", "c"], outcome.metrics
    assert outcome.gate == "passed" and sorted(g["partition"] for g in outcome.gates) == ["a", "b", "c"]
    assert list(outcome.deployed or {}) == ["conf-partitions"]


# --- 6. params overridden at run time ----------------------------------------------------------

PARAMS = {"min_x": 37, "label": "over ridden"}


def build_params(folder: Path, backends: dict, shared: Path) -> Path:
    write_people(folder)
    return write_spec(folder, {
        "pipeline": {"name": "conf-params"},
        "params": {"min_x": {"type": "integer", "default": 0}, "label": {"type": "string", "default": "the default"}},
        "sources": SOURCE,
        "features": {"big_x": {"inputs": ["people"], "sql": "SELECT * FROM people WHERE x > ${params.min_x}"}},
        "steps": {"echo": {"after": ["big_x"], "run": {"command": writer("params.json") + ["${params.min_x}", "${params.label}"]}}},
    })


def read_json(outcome: Outcome, name: str) -> dict:
    path = outcome.root / name
    assert path.exists(), f"the custom step wrote no {name}: {outcome.native}"
    return json.loads(path.read_text(encoding="utf-8"))


def check_params(outcome: Outcome, adapter: Adapter) -> None:
    all_succeeded(outcome)
    expected_rows = sum(1 for r in people() if r["x"] > PARAMS["min_x"])
    assert expected_rows != sum(1 for r in people() if r["x"] > 0)  # the override makes a difference
    assert outcome.rows == {"people": N_PEOPLE, "big_x": expected_rows}  # the SQL used it
    assert read_json(outcome, "params.json")["argv"] == [str(PARAMS["min_x"]), PARAMS["label"]]  # the argv too
    if outcome.backend == "local":  # the reference; every other backend is compared with it
        assert observe_params(outcome)["env DAGSMITH_PARAMS"] == PARAMS


def observe_params(outcome: Outcome) -> dict:
    """What the custom step got: its argv, and the run's params in its environment (the
    run-environment contract, runtime/environment.py: DAGSMITH_PARAMS, a JSON object)."""
    got = read_json(outcome, "params.json")
    text = got["env"]["DAGSMITH_PARAMS"]
    return {"argv": got["argv"], "env DAGSMITH_PARAMS": json.loads(text) if text is not None else None}


# --- 7. ${run.id} and ${run.date} -------------------------------------------------------------

RUN_DATE = "2024-02-29"


# A step's `env`, on a feature (a Python transform) and a custom step: references filled in with
# the run's values, `$${` written `${`, and what a shell, Kubernetes ($(X), $$), Argo ({{) or
# CloudFormation's Fn::Sub could read as their own, exactly as written.
STEP_ENV = {"RUN_TAG": "run ${run.id} on ${run.date}", "LITERAL": "$${HOME} {{ ds }} $(HOME) $$x {% raw %}", "PLAIN": "plain value",
            "NUMBER": 7, "FLAG": True}
PROBE = """import json, os
from pathlib import Path


def record(frames):
    names = %r
    # the spec's folder: this module's, except on a pod backend, where the module comes from the code
    # package (DAGSMITH_CODE) and the pod's working folder is the spec's (the adapters' image folder)
    folder = Path.cwd() if os.environ.get("DAGSMITH_CODE") else Path(__file__).parent
    (folder / "feature_env.json").write_text(json.dumps({name: os.environ.get(name) for name in names}))
    return frames["daily"]
""" % (tuple(STEP_ENV),)


def build_runinfo(folder: Path, backends: dict, shared: Path) -> Path:
    write_people(folder)
    (folder / "daily").mkdir()
    shutil.copyfile(folder / "people.csv", folder / "daily" / f"{RUN_DATE}.csv")
    (folder / "envprobe.py").write_text(PROBE, encoding="utf-8")
    return write_spec(folder, {
        "pipeline": {"name": "conf-runinfo"},
        "sources": {"daily": {"type": "csv", "uri": "daily/${run.date}.csv"}},  # read at the run's date
        "features": {"probed": {"inputs": ["daily"], "transform": "envprobe:record", "env": STEP_ENV}},
        "steps": {"runinfo": {"after": ["probed"], "env": STEP_ENV,
                              "run": {"command": writer("runinfo.json", tuple(STEP_ENV)) + ["${run.id}", "${run.date}"]}}},
    })


def step_env_expected(outcome: Outcome) -> dict:
    return {"RUN_TAG": f"run {outcome.run_id} on {outcome.run_date}", "LITERAL": "${HOME} {{ ds }} $(HOME) $$x {% raw %}",
            "PLAIN": "plain value", "NUMBER": "7", "FLAG": "true"}


def check_runinfo(outcome: Outcome, adapter: Adapter) -> None:
    all_succeeded(outcome)
    assert outcome.run_date == RUN_DATE  # the backend ran at the logical date it was given
    assert outcome.run_id and outcome.run_id != "adhoc"
    got = read_json(outcome, "runinfo.json")
    assert got["argv"] == [outcome.run_id, outcome.run_date], (got, outcome.run_id, outcome.run_date)
    assert (got["env"]["DAGSMITH_RUN_ID"], got["env"]["DAGSMITH_RUN_DATE"]) == (outcome.run_id, outcome.run_date)
    # the step option `env`, the same on a custom step and on a feature step (any kind)
    assert {name: got["env"][name] for name in STEP_ENV} == step_env_expected(outcome), got["env"]
    assert read_json(outcome, "feature_env.json") == step_env_expected(outcome)


def observe_runinfo(outcome: Outcome) -> dict:
    got = read_json(outcome, "runinfo.json")
    env = {name: got["env"][name].replace(outcome.run_id, "<run.id>") for name in STEP_ENV}
    feature = {name: value.replace(outcome.run_id, "<run.id>") for name, value in read_json(outcome, "feature_env.json").items()}
    return {"argv": [a.replace(outcome.run_id, "<run.id>") for a in got["argv"]], "env": env, "feature env": feature}


# --- 7b. user code reads and writes declared tables (issue 23) -----------------------------------

USER_STEP = """from dagsmith import step


def enrich():
    rows = step.read_table("adults")
    rows["decade"] = rows["x"] // 10
    step.write_table("enriched", rows)
"""
# A command step's own process: the environment contract, and the step API built from it.
USER_COMMAND = """import json, os
from pathlib import Path

from dagsmith import step

names = ("DAGSMITH_STORE", "DAGSMITH_IR", "DAGSMITH_STEP", "DAGSMITH_RUN_ID", "DAGSMITH_RUN_DATE", "DAGSMITH_PARAMS", "DAGSMITH_ROOT")
env = {name: os.environ.get(name) for name in names}
facts = {"set": sorted(name for name, value in env.items() if value), "step": env["DAGSMITH_STEP"],
         "ir is a local file": bool(env["DAGSMITH_IR"]) and Path(env["DAGSMITH_IR"]).is_file(),
         "root has the spec": bool(env["DAGSMITH_ROOT"]) and (Path(env["DAGSMITH_ROOT"]) / "pipeline.yaml").is_file(),
         "run id": env["DAGSMITH_RUN_ID"] == step.run_id, "enriched rows": len(step.read_table("enriched"))}
Path("user_command.json").write_text(json.dumps(facts, sort_keys=True))
"""


def build_user_steps(folder: Path, backends: dict, shared: Path) -> Path:
    write_people(folder)
    (folder / "userstep.py").write_text(USER_STEP, encoding="utf-8")
    (folder / "usercommand.py").write_text(USER_COMMAND, encoding="utf-8")
    return write_spec(folder, {
        "pipeline": {"name": "conf-userstep"},
        "sources": SOURCE,
        "features": {"adults": {"inputs": ["people"], "sql": "SELECT id, x FROM people WHERE x >= 18"},
                     "per_decade": {"inputs": ["enriched"], "sql": "SELECT decade, count(*) AS n FROM enriched GROUP BY decade"}},
        "steps": {"enrich": {"inputs": ["adults"], "outputs": ["enriched"], "run": {"python": "userstep:enrich"}},
                  "report": {"inputs": ["enriched"], "run": {"command": [PY, "usercommand.py"]}}},
    })


def check_user_steps(outcome: Outcome, adapter: Adapter) -> None:
    all_succeeded(outcome)
    adults = sum(1 for r in people() if r["x"] >= 18)
    assert outcome.rows["per_decade"] == len({r["x"] // 10 for r in people() if r["x"] >= 18})
    got = read_json(outcome, "user_command.json")
    assert got == {"set": sorted(["DAGSMITH_STORE", "DAGSMITH_IR", "DAGSMITH_STEP", "DAGSMITH_RUN_ID", "DAGSMITH_RUN_DATE",
                                  "DAGSMITH_PARAMS", "DAGSMITH_ROOT"]),
                   "step": "report", "ir is a local file": True, "root has the spec": True, "run id": True,
                   "enriched rows": adults}, got


# --- 8. hostile strings ------------------------------------------------------------------------

# Everything a shell, Python, Jinja (Airflow templates), JSON or YAML could misread. A param's
# value is data (no references); argv items are text with references, so "${" only as `$${`.
HOSTILE_DEFAULT = "it's \"quoted\" \\ $(touch pwned) `touch pwned` {{ ds }} {% raw %}\nline 2 \u00e9\u65e5\u672c \U0001F680"
HOSTILE_ARGS = [
    "'; DROP TABLE people; --",
    'a "double" and \\"escaped\\" quote',
    "back\\slash, trailing backslash\\",
    "$(touch pwned)",
    "`touch pwned`",
    "$HOME $PATH %s %(x)s {0} {}",
    "{{ ti.xcom_push(key='x', value=1) }}",
    "{% for x in range(3) %}{{ x }}{% endfor %} {# comment #}",
    "multi\nline\r\nwith\ttab",
    "",
    "-c",
    "--flag=1",
    "caf\u00e9 \u65e5\u672c\u8a9e \u202eRTL\u202c \u00a0nbsp \U0001F680 \u2028sep",
    '"""; import os; os.system("touch pwned") #',
]
# `$${` writes a literal `${` (spec language: References): (as written in the spec, as the step gets it)
HOSTILE_ESCAPES = [
    ("$${HOME}", "${HOME}"),
    ("echo $${HOME} $$ $HOME $", "echo ${HOME} $$ $HOME $"),
    ("a$${params.text}b {{ x }}", "a${params.text}b {{ x }}"),
    ("${params.escaped}", "${HOME} ${params.text} {{ x }}"),  # a default written with `$${`: the literal `${`
]


def build_hostile(folder: Path, backends: dict, shared: Path) -> Path:
    write_people(folder)
    program = "import os, sys\nopen('hostile.out', 'wb').write(bytes([0]).join(os.fsencode(a) for a in sys.argv[1:]))\n"
    return write_spec(folder, {
        "pipeline": {"name": "conf-hostile"},
        "params": {"text": {"type": "string", "default": HOSTILE_DEFAULT},
                   "escaped": {"type": "string", "default": "$${HOME} $${params.text} {{ x }}", "description": "shows $${HOME}"}},
        "sources": SOURCE,
        "steps": {"hostile": {"after": ["people"], "run": {"command": [
            PY, "-c", program, "${params.text}", *HOSTILE_ARGS, *(written for written, _ in HOSTILE_ESCAPES)]}}},
    })


def hostile_bytes(outcome: Outcome) -> bytes:
    path = outcome.root / "hostile.out"
    assert path.exists(), f"the custom step wrote no hostile.out: {outcome.native}"
    return path.read_bytes()


def check_hostile(outcome: Outcome, adapter: Adapter) -> None:
    all_succeeded(outcome)
    expected = b"\0".join(a.encode("utf-8") for a in [HOSTILE_DEFAULT, *HOSTILE_ARGS, *(got for _, got in HOSTILE_ESCAPES)])
    assert hostile_bytes(outcome) == expected
    # run by a shell in the step's folder, or by generated code where it is parsed or run
    places = {outcome.root, Path.cwd(), REPO}
    assert not [str(d / "pwned") for d in places if (d / "pwned").exists()], "a hostile string was executed"


# --- the table ---------------------------------------------------------------------------------

# --- batch scoring (predict) ----------------------------------------------------------------


def build_scoring(folder: Path, backends: dict, shared: Path) -> Path:
    write_people(folder)
    return write_spec(folder, {
        "pipeline": {"name": "conf-scoring"},
        "sources": SOURCE,
        "training": {"inputs": ["people"], "target": "y", "partition_by": "region", "partitions": ["a", "b", "c"], "model": MODEL},
        "evaluation": {"metrics": ["accuracy"]},
        "deployment": {"model_name": "conf-scoring"},
        "predict": {"scores": {"model": "production", "input": "people"},
                    "mine": {"model": "trained", "input": "people", "output_columns": ["probability"], "batch_rows": 40}},
    })


def check_scoring(outcome: Outcome, adapter: Adapter) -> None:
    all_succeeded(outcome)
    assert outcome.rows["scores"] == outcome.rows["mine"] == N_PEOPLE
    assert list(outcome.deployed or {}) == ["conf-scoring"]


# --- batch scoring over row ranges (predict rows_per_task) -------------------------------------

N_CROWD = 2400  # rows scored: 3 items of rows_per_task 1000, the last one short


def build_rows_scoring(folder: Path, backends: dict, shared: Path) -> Path:
    write_people(folder)
    rng = random.Random(7)
    lines = ["id,x,region,noise"] + [f"{i + 1},{rng.randrange(50)},{'abc'[i % 3]},{round(rng.random(), 4)}" for i in range(N_CROWD)]
    (folder / "crowd.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return write_spec(folder, {
        "pipeline": {"name": "conf-rows"},
        "sources": {**SOURCE, "crowd": {"type": "csv", "uri": "crowd.csv"}},
        "training": {"inputs": ["people"], "target": "y", "model": MODEL},
        "predict": {"parts": {"model": "trained", "input": "crowd", "rows_per_task": 1000, "batch_rows": 300},
                    "whole": {"model": "trained", "input": "crowd"}},
        "features": {"counted": {"inputs": ["parts"], "sql": "SELECT count(*) AS n, count(DISTINCT id) AS ids FROM parts"}},
    })


def check_rows_scoring(outcome: Outcome, adapter: Adapter) -> None:
    all_succeeded(outcome)
    assert outcome.items == {"parts": 3}  # ceil(2400 / 1000) tasks
    parts, whole = outcome.tables["parts/table.parquet"], outcome.tables["whole/table.parquet"]
    assert len(parts) == N_CROWD and parts == whole  # the parts in order are the one-task table
    assert [row["id"] for row in parts] == list(range(1, N_CROWD + 1))
    assert outcome.rows["counted"] == 1 and outcome.rows["crowd"] == N_CROWD


SCENARIOS = [
    Scenario("minimal", example("minimal"), check_minimal),
    Scenario("churn", example("churn"), check_churn, slow=True),
    Scenario("forecast-dev", example("forecast", narrow=first_regions), check_forecast, env="dev", slow=True),
    Scenario("spaceflights", example("spaceflights"), check_spaceflights, slow=True),
    Scenario("penguins", example("penguins"), check_penguins, slow=True),
    Scenario("gate-fails", build_gate, check_gate),
    Scenario("validation-fails", build_validation, check_validation, slow=True),
    Scenario("branch-fails", build_branch, check_branch),
    Scenario("fanout-over-map-limit", build_fanout, check_fanout),
    Scenario("partitions-at-run-time", build_partitions, check_partitions),
    Scenario("params-at-run-time", build_params, check_params, observe=observe_params, params=PARAMS),
    Scenario("run-id-and-date", build_runinfo, check_runinfo, observe=observe_runinfo, run_date=RUN_DATE),
    Scenario("user-step-io", build_user_steps, check_user_steps, observe=lambda o: {"user_command.json": read_json(o, "user_command.json")}),
    Scenario("batch-scoring", build_scoring, check_scoring),
    Scenario("batch-scoring-rows", build_rows_scoring, check_rows_scoring),
    Scenario("hostile-strings", build_hostile, check_hostile, observe=lambda o: {"hostile.out": hostile_bytes(o)}),
]
