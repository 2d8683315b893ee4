"""Shared fixtures. Golden files are rewritten only with `pytest --update-golden`."""

from __future__ import annotations

import os

import pytest

from dagsmith_testing import REPO


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true", help="rewrite tests/golden/ from the current output")


@pytest.fixture
def update_golden(request) -> bool:
    return request.config.getoption("--update-golden")


@pytest.fixture
def in_repo(monkeypatch):
    """Run from the repository root, as the README's commands do (spec paths stay relative)."""
    monkeypatch.chdir(REPO)
    return REPO


@pytest.fixture
def write_spec(tmp_path, monkeypatch):
    """Write YAML text to tmp_path/NAME and return its relative path (cwd is tmp_path)."""
    monkeypatch.chdir(tmp_path)

    def write(text: str, name: str = "pipeline.yaml") -> str:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return name

    return write



def pytest_configure(config):
    os.environ.setdefault("PYTHONHASHSEED", "0")
