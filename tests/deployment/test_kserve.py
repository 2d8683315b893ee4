"""target kserve. No Kubernetes cluster here: a local HTTP server STANDS IN for the Kubernetes API
(it keeps InferenceServices in a dict, applies JSON merge patches, and can refuse a PATCH), and
the kubernetes client reaches it through a kubeconfig file. The test asserts the exact requests
(method, path, content type, body). Manifests are validated against KServe v0.20.0's CRD schema."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jsonschema
import pytest
import yaml

from deploy_testing import Pipeline, rows, spec

CRD = Path(__file__).resolve().parents[1] / "schemas" / "kserve-inferenceservice-v0.20.0.crd.yaml"
PATH = "/apis/serving.kserve.io/v1beta1/namespaces/ml/inferenceservices"
DEPLOY = """  model_name: churn
  target: kserve
  strategy: canary
  canary: {traffic_percent: 10}
  kserve: {namespace: ml, service_account: model-reader}"""


def strict(schema):
    """The CRD's schema with additionalProperties: false wherever properties are listed."""
    if isinstance(schema, dict):
        schema = {k: strict(v) for k, v in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema and "x-kubernetes-preserve-unknown-fields" not in schema:
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


def crd_validator():
    crd = yaml.safe_load(CRD.read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1beta1")
    return jsonschema.Draft7Validator(strict(version["schema"]["openAPIV3Schema"]))


def merge(target, patch):
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge(out.get(key), value)
    return out


class StandIn:
    """The Kubernetes API subset the deploy step uses, for inferenceservices in namespace ml."""

    def __init__(self):
        self.objects, self.requests, self.refuse_patch = {}, [], False
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self, code, body):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                stand_in.requests.append((self.command, self.path, self.headers.get("Content-Type"), body))
                name = self.path[len(PATH) + 1:] if self.path.startswith(PATH + "/") else None
                if self.command == "GET" and name:
                    if name in stand_in.objects:
                        return self._answer(200, stand_in.objects[name])
                    return self._answer(404, {"kind": "Status", "code": 404, "reason": "NotFound", "message": f"{name} not found"})
                if self.command == "POST" and self.path == PATH:
                    stand_in.objects[body["metadata"]["name"]] = body
                    return self._answer(201, body)
                if self.command == "PATCH" and name in stand_in.objects:
                    if stand_in.refuse_patch:
                        return self._answer(422, {"kind": "Status", "code": 422, "reason": "Invalid",
                                                  "message": "admission webhook denied the request"})
                    stand_in.objects[name] = merge(stand_in.objects[name], body)
                    return self._answer(200, stand_in.objects[name])
                return self._answer(405, {"message": "not in the stand-in"})

            do_GET = do_POST = do_PATCH = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def kube(tmp_path, monkeypatch):
    stand_in = StandIn()
    config = tmp_path / "kubeconfig"
    config.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "stand-in", "cluster": {"server": stand_in.url}}],
        "users": [{"name": "u", "user": {"token": "kube-token-never-logged"}}],
        "contexts": [{"name": "test", "context": {"cluster": "stand-in", "user": "u"}}],
    }))
    monkeypatch.setenv("KUBECONFIG", str(config))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    yield stand_in
    stand_in.server.shutdown()


def test_manifest_validates_against_the_crd(tmp_path):
    from dagsmith.runtime import deploy_kserve
    from dagsmith.runtime.store import LocalStore

    validator = crd_validator()
    store = LocalStore(tmp_path)
    for canary in (None, 10):
        body = deploy_kserve.manifest(store, "churn.v2", 3, {"namespace": "ml", "service_account": "sa"}, "img:1",
                                      previous=2, canary_percent=canary)
        errors = sorted(validator.iter_errors(body), key=str)
        assert not errors, errors[:3]
    bad = deploy_kserve.manifest(store, "m", 1, {}, "img:1")
    bad["spec"]["predictor"]["containers"][0]["nope"] = 1
    assert list(validator.iter_errors(bad))  # the strict schema does refuse unknown fields
    assert deploy_kserve.service_name("Churn_Model.V2", {}) .startswith("churn-model-v2-")


def test_deploy_creates_then_canaries_promotes_rolls_back_and_a_refused_patch_keeps_the_revision(tmp_path, kube):
    from dagsmith.cli import main
    from dagsmith.runtime import registry
    from dagsmith.runtime.context import StepFailed

    validator = crd_validator()
    p = Pipeline(tmp_path, spec(DEPLOY), {"rows": rows()})
    uri = lambda v: f"{p.store.uri}/deployments/churn/{v}/model.tar.gz"  # noqa: E731

    first = p.run_through("deploy")["deploy"]
    assert first["kserve"]["action"] == "created"
    (get, post) = kube.requests
    assert get[:2] == ("GET", f"{PATH}/churn") and get[3] is None
    assert post[:3] == ("POST", PATH, "application/json")
    assert post[3] == {
        "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
        "metadata": {"name": "churn", "namespace": "ml",
                     "labels": {"app.kubernetes.io/managed-by": "dagsmith", "dagsmith.dev/model": "churn"},
                     "annotations": {"dagsmith.dev/version": "1"}},
        "spec": {"predictor": {
            "serviceAccountName": "model-reader",
            "containers": [{"name": "kserve-container", "image": "ghcr.io/acme/dagsmith:1",
                            "command": ["dagsmith", "serve", "churn", "--workdir", "/mnt/models", "--host", "0.0.0.0", "--port", "8080"],
                            "env": [{"name": "STORAGE_URI", "value": uri(1)}],
                            "ports": [{"containerPort": 8080, "protocol": "TCP"}]}]}},
    }
    assert not list(validator.iter_errors(post[3]))

    kube.requests.clear()
    second = p.run_through("deploy", run="r2", tables={"rows": rows(seed=1)})["deploy"]
    assert second["kserve"]["action"] == "canary"
    (get, patch) = kube.requests
    assert patch[:3] == ("PATCH", f"{PATH}/churn", "application/merge-patch+json")
    assert patch[3]["metadata"] == {"annotations": {"dagsmith.dev/version": "2", "dagsmith.dev/previous-version": "1"}}
    assert patch[3]["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert patch[3]["spec"]["predictor"]["containers"][0]["env"] == [{"name": "STORAGE_URI", "value": uri(2)}]
    assert not list(validator.iter_errors(kube.objects["churn"]))

    # the same model again (an unchanged re-run): "unchanged", KServe is not called at all
    kube.requests.clear()
    same = p.run_through("deploy", run="r2b", tables={"rows": rows(seed=1)})["deploy"]
    assert same["unchanged"] is True and same["version"] == 2 and "kserve" not in same
    assert kube.requests == []

    kube.requests.clear()
    assert main(["promote", "churn", "--workdir", str(p.store.uri), "--target", "kserve"]) == 0
    assert kube.requests[-1][:4] == ("PATCH", f"{PATH}/churn", "application/merge-patch+json",
                                     {"spec": {"predictor": {"canaryTrafficPercent": 100}}})
    kube.requests.clear()
    assert main(["rollback", "churn", "--workdir", str(p.store.uri), "--target", "kserve"]) == 0
    rollback = kube.requests[-1]
    assert rollback[3]["spec"]["predictor"]["canaryTrafficPercent"] is None  # merge patch: removed
    assert rollback[3]["spec"]["predictor"]["containers"][0]["env"] == [{"name": "STORAGE_URI", "value": uri(1)}]
    assert kube.objects["churn"]["metadata"]["annotations"]["dagsmith.dev/version"] == "1"
    assert registry.read_aliases(p.store, "churn")["production"] == 1

    # a refused PATCH: the step fails, the InferenceService and the aliases stay as they were
    kube.refuse_patch = True
    before, aliases = json.loads(json.dumps(kube.objects["churn"])), registry.read_aliases(p.store, "churn")
    with pytest.raises(StepFailed, match="refused the update .*admission webhook denied.*keeps serving its previous revision"):
        p.run_through("deploy", run="r3", tables={"rows": rows(seed=2)})
    assert kube.objects["churn"] == before and registry.read_aliases(p.store, "churn") == aliases
    assert main(["promote", "churn", "--workdir", str(p.store.uri), "--target", "kserve"]) == 2  # no canary: refused locally
    assert all("kube-token-never-logged" not in json.dumps(r[3]) for r in kube.requests)
