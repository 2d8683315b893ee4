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


@pytest.mark.parametrize("example", EXAMPLES)
def test_golden_argo_manifests(example, in_repo, update_golden):
    """Every resource generated for Argo per example (the IR beside them is covered above)."""
    from dagsmith.backends import get

    ir = compile_path(f"examples/{example}/pipeline.yaml")
    files = {name: text for name, text in get("argo").emit(ir, ir.backends.get("argo", {})).items() if name.endswith(".yaml")}
    folder = GOLDEN / "argo" / example
    if update_golden:
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.yaml"):
            stale.unlink()
        for name, text in files.items():
            (folder / name).write_text(text, encoding="utf-8")
    golden = {path.name: path.read_text(encoding="utf-8") for path in folder.glob("*.yaml")}
    assert golden, f"no golden files in argo/{example}: run pytest --update-golden"
    assert sorted(files) == sorted(golden), "the set of generated files changed: review, then pytest --update-golden"
    for name, text in files.items():
        assert text == golden[name], f"argo/{example}/{name} differs: review, then pytest --update-golden"


@pytest.mark.parametrize("example", EXAMPLES)
def test_golden_stepfunctions(example, in_repo, update_golden):
    """The state machine and the CloudFormation template per example."""
    from dagsmith.backends import get

    ir = compile_path(f"examples/{example}/pipeline.yaml")
    files = get("stepfunctions").emit(ir, ir.backends.get("stepfunctions", {}))
    for suffix in (".asl.json", ".template.yaml"):
        (name,) = [n for n in files if n.endswith(suffix)]
        golden = GOLDEN / "stepfunctions" / f"{example}{suffix}"
        if update_golden:
            golden.parent.mkdir(exist_ok=True)
            golden.write_text(files[name], encoding="utf-8")
        assert golden.exists(), f"no golden file stepfunctions/{golden.name}: run pytest --update-golden"
        assert files[name] == golden.read_text(encoding="utf-8"), f"stepfunctions/{golden.name} differs: review, then pytest --update-golden"
