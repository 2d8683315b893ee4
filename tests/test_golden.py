"""Golden IR per example (and per environment): a change in output is reviewed as a diff.

Regenerate with: python -m pytest tests/test_golden.py --update-golden
"""

from __future__ import annotations

import pytest

from dagsmith_testing import EXAMPLES, REPO, compile_path

GOLDEN = REPO / "tests" / "golden"
CASES = [(name, None) for name in EXAMPLES] + [("churn", "dev"), ("churn", "prod"), ("forecast", "dev")]


@pytest.mark.parametrize("example,env", CASES, ids=[f"{e}{'-' + v if v else ''}" for e, v in CASES])
def test_golden_ir(example, env, in_repo, update_golden):
    ir = compile_path(f"examples/{example}/pipeline.yaml", env)
    golden = GOLDEN / f"{example}{'.' + env if env else ''}.ir.json"
    text = ir.dumps()
    if update_golden:
        golden.write_text(text, encoding="utf-8")
    assert golden.exists(), f"no golden file {golden.name}: run pytest --update-golden"
    assert text == golden.read_text(encoding="utf-8"), f"{golden.name} differs: review, then pytest --update-golden"


def test_every_example_has_golden_files():
    assert set(EXAMPLES) >= {"churn", "forecast", "minimal"}
    for example in EXAMPLES:
        assert (GOLDEN / f"{example}.ir.json").exists()


@pytest.mark.parametrize("example", EXAMPLES)
def test_golden_airflow_dag(example, in_repo, update_golden):
    """The generated DAG file per example (the IR beside it is covered above)."""
    from dagsmith.backends import get

    ir = compile_path(f"examples/{example}/pipeline.yaml")
    files = get("airflow").emit(ir, ir.backends.get("airflow", {}))
    (dag_file,) = [name for name in files if name.endswith(".py")]
    golden = GOLDEN / "airflow" / f"{example}.py"
    if update_golden:
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(files[dag_file], encoding="utf-8")
    assert golden.exists(), f"no golden file {golden.name}: run pytest --update-golden"
    assert files[dag_file] == golden.read_text(encoding="utf-8"), f"airflow/{golden.name} differs: review, then pytest --update-golden"
