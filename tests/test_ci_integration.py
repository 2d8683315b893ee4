"""dagsmith where pipeline YAML is committed: the pre-commit hooks (.pre-commit-hooks.yaml) and the
example GitHub Actions workflow (examples/ci/github-actions.yml), each run as its host would run
it. GitHub itself does not run here: the workflow's `check` job is executed step by step with
bash in a scratch git repository (its `${{ }}` values set as a pull request would set them);
the step that posts the comment needs GitHub's API and is not run. pre-commit is run for real
(`pre-commit try-repo`) in the slow test."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
HOOKS = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())
WORKFLOW = yaml.safe_load((REPO / "examples/ci/github-actions.yml").read_text())


def hook(hook_id: str) -> dict:
    (found,) = [h for h in HOOKS if h["id"] == hook_id]
    return found


def git(folder: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com"}
    return subprocess.run(["git", *args], cwd=folder, check=True, capture_output=True, text=True, env=env).stdout


def run_hook(folder: Path, hook_id: str, args: list[str], filenames: list[str]) -> subprocess.CompletedProcess:
    """As pre-commit runs a hook: entry + args (+ the staged files that match `files`)."""
    spec = hook(hook_id)
    names = [f for f in filenames if re.search(spec.get("files", ""), f)] if spec.get("pass_filenames", True) else []
    argv = shlex.split(spec["entry"]) + args + names
    return subprocess.run([str(BIN / argv[0]), *argv[1:]], cwd=folder, capture_output=True, text=True)


def test_hooks_are_well_formed_and_match_spec_files():
    for spec in HOOKS:
        assert {"id", "name", "entry", "language"} <= set(spec) and spec["language"] == "python"
        assert shlex.split(spec["entry"])[0] == "dagsmith"
    files = re.compile(hook("dagsmith-validate")["files"])
    assert all(files.search(p) for p in ["pipeline.yaml", "pipelines/churn/pipeline.yml", "x/churn.pipeline.yaml", "a.dagsmith.yaml"])
    assert not any(files.search(p) for p in ["values.yaml", "pipeline.yaml.bak", ".github/workflows/ci.yml", "mypipeline.yaml"])


def test_validate_hook_passes_good_specs_and_fails_bad_ones_with_positions(tmp_path):
    shutil.copytree(REPO / "examples" / "minimal", tmp_path / "minimal", ignore=shutil.ignore_patterns("data"))
    (tmp_path / "broken.pipeline.yaml").write_text("dagsmith: 1\npipeline: {name: b}\nsources: {a: {type: csv}}\n")
    ok = run_hook(tmp_path, "dagsmith-validate", [], ["minimal/pipeline.yaml", "README.md"])
    assert ok.returncode == 0, ok.stderr
    bad = run_hook(tmp_path, "dagsmith-validate", [], ["minimal/pipeline.yaml", "broken.pipeline.yaml"])
    assert bad.returncode == 2 and "broken.pipeline.yaml:3:" in bad.stderr


def test_compiled_hook_fails_with_a_diff_until_the_output_is_regenerated(tmp_path):
    shutil.copytree(REPO / "examples" / "minimal", tmp_path / "minimal", ignore=shutil.ignore_patterns("data"))
    args = ["minimal/pipeline.yaml", "--target", "argo", "-o", "deploy/argo"]
    assert subprocess.run([str(BIN / "dagsmith"), "compile", *args], cwd=tmp_path, capture_output=True).returncode == 0
    assert run_hook(tmp_path, "dagsmith-compiled", args, ["minimal/pipeline.yaml"]).returncode == 0
    spec = tmp_path / "minimal" / "pipeline.yaml"
    spec.write_text(spec.read_text().replace("metrics: [accuracy, roc_auc]", "metrics: [accuracy]"))
    stale = run_hook(tmp_path, "dagsmith-compiled", args, ["minimal/pipeline.yaml"])
    assert stale.returncode == 1 and "--- a/minimal.ir.json" in stale.stdout and "out of date" in stale.stderr


def workflow_steps(job: str) -> list[dict]:
    return WORKFLOW["jobs"][job]["steps"]


def test_the_workflow_runs_on_pull_requests_and_deploys_on_merge():
    assert set(WORKFLOW[True]) == {"pull_request", "push"}  # YAML 1.1 reads the key `on` as true
    assert WORKFLOW["jobs"]["deploy"]["if"] == "github.event_name == 'push'" and WORKFLOW["jobs"]["deploy"]["needs"] == "check"
    deploy = [s["run"] for s in workflow_steps("deploy") if "run" in s and "dagsmith deploy" in s["run"]]
    assert any("--dry-run" in r for r in deploy) and any("--dry-run" not in r for r in deploy)
    assert all("--token-env ARGO_TOKEN" in r for r in deploy)  # the token by name, never on the command line


@pytest.mark.slow
def test_the_check_job_validates_compiles_and_diffs_a_pull_request(tmp_path):
    repo = tmp_path / "repo"
    folder = repo / "pipelines" / "churn"
    shutil.copytree(REPO / "examples" / "churn", folder, ignore=shutil.ignore_patterns("data", "build", ".dagsmith"))
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "base")
    git(repo, "update-ref", "refs/remotes/origin/main", "HEAD")  # what actions/checkout fetches
    spec = folder / "pipeline.yaml"
    spec.write_text(spec.read_text().replace("max_depth: [2, 3, 4]", "max_depth: [2, 3]"))
    env = {**os.environ, **WORKFLOW["env"], "BASE_REF": "main", "PATH": f"{BIN}:{os.environ['PATH']}"}
    ran = []
    for step in workflow_steps("check"):
        if "run" not in step or step["name"] in ("Install dagsmith", "Post the diff as a review comment"):
            continue  # pip install (the test's environment has dagsmith) and GitHub's API
        result = subprocess.run(["bash", "-e", "-c", step["run"]], cwd=repo, env=env, capture_output=True, text=True)
        assert result.returncode == 0, f"{step['name']}: {result.stderr[-2000:]}"
        ran.append(step["name"])
    assert ran == ["Validate", "Compile for every target", "Diff the generated pipelines against the base branch"]
    for target in WORKFLOW["env"]["TARGETS"].split():
        assert any((repo / "build" / target).iterdir())
    comment = (repo / "comment.md").read_text()
    assert comment.count("<details>") == 4, comment[:2000]
    assert "-            - 4" in comment or "max_depth" in comment
    assert not list(folder.glob(".base.*"))  # the base spec is removed again


@pytest.mark.slow
def test_pre_commit_runs_the_validate_hook_from_this_repository(tmp_path):
    """Real pre-commit: `try-repo` installs dagsmith from this checkout into its own environment
    (pip, from the package index) and runs the hook on a scratch repository's files."""
    pre_commit = BIN / "pre-commit"
    if not pre_commit.exists():
        pytest.skip("pre-commit is not installed (pip install pre-commit)")
    repo = tmp_path / "repo"
    shutil.copytree(REPO / "examples" / "minimal", repo / "pipelines" / "minimal", ignore=shutil.ignore_patterns("data"))
    (repo / "bad.pipeline.yaml").write_text("dagsmith: 1\npipeline: {name: b}\nsources: {a: {type: csv}}\n")
    git(repo, "init", "-q")
    git(repo, "add", ".")
    env = {**os.environ, "PRE_COMMIT_HOME": str(tmp_path / "cache")}
    result = subprocess.run([str(pre_commit), "try-repo", str(REPO), "dagsmith-validate", "--all-files"], cwd=repo,
                            capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    assert "bad.pipeline.yaml:3:" in result.stdout and "pipelines/minimal/pipeline.yaml: valid" in result.stdout
