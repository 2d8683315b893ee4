"""Real Airflow 3 on SQLite: one home and metadata database per test session.

Airflow reads its configuration when first imported, so the environment is set here before
anything imports it; the ~5 s warm-up of the first DAG run is paid once per session.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("airflow-home")
    dags = home / "dags"
    dags.mkdir()
    os.environ.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "True",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
    })
    subprocess.run([str(Path(sys.executable).parent / "airflow"), "db", "migrate"], check=True, capture_output=True, env=os.environ.copy())
    return home


@pytest.fixture
def compile_dag(airflow_home, tmp_path):
    """Compile a spec for Airflow into the dags folder (a fresh sub-folder per test)."""

    def compile_(spec: Path, *extra: str) -> Path:
        out = airflow_home / "dags" / tmp_path.name
        result = subprocess.run(
            [str(Path(sys.executable).parent / "dagsmith"), "compile", str(spec), "--target", "airflow", "-o", str(out), *extra],
            capture_output=True, text=True, cwd=REPO,
        )
        assert result.returncode == 0, result.stderr
        return out

    return compile_
