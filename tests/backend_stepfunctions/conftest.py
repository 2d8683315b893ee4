"""Fixtures of the Step Functions tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def moto_worker(tmp_path):
    """A moto server executing state machines, with the test-only hook that runs each task's
    command as a local process (tests/conformance/backend_stepfunctions.py says what it bridges)."""
    pytest.importorskip("moto")
    pytest.importorskip("antlr4")
    from conformance.backend_stepfunctions import MotoStepFunctions

    worker = MotoStepFunctions()
    worker.start(tmp_path / "moto-logs")
    yield worker
    worker.stop()
