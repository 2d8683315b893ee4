"""`dagsmith deploy --target argo`: the compiled resources onto a cluster through the Argo Server's
REST API, all or nothing.

  1. compile and check (sizes, names): nothing is sent when anything is wrong;
  2. lint the WorkflowTemplate and the CronWorkflow on the server (its own validation);
  3. put the IR where pods read it (the store; content-addressed by the spec's hash), and the code
     package when the spec folder's code is shipped (`<store>/code/<sha256>.json`);
  4. create or update each resource (WorkflowTemplate, CronWorkflow, EventSource, Sensor): GET
     decides create (404) or update (200, with the server's resourceVersion);
  5. when a write fails, the ones already made are put back as they were (created: deleted;
     updated: the previous version written back), and the command says what happened.

Every answer is checked (the resource named, as JSON; only the server's own 404 means "not
there"): a login page, other JSON, a redirect or no complete answer within the deadline
(backends/remote.py) is a failure like a refusal, and a write whose answer leaves open whether it
happened is looked up and put back when it did.

The token comes from an environment variable named by `--token-env` / `backends.argo.token_env`
(default ARGO_TOKEN), never from a flag, and is never printed, not even when a server repeats it.
Exit codes: 0 deployed, 1 a write failed and everything was put back, 2 refused before any change,
4 a write failed and putting back failed too (the message lists what is left to fix by hand).
"""

from __future__ import annotations

import json
import os
import urllib.parse
from dataclasses import dataclass

from ...errors import DagsmithError, DeployFailed, DeployIncomplete, UsageError
from .. import remote
from ..aws import put_text
from ..code import code_files
from .workflow import Settings

DEFAULT_TOKEN_ENV = "ARGO_TOKEN"
# The Argo Server's REST API is a gRPC gateway: a missing resource is HTTP 404 with the gRPC status
# {"code": 5 (NOT_FOUND), "message": ...}; a 404 without it (an ingress, another API) proves nothing
GRPC_NOT_FOUND = 5


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
    """A call that did not get the answer it needed. `argo`: the Argo Server itself answered
    (its JSON error, e.g. 404 for a missing resource); `definite`: the call certainly changed
    nothing (refused, or never sent), as opposed to one that may have been acted on (no answer,
    a gateway's 5xx, a 2xx that is not the resource)."""

    def __init__(self, method: str, path: str, status: int, message: str, *, argo: bool = False, definite: bool = True,
                 not_found: bool = False):
        self.status, self.argo, self.definite, self.not_found = status, argo, definite, not_found
        super().__init__(f"{method} {path}: {status or ''} {message}".replace("  ", " ").rstrip())


class ArgoServer:
    """The few Argo Server calls deploy needs (plain HTTP + JSON), each bounded in time and size
    (backends/remote.py), each answer checked: whatever is not the JSON object asked for is a
    ServerError whose message never holds the token."""

    def __init__(self, url: str, token: str | None, timeout: float | None = None):
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc or parsed.username or parsed.password or parsed.query or parsed.fragment:
            raise UsageError(f"--server {_safe_url(url)!r}: expected http(s)://HOST[:PORT] (credentials go in the token variable, not the URL)")
        self.base = url.rstrip("/")
        self.token = token
        self.timeout = remote.request_timeout() if timeout is None else timeout

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = json.dumps(body).encode("utf-8") if body is not None else None
        try:
            answer = remote.send(method, self.base + path, headers=headers, body=data, timeout=self.timeout)
        except remote.Unreachable as exc:
            said = f"the Argo Server at {self.base} gave no usable answer" if exc.sent else f"cannot reach the Argo Server at {self.base}"
            raise ServerError(method, path, 0, f"{said}: {self._short(str(exc))}", definite=not exc.sent) from None
        parsed = answer.json()
        if 200 <= answer.status < 300:
            if not isinstance(parsed, dict):
                raise ServerError(method, path, answer.status, f"{self._short(answer.describe())}, not the Argo Server's JSON object "
                                  "(check --server and the token)", definite=False)
            return parsed
        if isinstance(parsed, dict):  # the Argo Server's own error: its gRPC gateway's {"code", "message"}
            raise ServerError(method, path, answer.status, self._short(str(parsed.get("message") or answer.body.decode("utf-8", "replace"))),
                              argo=True, not_found=answer.status == 404 and parsed.get("code") == GRPC_NOT_FOUND)
        # not the Argo Server (a proxy, an SSO page): a 5xx gateway error may have passed the call on
        raise ServerError(method, path, answer.status, f"{self._short(answer.describe())}, not the Argo Server's JSON error: "
                          f"{self._short(answer.body[:2048].decode('utf-8', 'replace'))}", definite=answer.status < 500)

    def _short(self, text: str) -> str:
        return remote.short(text, [self.token])


def _safe_url(url: str) -> str:
    """The URL without what may be a credential (user:password@, ?query, #fragment)."""
    parsed = urllib.parse.urlsplit(url)
    netloc = (parsed.hostname or "") + (f":{parsed.port}" if _port(parsed) else "") if parsed.password or parsed.username else parsed.netloc
    return remote.scrub(parsed._replace(netloc=netloc, query="", fragment="").geturl())


def _port(parsed) -> int | None:
    try:
        return parsed.port
    except ValueError:
        return None


def deploy(backend, ir, options: dict, request, spec_dir: str | None = None) -> list[str]:
    request.refuse_others("argo", ("server", "namespace", "token_env"))
    server_url = request.server or options.get("server")
    if not server_url:
        raise UsageError("deploy --target argo needs --server URL (or backends.argo.server)")
    namespace = request.namespace or options.get("namespace") or "default"
    token_env = request.token_env or options.get("token_env") or DEFAULT_TOKEN_ENV
    token = os.environ.get(token_env)
    server = ArgoServer(server_url, token)
    files = backend.emit(ir, {**options, "namespace": namespace}, spec_dir=spec_dir)  # checked, sizes included
    docs = backend.documents(files)
    lines = [] if token else [f"note: ${token_env} is not set: calling the Argo Server without a token"]
    for doc in docs:  # the server's own validation, before anything changes
        kind = KINDS[doc["kind"]]
        if kind.lints:
            try:
                linted = server.call("POST", f"/api/v1/{kind.collection}/{namespace}/lint", {"namespace": namespace, kind.body_key: doc})
                _resource(linted, doc, "POST", namespace, versioned=False)  # the server answers with the linted resource
            except ServerError as exc:
                said = "refused" if exc.argo else "could not lint"
                raise UsageError(f"the Argo Server {said} {doc['kind']} {doc['metadata']['name']}, nothing deployed: {exc}") from None
    current = {}
    for doc in docs:
        try:
            current[_id(doc)] = _resource(server.call("GET", _path(doc, namespace, named=True)), doc, "GET", namespace)
        except ServerError as exc:
            if not exc.not_found:  # only the Argo Server's own 404 says "not there"
                raise UsageError(f"nothing deployed: {exc}") from None
            current[_id(doc)] = None
    if request.dry_run:
        return lines + [_plan_line(backend.to_yaml, doc, namespace, current[_id(doc)]) for doc in docs]
    plan = backend.plan(ir, {**options, "namespace": namespace})
    put_text(plan.ir_uri, files[plan.ir_file], "the IR")
    lines.append(f"uploaded the IR to {plan.ir_uri}")
    for name in code_files(files):  # the spec folder's code: where DAGSMITH_CODE points, under the store
        put_text(f"{Settings.of(options).store}/{name}", files[name], "the code package")
        lines.append(f"uploaded the code package to {Settings.of(options).store}/{name}")
    done: list[tuple[dict, dict | None, bool]] = []  # (resource, as it was, whether the write may not have happened)
    for doc in docs:
        before = current[_id(doc)]
        try:
            _write(server, doc, namespace, before)
        except ServerError as exc:
            if not exc.definite:  # it may have been written: put back whatever it did too
                done.append((doc, before, True))
            raise _rolled_back(server, namespace, done, f"{doc['kind']} {doc['metadata']['name']}: {exc}") from None
        done.append((doc, before, False))
        lines.append(f"{'updated' if before else 'created'} {doc['kind']} {namespace}/{doc['metadata']['name']}")
    return lines


def _id(doc: dict) -> tuple[str, str]:
    return doc["kind"], doc["metadata"]["name"]


def _path(doc: dict, namespace: str, named: bool) -> str:
    base = f"/api/v1/{KINDS[doc['kind']].collection}/{namespace}"
    return f"{base}/{urllib.parse.quote(doc['metadata']['name'], safe='')}" if named else base


def _resource(answer: dict, doc: dict, method: str, namespace: str, versioned: bool = True) -> dict:
    """`answer` when it is the resource `doc` names (`versioned`: with the resourceVersion an
    update needs); else a ServerError: a 2xx whose body is some other JSON is no answer to rely on."""
    metadata = answer.get("metadata")
    name = doc["metadata"]["name"]
    version = metadata.get("resourceVersion") if isinstance(metadata, dict) else None
    if not isinstance(metadata, dict) or metadata.get("name") != name or (versioned and not (isinstance(version, str) and version)):
        raise ServerError(method, _path(doc, namespace, named=True), 200,
                          f"the answer is JSON, but not {doc['kind']} {name}{' with a resourceVersion' if versioned else ''}",
                          definite=False)
    return answer


def _write(server: ArgoServer, doc: dict, namespace: str, before: dict | None) -> None:
    kind = KINDS[doc["kind"]]
    doc = {**doc, "metadata": {**doc["metadata"], "namespace": namespace}}
    if before is None:
        answer = server.call("POST", _path(doc, namespace, named=False), {"namespace": namespace, kind.body_key: doc})
    else:
        version = (before.get("metadata") or {}).get("resourceVersion")
        doc["metadata"]["resourceVersion"] = version
        answer = server.call("PUT", _path(doc, namespace, named=True), {"namespace": namespace, "name": doc["metadata"]["name"], kind.body_key: doc})
    _resource(answer, doc, "PUT" if before else "POST", namespace)


def _rolled_back(server: ArgoServer, namespace: str, done: list, failure: str) -> DagsmithError:
    """Undo `done` in reverse order; the error to raise says what happened. A write that may or
    may not have happened is looked at first: put back only if it did."""
    undone, left = [], []
    for doc, before, maybe in reversed(done):
        what = f"{doc['kind']} {namespace}/{doc['metadata']['name']}"
        try:
            latest = _latest(server, doc, namespace) if maybe or before is not None else None
            if maybe and (latest is None if before is None else latest is not None and _version(latest) == _version(before)):
                continue  # the write did not happen: nothing to put back
            if before is not None and latest is None:
                left.append(f"{what} (it no longer exists: write it back from the previous deploy)")
                continue
            if before is None:
                try:
                    server.call("DELETE", _path(doc, namespace, named=True))
                except ServerError as exc:
                    if not exc.not_found:  # already gone is what we want
                        raise
                undone.append(f"deleted {what}")
            else:
                _write(server, _restorable(before), namespace, latest)
                undone.append(f"restored {what}")
        except ServerError as exc:
            left.append(f"{what} ({exc})")
    if left:
        return DeployIncomplete(f"deploy failed at {failure}; putting back failed for: {'; '.join(left)}"
                                + (f"; put back: {', '.join(undone)}" if undone else ""))
    return DeployFailed(f"deploy failed at {failure}; nothing changed" + (f" (put back: {', '.join(undone)})" if undone else ""))


def _latest(server: ArgoServer, doc: dict, namespace: str) -> dict | None:
    """The resource as the server has it now; None when it does not exist."""
    try:
        return _resource(server.call("GET", _path(doc, namespace, named=True)), doc, "GET", namespace)
    except ServerError as exc:
        if exc.not_found:
            return None
        raise


def _version(resource: dict) -> str | None:
    return (resource.get("metadata") or {}).get("resourceVersion")


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
