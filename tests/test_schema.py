"""The JSON Schema: up to date with its builder, valid 2020-12, every field described."""

from __future__ import annotations

import importlib.util
import json

from jsonschema import Draft202012Validator

from dagsmith_testing import EXAMPLES, REPO
from dagsmith.spec.schema_check import pipeline_schema
from dagsmith.spec.yamlpos import load_text


def _builder():
    spec = importlib.util.spec_from_file_location("build_schema", REPO / "scripts" / "build_schema.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_checked_in_schema_is_current():
    shipped = (REPO / "src" / "dagsmith" / "schema" / "pipeline.schema.json").read_text(encoding="utf-8")
    assert shipped == _builder().render(), "run: python scripts/build_schema.py"


def test_schema_is_valid_2020_12():
    schema = pipeline_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)


def _properties(node, path="$"):
    if isinstance(node, dict):
        for name, sub in node.get("properties", {}).items():
            yield f"{path}.{name}", sub
        for key, sub in node.items():
            if key != "if":  # a condition's properties are not fields
                yield from _properties(sub, f"{path}.{key}")
    elif isinstance(node, list):
        for index, sub in enumerate(node):
            yield from _properties(sub, f"{path}[{index}]")


def test_every_field_has_a_description():
    schema = pipeline_schema()
    missing = []
    for path, sub in _properties(schema):
        target = sub
        if "$ref" in sub and "description" not in sub:
            target = schema["$defs"][sub["$ref"].rsplit("/", 1)[1]]
        if not target.get("description"):
            missing.append(path)
    assert not missing, missing


def test_spec_md_sections_are_all_in_the_schema():
    top = set(pipeline_schema()["properties"])
    assert {"dagsmith", "pipeline", "params", "defaults", "sources", "features", "validation", "training",
            "evaluation", "deployment", "triggers", "steps", "environments", "backends", "include"} <= top


def test_examples_validate_against_the_plain_schema():
    validator = Draft202012Validator(pipeline_schema())
    for example in EXAMPLES:
        path = REPO / "examples" / example / "pipeline.yaml"
        doc = load_text(path.read_text(encoding="utf-8"), str(path))
        assert not list(validator.iter_errors(doc)), example


def test_schema_command_prints_it(capsys):
    from dagsmith.cli import main

    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out) == pipeline_schema()
