"""Fuzzing the whole front end: no input ever produces a traceback.

Three sources of inputs, all loaded with `load_spec` and compiled with `compile_spec`:

- the churn and forecast examples with random mutations: a key deleted at any depth, a value
  replaced by a random JSON-ish value (or one of the same type), a referenced name renamed, a
  list item duplicated or the list cut short, unknown keys added; with a random --env / --param;
- the examples' YAML text itself, truncated or with random characters inserted or deleted;
- specs generated from scratch in the shape of the schema, clean or sloppy, so the reference,
  graph and value checks and the compiler see many shapes (fan-outs, cycles, odd names).

Either the spec is valid and its IR round-trips through JSON exactly, or dagsmith reports a
SpecError whose every diagnostic has a position and a message (and never a URL's password).
Any other exception is a bug.

DAGSMITH_FUZZ_EXAMPLES sets the number of examples per test (default 300; CI: 2500)."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dagsmith.compiler import compile_spec
from dagsmith.errors import SpecError
from dagsmith.ir import IR
from dagsmith.spec import load_spec
from dagsmith.spec.build import plain
from dagsmith.spec.document import load_document

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = {name: REPO_ROOT / "examples" / name / "pipeline.yaml" for name in ("churn", "forecast")}
MAX_EXAMPLES = int(os.environ.get("DAGSMITH_FUZZ_EXAMPLES", "300"))
FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _example_documents() -> dict[str, dict]:
    # dagsmith's own loader (YAML 1.2 booleans, so `on:` stays a key), as plain dicts.
    return {name: plain(load_document(path)) for name, path in EXAMPLES.items()}


DOCUMENTS = _example_documents()
ALL_NAMES = sorted({
    name
    for doc in DOCUMENTS.values()
    for section in ("sources", "features", "steps")
    for name in doc.get(section, {})
} | {v["name"] for doc in DOCUMENTS.values() for v in doc.get("validation", [])})

# Values a spec author might plausibly write in the wrong place.
SPECIAL_TEXT = st.sampled_from([
    "", " ", "${params.lookback_days}", "${params.nope}", "${run.date}", "${run.id}", "${foo}", "${", "$${x}",
    "{{ ds }}", "{% if x %}", "it's \"quoted\"", "line one\nline two", "tab\there", "üñíçødé ✓ 模型",
    "postgres://etl:hunter2@db:5432/crm", "s3://bucket/prefix/", "data/*.csv", "../../etc/passwd",
    "1h30m", "5x", "1h1h", "0", "-1", "30s", "0 3 * * 1", "61 3 * * *", "@daily", "@often", "* * * * * *",
    "2Gi", "500m", "2GG", "1e3", "1e99999", "sklearn.ensemble.GradientBoostingClassifier", "my_pkg.mod:fn",
    "a:b:c", "train", "deploy", "evaluate", "Train", "customer-data", "x-extra", "null", "true", "~",
    "grid", "random", "canary", "replace", ">=", "=>", "production", "roc_auc", "r2", "csv", "sql",
] + ALL_NAMES)
TEXT = st.one_of(
    SPECIAL_TEXT,
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30),
)
NUMBERS = st.one_of(
    st.integers(min_value=-5, max_value=300),
    st.integers(),
    st.sampled_from([2**31, 2**63, -(2**63) - 1, 10**30, -(10**30)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 0.5, 1.0, 1e308, 5e-324]),
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT)
JSONISH = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(TEXT, children, max_size=3),
    ),
    max_leaves=8,
)
KNOWN_KEYS = sorted({
    "dagsmith", "pipeline", "params", "defaults", "sources", "features", "validation", "training", "evaluation",
    "deployment", "triggers", "steps", "environments", "backends", "include", "name", "type", "uri", "query",
    "connection", "inputs", "sql", "transform", "key", "on", "expectations", "on_failure", "target", "split",
    "model", "estimator", "entrypoint", "sweep", "method", "parameters", "samples", "select", "metric", "goal",
    "partition_by", "partitions", "distributed", "metrics", "gates", "op", "value", "delta", "compare_to",
    "model_name", "strategy", "canary", "schedule", "on_new_data", "source", "min_interval", "after", "run",
    "python", "command", "retries", "retry_delay", "timeout", "resources", "cpu", "memory", "gpu", "image",
    "secrets", "env", "default", "enum", "trainig", "sorces", "x-note",
})
KEYS = st.one_of(st.sampled_from(KNOWN_KEYS), TEXT)


# --- mutations on the document --------------------------------------------------------------

def _containers(node, path=()):
    """(path, container) of every mapping and list in the document, the root included."""
    if isinstance(node, (dict, list)):
        yield path, node
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in items:
            yield from _containers(value, path + (key,))


def _slots(doc):
    """(container, key) of every value in the document."""
    out = []
    for _, container in _containers(doc):
        keys = list(container) if isinstance(container, dict) else range(len(container))
        out.extend((container, key) for key in keys)
    return out


def delete_key(data, doc):
    slots = _slots(doc)
    if slots:
        container, key = data.draw(st.sampled_from(slots), label="delete")
        del container[key]


def replace_value(data, doc):
    slots = _slots(doc)
    if slots:
        container, key = data.draw(st.sampled_from(slots), label="replace")
        container[key] = data.draw(JSONISH, label="new value")


def replace_same_type(data, doc):
    """A value of the same type, so the schema passes more often and the later checks run."""
    slots = [(c, k) for c, k in _slots(doc) if not isinstance(c[k], (dict, list))]
    if not slots:
        return
    container, key = data.draw(st.sampled_from(slots), label="retype")
    old = container[key]
    if isinstance(old, bool):
        new = not old
    elif isinstance(old, int):
        new = data.draw(st.one_of(st.integers(-3, 100), st.sampled_from([0, 1, 10**6, 2**63])), label="int")
    elif isinstance(old, float):
        new = data.draw(st.one_of(st.floats(-2, 2), st.sampled_from([0.0, 1.0, float("nan"), float("inf")])), label="float")
    elif isinstance(old, str):
        new = data.draw(st.one_of(SPECIAL_TEXT, SPECIAL_TEXT, TEXT), label="text")
    else:
        new = None
    container[key] = new


def shorten_list(data, doc):
    lists = [c for _, c in _containers(doc) if isinstance(c, list) and c]
    if lists:
        target = data.draw(st.sampled_from(lists), label="list")
        del target[data.draw(st.integers(0, len(target) - 1), label="item"):]


def rename_name(data, doc):
    """Rename a source/feature/step (its definition, or one reference to it, or everything)."""
    defined = [(section, name) for section in ("sources", "features", "steps")
               if isinstance(doc.get(section), dict) for name in doc[section]]
    if not defined:
        return
    section, old = data.draw(st.sampled_from(defined), label="rename")
    new = data.draw(st.one_of(st.sampled_from(ALL_NAMES + ["train", "Train", old.upper(), old.replace("_", "-")]), TEXT), label="to")
    how = data.draw(st.sampled_from(["definition", "references", "everywhere"]), label="how")
    if how in ("definition", "everywhere"):
        mapping = doc[section]
        doc[section] = {(new if k == old else k): v for k, v in mapping.items()}
    if how in ("references", "everywhere"):
        for _, container in list(_containers(doc)):
            if isinstance(container, list):
                for index, item in enumerate(container):
                    if item == old:
                        container[index] = new
            elif isinstance(container, dict):
                for key in ("on", "source"):
                    if container.get(key) == old:
                        container[key] = new


def duplicate_item(data, doc):
    lists = [c for _, c in _containers(doc) if isinstance(c, list) and c]
    if lists:
        target = data.draw(st.sampled_from(lists), label="list")
        index = data.draw(st.integers(0, len(target) - 1), label="item")
        target.insert(index, copy.deepcopy(target[index]))


def add_unknown_key(data, doc):
    mappings = [c for _, c in _containers(doc) if isinstance(c, dict)]
    target = data.draw(st.sampled_from(mappings), label="mapping")
    target[data.draw(KEYS, label="key")] = data.draw(JSONISH, label="value")


MUTATIONS = [delete_key, replace_value, replace_same_type, replace_same_type, rename_name, rename_name,
             duplicate_item, shorten_list, add_unknown_key]


# --- running one case -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def _check(path: Path, env=None, params=None) -> None:
    try:
        ir = compile_spec(load_spec(path, env=env, params=params))
    except SpecError as exc:
        assert exc.diagnostics, "a SpecError without diagnostics"
        for d in exc.diagnostics:
            assert d.mark.line >= 1 and d.mark.column >= 1, d
            assert isinstance(d.message, str) and d.message.strip(), d
            assert "hunter2" not in d.format(), d  # the password of a URL in SPECIAL_TEXT is never echoed
        return
    assert IR.from_json(json.loads(ir.dumps())) == ir


def _dump(doc) -> str:
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False, width=100)


@FUZZ_SETTINGS
@given(data=st.data())
def test_mutated_documents(workdir, data):
    example = data.draw(st.sampled_from(sorted(DOCUMENTS)), label="example")
    doc = copy.deepcopy(DOCUMENTS[example])
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        data.draw(st.sampled_from(MUTATIONS), label="mutation")(data, doc)
    environments = sorted(DOCUMENTS[example].get("environments", {}))
    env = data.draw(st.sampled_from([None] * 6 + environments * 2 + ["nope"]), label="env")
    declared = sorted(DOCUMENTS[example].get("params", {}))
    params = data.draw(st.one_of(
        st.none(), st.none(),
        st.dictionaries(st.sampled_from(declared + declared + ["nope"]),
                        st.sampled_from(["1", "60", "0", "-3", "abc", "", "1.5", "1e400", "true"]), max_size=2),
    ), label="params")
    try:
        text = _dump(doc)
    except (ValueError, yaml.YAMLError):  # e.g. an int too long for str(): not a spec anyone writes
        return
    path = workdir / "pipeline.yaml"
    path.write_text(text, encoding="utf-8")
    _check(path, env, params)


@FUZZ_SETTINGS
@given(data=st.data())
def test_mutated_yaml_text(workdir, data):
    example = data.draw(st.sampled_from(sorted(EXAMPLES)), label="example")
    text = EXAMPLES[example].read_text(encoding="utf-8")
    body = text.index("dagsmith: 1")  # edits in the leading comment block are rarely interesting
    for _ in range(data.draw(st.integers(1, 3), label="edits")):
        offset = data.draw(st.integers(min(body, len(text)), len(text)), label="offset")
        edit = data.draw(st.sampled_from(["truncate", "insert", "delete", "insert"]), label="edit")
        if edit == "truncate":
            text = text[:offset]
        elif edit == "delete":
            text = text[:offset] + text[offset + data.draw(st.integers(1, 40), label="length"):]
        else:
            snippet = data.draw(st.one_of(
                st.sampled_from([":", "- ", "\t", "  ", "\n", "[", "]", "{", "}", "&a ", "*a", "<<: *a\n", "'", '"',
                                 "#", "---\n", "!!binary ", "!!python/object:os.system ", "? ", "|", ">", "%YAML 1.2\n",
                                 "\x07", "\ufeff", "\r", "\u2028", "on: ", "yes", "0x1F", "1e999", ".nan", "~"]),
                st.text(max_size=8),
            ), label="inserted")
            text = text[:offset] + snippet + text[offset:]
    path = workdir / "raw.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    _check(path)


# --- specs generated from scratch, shaped like the schema ----------------------------------
# Most mutated examples stop at the schema; these mostly pass it, so the reference, graph and
# value checks and the compiler see many more shapes (fan-outs, odd names, parameters). Half
# of them are "clean" (only valid choices, so they compile), half "sloppy" (a bad choice now
# and then: unknown references, cycles, colliding names, bad durations...).

GOOD_NAMES = ["events", "customers", "activity", "features", "a", "b", "c", "x" * 70, "y" * 70 + "z"]
BAD_NAMES = ["Events", "customer_data", "customer-data", "train", "deploy", "plan"]
METRICS = st.sampled_from(["accuracy", "f1", "log_loss", "mean_absolute_error", "r2", "roc_auc"])
PARAM_NAMES = st.sampled_from(["days", "sample", "flag", "mode"])
PARAM_VALUES = st.one_of(st.integers(-5, 5), st.floats(-2, 2), st.booleans(), st.sampled_from(["a", "b", "7"]))


class _Chooser:
    """Draws a good choice, or (in a sloppy spec, one time in six) a bad one."""

    def __init__(self, draw, sloppy: bool):
        self.draw = draw
        self.sloppy = sloppy

    def __call__(self, good, bad=None, label=None):
        # Not `== 0`: Hypothesis favours the smallest value, which would make "bad" the usual case.
        if bad is not None and self.sloppy and self.draw(st.integers(0, 5)) == 1:
            return self.draw(bad)
        return self.draw(good)

    def maybe(self, p: int = 2) -> bool:
        """True about one time in p."""
        return self.draw(st.integers(0, p - 1)) == 1


def _options(pick: _Chooser) -> dict:
    out = {}
    durations = st.one_of(st.sampled_from(["30s", "5m", "1h30m", "1d", "0s"]), st.integers(0, 10**6))
    bad_durations = st.sampled_from(["5x", "1h1h", "-1s"])
    quantities = st.one_of(st.sampled_from(["500m", "2", "2Gi", "1.5", "1e3", "0.5"]), st.integers(1, 64), st.floats(0.001, 1e3))
    if pick.maybe(3):
        out["retries"] = pick(st.integers(0, 5), st.just(101))
    if pick.maybe(3):
        out["timeout"] = pick(durations, bad_durations)
    if pick.maybe(4):
        out["retry_delay"] = pick(durations, bad_durations)
    if pick.maybe(3):
        keys = pick(st.lists(st.sampled_from(["cpu", "memory"]), unique=True))
        out["resources"] = {k: pick(quantities, st.sampled_from(["2GG", "0", "Ki", -1, 0])) for k in keys}
        if pick.maybe(3):
            out["resources"]["gpu"] = pick(st.integers(0, 4))
    if pick.maybe(3):
        out["image"] = pick(st.sampled_from(["ghcr.io/acme/x:1", "python:3.12"]))
    if pick.maybe(4):
        out["env"] = pick(st.dictionaries(st.sampled_from(["A", "B_2", "LOG"]),
                                          st.one_of(st.text(max_size=5), st.integers(), st.booleans()), max_size=2))
    if pick.maybe(4):
        out["secrets"] = pick(st.lists(st.sampled_from(["API_TOKEN", "DB_PASSWORD"]), unique=True, max_size=2))
    return out


def _names(pick: _Chooser, min_size: int, max_size: int, taken: list[str]) -> list[str]:
    free = [n for n in GOOD_NAMES if n not in taken]
    count = pick(st.integers(min_size, min(max_size, len(free))))
    names = pick(st.lists(st.sampled_from(free), min_size=count, max_size=count, unique=True)) if free else []
    return [pick(st.just(n), st.sampled_from(BAD_NAMES + taken) if taken else st.sampled_from(BAD_NAMES)) for n in names]


def _refs(pick: _Chooser, defined: list[str], min_size: int = 0, max_size: int = 3) -> list[str]:
    if not defined:
        return pick(st.lists(st.just("nope"), max_size=min_size))
    refs = pick(st.lists(st.sampled_from(sorted(set(defined))), min_size=min_size, max_size=max_size, unique=True))
    return list(dict.fromkeys(pick(st.just(r), st.sampled_from(["nope", "evnts"] + GOOD_NAMES)) for r in refs))


@st.composite
def generated_specs(draw):
    pick = _Chooser(draw, sloppy=draw(st.booleans()))
    doc = {"dagsmith": 1, "pipeline": {"name": pick(st.sampled_from(["churn", "demand-forecast", "p1"]), st.just("Churn_Model"))}}
    params = {}
    for name in pick(st.lists(PARAM_NAMES, max_size=3, unique=True)):
        kind = pick(st.sampled_from(["integer", "number", "string", "boolean"]))
        examples = {"integer": st.integers(-5, 50), "number": st.floats(-2, 2), "string": st.sampled_from(["a", "b"]), "boolean": st.booleans()}[kind]
        param = {"type": kind}
        if pick.maybe(3) is False:
            param["default"] = pick(examples, PARAM_VALUES)
        if pick.maybe(4):
            param["enum"] = pick(st.lists(examples, min_size=1, max_size=3, unique=True))
            if "default" in param and param["default"] not in param["enum"]:
                param["enum"].append(param["default"])
        params[name] = param
    if params:
        doc["params"] = params
    if pick.maybe():
        doc["defaults"] = _options(pick)
    text = pick(
        st.sampled_from(["SELECT * FROM events", "SELECT '${run.date}'", "SELECT ${ run.id }"]
                        + [f"SELECT ${{params.{name}}}" for name in params]),
        st.sampled_from(["SELECT ${params.nope}", "SELECT ${x}"]),
    )

    sources = {}
    for name in _names(pick, 1, 3, []):
        kind = pick(st.sampled_from(["csv", "parquet", "s3", "sql"]))
        source = {"type": kind, **_options(pick)}
        if kind == "sql":
            source.update(connection="warehouse", query=text)
        else:
            source["uri"] = pick(st.sampled_from(["data/x.csv", "s3://b/p/", "data/${params.days}/*.csv"][: 2 + ("days" in params)]))
        sources[name] = source
    doc["sources"] = sources

    tables = list(sources)
    features = {}
    for name in _names(pick, 0, 3, tables):
        feature = {"inputs": _refs(pick, tables, max_size=2) + ([name] if pick.sloppy and pick.maybe(8) else []), **_options(pick)}
        feature.update(pick(st.sampled_from([{"sql": text}, {"transform": "my_pkg.features:build"}]),
                            st.sampled_from([{}, {"sql": "SELECT 1", "transform": "a:b"}])))
        if pick.maybe():
            feature["key"] = pick(st.one_of(st.just("id"), st.lists(st.sampled_from(["id", "day"]), min_size=1, max_size=2, unique=True)))
        features[name] = feature
        tables.append(name)
    if pick.sloppy and features and pick.maybe(4):  # a cycle: the first feature reads the last
        first = next(iter(features))
        features[first]["inputs"] = list(dict.fromkeys(features[first]["inputs"] + [list(features)[-1]]))
    if features:
        doc["features"] = features

    validation = []
    for name in _names(pick, 0, 2, tables):
        expectation = pick(st.sampled_from([
            {"expect_column_values_to_not_be_null": {"column": "id"}},
            {"expect_table_row_count_to_be_between": {"min_value": 1}},
            {"expect_column_values_to_be_in_set": {"column": "x", "value_set": [1, 2]}},
        ]), st.sampled_from([{"expect_column_values_to_be_between": None}, {"expect_column_to_exist": {"colum": "x"}}]))
        validation.append({"name": name, "on": _refs(pick, tables, 1, 1)[0], "expectations": [expectation],
                           "on_failure": pick(st.sampled_from(["fail", "warn"])), **_options(pick)})
    if validation:
        doc["validation"] = validation

    if pick(st.integers(0, 3)) > 0:
        training = {
            "inputs": _refs(pick, tables, 1, 2),
            "target": "target",
            "model": pick(st.sampled_from([{"estimator": "sklearn.linear_model.LogisticRegression"},
                                           {"entrypoint": "my_pkg.train:main", "params": {"lr": 0.1, "layers": [3, 4]}}]),
                          st.sampled_from([{}, {"estimator": "x.Y", "entrypoint": "a:b"}, {"estimator": "x:Y"}])),
            **_options(pick),
        }
        if pick.maybe():
            training["split"] = pick(st.sampled_from([{"test_size": 0.25, "seed": 3}, {"column": "split"}, {"column": "split", "test_value": True}]),
                                     st.sampled_from([{"test_value": "t"}, {"column": "target"}, {"column": "s", "seed": 1}]))
        if pick.maybe():
            training["partition_by"] = pick(st.just("region"), st.just("target"))
            if pick.maybe():
                training["partitions"] = pick(st.lists(st.one_of(st.sampled_from(["de", "fr", "us"]), st.integers(0, 3)), min_size=1, max_size=3, unique=True))
        elif pick.sloppy and pick.maybe(6):
            training["partitions"] = ["de"]
        if pick.maybe():
            method = pick(st.sampled_from(["grid", "random"]))
            lists = st.lists(st.one_of(st.integers(0, 9), st.floats(0, 1), st.sampled_from(["auto", None])), min_size=1, max_size=4)
            ranges = st.builds(lambda lo, span, log, kind: {"low": lo, "high": lo + span, "log": log, **({"type": kind} if kind else {})},
                               st.floats(0.001, 1), st.floats(0, 2), st.booleans(), st.sampled_from([None, "int", "float"]))
            values = st.one_of(lists, ranges) if method == "random" else lists
            parameters = pick(st.dictionaries(st.sampled_from(["lr", "depth", "alpha"]), values, min_size=1, max_size=3))
            if pick.sloppy and pick.maybe(6):
                parameters["bad"] = {"low": 2, "high": 1} if method == "random" else {"low": 0, "high": 1}
            sweep = {"method": method, "parameters": parameters}
            if (method == "random") != (pick.sloppy and pick.maybe(6)):
                sweep["samples"] = pick(st.integers(1, 50), st.just(10**6))
            if pick.maybe():
                sweep["max_parallel"] = pick(st.integers(1, 64))
            if pick.maybe(3):
                sweep["seed"] = pick(st.integers(0, 2**40))
            if not (pick.sloppy and pick.maybe(6)):
                sweep["select"] = {"metric": pick(METRICS), "goal": pick(st.sampled_from(["max", "min"]))}
            training["sweep"] = sweep
        if pick.maybe(4):
            training["distributed"] = {"framework": pick(st.sampled_from(["horovod", "torch"])), "workers": pick(st.integers(1, 8)),
                                       "gpus_per_worker": pick(st.integers(0, 2))}
        doc["training"] = training

    if "training" in doc and pick.maybe(3) is False or pick.sloppy and pick.maybe(8):
        metrics = pick(st.lists(METRICS, min_size=1, max_size=3, unique=True))
        gates = []
        for _ in range(pick(st.integers(0, 3))):
            metric = pick(st.sampled_from(metrics), METRICS)
            gates.append(pick(
                st.sampled_from([{"metric": metric, "op": ">=", "value": 0.5}, {"metric": metric, "op": "<", "value": -1},
                                 {"metric": metric, "op": ">=", "compare_to": "production", "delta": -0.01},
                                 {"metric": metric, "op": "==", "compare_to": "production"}]),
                st.sampled_from([{"metric": metric, "op": ">"}, {"metric": metric, "op": ">", "value": 1, "delta": 0.1},
                                 {"metric": metric, "op": ">", "value": 1, "compare_to": "production"}]),
            ))
        doc["evaluation"] = {"metrics": metrics, **({"gates": gates} if gates else {}), **_options(pick)}

    if "training" in doc and pick.maybe() or pick.sloppy and pick.maybe(8):
        strategy = pick(st.sampled_from([None, "replace", "canary"]))
        deployment = {"model_name": pick(st.sampled_from(["churn", "m.v2"])), "target": pick(st.sampled_from(["local", "kserve", "sagemaker"]))}
        if strategy:
            deployment["strategy"] = strategy
        if (strategy == "canary") != (pick.sloppy and pick.maybe(6)):
            deployment["canary"] = {"traffic_percent": pick(st.floats(0.5, 99.5))}
        doc["deployment"] = {**deployment, **_options(pick)}

    triggers = {}
    if pick.maybe():
        triggers["schedule"] = pick(st.sampled_from(["0 3 * * 1", "@daily", "*/15 * * * *", "0 0 1 jan,jul *", "5 4 * * sun-sat", "1-5/2 * * * *"]),
                                    st.sampled_from(["61 * * * *", "0 0 * * 8", "* * * *", "@often", "5-1 * * * *", "*/0 * * * *"]))
    if pick.maybe(3):
        triggers["on_new_data"] = [
            {"source": name, **({"min_interval": pick(st.sampled_from(["6h", "1d", 3600]), st.just("1x"))} if pick.maybe() else {}),
             **({"queue": "https://sqs.eu-west-1.amazonaws.com/1/q"} if pick.maybe() else {})}
            for name in _refs(pick, list(sources), 1, 2)
        ]
    if triggers:
        doc["triggers"] = triggers

    done = tables + [v["name"] for v in validation] + [b for b, section in (("train", "training"), ("evaluate", "evaluation"), ("deploy", "deployment")) if section in doc]
    steps = {}
    for name in _names(pick, 0, 3, done):
        run = pick(st.sampled_from([{"python": "my_pkg.notify:main"}, {"command": ["echo", "${run.id}"]}]),
                   st.sampled_from([{}, {"python": "bad"}, {"python": "a:b", "command": ["x"]}]))
        after = _refs(pick, done + list(steps))
        steps[name] = {"run": run, **({"after": after} if after else {}), **_options(pick)}
    if pick.sloppy and len(steps) >= 2 and pick.maybe(3):  # a cycle among custom steps
        first, last = list(steps)[0], list(steps)[-1]
        steps[first]["after"] = list(dict.fromkeys(steps[first].get("after", []) + [last]))
    if steps:
        doc["steps"] = steps

    if pick.maybe(3):
        doc["environments"] = {"dev": {"defaults": {"retries": 0}}, "prod": pick(st.sampled_from([
            {"params": {name: {"type": "string", "default": "p"}} for name in params} or {"defaults": {"timeout": "2h"}},
            {"defaults": {"resources": {"memory": "8Gi"}}},
        ]), st.sampled_from([{"training": None}, {"sources": {"events": {"type": "sql"}}}, {"deployment": {"strategy": "canary"}}]))}
    if pick.maybe(3):
        doc["backends"] = pick(st.sampled_from([{"airflow": {"dag_id": "x.y", "pool": "ml"}}, {"argo": {"namespace": "ml"}},
                                                {"stepfunctions": {"role_arn": "arn:aws:iam::1:role/r", "region": "eu-west-1"}}]))
    return doc


@FUZZ_SETTINGS
@given(doc=generated_specs(), env=st.sampled_from([None, None, "dev", "prod"]),
       params=st.one_of(st.none(), st.none(), st.dictionaries(PARAM_NAMES, st.sampled_from(["1", "0.5", "true", "b", "x"]), max_size=2)))
def test_generated_specs(workdir, doc, env, params):
    if env and env not in doc.get("environments", {}):
        env = None
    if params:
        params = {k: v for k, v in params.items() if k in doc.get("params", {})} or None
    path = workdir / "generated.yaml"
    path.write_text(_dump(doc), encoding="utf-8")
    _check(path, env, params)


def test_examples_compile_and_round_trip(workdir):
    """The unmutated documents, dumped the fuzz way, are valid: the mutations start from valid specs."""
    for name, doc in DOCUMENTS.items():
        path = workdir / f"{name}.yaml"
        path.write_text(_dump(doc), encoding="utf-8")
        ir = compile_spec(load_spec(path))
        assert IR.from_json(json.loads(ir.dumps())) == ir
