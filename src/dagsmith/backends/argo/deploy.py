"""`dagsmith deploy --target argo`: the compiled resources onto a cluster through the Argo Server's
REST API, all or nothing.

  1. compile and check (sizes, names): nothing is sent when anything is wrong;
  2. lint the WorkflowTemplate and the CronWorkflow on the server (its own validation);
  3. put the IR where pods read it (the store; content-addressed by the spec's hash);
  4. create or update each resource (WorkflowTemplate, CronWorkflow, EventSource, Sensor): GET
     decides create (404) or update (200, with the server's resourceVersion);
  5. when a write fails, the ones already made are put back as they were (created: deleted;
     updated: the previous version written back), and the command says what happened.

The token comes from an environment variable named by `--token-env` / `backends.argo.token_env`
(default ARGO_TOKEN), never from a flag, and is never printed. Exit codes: 0 deployed, 1 a write
failed and everything was put back, 2 refused before any change, 4 a write failed and putting
back failed too (the message lists what is left to fix by hand).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from ...errors import DagsmithError, DeployFailed, DeployIncomplete, UsageError

TIMEOUT = 30.0  # seconds per request: a stalled server fails the deploy instead of hanging CI
DEFAULT_TOKEN_ENV = "ARGO_TOKEN"


@dataclass(frozen=True)
class Kind:
    collection: str  # /api/v1/<collection>/{namespace}
    body_key: str  # the request body's field holding the resource
    lints: bool  # the server has a lint endpoint for it


KINDS = {
    "WorkflowTemplate": Kind("workflow-templates", "template", True),
    "CronWorkflow": Kind("cron-workflows", "cronWorkflow", True),
    "EventSource": Kind("event-sources", "eventSource", False),
    "Sensor": Kind("sensors", "sensor", False),
}


class ServerError(Exception):
    def __init__(self, method: str, path: str, status: int, message: str):
        self.status = status
        super().__init__(f"{method} {path}: {status} {message}".rstrip())


class ArgoServer:
    """The few Argo Server calls deploy needs (plain HTTP + JSON)."""

    def __init__(self, url: str, token: str | None, timeout: float | None = None):
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc or parsed.username or parsed.password:
            raise UsageError(f"--server {_safe_url(url)!r}: expected http(s)://HOST[:PORT] (credentials go in the token variable, not the URL)")
        self.base = url.rstrip("/")
        self.token = token
        self.timeout = TIMEOUT if timeout is None else timeout

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        data = json.dumps(body).encode("utf-8") if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                text = response.read(16 * 1024 * 1024).decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            raise ServerError(method, path, exc.code, _message(exc.read(64 * 1024).decode("utf-8", "replace"))) from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise ServerError(method, path, 0, f"cannot reach the Argo Server at {self.base}: {getattr(exc, 'reason', exc)}") from None
        return json.loads(text) if text.strip() else {}


def _message(text: str) -> str:
    """The Argo Server's error message (JSON {"code", "message"}), short."""
    try:
        message = json.loads(text).get("message") or text
    except (ValueError, AttributeError):
        message = text
    return " ".join(str(message).split())[:500]


def _safe_url(url: str) -> str:
    parsed = urllib.parse.urlsplit(url)
    if parsed.password or parsed.username:
        return parsed._replace(netloc=parsed.hostname or "").geturl()
    return url


def deploy(backend, ir, options: dict, request) -> list[str]:
    request.refuse_others("argo", ("server", "namespace", "token_env"))
    server_url = request.server or options.get("server")
    if not server_url:
        raise UsageError("deploy --target argo needs --server URL (or backends.argo.server)")
    namespace = request.namespace or options.get("namespace") or "default"
    token_env = request.token_env or options.get("token_env") or DEFAULT_TOKEN_ENV
    token = os.environ.get(token_env)
    server = ArgoServer(server_url, token)
    files = backend.emit(ir, {**options, "namespace": namespace})  # checked, sizes included
    docs = backend.documents(files)
    lines = [] if token else [f"note: ${token_env} is not set: calling the Argo Server without a token"]
    for doc in docs:  # the server's own validation, before anything changes
        kind = KINDS[doc["kind"]]
        if kind.lints:
            try:
                server.call("POST", f"/api/v1/{kind.collection}/{namespace}/lint", {"namespace": namespace, kind.body_key: doc})
            except ServerError as exc:
                raise UsageError(f"the Argo Server refused {doc['kind']} {doc['metadata']['name']}, nothing deployed: {exc}") from None
    current = {}
    for doc in docs:
        try:
            current[_id(doc)] = server.call("GET", _path(doc, namespace, named=True))
        except ServerError as exc:
            if exc.status != 404:
                raise UsageError(f"nothing deployed: {exc}") from None
            current[_id(doc)] = None
    if request.dry_run:
        return lines + [_plan_line(backend.to_yaml, doc, namespace, current[_id(doc)]) for doc in docs]
    plan = backend.plan(ir, {**options, "namespace": namespace})
    _upload_ir(plan.ir_uri, files[plan.ir_file])
    lines.append(f"uploaded the IR to {plan.ir_uri}")
    done: list[tuple[dict, dict | None]] = []
    for doc in docs:
        before = current[_id(doc)]
        try:
            _write(server, doc, namespace, before)
        except ServerError as exc:
            raise _rolled_back(server, namespace, done, f"{doc['kind']} {doc['metadata']['name']}: {exc}") from None
        done.append((doc, before))
        lines.append(f"{'updated' if before else 'created'} {doc['kind']} {namespace}/{doc['metadata']['name']}")
    return lines


def _id(doc: dict) -> tuple[str, str]:
    return doc["kind"], doc["metadata"]["name"]


def _path(doc: dict, namespace: str, named: bool) -> str:
    base = f"/api/v1/{KINDS[doc['kind']].collection}/{namespace}"
    return f"{base}/{urllib.parse.quote(doc['metadata']['name'], safe='')}" if named else base


def _write(server: ArgoServer, doc: dict, namespace: str, before: dict | None) -> None:
    kind = KINDS[doc["kind"]]
    doc = {**doc, "metadata": {**doc["metadata"], "namespace": namespace}}
    if before is None:
        server.call("POST", _path(doc, namespace, named=False), {"namespace": namespace, kind.body_key: doc})
    else:
        version = (before.get("metadata") or {}).get("resourceVersion")
        doc["metadata"]["resourceVersion"] = version
        server.call("PUT", _path(doc, namespace, named=True), {"namespace": namespace, "name": doc["metadata"]["name"], kind.body_key: doc})


def _rolled_back(server: ArgoServer, namespace: str, done: list, failure: str) -> DagsmithError:
    """Undo `done` in reverse order; the error to raise says what happened."""
    undone, left = [], []
    for doc, before in reversed(done):
        what = f"{doc['kind']} {namespace}/{doc['metadata']['name']}"
        try:
            if before is None:
                server.call("DELETE", _path(doc, namespace, named=True))
                undone.append(f"deleted {what}")
            else:
                latest = server.call("GET", _path(doc, namespace, named=True))
                _write(server, _restorable(before), namespace, latest)
                undone.append(f"restored {what}")
        except ServerError as exc:
            left.append(f"{what} ({exc})")
    if left:
        return DeployIncomplete(f"deploy failed at {failure}; putting back failed for: {'; '.join(left)}"
                                + (f"; put back: {', '.join(undone)}" if undone else ""))
    return DeployFailed(f"deploy failed at {failure}; nothing changed" + (f" (put back: {', '.join(undone)})" if undone else ""))


def _restorable(resource: dict) -> dict:
    """A resource as the server returned it, without what the server owns."""
    metadata = {k: v for k, v in (resource.get("metadata") or {}).items()
                if k in ("name", "namespace", "labels", "annotations")}
    return {k: v for k, v in resource.items() if k not in ("status", "metadata")} | {"metadata": metadata}


def _plan_line(to_yaml, doc: dict, namespace: str, before: dict | None) -> str:
    what = f"{doc['kind']} {namespace}/{doc['metadata']['name']}"
    if before is None:
        return f"would create {what}"
    if _comparable(before) == _comparable(doc):
        return f"unchanged {what}"
    import difflib

    old = to_yaml(_comparable(before)).splitlines(keepends=True)
    new = to_yaml(_comparable(doc)).splitlines(keepends=True)
    return f"would update {what}:\n" + "".join(difflib.unified_diff(old, new, fromfile="deployed", tofile="compiled")).rstrip("\n")


def _comparable(resource: dict) -> dict:
    metadata = resource.get("metadata") or {}
    return {"spec": resource.get("spec"), "labels": metadata.get("labels") or {}, "annotations": metadata.get("annotations") or {}}


def _upload_ir(uri: str, text: str) -> None:
    from ...runtime.s3 import client, split_uri

    bucket, key = split_uri(uri)
    try:
        client().put_object(Bucket=bucket, Key=key, Body=text.encode("utf-8"))
    except Exception as exc:  # boto3's errors: say which and stop before any resource changes
        raise UsageError(f"cannot put the IR at {uri}, nothing deployed: {exc}") from None
