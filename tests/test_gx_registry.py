"""``src/dagsmith/spec/gx_expectations.json`` must match the installed Great Expectations.

If this fails, regenerate the file with ``python scripts/gen_gx_expectations.py``.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import great_expectations  # hard dependency of the test suite: no skip
import pytest
from great_expectations.expectations import registry

REPO_ROOT = Path(__file__).resolve().parents[1]
GENERATOR_PATH = REPO_ROOT / "scripts" / "gen_gx_expectations.py"
DATA_PATH = REPO_ROOT / "src" / "dagsmith" / "spec" / "gx_expectations.json"
REGEN_HINT = "gx_expectations.json is stale: run `python scripts/gen_gx_expectations.py`"


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_dagsmith_gen_gx_expectations", GENERATOR_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def generator() -> ModuleType:
    return _load_generator()


@pytest.fixture(scope="module")
def data_text() -> str:
    return DATA_PATH.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def data(data_text: str) -> dict:
    return json.loads(data_text)


def _gx_registry_names() -> set[str]:
    registry.register_core_expectations()
    return {
        name
        for name in registry.list_registered_expectation_implementations()
        if registry.get_expectation_impl(name).__module__.startswith("great_expectations.")
    }


def test_names_equal_gx_registry(data: dict) -> None:
    in_file = set(data["expectations"])
    in_gx = _gx_registry_names()
    assert in_file == in_gx, (
        f"{REGEN_HINT}\n  missing from file: {sorted(in_gx - in_file)}"
        f"\n  not in GX registry: {sorted(in_file - in_gx)}"
    )


def test_kwargs_equal_generator(data: dict, generator: ModuleType) -> None:
    expected = generator.compute_expectations()
    actual = data["expectations"]
    differing = sorted(
        name for name in expected.keys() | actual.keys() if expected.get(name) != actual.get(name)
    )
    assert not differing, f"{REGEN_HINT}\n" + "\n".join(
        f"  {name}: file={actual.get(name)} gx={expected.get(name)}" for name in differing
    )


def test_gx_version_recorded(data: dict) -> None:
    assert data["gx_version"] == great_expectations.__version__, REGEN_HINT


def test_file_is_canonical_generator_output(data_text: str, generator: ModuleType) -> None:
    assert data_text == generator.render(generator.build_document()), REGEN_HINT


def test_known_entries(data: dict) -> None:
    exps = data["expectations"]
    assert exps["expect_column_values_to_not_be_null"]["required"] == ["column"]
    assert "mostly" in exps["expect_column_values_to_not_be_null"]["optional"]
    row_count = exps["expect_table_row_count_to_be_between"]
    assert row_count["required"] == []
    assert {"min_value", "max_value", "row_condition", "condition_parser"} <= set(
        row_count["optional"]
    )
    for entry in exps.values():
        assert entry["required"] == sorted(entry["required"])
        assert entry["optional"] == sorted(entry["optional"])
        assert not set(entry["required"]) & set(entry["optional"])
        assert not (set(entry["required"]) | set(entry["optional"])) & {
            "id",
            "meta",
            "notes",
            "batch_id",
            "result_format",
        }
