"""target kserve: the deployed version served by a KServe InferenceService (serving.kserve.io/v1beta1).

The InferenceService's predictor is one container, the deploy step's image, running dagsmith's
own server on the version's bundle (deploy_bundle: the store's model.tar.gz, which KServe's
storage initializer unpacks into /mnt/models because STORAGE_URI names it):

    dagsmith serve <model> --workdir /mnt/models --host 0.0.0.0 --port 8080

so its POST /predict is `dagsmith serve`'s. Annotations dagsmith.dev/version and
dagsmith.dev/previous-version say which version the latest revision and the previous rolled-out
revision serve. Traffic for the aliases (deploy_bundle.traffic), through the Kubernetes API
(the `kubernetes` client: in-cluster, else the kubeconfig):

    no InferenceService yet                    POST the manifest (the production version)
    canary c on top of production p, with
      the latest revision serving p or c      PATCH the predictor (c) with canaryTrafficPercent
                                               (KServe keeps p's revision for the rest)
    production p served by the latest revision PATCH canaryTrafficPercent: 100 (promote)
    anything else (a rollback)                 PATCH the predictor to serve p, all traffic

PATCHes are JSON merge patches (application/merge-patch+json). A refused request fails the
step before the aliases move; KServe keeps serving its previous revision. The manifest
validates against KServe v0.20.0's CRD (tests/deployment).
"""

from __future__ import annotations

import json
import os

from . import deploy_bundle as B
from .context import StepFailed
from .store import Store

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
MODEL_DIR = "/mnt/models"
PORT = 8080
MERGE_PATCH = "application/merge-patch+json"
NAME_LIMIT = 45  # KServe: the name prefixes Knative's revision and route names
ANNOTATION_VERSION = "dagsmith.dev/version"
ANNOTATION_PREVIOUS = "dagsmith.dev/previous-version"
_SA_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


class KServeError(StepFailed):
    pass


def service_name(model: str, settings: dict) -> str:
    return settings.get("name") or B.safe_name(model, NAME_LIMIT, pattern=r"[^a-z0-9-]+", lower=True).lstrip("0123456789-") or "model"


def namespace(settings: dict) -> str:
    if settings.get("namespace"):
        return settings["namespace"]
    try:
        with open(_SA_NAMESPACE, encoding="utf-8") as handle:
            return handle.read().strip() or "default"
    except OSError:
        return "default"


def api():
    """CustomObjectsApi: in a pod, its service account; elsewhere the kubeconfig ($KUBECONFIG)."""
    from kubernetes import client, config

    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()
    else:
        # $KUBECONFIG read now: the client reads it once, when first imported, which may have
        # been before this process's environment said where the file is
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None)
    return client.CustomObjectsApi()


def predictor(store: Store, model: str, version: int, settings: dict, image: str, canary_percent=None) -> dict:
    spec = {
        "containers": [{
            "name": "kserve-container",
            "image": image,
            "command": ["dagsmith", "serve", model, "--workdir", MODEL_DIR, "--host", "0.0.0.0", "--port", str(PORT)],
            "env": [{"name": "STORAGE_URI", "value": B.bundle_uri(store, model, version)}],
            "ports": [{"containerPort": PORT, "protocol": "TCP"}],
        }],
    }
    if settings.get("service_account"):
        spec["serviceAccountName"] = settings["service_account"]
    if canary_percent is not None:
        spec["canaryTrafficPercent"] = int(round(canary_percent))
    return spec


def manifest(store: Store, model: str, version: int, settings: dict, image: str, previous=None, canary_percent=None) -> dict:
    annotations = {ANNOTATION_VERSION: str(int(version))}
    if previous is not None:
        annotations[ANNOTATION_PREVIOUS] = str(int(previous))
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceService",
        "metadata": {
            "name": service_name(model, settings),
            "namespace": namespace(settings),
            "labels": {"app.kubernetes.io/managed-by": "dagsmith",
                       "dagsmith.dev/model": B.safe_name(model, 63, pattern=r"[^A-Za-z0-9_.-]+")},
            "annotations": annotations,
        },
        "spec": {"predictor": predictor(store, model, version, settings, image, canary_percent)},
    }


def _error(exc) -> str:
    status = getattr(exc, "status", None)
    body = getattr(exc, "body", None)
    try:
        message = json.loads(body).get("message") if body else None
    except (ValueError, AttributeError):
        message = None
    return f"{status} {getattr(exc, 'reason', '') or ''}: {message or body or exc}".strip()


def deploy(store: Store, model: str, version: int, aliases: dict, settings: dict, image: str | None, custom=None) -> dict:
    if not image:
        raise KServeError("target kserve needs the deploy step's image (deployment.image or defaults.image): "
                          "a container with dagsmith installed")
    B.publish(store, model, version)
    state = {"name": service_name(model, settings), "namespace": namespace(settings), "image": image,
             **({"service_account": settings["service_account"]} if settings.get("service_account") else {})}
    done = sync(store, model, aliases, state, custom)
    B.write_target_state(store, model, "kserve", state)
    return done


def sync(store: Store, model: str, aliases: dict, state: dict, custom=None) -> dict:
    from kubernetes.client.exceptions import ApiException

    custom = custom or api()
    name, ns = state["name"], state["namespace"]
    traffic = B.traffic(aliases)
    production = aliases.get("production")
    canary = aliases.get("canary") if len(traffic) == 2 else None
    if production is None:
        raise KServeError(f"model {model!r} has no production version: nothing to serve on {ns}/{name}")
    try:
        current = custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
    except ApiException as exc:
        if exc.status != 404:
            raise KServeError(f"KServe: reading InferenceService {ns}/{name} failed: {_error(exc)}") from None
        current = None
    done = {"name": name, "namespace": ns, "traffic": {f"v{v}": w for v, w in traffic.items()}}
    try:
        if current is None:
            served = canary["version"] if canary else production
            B.publish(store, model, served)
            body = manifest(store, model, served, state, state["image"])
            custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)
            done["action"] = "created"
            return done
        notes = current["metadata"].get("annotations") or {}
        latest = int(notes[ANNOTATION_VERSION]) if str(notes.get(ANNOTATION_VERSION, "")).isdigit() else None
        previous = int(notes[ANNOTATION_PREVIOUS]) if str(notes.get(ANNOTATION_PREVIOUS, "")).isdigit() else None
        if canary and latest == int(canary["version"]) and previous == int(production):
            patch = {"spec": {"predictor": {"canaryTrafficPercent": int(round(canary["traffic_percent"]))}}}
            done["action"] = "canary-traffic"
        elif canary and latest == int(production):
            version = int(canary["version"])
            B.publish(store, model, version)
            patch = {"metadata": {"annotations": {ANNOTATION_VERSION: str(version), ANNOTATION_PREVIOUS: str(production)}},
                     "spec": {"predictor": predictor(store, model, version, state, state["image"], canary["traffic_percent"])}}
            done["action"] = "canary"
        elif not canary and latest == int(production):
            patch = {"spec": {"predictor": {"canaryTrafficPercent": 100}}}
            done["action"] = "promoted"
        else:  # a new production (replace), or a rollback to a version no revision serves
            B.publish(store, model, production)
            patch = {"metadata": {"annotations": {ANNOTATION_VERSION: str(int(production)),
                                                  ANNOTATION_PREVIOUS: str(latest) if latest is not None else None}},
                     "spec": {"predictor": {**predictor(store, model, production, state, state["image"]),
                                            "canaryTrafficPercent": None}}}
            done["action"] = "rollout"
        custom.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name, patch, _content_type=MERGE_PATCH)
    except ApiException as exc:
        raise KServeError(f"KServe: InferenceService {ns}/{name} refused the update ({_error(exc)}); "
                          "it keeps serving its previous revision") from None
    return done


def move_traffic(store: Store, model: str, aliases: dict, custom=None) -> dict:
    """promote / rollback --target kserve: the InferenceService's traffic for the new aliases."""
    state = B.read_target_state(store, model, "kserve")
    if state is None:
        raise KServeError(f"model {model!r} was never deployed to KServe from {store.uri} "
                          f"(no deployments/{model}/kserve.json)")
    return sync(store, model, aliases, state, custom)
