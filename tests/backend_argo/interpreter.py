"""A TEST-ONLY interpreter of exactly the Argo Workflows (v4.0.5) subset dagsmith's Argo backend
emits, plus the Sensor triggers of Argo Events that submit it. No cluster: each container runs as
a local process.

It REFUSES (raises `Unsupported`, naming the field's path) every field, variable or expression it
does not implement, so it cannot pass a document that Argo would run differently. Each rule below
cites the Argo documentation (https://argo-workflows.readthedocs.io/en/release-4.0/, page names as
in docs/ of argoproj/argo-workflows at v4.0.5) and, where the docs are silent, the controller code
it follows (workflow/controller/dag.go, operator.go, steps.go, workflow/common/ancestry.go,
workflow/executor/executor.go, util/template/ at tag v4.0.5).

The stand-ins for the cluster (what a test passes, and why it is fair):
- `base_env`: the environment every process starts from, on top of which the container's own `env`
  is set: PATH (with the venv's bin, so `dagsmith` resolves as it does in the image) and, for the
  moto S3 server, AWS_ENDPOINT_URL and credentials: the stand-in for the node's IAM role (IRSA).
  Nothing else of the test's environment leaks into a pod.
- `cwd`: the image's working directory (where an example's data files are).
- A pod's filesystem is private, but only what the workflow itself declares as a file of the pod
  is mapped: each output parameter's `valueFrom.path` (and an argument or env value equal to one
  of them) becomes a file in a private folder per pod attempt, and TMPDIR points there. Any
  other path is this machine's (a checkout, the venv's python, a workdir may be under /tmp).
  (The image's working directory is NOT private here: it is shared by all pods of a run.)
- `controller_tz`: the controller's time zone, in which it formats `workflow.creationTimestamp.<c>`
  (UTC unless given). `skipped_outputs`: what a task reading a Skipped/Omitted ancestor's output
  gets: "empty" ('' for each declared output: v4.0.4 and later, as v4.0.5) or "requeue" (the
  reference never resolves and the task is requeued for ever: v4.0.2-4.0.3; here an error).
- `secrets`: {secret name: {key: value}}, the stand-in for Kubernetes Secrets read by
  `secretKeyRef`; a missing secret or key fails the pod as Kubernetes does
  (CreateContainerConfigError; on a cluster the pod then stays Pending until a deadline, here
  its node ends in Error at once).
- `workflow_templates`: {name: WorkflowTemplate}, what `workflowTemplateRef` finds in the namespace.
- Independent tasks run concurrently: at most `max_pods` processes at once (default 4), and a dag
  template's `parallelism` limits its own running children. Several workflows run at once with
  `submit_all` (as the controller runs Sensor-started workflows), sharing `max_pods`.

What it returns (`Run`): the workflow phase (Succeeded | Failed | Error) and one `Node` per task
node: task name, template, the template's annotations, item (expanded tasks), phase (Succeeded |
Failed | Error | Skipped | Omitted), outputs, exit code, stdout/stderr tails, start and finish.
A task never started (fail-fast) has no node.
"""

from __future__ import annotations

import copy
import datetime as dt
import importlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import yaml

DOCS = "https://argo-workflows.readthedocs.io/en/release-4.0"
EVENTS_DOCS = "https://argoproj.github.io/argo-events"
TAIL = 4000


class Unsupported(Exception):
    """The document uses something this interpreter does not implement (the path says where)."""

    def __init__(self, path: str, what: str):
        super().__init__(f"{path}: {what} (not implemented by the test interpreter)")
        self.path = path


class Invalid(Exception):
    """What Argo itself rejects at submission (argo lint / the API server's validation)."""


# --- which fields exist (anything else is refused) ---------------------------------------------

ALLOWED = {
    "workflow": {"apiVersion", "kind", "metadata", "spec"},
    "metadata": {"name", "generateName", "namespace", "labels", "annotations"},
    "spec": {"entrypoint", "arguments", "templates", "serviceAccountName", "podGC", "ttlStrategy", "workflowTemplateRef"},
    "arguments": {"parameters"},
    "workflow parameter": {"name", "value", "enum", "description"},
    "workflowTemplateRef": {"name"},
    "podGC": {"strategy"},
    "ttlStrategy": {"secondsAfterCompletion", "secondsAfterSuccess", "secondsAfterFailure"},
    "template": {"name", "dag", "container", "resource", "inputs", "outputs", "metadata", "retryStrategy", "activeDeadlineSeconds", "parallelism"},
    "template metadata": {"annotations", "labels"},
    "dag": {"tasks", "failFast"},
    "task": {"name", "template", "depends", "when", "withParam", "arguments"},
    "task parameter": {"name", "value"},
    "inputs": {"parameters"},
    "input parameter": {"name", "default"},
    "outputs": {"parameters"},
    "output parameter": {"name", "valueFrom"},
    "valueFrom": {"path", "default"},
    "container": {"image", "imagePullPolicy", "command", "args", "env", "resources"},
    "env": {"name", "value", "valueFrom"},
    "env valueFrom": {"secretKeyRef"},
    "secretKeyRef": {"name", "key"},
    "resources": {"requests", "limits"},
    "retryStrategy": {"limit", "retryPolicy", "backoff", "expression"},
    "backoff": {"duration", "factor", "maxDuration", "cap"},
    "resource": {"action", "manifest", "successCondition", "failureCondition", "setOwnerReference"},
    "cron spec": {"schedules", "schedule", "timezone", "concurrencyPolicy", "startingDeadlineSeconds", "workflowSpec"},
}
POD_GC = {"OnPodCompletion", "OnPodSuccess", "OnWorkflowCompletion", "OnWorkflowSuccess"}
PULL_POLICIES = {"Always", "IfNotPresent", "Never"}
RETRY_POLICIES = {"Always", "OnFailure", "OnError"}


def check_keys(obj, kind: str, path: str) -> dict:
    if not isinstance(obj, dict):
        raise Unsupported(path, f"expected a mapping, got {type(obj).__name__}")
    extra = sorted(set(obj) - ALLOWED[kind])
    if extra:
        raise Unsupported(f"{path}.{extra[0]}", f"field {extra[0]!r} of a {kind}")
    return obj


def as_list(obj, path: str) -> list:
    if obj is None:
        return []
    if not isinstance(obj, list):
        raise Unsupported(path, f"expected a list, got {type(obj).__name__}")
    return obj


def as_str(obj, path: str) -> str:
    if not isinstance(obj, str):
        raise Unsupported(path, f"expected a string, got {type(obj).__name__}")
    return obj


def int_or_string(obj, path: str) -> int:
    """IntOrString fields (`limit`, `activeDeadlineSeconds`, `factor`) as Kubernetes reads them."""
    if isinstance(obj, bool) or not isinstance(obj, (int, str)) or not re.fullmatch(r"[0-9]+", str(obj)):
        raise Unsupported(path, f"expected a non-negative integer (or its text), got {obj!r}")
    return int(obj)


def duration(obj, path: str) -> float:
    """A Go duration (`30s`, `5m`, `1h30m`) or plain seconds, as wfv1.ParseStringToDuration reads
    `retryStrategy.backoff.duration` / `maxDuration` (docs: retries.md, "Back-Off")."""
    text = str(obj)
    if re.fullmatch(r"[0-9]+", text):
        return float(text)
    parts = re.findall(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)", text)
    if not parts or "".join(a + b for a, b in parts) != text:
        raise Unsupported(path, f"duration {obj!r}")
    return sum(float(a) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[b] for a, b in parts)


_RETRY_CLAUSE = re.compile(r'asInt\(lastRetry\.exitCode\) == (-?[0-9]+)|lastRetry\.status == "(Failed|Error)"')


def retry_expression(text: str, path: str):
    """`retryStrategy.expression`, the subset emitted: clauses `asInt(lastRetry.exitCode) == N`
    and `lastRetry.status == "Failed"|"Error"` joined by `||` (an expr expression over
    `lastRetry.exitCode`, the last attempt's exit code as text, "-1" when it has none, and
    `lastRetry.status`, its phase: docs/retries.md:92-118; operator.go:2050-2066). Returns a
    function (exit code, phase) -> bool; anything else is refused."""
    clauses = []
    for clause in as_str(text, path).split("||"):
        match = _RETRY_CLAUSE.fullmatch(clause.strip())
        if not match:
            raise Unsupported(path, f"retry expression {clause.strip()!r} (implemented: asInt(lastRetry.exitCode) == N, lastRetry.status == \"...\", joined by ||)")
        clauses.append((int(match.group(1)) if match.group(1) else None, match.group(2)))
    return lambda exit_code, phase: any((code is not None and (exit_code if exit_code is not None else -1) == code) or (status == phase)
                                        for code, status in clauses)


# --- variables ({{...}}) -----------------------------------------------------------------------

TAG = re.compile(r"\{\{(.*?)\}\}", re.S)
STRFTIME = set("YmdHMSyjbBaAeIpUWuVGgCDFTRrn")  # workflow.creationTimestamp.<c>: variables.md
LATER = ("tasks.", "item")  # resolved in a DAG task, after its template's inputs


def _scalar_text(value) -> str:
    if isinstance(value, str):
        return value
    raise Invalid(f"a parameter value must be a string, got {value!r}")


def substitute(obj, scope: dict, path: str, *, later: tuple = ()):
    """`{{name}}` in every string leaf of `obj` replaced by scope[name] (the tag's text trimmed, as
    util/template does), the value inserted as TEXT and never parsed again (util/template quotes it
    into the JSON being substituted: docs variables.md, "Template Tag Kinds": simple tags).
    Expression tags (`{{=...}}`) and every name outside the implemented variables are refused;
    names starting with a prefix in `later` are left as they are, for a later stage."""
    if isinstance(obj, dict):
        return {k: substitute(v, scope, f"{path}.{k}", later=later) for k, v in obj.items()}
    if isinstance(obj, list):
        return [substitute(v, scope, f"{path}[{i}]", later=later) for i, v in enumerate(obj)]
    if not isinstance(obj, str) or "{{" not in obj:
        return obj

    def one(match):
        name = match.group(1).strip()
        if name.startswith("="):
            return expression(name[1:], scope, path)
        if name in scope:
            return scope[name]
        if any(name == p or name.startswith(p + ".") if p == "item" else name.startswith(p) for p in later):
            return match.group(0)
        if re.fullmatch(r"workflow\.parameters\.[^.]+|inputs\.parameters\.[^.]+|tasks\.[^.]+\.outputs\.parameters\.[^.]+|item(\.[^.]+)?", name):
            raise Invalid(f"{path}: failed to resolve {match.group(0)} (no such parameter here)")
        if re.fullmatch(r"workflow\.(name|uid|namespace|creationTimestamp\.[A-Za-z])", name):
            raise Unsupported(path, f"variable {match.group(0)}")
        raise Unsupported(path, f"variable {match.group(0)} ({DOCS}/variables/)")

    return TAG.sub(one, obj)


DATE_IN_ZONE = re.compile(r"""\s*sprig\.dateInZone\((["'])2006-01-02\1,\s*int\(workflow\.creationTimestamp\.s\),\s*(["'])([A-Za-z_/+-]+)\2\)\s*""")


def expression(text: str, scope: dict, path: str) -> str:
    """An expression tag `{{=...}}` (expr-lang with sprig: util/template/expression_template.go,
    util/expr/env/env.go:28 at v4.0.5). Only one is implemented, the run date:
    `sprig.dateInZone('2006-01-02', int(workflow.creationTimestamp.s), ZONE)`. In an expression
    the dotted variables are nested maps, and a variable with children loses its own value
    (util/expand/expand.go removeConflicts), so `workflow.creationTimestamp.s` is the Unix seconds
    (operator.go:644), `int()` reads it, and sprig's dateInZone formats those seconds in ZONE
    (Go layout 2006-01-02 = %Y-%m-%d). Anything else is refused."""
    from zoneinfo import ZoneInfo

    m = DATE_IN_ZONE.fullmatch(text)
    if not m:
        raise Unsupported(path, f"expression tag {{{{={text}}}}} ({DOCS}/variables/#expression)")
    seconds = scope.get("workflow.creationTimestamp.s")
    if seconds is None:
        raise Invalid(f"{path}: failed to evaluate expression: workflow.creationTimestamp.s is missing")
    return dt.datetime.fromtimestamp(int(seconds), ZoneInfo(m.group(3))).strftime("%Y-%m-%d")


# --- depends (enhanced depends logic) and when (govaluate) -------------------------------------

RESULTS = ("Succeeded", "Failed", "Errored", "Skipped", "Omitted", "Daemoned", "AnySucceeded", "AllFailed")
DEPENDS_TOKEN = re.compile(r"\s*(?:(?P<op>&&|\|\||!|\(|\))|(?P<name>[a-zA-Z0-9][-a-zA-Z0-9]*?)(?:\.(?P<result>[A-Z][a-zA-Z]+))?(?=[\s&|()!]|$))")


def depends_names(expr: str, path: str) -> list[str]:
    return sorted({t[1] for t in _depends_tokens(expr, path) if t[0] == "name"})


def _depends_tokens(expr: str, path: str) -> list[tuple]:
    tokens, pos = [], 0
    while pos < len(expr):
        if expr[pos:].strip() == "":
            break
        m = DEPENDS_TOKEN.match(expr, pos)
        if not m or m.end() == pos:
            raise Unsupported(path, f"depends {expr!r}: cannot read it at {expr[pos:]!r}")
        if m.group("op"):
            tokens.append(("op", m.group("op")))
        else:
            result = m.group("result")
            if result is not None and result not in RESULTS:
                raise Invalid(f"{path}: depends {expr!r}: unknown task result {result!r}")
            tokens.append(("name", m.group("name"), result))
        pos = m.end()
    return tokens


def eval_depends(expr: str, phase_of, path: str) -> bool:
    """`depends` as docs enhanced-depends-logic.md defines it: operands `task.Result` combined with
    && || ! and parentheses; a bare `task` means `(task.Succeeded || task.Skipped ||
    task.Daemoned)` (common/ancestry.go expandDependency). `phase_of(task)` -> its node's phase
    and, for an expanded task, its children's phases."""
    tokens = _depends_tokens(expr, path)

    def operand(tok) -> bool:
        _, name, result = tok
        phase, children = phase_of(name)
        if result is None:
            return phase in ("Succeeded", "Skipped")  # Daemoned: no daemons are emitted
        if result == "AnySucceeded":
            return any(c == "Succeeded" for c in children)
        if result == "AllFailed":
            return bool(children) and all(c == "Failed" for c in children)
        if result == "Daemoned":
            return False
        return phase == {"Errored": "Error"}.get(result, result)

    return _BoolParser(tokens, operand, path, expr).parse()


class _BoolParser:
    """|| below && below ! and parentheses, over operand tokens."""

    def __init__(self, tokens, operand, path, text):
        self.tokens, self.operand, self.path, self.text, self.i = tokens, operand, path, text, 0

    def peek(self):
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self):
        tok = self.peek()
        if tok is None:
            raise Invalid(f"{self.path}: {self.text!r} ends too early")
        self.i += 1
        return tok

    def parse(self):
        value = self.or_()
        if self.peek() is not None:
            raise Invalid(f"{self.path}: {self.text!r}: unexpected {self.peek()!r}")
        return value

    def or_(self):
        value = self.and_()
        while self.peek() == ("op", "||"):
            self.take()
            right = self.and_()
            value = value or right
        return value

    def and_(self):
        value = self.not_()
        while self.peek() == ("op", "&&"):
            self.take()
            right = self.not_()
            value = value and right
        return value

    def not_(self):
        if self.peek() == ("op", "!"):
            self.take()
            return not self.not_()
        tok = self.take()
        if tok == ("op", "("):
            value = self.or_()
            if self.take() != ("op", ")"):
                raise Invalid(f"{self.path}: {self.text!r}: missing ')'")
            return value
        if tok[0] != "name":
            raise Invalid(f"{self.path}: {self.text!r}: unexpected {tok!r}")
        return self.operand(tok)


WHEN_TOKEN = re.compile(r"""\s*(?:(?P<str>'[^'\\]*'|"[^"\\]*")|(?P<num>[0-9]+(?:\.[0-9]+)?(?![A-Za-z_]))|(?P<op>==|!=|>=|<=|&&|\|\||[><!()])|(?P<word>[A-Za-z_][A-Za-z0-9_]*))""")


def eval_when(text: str, path: str) -> bool:
    """A `when` after substitution, as shouldExecute (controller/steps.go) evaluates it: govaluate,
    where bare words are taken as strings (docs walk-through/conditionals.md). Implemented:
    'single' or "double" quoted strings (no escapes), numbers, true/false, bare words, == != > <
    >= <= && || ! and parentheses. Anything else (regex =~, arithmetic, `in`, ternaries) is refused."""
    tokens, pos = [], 0
    while text[pos:].strip():
        m = WHEN_TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise Unsupported(path, f"when {text!r}: cannot read it at {text[pos:]!r}")
        if m.group("str") is not None:
            tokens.append(("val", m.group("str")[1:-1]))
        elif m.group("num") is not None:
            tokens.append(("val", float(m.group("num"))))
        elif m.group("op") is not None:
            tokens.append(("op", m.group("op")))
        else:
            word = m.group("word")
            tokens.append(("val", {"true": True, "false": False}.get(word, word)))
        pos = m.end()
    value = _WhenParser(tokens, path, text).parse()
    if not isinstance(value, bool):
        raise Invalid(f"{path}: when {text!r} is not a boolean expression")
    return value


class _WhenParser(_BoolParser):
    def __init__(self, tokens, path, text):
        super().__init__(tokens, None, path, text)

    def or_(self):
        value = self.and_()
        while self.peek() == ("op", "||"):
            self.take()
            right = self.and_()
            value = self._bool(value) or self._bool(right)
        return value

    def and_(self):
        value = self.cmp()
        while self.peek() == ("op", "&&"):
            self.take()
            right = self.cmp()
            value = self._bool(value) and self._bool(right)
        return value

    def _bool(self, value):
        if not isinstance(value, bool):
            raise Invalid(f"{self.path}: when {self.text!r}: {value!r} is not a boolean")
        return value

    def cmp(self):
        left = self.not_()
        tok = self.peek()
        if tok and tok[0] == "op" and tok[1] in ("==", "!=", ">", "<", ">=", "<="):
            self.take()
            right = self.not_()
            op = tok[1]
            if op == "==":
                return type(left) is type(right) and left == right
            if op == "!=":
                return not (type(left) is type(right) and left == right)
            if type(left) is not type(right) or isinstance(left, bool):
                raise Invalid(f"{self.path}: when {self.text!r}: cannot compare {left!r} {op} {right!r}")
            return {">": left > right, "<": left < right, ">=": left >= right, "<=": left <= right}[op]
        return left

    def not_(self):
        if self.peek() == ("op", "!"):
            self.take()
            return not self._bool(self.not_())
        tok = self.take()
        if tok == ("op", "("):
            value = self.or_()
            if self.take() != ("op", ")"):
                raise Invalid(f"{self.path}: when {self.text!r}: missing ')'")
            return value
        if tok[0] != "val":
            raise Invalid(f"{self.path}: when {self.text!r}: unexpected {tok[1]!r}")
        return tok[1]


# --- items (withParam) -------------------------------------------------------------------------


def go_json(value) -> str:
    """encoding/json.Marshal's text: compact, map keys sorted, <, >, & and U+2028/9 escaped."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    for char, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, esc)
    return text


def item_text(value) -> str:
    """An item as text (wfv1.Item.String: JSON, a string's quotes removed, <>& unescaped)."""
    if isinstance(value, str):
        return value
    text = go_json(value)
    return text.replace("\\u003c", "<").replace("\\u003e", ">").replace("\\u0026", "&")


def item_scope(value, path: str) -> dict:
    """Variables of one item (controller/operator.go processItem; docs walk-through/loops.md):
    `{{item}}` is a string item itself, a number's text, an object's or list's JSON; an object's
    fields are `{{item.KEY}}`."""
    if isinstance(value, dict):
        return {"item": go_json(value), **{f"item.{k}": item_text(v) for k, v in value.items()}}
    if isinstance(value, list):
        return {"item": go_json(value)}
    if isinstance(value, bool):
        return {"item": "true" if value else "false"}
    if isinstance(value, (int, float, str)):
        return {"item": item_text(value)}
    raise Invalid(f"{path}: an item must be a string, number, list or map, got {value!r}")


def item_label(value) -> str:
    """The node name's item part (generateNodeName): an object's key:value pairs sorted."""
    if isinstance(value, dict):
        return ",".join(sorted(f"{k}:{item_text(v)}" for k, v in value.items())).replace("(", "").replace(")", "")
    return item_text(value).replace("(", "").replace(")", "")


# --- the run -----------------------------------------------------------------------------------


@dataclass
class Node:
    name: str  # Argo's node name: <workflow>.<task>[.<task>...][(index:item)]
    task: str
    template: str | None
    annotations: dict
    phase: str  # Succeeded | Failed | Error | Skipped | Omitted
    type: str = "Pod"  # Pod | Resource (a resource template) | DAG | Skipped (Skipped, Omitted or Error before it ran)
    item: object = None
    outputs: dict = field(default_factory=dict)
    exit_code: int | None = None
    stdout: str = ""
    stderr: str = ""
    message: str = ""
    attempts: int = 0
    started: float | None = None
    finished: float | None = None
    argv: list | None = None
    env: dict | None = None


@dataclass
class Run:
    name: str
    uid: str
    namespace: str
    phase: str  # Succeeded | Failed | Error
    message: str
    parameters: dict  # workflow.parameters.*
    created: dt.datetime
    nodes: list[Node]

    def of_task(self, task: str) -> list[Node]:
        return [n for n in self.nodes if n.task == task]

    def pods(self) -> list[Node]:
        return [n for n in self.nodes if n.type in ("Pod", "Resource")]

    def summary(self) -> dict:
        return {n.name: (n.phase, n.exit_code, n.message or n.stderr[-500:]) for n in self.nodes}


FAILED = ("Failed", "Error")


class Interpreter:
    def __init__(self, *, base_env: dict, cwd: Path, secrets: dict | None = None, workflow_templates: dict | None = None,
                 max_pods: int = 4, pod_timeout: float = 900.0, scratch: Path | None = None, controller_tz: str = "UTC",
                 skipped_outputs: str = "empty"):
        self.base_env = {k: str(v) for k, v in base_env.items()}
        self.cwd = Path(cwd)
        self.secrets = secrets or {}
        self.workflow_templates = workflow_templates or {}
        self.pod_slots = threading.Semaphore(max_pods)
        self.pod_timeout = pod_timeout
        self.scratch = Path(scratch) if scratch else None
        self.controller_tz = controller_tz
        if skipped_outputs not in ("empty", "requeue"):
            raise ValueError(f"skipped_outputs: 'empty' or 'requeue', not {skipped_outputs!r}")
        self.skipped_outputs = skipped_outputs

    # --- submission ---

    def submit(self, document: dict, *, parameters: dict | None = None, name: str | None = None,
               created: dt.datetime | None = None) -> Run:
        """Run a Workflow (or a WorkflowTemplate, as `argo submit --from workflowtemplate/NAME`
        does: docs workflow-templates.md) to its end. `parameters` override the workflow's
        arguments by name (`argo submit -p NAME=VALUE`); `created` is its creationTimestamp."""
        document = copy.deepcopy(document)
        kind = document.get("kind")
        if kind == "WorkflowTemplate":
            wt_name = (document.get("metadata") or {}).get("name")
            self.workflow_templates.setdefault(wt_name, document)
            document = {"apiVersion": document.get("apiVersion"), "kind": "Workflow",
                        "metadata": {"generateName": f"{wt_name}-", "namespace": (document.get("metadata") or {}).get("namespace")},
                        "spec": {"workflowTemplateRef": {"name": wt_name}}}
        elif kind != "Workflow":
            raise Unsupported(".kind", f"kind {kind!r} (submit a Workflow or WorkflowTemplate; cron_workflow() for a CronWorkflow)")
        check_keys(document, "workflow", "")
        if document.get("apiVersion") != "argoproj.io/v1alpha1":
            raise Invalid(f".apiVersion: {document.get('apiVersion')!r}")
        metadata = check_keys(document.get("metadata") or {}, "metadata", ".metadata")
        spec = self._effective_spec(check_keys(document.get("spec") or {}, "spec", ".spec"))
        created = created or dt.datetime.now(dt.timezone.utc)
        run_name = name or metadata.get("name") or (as_str(metadata.get("generateName"), ".metadata.generateName") + uuid.uuid4().hex[:5] if metadata.get("generateName") else None)
        if not run_name:
            raise Invalid(".metadata: a name or generateName is required")
        params = self._parameters(spec, parameters or {})
        globals_ = {"workflow.name": run_name, "workflow.uid": str(uuid.uuid4()), "workflow.namespace": metadata.get("namespace") or "default",
                    **{f"workflow.parameters.{k}": v for k, v in params.items()},
                    **self._creation_timestamp(created)}
        templates = {}
        for index, template in enumerate(as_list(spec.get("templates"), ".spec.templates")):
            check_keys(template, "template", f".spec.templates[{index}]")
            templates[as_str(template.get("name"), f".spec.templates[{index}].name")] = (template, f".spec.templates[{index}]")
        entry = spec.get("entrypoint")
        if entry not in templates:
            raise Invalid(f".spec.entrypoint: no template {entry!r}")
        execution = _Execution(self, run_name, globals_, templates)
        try:
            node = execution.template(entry, {}, run_name, task=run_name, item=None)
            phase, message = node.phase, node.message
        finally:
            execution.close()
        phase = {"Succeeded": "Succeeded", "Failed": "Failed", "Error": "Error", "Skipped": "Succeeded", "Omitted": "Succeeded"}[phase]
        return Run(run_name, globals_["workflow.uid"], globals_["workflow.namespace"], phase, message, params, created, execution.nodes)

    def submit_all(self, documents: list[dict], **kwargs) -> list[Run]:
        """Run several Workflows AT ONCE, each in its own thread, as the controller does: its
        workers operate different workflows in parallel (argo-workflows v4.0.5
        workflow/controller/controller.go:394-395, `--workflow-workers`, 32 by default), and
        a Sensor submits one Workflow per event, each on its own (argo-events v1.9.11
        pkg/sensors/triggers/argo-workflow/argo-workflow.go:160: `argo submit` per trigger),
        so workflows started by events that arrive together run concurrently; pods share
        `max_pods`. Returns each one's Run, in the order given (an exception in one is raised)."""
        with ThreadPoolExecutor(max_workers=max(1, len(documents)), thread_name_prefix="workflow") as pool:
            futures = [pool.submit(self.submit, document, **kwargs) for document in documents]
            return [future.result() for future in futures]

    def _creation_timestamp(self, created: dt.datetime) -> dict:
        """`workflow.creationTimestamp.<c>`: strftime of the creation time in the CONTROLLER's
        local time zone (operator.go:640-642 at v4.0.5 formats CreationTimestamp.Time, which
        metav1.Time decodes into time.Local); `.s`: Unix seconds, zone-free (operator.go:644)."""
        from zoneinfo import ZoneInfo

        local = created.astimezone(ZoneInfo(self.controller_tz))
        return {**{f"workflow.creationTimestamp.{c}": local.strftime("%" + c) for c in STRFTIME},
                "workflow.creationTimestamp.s": str(int(created.timestamp()))}

    def _effective_spec(self, spec: dict) -> dict:
        """A Workflow with `workflowTemplateRef` runs the referenced WorkflowTemplate's spec, the
        Workflow's own fields taking precedence and its `arguments.parameters` overriding the
        template's by name (docs workflow-templates.md, "Create Workflow from WorkflowTemplate
        Spec"; util/wfutil JoinWorkflowSpec)."""
        ref = spec.get("workflowTemplateRef")
        if ref is None:
            return spec
        check_keys(ref, "workflowTemplateRef", ".spec.workflowTemplateRef")
        if spec.get("templates"):
            raise Invalid(".spec: workflowTemplateRef and templates cannot be used together")
        base = self.workflow_templates.get(ref.get("name"))
        if base is None:
            raise Invalid(f".spec.workflowTemplateRef: WorkflowTemplate {ref.get('name')!r} not found")
        check_keys(base, "workflow", "(WorkflowTemplate)")
        check_keys(base.get("metadata") or {}, "metadata", "(WorkflowTemplate).metadata")
        merged = copy.deepcopy(check_keys(base.get("spec") or {}, "spec", "(WorkflowTemplate).spec"))
        for key, value in spec.items():
            if key in ("workflowTemplateRef", "arguments"):
                continue
            merged[key] = copy.deepcopy(value)
        own = {p.get("name"): p for p in (spec.get("arguments") or {}).get("parameters") or []}
        base_params = list((merged.get("arguments") or {}).get("parameters") or [])
        names = {p.get("name") for p in base_params}
        params = [{**p, **own[p.get("name")]} if p.get("name") in own else p for p in base_params]
        params += [p for n, p in own.items() if n not in names]
        merged["arguments"] = {**(merged.get("arguments") or {}), "parameters": params}
        return merged

    def _parameters(self, spec: dict, overrides: dict) -> dict:
        """Workflow parameters (docs walk-through/parameters.md): each `value`, replaced by the
        submitted one; one without a value must be given; `enum` restricts the values
        (docs fields.md Parameter.enum; checked at submission)."""
        arguments = check_keys(spec.get("arguments") or {}, "arguments", ".spec.arguments")
        out = {}
        for index, param in enumerate(as_list(arguments.get("parameters"), ".spec.arguments.parameters")):
            path = f".spec.arguments.parameters[{index}]"
            check_keys(param, "workflow parameter", path)
            name = as_str(param.get("name"), f"{path}.name")
            value = overrides[name] if name in overrides else param.get("value")
            if value is None:
                raise Invalid(f"{path}: spec.arguments.{name}.value is required")
            value = _scalar_text(value) if not isinstance(value, (int, float)) or isinstance(value, bool) else str(value)
            if "{{" in value:
                # the controller substitutes the workflow's variables into its spec, arguments
                # included (operator.go substituteGlobalVariables, unknown tags left as they are)
                raise Unsupported(f"{path}.value", f"a parameter value with '{{{{' ({value!r}): Argo rewrites the variables in it")
            if param.get("enum") is not None and value not in [str(v) for v in param["enum"]]:
                raise Invalid(f"{path}: value {value!r} is not one of its enum {param['enum']}")
            out[name] = value
        unknown = sorted(set(overrides) - set(out))
        if unknown:
            raise Invalid(f"parameters {unknown} are not arguments of the workflow")
        return out

    # --- CronWorkflow ---

    def cron_workflow(self, cron: dict, scheduled: dt.datetime) -> dict:
        """The Workflow a CronWorkflow creates at `scheduled` (docs cron-workflows.md): its
        `workflowSpec`, named `<cron name>-<unix seconds>` (cron controller getChildWorkflowName).
        The schedule fields are checked (croniter; IANA time zone) but time is not simulated: the
        test decides when a run happens."""
        from zoneinfo import ZoneInfo

        from croniter import croniter

        check_keys(cron, "workflow", "")
        if cron.get("kind") != "CronWorkflow":
            raise Unsupported(".kind", f"expected a CronWorkflow, got {cron.get('kind')!r}")
        metadata = check_keys(cron.get("metadata") or {}, "metadata", ".metadata")
        spec = check_keys(cron.get("spec") or {}, "cron spec", ".spec")
        schedules = list(spec.get("schedules") or []) + ([spec["schedule"]] if spec.get("schedule") else [])
        if not schedules:
            raise Invalid(".spec: schedules (or schedule) is required")
        for index, schedule in enumerate(schedules):
            if not croniter.is_valid(schedule):
                raise Invalid(f".spec.schedules[{index}]: {schedule!r} is not a cron schedule")
            # Argo parses with robfig/cron v3.0.1 (workflow/validate/validate.go:449 cron.ParseStandard),
            # whose day of week is 0-6 (spec.go:40): a 7 is "above maximum" (parser.go:307-309), which
            # croniter would take as Sunday
            fields = schedule.split()
            days = [word for part in fields[4].split(",") for word in part.partition("/")[0].split("-")] if len(fields) == 5 else []
            if any(word.isdigit() and int(word) > 6 for word in days):
                raise Invalid(f".spec.schedules[{index}]: cron schedule {schedule} is malformed: end of range above maximum (6)")
        if spec.get("timezone"):
            ZoneInfo(spec["timezone"])
        if spec.get("concurrencyPolicy", "Allow") not in ("Allow", "Forbid", "Replace"):
            raise Invalid(f".spec.concurrencyPolicy: {spec['concurrencyPolicy']!r}")
        name = metadata.get("name")
        return {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
                "metadata": {"name": f"{name}-{int(scheduled.timestamp())}", **({"namespace": metadata["namespace"]} if metadata.get("namespace") else {})},
                "spec": copy.deepcopy(spec.get("workflowSpec") or {})}


class _Execution:
    """One workflow run: template invocations, pods as processes, the recorded nodes."""

    def __init__(self, interpreter: Interpreter, run_name: str, globals_: dict, templates: dict):
        self.i = interpreter
        self.run_name = run_name
        self.globals = globals_
        self.templates = templates
        self.nodes: list[Node] = []
        self.lock = threading.Lock()
        self.scratch = Path(tempfile.mkdtemp(prefix=f"argo-{run_name}-", dir=interpreter.scratch))
        self.pods = 0

    def close(self):
        shutil.rmtree(self.scratch, ignore_errors=True)

    def record(self, node: Node) -> Node:
        with self.lock:
            self.nodes.append(node)
        return node

    def annotations(self, name: str) -> dict:
        template, path = self.templates.get(name, ({}, ""))
        meta = check_keys(template.get("metadata") or {}, "template metadata", f"{path}.metadata")
        return dict(meta.get("annotations") or {})

    def inputs(self, template: dict, path: str, arguments: dict) -> dict:
        """Input parameters (docs walk-through/parameters.md): the argument of the same name, else
        the declared `default`; neither is an error. Arguments the template does not declare are
        ignored (common.ProcessArgs)."""
        inputs = check_keys(template.get("inputs") or {}, "inputs", f"{path}.inputs")
        scope = {}
        for index, param in enumerate(as_list(inputs.get("parameters"), f"{path}.inputs.parameters")):
            check_keys(param, "input parameter", f"{path}.inputs.parameters[{index}]")
            name = param.get("name")
            if name in arguments:
                scope[f"inputs.parameters.{name}"] = arguments[name]
            elif param.get("default") is not None:
                scope[f"inputs.parameters.{name}"] = _scalar_text(param["default"])
            else:
                raise Invalid(f"{path}.inputs.parameters[{index}]: inputs.parameters.{name} was not supplied")
        return scope

    def template(self, name: str, arguments: dict, node_name: str, *, task: str, item) -> Node:
        """Invoke template `name` with `arguments` ({param: text}): its inputs and the workflow's
        variables substituted into it (tasks.* and item stay for the DAG's tasks), then run as
        a dag, a container or a resource (docs fields.md Template)."""
        if name not in self.templates:
            raise Invalid(f"template {name!r} not found")
        template, path = self.templates[name]
        kinds = [k for k in ("dag", "container", "resource") if k in template]
        if len(kinds) != 1:
            raise Unsupported(path, f"a template must have exactly one of dag, container, resource (has {kinds})")
        if "parallelism" in template and kinds != ["dag"]:
            raise Unsupported(f"{path}.parallelism", "parallelism on a non-dag template")
        annotations = self.annotations(name)
        scope = {**self.globals, **self.inputs(template, path, arguments)}
        body = {k: v for k, v in template.items() if k not in ("inputs", "name")}
        body = substitute(body, scope, path, later=LATER if kinds == ["dag"] else ())
        if kinds == ["dag"]:
            for key in ("outputs", "retryStrategy", "activeDeadlineSeconds"):
                if key in body:
                    raise Unsupported(f"{path}.{key}", f"{key} on a dag template")
            return _Dag(self, name, body, path, node_name, task, item, scope).run()
        return self.pod(name, body, path, node_name, task=task, item=item, annotations=annotations, resource=kinds == ["resource"])

    # --- pods ---

    def pod(self, name: str, body: dict, path: str, node_name: str, *, task: str, item, annotations: dict, resource: bool) -> Node:
        """A container (or resource) template's node, with its retries: `retryStrategy.limit`
        more attempts at most, under `retryPolicy` (Always: after Failed or Error; OnFailure, the
        default: after Failed; OnError: after Error), waiting `backoff.duration` x
        `factor`^(attempt-1) between them, no retry once `backoff.maxDuration` after the first
        start would pass (docs retries.md; controller/operator.go processNodeRetries). The node
        ends in its last attempt's phase and outputs."""
        retry = check_keys(body.get("retryStrategy") or {}, "retryStrategy", f"{path}.retryStrategy") if "retryStrategy" in body else None
        limit, policy, backoff, expression = 0, "OnFailure", None, None
        if retry is not None:
            limit = int_or_string(retry["limit"], f"{path}.retryStrategy.limit") if "limit" in retry else None
            if limit is None:
                raise Unsupported(f"{path}.retryStrategy", "retries without a limit")
            if "expression" in retry:
                expression = retry_expression(retry["expression"], f"{path}.retryStrategy.expression")
            # the default policy is OnFailure, Always when an expression is given (docs/retries.md:40-42)
            policy = retry.get("retryPolicy", "Always" if expression else "OnFailure")
            if policy not in RETRY_POLICIES:
                raise Unsupported(f"{path}.retryStrategy.retryPolicy", f"policy {policy!r}")
            if "backoff" in retry:
                b = check_keys(retry["backoff"], "backoff", f"{path}.retryStrategy.backoff")
                backoff = (duration(b["duration"], f"{path}.retryStrategy.backoff.duration") if "duration" in b else None,
                           int_or_string(b["factor"], f"{path}.retryStrategy.backoff.factor") if "factor" in b else None,
                           duration(b["maxDuration"], f"{path}.retryStrategy.backoff.maxDuration") if "maxDuration" in b else None,
                           duration(b["cap"], f"{path}.retryStrategy.backoff.cap") if "cap" in b else None)
                if backoff[0] is None:
                    raise Invalid(f"{path}.retryStrategy.backoff: no base duration specified for retryStrategy")
        node = Node(node_name, task, name, annotations, "Pending", type="Resource" if resource else "Pod", item=item)
        first_start = None
        attempt = 0
        while True:
            attempt += 1
            outcome = self.attempt(body, path, resource)
            first_start = first_start or outcome["started"]
            node.attempts = attempt
            node.started = node.started or outcome["started"]
            for key in ("phase", "message", "exit_code", "outputs", "argv", "env", "stdout", "stderr", "finished"):
                setattr(node, key, outcome[key])
            if node.phase not in FAILED or retry is None:
                break
            if (node.phase == "Failed" and policy == "OnError") or (node.phase == "Error" and policy == "OnFailure"):
                break
            if attempt > limit:
                node.message = (node.message + "; " if node.message else "") + "No more retries left"
                break
            # the expression is ANDed with the policy (operator.go:1141-1150)
            if expression is not None and not expression(node.exit_code, node.phase):
                node.message = (node.message + "; " if node.message else "") + "retryStrategy.expression evaluated to false"
                break
            if backoff:
                wait_s = backoff[0] * (backoff[1] ** (attempt - 1) if backoff[1] else 1)
                if backoff[3] is not None:  # `cap` bounds each wait (operator.go:1070-1078)
                    wait_s = min(wait_s, backoff[3])
                if backoff[2] is not None and (time.time() + wait_s) > first_start + backoff[2]:
                    node.message = (node.message + "; " if node.message else "") + "Backoff would exceed max duration limit"
                    break
                time.sleep(wait_s)
        return self.record(node)

    def attempt(self, body: dict, path: str, resource: bool) -> dict:
        with self.i.pod_slots:
            with self.lock:
                self.pods += 1
                pod_dir = self.scratch / f"pod-{self.pods}"
            (pod_dir / "tmp").mkdir(parents=True)
            started = time.time()
            if resource:
                result = self.resource(body, path, pod_dir)
            else:
                result = self.container(body, path, pod_dir)
            defaults = {"message": "", "exit_code": None, "outputs": {}, "argv": None, "env": None, "stdout": "", "stderr": ""}
            return {**defaults, **result, "started": started, "finished": time.time()}

    def private(self, value: str, pod_dir: Path, declared: set) -> str:
        """A file the template declares as the pod's own (an output parameter's path) maps into
        the pod's private folder; nothing else does (see the module docstring)."""
        return str(pod_dir) + value if value in declared else value

    def declared_paths(self, body: dict, path: str) -> set:
        outputs = check_keys(body.get("outputs") or {}, "outputs", f"{path}.outputs")
        return {(p.get("valueFrom") or {}).get("path") for p in as_list(outputs.get("parameters"), f"{path}.outputs.parameters")} - {None}

    def container(self, body: dict, path: str, pod_dir: Path) -> dict:
        """A container template (docs fields.md Container): `command` + `args` run as one process
        with the container's `env` only (on top of the base environment: see the module's
        docstring), in the image's working directory; exit code 0 is Succeeded, anything else
        Failed ("Error (exit code N)"); `activeDeadlineSeconds` kills it and fails the node
        (docs fields.md Template.activeDeadlineSeconds). Then the output parameters are read
        (`outputs.parameters[].valueFrom.path`, one trailing newline trimmed; `default` when the
        file is missing, else the node errors: workflow/executor SaveParameters), for failed
        attempts too."""
        c = check_keys(body["container"], "container", f"{path}.container")
        if "command" not in c:
            raise Unsupported(f"{path}.container", "a container without `command` (the image's entrypoint is unknown here)")
        if c.get("imagePullPolicy", "IfNotPresent") not in PULL_POLICIES:
            raise Invalid(f"{path}.container.imagePullPolicy: {c['imagePullPolicy']!r}")
        as_str(c.get("image"), f"{path}.container.image")
        resources = check_keys(c.get("resources") or {}, "resources", f"{path}.container.resources")
        for key in resources:
            if not isinstance(resources[key], dict):
                raise Unsupported(f"{path}.container.resources.{key}", "expected a mapping")
        argv = [as_str(a, f"{path}.container.command[{i}]") for i, a in enumerate(as_list(c["command"], f"{path}.container.command"))]
        argv += [as_str(a, f"{path}.container.args[{i}]") for i, a in enumerate(as_list(c.get("args"), f"{path}.container.args"))]
        declared = self.declared_paths(body, path)
        argv = [self.private(a, pod_dir, declared) for a in argv]
        env = dict(self.i.base_env)
        env["TMPDIR"] = str(pod_dir / "tmp")
        for index, var in enumerate(as_list(c.get("env"), f"{path}.container.env")):
            vpath = f"{path}.container.env[{index}]"
            check_keys(var, "env", vpath)
            name = as_str(var.get("name"), f"{vpath}.name")
            if "valueFrom" in var:
                ref = check_keys(check_keys(var["valueFrom"], "env valueFrom", f"{vpath}.valueFrom").get("secretKeyRef"), "secretKeyRef", f"{vpath}.valueFrom.secretKeyRef")
                secret = self.i.secrets.get(ref.get("name"))
                if secret is None or ref.get("key") not in secret:
                    what = f'secret "{ref.get("name")}" not found' if secret is None else f'couldn\'t find key {ref.get("key")} in Secret {ref.get("name")}'
                    return {"phase": "Error", "message": f"CreateContainerConfigError: {what}", "argv": argv}
                env[name] = str(secret[ref["key"]])
            else:
                env[name] = self.private(as_str(var.get("value", ""), f"{vpath}.value"), pod_dir, declared)
        deadline = int_or_string(body["activeDeadlineSeconds"], f"{path}.activeDeadlineSeconds") if "activeDeadlineSeconds" in body else None
        limit = min(deadline, self.i.pod_timeout) if deadline is not None else self.i.pod_timeout
        try:
            proc = subprocess.Popen(argv, cwd=self.i.cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        except OSError as exc:  # the runtime cannot start the command: the container never ran
            return {"phase": "Error", "message": f"StartError: failed to start {argv[0]!r}: {exc}", "argv": argv}
        try:
            try:
                out, err = proc.communicate(timeout=limit)
            except (KeyboardInterrupt, SystemExit, Exception) as exc:
                if not isinstance(exc, subprocess.TimeoutExpired):  # interrupted: leave no pod behind
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                raise
            code, message = proc.returncode, ""
            phase = "Succeeded" if code == 0 else "Failed"
            if code:
                message = f"Error (exit code {code})"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            code = proc.returncode
            if deadline is not None and deadline <= self.i.pod_timeout:
                phase, message = "Failed", "Pod was active on the node longer than the specified deadline"
            else:
                phase, message = "Error", f"the test interpreter's pod timeout ({self.i.pod_timeout}s) passed"
        outputs, problem = self.output_parameters(body, path, pod_dir)
        if problem and phase == "Succeeded":
            phase, message = "Error", problem
        return {"phase": phase, "message": message, "exit_code": code, "outputs": outputs, "argv": argv,
                "env": {k: v for k, v in env.items() if k not in self.i.base_env},
                "stdout": out.decode("utf-8", "replace")[-TAIL:], "stderr": err.decode("utf-8", "replace")[-TAIL:]}

    def output_parameters(self, body: dict, path: str, pod_dir: Path) -> tuple[dict, str | None]:
        outputs = check_keys(body.get("outputs") or {}, "outputs", f"{path}.outputs")
        values, problem = {}, None
        for index, param in enumerate(as_list(outputs.get("parameters"), f"{path}.outputs.parameters")):
            ppath = f"{path}.outputs.parameters[{index}]"
            check_keys(param, "output parameter", ppath)
            source = check_keys(param.get("valueFrom"), "valueFrom", f"{ppath}.valueFrom")
            file = as_str(source.get("path"), f"{ppath}.valueFrom.path")
            if not file.startswith("/tmp/"):
                raise Unsupported(f"{ppath}.valueFrom.path", f"{file!r}: only paths under /tmp/ (the pod's private folder) are implemented")
            try:
                text = Path(self.private(file, pod_dir, {file})).read_text(encoding="utf-8")
            except FileNotFoundError:
                if "default" in source:
                    text = _scalar_text(source["default"])
                else:
                    problem = problem or f"open {file}: no such file or directory"
                    continue
            values[param["name"]] = text[:-1] if text.endswith("\n") else text
        return values, problem

    def resource(self, body: dict, path: str, pod_dir: Path) -> dict:
        """A resource template (docs resource-template.md; walk-through/kubernetes-resources.md):
        `action: create` of `manifest` (its parameters already substituted into the text, then
        parsed, as Argo does). Kubeflow PyTorchJob / MPIJob manifests are played by
        training_operator.run_training_job (the training operator's stand-in); the resulting
        resource is then judged by `failureCondition` first, then `successCondition`."""
        r = check_keys(body["resource"], "resource", f"{path}.resource")
        if r.get("action") != "create":
            raise Unsupported(f"{path}.resource.action", f"action {r.get('action')!r}")
        if "outputs" in body:
            raise Unsupported(f"{path}.outputs", "outputs of a resource template")
        manifest = yaml.safe_load(as_str(r.get("manifest"), f"{path}.resource.manifest"))
        kind = (manifest or {}).get("kind")
        if (manifest or {}).get("apiVersion") != "kubeflow.org/v1" or kind not in ("PyTorchJob", "MPIJob"):
            raise Unsupported(f"{path}.resource.manifest", f"a {kind!r} resource (only kubeflow.org/v1 PyTorchJob and MPIJob are played)")
        try:
            module = importlib.import_module((__package__ + "." if __package__ else "") + "training_operator")
            run_training_job = module.run_training_job
        except (ImportError, AttributeError) as exc:
            raise Unsupported(f"{path}.resource.manifest", f"{kind}: the training operator stand-in is not available ({exc})") from exc
        env = dict(self.i.base_env, TMPDIR=str(pod_dir / "tmp"))
        try:
            status = run_training_job(manifest, env, self.i.cwd, self.i.pod_timeout)
        except TimeoutError as exc:
            return {"phase": "Error", "message": f"the test interpreter's pod timeout passed: {exc}"}
        except ValueError as exc:  # training_operator.UnsupportedManifest
            if type(exc).__name__ == "UnsupportedManifest":
                raise Unsupported(f"{path}.resource.manifest", str(exc)) from exc
            raise
        obj = {**manifest, "status": status}
        # the failure condition first, holding when ANY of its requirements does; then the success
        # condition, holding when ALL do (workflow/executor/resource.go:273-298 at v4.0.5)
        for key in ("failureCondition", "successCondition"):
            if r.get(key) and condition(obj, r[key], f"{path}.resource.{key}", any_of=key == "failureCondition"):
                phase = "Failed" if key == "failureCondition" else "Succeeded"
                return {"phase": phase, "message": f"{key} {r[key]!r} matched", "outputs": {}, "stdout": json.dumps(status)[-TAIL:]}
        if not r.get("successCondition"):
            return {"phase": "Succeeded", "message": "created", "outputs": {}}
        return {"phase": "Error", "message": f"the job ended with neither condition true (Argo would wait for it forever): {status}", "outputs": {}}


def gjson(obj, key: str):
    """A dotted path (gjson's basic syntax: names, array indexes, `\\.` for a dot in a name);
    wildcards and modifiers are refused. Returns (found, value)."""
    if any(ch in key for ch in "*?#@|"):
        raise Unsupported(key, "gjson wildcards, queries and modifiers")
    parts = [p.replace("\x00", ".") for p in key.replace("\\.", "\x00").split(".")]
    for part in parts:
        if isinstance(obj, dict) and part in obj:
            obj = obj[part]
        elif isinstance(obj, list) and part.isdigit() and int(part) < len(obj):
            obj = obj[int(part)]
        else:
            return False, None
    return True, obj


QUALIFIED_NAME = re.compile(r"(?:[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?")
LABEL_VALUE = re.compile(r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?")


def condition(obj: dict, text: str, path: str, *, any_of: bool = False) -> bool:
    """successCondition / failureCondition, as argoexec evaluates them: `labels.Parse` of the text
    (a Kubernetes label selector: comma-separated requirements `key OP value`, OP one of = == != >
    <), each key looked up as a gjson path in the resource's JSON (workflow/executor/resource.go:
    176-216 at v4.0.5). The parser takes a key only if it is a label key (validateLabelKey ->
    IsQualifiedName: letters, digits, `-_.`, at most 63, k8s.io/apimachinery v0.33.1
    pkg/labels/selector.go:737-748, 916-921), so a gjson query (`#(...)`, `*`) fails to parse; a
    value must be a label value, an integer for > <. Matching (Requirement.Matches,
    selector.go:236-280): = == hold when the key exists with that value, != when it is missing or
    differs, > < compare integers (a value that is not one never matches). The failure condition
    holds when ANY requirement does (`any_of`), the success condition when ALL do
    (resource.go:273-298)."""
    results = []
    for requirement in [r.strip() for r in text.split(",")]:
        m = re.fullmatch(r"(\S+?)\s*(==|=|!=|>|<)\s*(\S+)", requirement)
        if not m:
            raise Unsupported(path, f"condition {requirement!r}")
        key, op, want = m.groups()
        if len(key.rsplit("/", 1)[-1]) > 63 or not QUALIFIED_NAME.fullmatch(key):
            raise Invalid(f"{path}: condition '{text}' failed to parse: key {key!r} is not a label key (a gjson query cannot be written)")
        if len(want) > 63 or not LABEL_VALUE.fullmatch(want) or (op in (">", "<") and not re.fullmatch(r"-?[0-9]+", want)):
            raise Invalid(f"{path}: condition '{text}' failed to parse: value {want!r}")
        found, value = gjson(obj, key)
        text_value = item_text(value) if found else ""
        if op in (">", "<"):
            holds = found and bool(re.fullmatch(r"[+-]?[0-9]+", text_value)) and (
                int(text_value) > int(want) if op == ">" else int(text_value) < int(want))
        elif op == "!=":
            holds = not found or text_value != want
        else:
            holds = found and text_value == want
        results.append(holds)
    return any(results) if any_of else all(results)


class _Dag:
    """One invocation of a dag template (docs walk-through/dag.md, enhanced-depends-logic.md;
    controller/dag.go executeDAG / executeDAGTask / assessDAGPhase):

    - a task runs once every task named in its `depends` is fulfilled and the expression holds;
      when it does not, the task is Omitted. No `depends`: it starts at once;
    - its variables: the workflow's, the dag template's inputs (already in), and the outputs of
      its ANCESTORS only (`{{tasks.X.outputs.parameters.Y}}`; a Skipped or Omitted ancestor's
      declared outputs are "": enhanced-depends-logic.md "Output references from Skipped or
      Omitted tasks"); an unresolvable reference makes Argo requeue for ever: here an error;
    - `when` false: Skipped (docs walk-through/conditionals.md);
    - `withParam`: a JSON list, one child per item, each with `{{item}}` (docs walk-through/
      loops.md); an empty list: the task is Skipped; a text that is not a JSON list: Error; the
      task's phase is Failed/Error if a child's is, else Succeeded;
    - template `parallelism`: at most that many of its children run at once (docs
      parallelism.md);
    - `failFast` (default true: dag.go:199 at v4.0.5 `FailFast == nil || *FailFast`): once a leaf
      task's branch has failed, no new task starts; running ones finish (docs walk-through/dag.md
      "Fail Fast"). With `failFast: false` every task whose `depends` still holds starts, and the
      dag's phase is decided once every branch has ended (assessDAGPhase, dag.go:199-229);
    - the dag's phase: Failed/Error when a leaf task's branch is (a Skipped/Omitted task takes
      its parents' worst phase), else Succeeded.
    """

    def __init__(self, ex: _Execution, name: str, body: dict, path: str, node_name: str, task: str, item, scope: dict):
        self.ex, self.name, self.path, self.node_name, self.task, self.item, self.scope = ex, name, path, node_name, task, item, scope
        dag = check_keys(body["dag"], "dag", f"{path}.dag")
        self.parallelism = int_or_string(body["parallelism"], f"{path}.parallelism") if "parallelism" in body else None
        self.fail_fast = dag.get("failFast", True)
        if not isinstance(self.fail_fast, bool):
            raise Invalid(f"{path}.dag.failFast: expected a boolean, got {self.fail_fast!r}")
        self.tasks: dict[str, dict] = {}
        self.paths: dict[str, str] = {}
        for index, task_def in enumerate(as_list(dag.get("tasks"), f"{path}.dag.tasks")):
            tpath = f"{path}.dag.tasks[{index}]"
            check_keys(task_def, "task", tpath)
            tname = as_str(task_def.get("name"), f"{tpath}.name")
            if tname in self.tasks:
                raise Invalid(f"{tpath}: duplicate task {tname!r}")
            self.tasks[tname], self.paths[tname] = task_def, tpath
        self.deps = {}
        for tname, task_def in self.tasks.items():
            deps = depends_names(task_def["depends"], f"{self.paths[tname]}.depends") if task_def.get("depends") else []
            for dep in deps:
                if dep not in self.tasks:
                    raise Invalid(f"{self.paths[tname]}.depends: no task {dep!r}")
            self.deps[tname] = deps
        self.leaves = sorted(set(self.tasks) - {d for deps in self.deps.values() for d in deps})
        self.phase: dict[str, str] = {}  # task -> phase once fulfilled
        self.children: dict[str, list[str]] = {}  # expanded task -> its children's phases
        self.outputs: dict[str, dict] = {}

    def ancestors(self, tname: str) -> set[str]:
        out, todo = set(), list(self.deps[tname])
        while todo:
            dep = todo.pop()
            if dep not in out:
                out.add(dep)
                todo += self.deps[dep]
        return out

    def declared_outputs(self, template_name: str) -> list[str]:
        template, _ = self.ex.templates.get(template_name, ({}, ""))
        return [p.get("name") for p in (template.get("outputs") or {}).get("parameters") or []]

    def task_scope(self, tname: str) -> dict:
        scope = dict(self.scope)
        for dep in self.ancestors(tname):
            # a Skipped/Omitted ancestor's declared outputs: '' from v4.0.4 on (dag.go:706-722 at
            # v4.0.5); before (v4.0.2-4.0.3) nothing, and a reference to them requeues for ever
            if self.phase.get(dep) in ("Skipped", "Omitted") and not self.outputs.get(dep) and self.ex.i.skipped_outputs == "empty":
                for out in self.declared_outputs(self.tasks[dep].get("template")):
                    scope[f"tasks.{dep}.outputs.parameters.{out}"] = ""
            for key, value in self.outputs.get(dep, {}).items():
                scope[f"tasks.{dep}.outputs.parameters.{key}"] = value
        return scope

    def branch_phase(self, tname: str, memo: dict) -> str:
        if tname not in memo:
            phase = self.phase.get(tname)
            if phase in ("Succeeded", "Failed", "Error"):
                memo[tname] = phase
            else:
                parents = [self.branch_phase(d, memo) for d in self.deps[tname]]
                memo[tname] = next((p for p in parents if p in FAILED), "Succeeded")
        return memo[tname]

    def failed(self) -> str | None:
        memo: dict = {}
        for leaf in self.leaves:
            if leaf in self.phase and self.branch_phase(leaf, memo) in FAILED:
                return self.branch_phase(leaf, memo)
        return None

    def run(self) -> Node:
        started = time.time()
        pool = ThreadPoolExecutor(max_workers=max(1, min(64, self.parallelism or 64)), thread_name_prefix=f"dag-{self.name}")
        running: dict[Future, tuple] = {}  # future -> (task, index or None)
        pending_items: list[tuple] = []  # (task, index, item, resolved task) waiting for a slot
        expanded: dict[str, dict] = {}  # task -> {"left": n, "phases": [...]}
        decided: set[str] = set()
        try:
            while True:
                progressed = True
                while progressed and not (self.fail_fast and self.failed()):
                    progressed = False
                    for tname in self.tasks:
                        if tname in decided or not all(d in self.phase for d in self.deps[tname]):
                            continue
                        decided.add(tname)
                        progressed = True
                        pending_items += self.start(tname, expanded)
                while pending_items and (self.parallelism is None or len(running) < self.parallelism):
                    tname, index, item, resolved = pending_items.pop(0)
                    running[pool.submit(self.child, tname, index, item, resolved)] = (tname, index)
                if self.fail_fast and self.failed():
                    # fail fast: what this pass decided has started (Argo creates those pods in the
                    # same reconciliation); nothing else will, including children over parallelism
                    pending_items = []
                if not running:
                    break
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for future in done:
                    tname, index = running.pop(future)
                    node = future.result()
                    if index is None:
                        self.finish(tname, node.phase, node.outputs)
                    else:
                        group = expanded[tname]
                        group["phases"].append(node.phase)
                        group["left"] -= 1
                        if group["left"] == 0:
                            self.children[tname] = group["phases"]
                            worst = next((p for p in reversed(group["phases"]) if p in FAILED), "Succeeded")
                            self.finish(tname, worst, {})
        finally:
            pool.shutdown(wait=True)
        failure = self.failed()
        phase = failure or "Succeeded"
        node = Node(self.node_name, self.task, self.name, self.ex.annotations(self.name), phase, type="DAG", item=self.item,
                    started=started, finished=time.time(), message="" if phase == "Succeeded" else "child failed")
        return self.ex.record(node)

    def finish(self, tname: str, phase: str, outputs: dict) -> None:
        self.phase[tname] = phase
        self.outputs[tname] = outputs

    def skipped(self, tname: str, phase: str, message: str, item=None, index=None) -> None:
        template = self.tasks[tname].get("template")
        suffix = f"({index}:{item_label(item)})" if index is not None else ""
        self.ex.record(Node(f"{self.node_name}.{tname}{suffix}", tname, template, self.ex.annotations(template), phase, type="Skipped",
                            item=item, message=message, started=time.time(), finished=time.time()))

    def start(self, tname: str, expanded: dict) -> list[tuple]:
        """Decide a task whose dependencies are fulfilled: Omitted, Skipped, Error, or what to run."""
        task_def, tpath = self.tasks[tname], self.paths[tname]
        if task_def.get("depends"):
            ok = eval_depends(task_def["depends"], lambda d: (self.phase[d], self.children.get(d, [])), f"{tpath}.depends")
            if not ok:
                self.skipped(tname, "Omitted", "omitted: depends condition not met")
                self.finish(tname, "Omitted", {})
                return []
        if not isinstance(task_def.get("template"), str):
            raise Unsupported(f"{tpath}.template", "a task must name a template (templateRef, inline are not implemented)")
        scope = self.task_scope(tname)
        expands = "withParam" in task_def
        try:
            if task_def.get("when"):
                when = substitute(task_def["when"], scope, f"{tpath}.when", later=("item",) if expands else ())
                if not (expands and "{{" in when) and not eval_when(when, f"{tpath}.when"):
                    self.skipped(tname, "Skipped", f"when '{when}' evaluated false")
                    self.finish(tname, "Skipped", {})
                    return []
            resolved = substitute({k: v for k, v in task_def.items() if k not in ("name", "depends")}, scope, tpath, later=("item",))
        except Invalid as exc:
            if "failed to resolve {{tasks." in str(exc):
                raise Invalid(f"{exc} (Argo requeues such a task for ever: the workflow would hang)") from exc
            raise
        if not expands:
            return [(tname, None, None, resolved)]
        try:
            items = json.loads(resolved["withParam"])
            if not isinstance(items, list):
                raise ValueError("not a list")
        except ValueError as exc:
            self.skipped(tname, "Error", f"withParam value could not be parsed as a JSON list: {resolved['withParam'].strip()}: {exc}")
            self.finish(tname, "Error", {})
            return []
        if not items:
            self.skipped(tname, "Skipped", "Skipped, empty params")
            self.finish(tname, "Skipped", {})
            return []
        expanded[tname] = {"left": len(items), "phases": []}
        return [(tname, index, item, resolved) for index, item in enumerate(items)]

    def child(self, tname: str, index, item, resolved: dict) -> Node:
        """Run one task (or one item of an expanded task): its `when` with the item, then its
        template with the task's `arguments.parameters`."""
        tpath = self.paths[tname]
        resolved = {k: v for k, v in resolved.items() if k != "withParam"}
        if index is not None:
            resolved = substitute(resolved, item_scope(item, tpath), tpath)
            if resolved.get("when") and not eval_when(resolved["when"], f"{tpath}.when"):
                self.skipped(tname, "Skipped", f"when '{resolved['when']}' evaluated false", item, index)
                return Node("", tname, None, {}, "Skipped")
        arguments = {}
        args = resolved.get("arguments") or {}
        check_keys(args, "arguments", f"{tpath}.arguments")
        for pindex, param in enumerate(as_list(args.get("parameters"), f"{tpath}.arguments.parameters")):
            check_keys(param, "task parameter", f"{tpath}.arguments.parameters[{pindex}]")
            arguments[param.get("name")] = _scalar_text(param.get("value"))
        suffix = f"({index}:{item_label(item)})" if index is not None else ""
        return self.ex.template(resolved["template"], arguments, f"{self.node_name}.{tname}{suffix}", task=tname, item=item)


# --- Argo Events: what a Sensor submits --------------------------------------------------------

SENSOR_SPEC = {"dependencies", "triggers", "template"}
SENSOR_TEMPLATE = {"serviceAccountName"}
DEPENDENCY = {"name", "eventSourceName", "eventName", "filters"}
FILTERS = {"data"}
DATA_FILTER = {"path", "type", "value"}


def passes_data_filters(filters: list, event: dict, path: str) -> bool:
    """A dependency's `filters.data` (argo-events v1.9.11 pkg/sensors/dependencies/filter.go
    filterData, 198-390): no data -> passes (:206-208); data that is not JSON -> fails (:209-211);
    each filter in turn, ANDed (the default DataLogicalOperator): a `path` (gjson) that does not
    exist fails (:219-228), so does an empty `value` list (:230-238); type "string": some value,
    read as a Go regular expression (regexp.Compile, :363), MATCHES ANYWHERE in the text
    (exp.Match, unanchored: :374), `^...$` the whole text, RE2's `$` being the end of the text
    only, not before a final newline as Python's (https://pkg.go.dev/regexp/syntax: "$ at end of
    text (like \\z not \\Z) or line (flag m=true)"). Comparators (a string takes `=`/`!=`:
    :375-384), templates, other types and the OR operator are refused."""
    data = event.get("data")
    if data is None:
        return True
    if isinstance(data, (str, bytes)):
        try:
            data = json.loads(data)
        except ValueError:
            return False
    for index, f in enumerate(filters):
        fpath = f"{path}[{index}]"
        _keys(f, DATA_FILTER, fpath)
        if f.get("type") != "string":
            raise Unsupported(f"{fpath}.type", f"data filter type {f.get('type')!r}")
        found, value = gjson(data, as_str(f.get("path"), f"{fpath}.path"))
        values = as_list(f.get("value"), f"{fpath}.value")
        if not found or not values:
            return False
        text = item_text(value)
        if not any(re.search(_go_regex(v), text) for v in values):
            return False
    return True


def _go_regex(pattern: str) -> str:
    """A Go (RE2) regular expression of the subset Python reads alike, with each `$` (outside a
    class, unescaped) as Python's `\\Z`: RE2's `$` without the m flag is the end of the text."""
    out, index, in_class = [], 0, False
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            out.append(pattern[index:index + 2])
            index += 2
            continue
        if char == "[" and not in_class:
            in_class = True
        elif char == "]" and in_class:
            in_class = False
        out.append("\\Z" if char == "$" and not in_class else char)
        index += 1
    return "".join(out)
TRIGGER = {"template", "parameters"}
TRIGGER_TEMPLATE = {"name", "conditions", "argoWorkflow", "k8s"}
ARGO_TRIGGER = {"operation", "source"}
PARAMETER = {"src", "dest"}
PARAMETER_SRC = {"dependencyName", "dataKey", "contextKey", "value"}


def _keys(obj, allowed: set, path: str) -> dict:
    if not isinstance(obj, dict):
        raise Unsupported(path, "expected a mapping")
    extra = sorted(set(obj) - allowed)
    if extra:
        raise Unsupported(f"{path}.{extra[0]}", f"field {extra[0]!r}")
    return obj


def _set_path(obj, dest: str, value: str, path: str) -> None:
    """sjson's `a.b.0.c` (a list index by number) onto existing or new mapping keys."""
    parts = dest.split(".")
    for part in parts[:-1]:
        if isinstance(obj, list) and part.isdigit() and int(part) < len(obj):
            obj = obj[int(part)]
        elif isinstance(obj, dict):
            obj = obj.setdefault(part, {})
        else:
            raise Invalid(f"{path}: dest {dest!r} does not exist in the resource")
    last = parts[-1]
    if isinstance(obj, list) and last.isdigit() and int(last) < len(obj):
        obj[int(last)] = value
    elif isinstance(obj, dict):
        obj[last] = value
    else:
        raise Invalid(f"{path}: dest {dest!r} does not exist in the resource")


def sensor_workflows(sensor: dict, events: dict) -> list[dict]:
    """The Workflows a Sensor submits when `events` ({dependency name: event}) arrive.

    An event is what the Sensor receives from the EventBus: {"context": {"id", "source",
    "specversion", "type", "datacontenttype", "subject", "time"}, "data": <the JSON payload>}
    (Argo Events docs, tutorials/02-parameterization.md "Webhook Event Payload"; for SQS with
    `jsonBody: true`, data is {"body": <the message's JSON>, ...}: eventsources/setup/aws-sqs.md).
    A trigger fires when its `conditions` (a boolean expression of dependency names: docs
    sensors/trigger-conditions.md) hold, or, without conditions, when every dependency has an
    event. Its resource (`argoWorkflow`/`k8s` `operation: submit`/`create` with
    `source.resource`: sensors/triggers/argo-workflow.md) gets each parameter: the value at
    `src.dataKey` of the dependency's event data or `src.contextKey` of its context (gjson
    paths), else `src.value` (the default; none: the trigger fails), written at `dest` (sjson
    path) as a string (tutorials/02-parameterization.md)."""
    _keys(sensor, {"apiVersion", "kind", "metadata", "spec"}, "")
    if sensor.get("kind") != "Sensor":
        raise Unsupported(".kind", f"expected a Sensor, got {sensor.get('kind')!r}")
    spec = _keys(sensor.get("spec") or {}, SENSOR_SPEC, ".spec")
    _keys(spec.get("template") or {}, SENSOR_TEMPLATE, ".spec.template")
    names = []
    for index, dep in enumerate(spec.get("dependencies") or []):
        _keys(dep, DEPENDENCY, f".spec.dependencies[{index}]")
        names.append(dep["name"])
    unknown = sorted(set(events) - set(names))
    if unknown:
        raise Invalid(f"events for {unknown}, which are not dependencies of the Sensor ({names})")
    events = dict(events)
    for index, dep in enumerate(spec.get("dependencies") or []):
        filters = _keys(dep.get("filters") or {}, FILTERS, f".spec.dependencies[{index}].filters")
        if dep["name"] in events and not passes_data_filters(filters.get("data") or [], events[dep["name"]], f".spec.dependencies[{index}].filters.data"):
            del events[dep["name"]]  # a filtered event never reaches the triggers
    out = []
    for index, trigger in enumerate(spec.get("triggers") or []):
        tpath = f".spec.triggers[{index}]"
        _keys(trigger, TRIGGER, tpath)
        template = _keys(trigger.get("template") or {}, TRIGGER_TEMPLATE, f"{tpath}.template")
        if template.get("conditions"):
            tokens = _depends_tokens(template["conditions"], f"{tpath}.template.conditions")
            for tok in tokens:
                if tok[0] == "name" and (tok[2] is not None or tok[1] not in names):
                    raise Invalid(f"{tpath}.template.conditions: {template['conditions']!r}: {tok[1]!r} is not a dependency")
            fires = _BoolParser(tokens, lambda tok: tok[1] in events, f"{tpath}.template.conditions", template["conditions"]).parse()
        else:
            fires = all(name in events for name in names)
        if not fires:
            continue
        ways = [w for w in ("argoWorkflow", "k8s") if w in template]
        if len(ways) != 1:
            raise Unsupported(f"{tpath}.template", f"exactly one of argoWorkflow, k8s (has {ways})")
        way = _keys(template[ways[0]], ARGO_TRIGGER, f"{tpath}.template.{ways[0]}")
        if way.get("operation", "submit" if ways[0] == "argoWorkflow" else "create") not in ("submit", "create"):
            raise Unsupported(f"{tpath}.template.{ways[0]}.operation", f"operation {way.get('operation')!r}")
        source = _keys(way.get("source") or {}, {"resource"}, f"{tpath}.template.{ways[0]}.source")
        resource = copy.deepcopy(source.get("resource"))
        if not isinstance(resource, dict) or resource.get("kind") != "Workflow":
            raise Unsupported(f"{tpath}.template.{ways[0]}.source.resource", "a resource that is not a Workflow")
        for pindex, param in enumerate(trigger.get("parameters") or []):
            ppath = f"{tpath}.parameters[{pindex}]"
            _keys(param, PARAMETER, ppath)
            src = _keys(param.get("src") or {}, PARAMETER_SRC, f"{ppath}.src")
            dep = src.get("dependencyName")
            if dep not in names:
                raise Invalid(f"{ppath}.src.dependencyName: {dep!r} is not a dependency")
            event = events.get(dep)
            found, value = False, None
            if event is not None:
                if "dataKey" in src:
                    data = event.get("data")
                    if isinstance(data, (str, bytes)):
                        data = json.loads(data)
                    found, value = gjson(data, src["dataKey"])
                elif "contextKey" in src:
                    found, value = gjson(event.get("context") or {}, src["contextKey"])
            if found:
                value = item_text(value)
            elif src.get("value") is not None:
                value = src["value"]
            else:
                raise Invalid(f"{ppath}.src: no value at {src.get('dataKey') or src.get('contextKey')!r} of {dep!r}'s event and no default `value`: the trigger fails")
            _set_path(resource, as_str(param.get("dest"), f"{ppath}.dest"), value, f"{ppath}.dest")
        out.append(resource)
    return out


# --- Argo Events: a webhook EventSource receiving a request ------------------------------------


class Unreachable(Exception):
    """No Service answers at that address (the request never reaches the EventSource)."""


WEBHOOK_EVENT = {"endpoint", "method", "port", "url", "authSecret"}


def webhook_request(event_source: dict, url: str, *, method: str = "POST", headers: dict | None = None, body=None,
                    secrets: dict | None = None) -> tuple[int, dict | None]:
    """What an in-cluster HTTP request to a webhook EventSource gets: (HTTP status, the event
    sent on to the Sensors, for sensor_workflows; None unless 200). Rules (argo-events v1.9.11):
    - a Service `<eventsource-name>-eventsource-svc` exists only when `spec.service.ports` is set
      (pkg/reconciler/eventsource/resource.go:424-437); the host must name it (alone, or with its
      namespace, `.svc`, `.svc.cluster.local`) and the port be one of its ports, else Unreachable;
      its targetPort must be a port a webhook event listens on;
    - the route is the event's `port` + `endpoint` (pkg/eventsources/common/webhook/webhook.go:
      131-136), else 404;
    - with `authSecret`: the Secret's key is the token (unreadable: 500), the `Authorization`
      header must be `Bearer <token>`, else 401 (webhook.go:138-151);
    - the method must be the event's (pkg/eventsources/sources/webhook/start.go:104-107: 400,
      pkg/shared/util/util.go:41-46);
    - the event's data is {"header": {name: [values]}, "body": <the JSON body>}
      (pkg/eventsources/events/event-data.go:328-335)."""
    from urllib.parse import urlsplit

    _keys(event_source, {"apiVersion", "kind", "metadata", "spec"}, "")
    spec = _keys(event_source.get("spec") or {}, {"webhook", "sqs", "service", "template"}, ".spec")
    name, namespace = event_source["metadata"]["name"], event_source["metadata"].get("namespace") or "default"
    parts = urlsplit(url)
    service = f"{name}-eventsource-svc"
    hosts = {service, f"{service}.{namespace}", f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local"}
    ports = {p.get("port"): p.get("targetPort", p.get("port")) for p in ((spec.get("service") or {}).get("ports") or [])}
    if not ports or parts.hostname not in hosts or parts.port not in ports:
        raise Unreachable(f"{url}: no Service {service!r} with port {parts.port} (spec.service.ports: {sorted(ports)})")
    routes = {}
    for event_name, event in (spec.get("webhook") or {}).items():
        _keys(event, WEBHOOK_EVENT, f".spec.webhook.{event_name}")
        routes[(int(event["port"]), event["endpoint"])] = (event_name, event)
    found = routes.get((int(ports[parts.port]), parts.path))
    if found is None:
        return 404, None
    _, event = found
    headers = dict(headers or {})
    if event.get("authSecret"):
        ref = event["authSecret"]
        token = (secrets or {}).get(ref.get("name"), {}).get(ref.get("key"))
        if token is None:
            return 500, None
        auth = headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or auth[len("Bearer "):] != token:
            return 401, None
    if event.get("method") != method:
        return 400, None
    if "Authorization" in headers:
        headers["Authorization"] = "*** Masked Auth Secret ***"  # webhook.go:153-156
    context = {"id": uuid.uuid4().hex, "source": name, "type": "webhook", "specversion": "1.0",
               "time": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    return 200, {"context": context, "data": {"header": {k: [v] for k, v in headers.items()}, "body": body}}


# --- CronWorkflow: when a schedule fires ---------------------------------------------------------

# robfig/cron v3.0.1, which Argo parses and runs CronWorkflow schedules with
# (argo-workflows workflow/validate/validate.go:449 cron.ParseStandard): each field's bounds and
# names (spec.go:23-48), day of week 0-6
_ROBFIG_BOUNDS = ((0, 59, {}), (0, 23, {}), (1, 31, {}),
                  (1, 12, {m: i + 1 for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split())}),
                  (0, 6, {d: i for i, d in enumerate("sun mon tue wed thu fri sat".split())}))


def robfig_schedule(expr: str) -> tuple[list[set[int]], bool, bool]:
    """A 5-field cron as robfig/cron v3.0.1 reads it: (each field's values, whether the day of
    month and the day of week carry the star bit). getField splits on ',' (parser.go:236-247);
    getRange (:251-317): `*` or `?` is the whole field WITH the star bit (:262-265), else `N` or
    `N-M` (names allowed, :321-328); `/S` steps, `N/S` runs to the field's end (:293-295), and a
    step > 1 clears the star bit (:296-298), so `*/1` keeps it; a start below the field, an end
    above it, a start after the end or a step 0 is an error (:305-316). Descriptors (`@daily`)
    are not modelled: raises Unsupported."""
    fields = expr.split()
    if len(fields) != 5 or expr.startswith("@"):
        raise Unsupported("schedule", f"{expr!r}: a 5-field cron (descriptors are not modelled)")
    values, stars = [], []
    for text, (low, high, names) in zip(fields, _ROBFIG_BOUNDS):
        out, star = set(), False
        for part in (p for p in text.split(",") if p):
            body, slash, step_text = part.partition("/")
            ends = body.split("-")
            if ends[0] in ("*", "?"):
                start, end, extra = low, high, True
            else:
                number = (lambda w: names[w.lower()] if w.lower() in names else int(w))
                start = number(ends[0])
                end = number(ends[1]) if len(ends) == 2 else start
                if len(ends) > 2:
                    raise Invalid(f"cron schedule {expr}: too many hyphens: {part}")
                extra = False
            step = int(step_text) if slash else 1
            if slash and len(ends) == 1:
                end = high
            if step > 1:
                extra = False
            if start < low or end > high or start > end or step == 0:
                raise Invalid(f"cron schedule {expr} is malformed: {part}")
            out |= set(range(start, end + 1, step))
            star = star or extra
        values.append(out)
        stars.append(star)
    return values, stars[2], stars[4]


def robfig_fires(schedule: tuple, when: dt.datetime) -> bool:
    """Whether a schedule (robfig_schedule's) fires at the minute `when`: its minute, hour and
    month match, and the day does by dayMatches (spec.go:177-188): both day fields must match when
    either carries the star bit, else either one."""
    (minutes, hours, dom, months, dow), dom_star, dow_star = schedule
    if when.minute not in minutes or when.hour not in hours or when.month not in months:
        return False
    day, weekday = when.day in dom, when.isoweekday() % 7 in dow
    return (day and weekday) if dom_star or dow_star else (day or weekday)
