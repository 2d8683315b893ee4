"""What tests share besides fixtures (tests/conftest.py): paths, a compile helper, process checks.

Test files import from here, never from conftest (two conftest modules exist: tests/ and
tests/backend_airflow/, and `import conftest` would pick either)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(p.parent.name for p in (REPO / "examples").glob("*/pipeline.yaml"))


def compile_path(path, env=None, params=None):
    from dagsmith.compiler import compile_spec
    from dagsmith.spec import load_spec

    return compile_spec(load_spec(path, env, params))


def benchmark_module(name: str):
    """benchmarks/NAME.py as a module, loaded by path: benchmarks/ is not a package, and putting
    it on sys.path would let benchmarks/airflow.py shadow Airflow for every later import."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"dagsmith_benchmark_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def process_alive(pid: int) -> bool:
    """Whether process `pid` runs: a zombie (exited, not reaped yet, e.g. a grandchild reparented
    to init) counts as gone."""
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
