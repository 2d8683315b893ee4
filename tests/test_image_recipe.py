"""The image recipe: `dagsmith image SPEC` chooses the extras from what the pipeline does, and the
repository's docker/Dockerfile is the same template (one source of truth)."""

from __future__ import annotations

import json
import re

import pytest

from dagsmith import __version__
from dagsmith.cli import main
from dagsmith_testing import REPO

BASE = {"dagsmith": 1, "pipeline": {"name": "img"}, "sources": {"raw": {"type": "csv", "uri": "raw.csv"}},
        "training": {"inputs": ["raw"], "target": "y", "model": {"estimator": "sklearn.linear_model.LogisticRegression"}}}


def image(tmp_path, capsys, **sections) -> str:
    spec = tmp_path / "pipeline.yaml"
    spec.write_text(json.dumps({**BASE, **sections}))
    assert main(["image", str(spec)]) in (0, None)
    return capsys.readouterr().out


def extras_of(text: str) -> str:
    return re.search(r"^ARG DAGSMITH_EXTRAS=(.*)$", text, re.M).group(1)


@pytest.mark.parametrize("sections,extras", [
    ({}, "run,aws"),
    ({"validation": [{"name": "ok", "on": "raw", "expectations": [{"expect_column_values_to_not_be_null": {"column": "y"}}]}]},
     "run,aws,validation"),
    ({"training": {**BASE["training"], "distributed": {"framework": "torch", "workers": 2}}}, "run,aws,train"),
    ({"training": {**BASE["training"], "model": {"estimator": "dagsmith.estimators.TorchMLPClassifier"}}}, "run,aws,train"),
    ({"deployment": {"model_name": "m", "mlflow": {"connection": "tracking"}}}, "run,aws,mlflow"),
    ({"sources": {"raw": {"type": "xlsx", "uri": "raw.xlsx", "sheet": "data"}}}, "run,aws,xlsx"),
    ({"sources": {"raw": {"type": "s3", "uri": "s3://b/raw/", "format": "xlsx"}}}, "run,aws,xlsx"),
])
def test_the_extras_follow_what_the_pipeline_does(tmp_path, capsys, sections, extras):
    text = image(tmp_path, capsys, **sections)
    assert extras_of(text) == extras
    assert f"ARG DAGSMITH_VERSION={__version__}\n" in text  # the runtime of the dagsmith that compiles the IR
    assert 'RUN pip install "dagsmith[${DAGSMITH_EXTRAS}]${DAGSMITH_VERSION:+==${DAGSMITH_VERSION}}"' in text
    assert text.startswith("# The image dagsmith's tasks run in") and "\nFROM python:3.11-slim\n" in text


def test_the_repository_dockerfile_is_what_dagsmith_image_prints_with_the_defaults(tmp_path, capsys):
    from dagsmith.imagerecipe import BASE_EXTRAS, dockerfile

    repo_file = (REPO / "docker" / "Dockerfile").read_text(encoding="utf-8")
    assert repo_file == dockerfile(BASE_EXTRAS, ""), "docker/Dockerfile differs from templates/Dockerfile.in: regenerate it"
    printed = image(tmp_path, capsys)
    assert printed == repo_file.replace("ARG DAGSMITH_VERSION=\n", f"ARG DAGSMITH_VERSION={__version__}\n")
