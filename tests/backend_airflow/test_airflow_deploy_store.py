"""`dagsmith deploy --target airflow` when the S3 store the pods read the IR from is out of reach,
stalled or not S3 (issue 22: the exit codes of docs/ci.md on every deploy target): exit 2 and the
dags folder untouched. Airflow's DagBag check is not what is tested here, so it is stood in for
by "no import errors" (test_airflow_backend.py runs the real one)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from dagsmith.cli import main
from misbehaving import Canned, Trickle, closed_port

REPO = Path(__file__).resolve().parents[2]
K8S_OPTIONS = 'airflow: {dag_id: churn_model, operator: kubernetes, namespace: ml, store: "s3://acme-ml/dagsmith"}'

STORES = {
    "unreachable": lambda: None,
    "trickling": lambda: Trickle(interval=0.2),
    "an HTML login page": lambda: Canned(200),
    "a gateway error": lambda: Canned(502, "text/html", b"<html>502 Bad Gateway</html>"),
}


@pytest.mark.parametrize("store", STORES)
def test_an_s3_store_out_of_reach_leaves_the_dags_folder_as_it_was(tmp_path, capsys, monkeypatch, store):
    from dagsmith.backends.airflow import backend

    monkeypatch.setattr(backend, "dagbag_import_errors", lambda folder: {})
    for key, value in {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "t", "AWS_DEFAULT_REGION": "us-east-1",
                       "DAGSMITH_REQUEST_TIMEOUT": "1"}.items():
        monkeypatch.setenv(key, value)
    server = STORES[store]()
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.url if server else closed_port())
    folder = tmp_path / "churn"
    shutil.copytree(REPO / "examples" / "churn", folder, ignore=shutil.ignore_patterns("data", "build", ".dagsmith"))
    spec = folder / "pipeline.yaml"
    spec.write_text(spec.read_text().replace("airflow: {dag_id: churn_model, pool: ml, tags: [ml]}", K8S_OPTIONS))
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "other.py").write_text("# somebody else's DAG\n")
    try:
        started = time.monotonic()
        code = main(["deploy", str(spec), "--target", "airflow", "--dags-folder", str(dags)])
        elapsed = time.monotonic() - started
    finally:
        if server:
            server.close()
    err = capsys.readouterr().err
    assert code == 2 and "cannot put the IR at s3://acme-ml/dagsmith/ir/" in err and "nothing deployed" in err, err
    assert "internal error" not in err and "Traceback" not in err
    assert sorted(p.name for p in dags.iterdir()) == ["other.py"]
    assert not list(tmp_path.glob(".dagsmith-deploy-*"))
    assert elapsed < 6, elapsed


def test_kubernetes_mode_puts_the_code_package_in_the_store_not_in_the_dags_folder(tmp_path, capsys, monkeypatch, aws_s3):
    """The pods' DAGSMITH_CODE points into the store: deploy uploads the package there, beside the IR."""
    from dagsmith.backends.airflow import backend

    monkeypatch.setattr(backend, "dagbag_import_errors", lambda folder: {})
    aws_s3.create_bucket(Bucket="acme-ml")
    folder = tmp_path / "churn"
    shutil.copytree(REPO / "examples" / "churn", folder, ignore=shutil.ignore_patterns("data", "build", ".dagsmith"))
    (folder / "notify_steps.py").write_text("def main():\n    return 'sent'\n")
    spec = folder / "pipeline.yaml"
    text = spec.read_text().replace("airflow: {dag_id: churn_model, pool: ml, tags: [ml]}", K8S_OPTIONS)
    spec.write_text(text.replace("""command: [python, -c, "print('churn model deployed')"]""", "python: notify_steps:main"))
    dags = tmp_path / "dags"
    dags.mkdir()
    assert main(["deploy", str(spec), "--target", "airflow", "--dags-folder", str(dags)]) in (0, None), capsys.readouterr().err
    assert sorted(p.name for p in dags.iterdir()) == ["churn-model.ir.json", "churn_model.py"]
    (key,) = [o["Key"] for o in aws_s3.list_objects_v2(Bucket="acme-ml", Prefix="dagsmith/code/")["Contents"]]
    files = __import__("json").loads(aws_s3.get_object(Bucket="acme-ml", Key=key)["Body"].read())["files"]
    assert "notify_steps.py" in files and "make_data.py" in files
    assert f'"DAGSMITH_CODE": literal("s3://acme-ml/{key}")' in (dags / "churn_model.py").read_text()
