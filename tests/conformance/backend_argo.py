"""Argo Workflows without a cluster: `dagsmith compile --target argo`, the WorkflowTemplate checked
strictly against Argo's schema and run by the test-only interpreter of the subset the backend
emits (tests/backend_argo/interpreter.py: containers as local processes), against moto's S3.

- start(): moto's S3 server on 127.0.0.1 (a thread of this process; no boto3 patching, so the
  pytest process and the other lanes are untouched) and a bucket.
- prepare(): a copy of the spec beside it (`pipeline.argo-conformance.yaml`, so the spec's folder
  stays the root) with `backends.argo.store` on that bucket, compiled.
- run(): the WorkflowTemplate submitted (`argo submit --from workflowtemplate/NAME -p ...`) with
  the run's params as workflow arguments, a fresh store prefix per run through the workflow
  parameter `dagsmith-store`, the IR put where the pods read it under that store (the emitted
  args: `{{workflow.parameters.dagsmith-store}}/ir/<pipeline>-<hash>.ir.json`) and the code package
  beside it when the spec folder's modules are shipped (`.../code/<sha256>.json`), the run date as the
  workflow's creationTimestamp, the controller's time zone not UTC (so a run date read in the
  controller's zone would differ from the local run's), retries off (the suite's contract, as the Airflow
  adapter sets retries=0: the templates' `retryStrategy` is removed). The pods' environment: PATH
  with this venv's bin (the image has `dagsmith`), moto's endpoint and credentials (the node's
  IAM role), nothing else of this process; their working directory is the spec's folder (the
  image's working directory, where the data files are).
- States: a node runs the plan task named by its template's annotation `dagsmith.dev/task`
  (ids starting `dagsmith-` are not steps); Succeeded -> succeeded, Skipped -> skipped,
  Failed/Error -> failed, Omitted -> not_run when a task it depends on (transitively) failed, else
  skipped (a decider it reads was itself Skipped: it `depends` on `<decider>.Succeeded`); a step
  with no node at all -> never_started (Argo's fail-fast stopped it; no other backend reports
  that, so the comparison shows it). A fan-out step's instances are its pods. The store is read (StoreView) in a child process with moto's environment.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import yaml

from dagsmith.spec.yamlpos import load_text

from .adapters import Adapter, Outcome, combine, read_ir

BIN = Path(sys.executable).parent
TESTS = Path(__file__).resolve().parents[1]
BUCKET = "dagsmith-conformance"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
STATES = {"Succeeded": "succeeded", "Skipped": "skipped", "Failed": "failed", "Error": "failed", "Omitted": "not_run"}
TASK_ANNOTATION = "dagsmith.dev/task"
STORE_PARAM = "dagsmith-store"
CONTROLLER_TZ = "Pacific/Pago_Pago"  # UTC-11: a run date read in the controller's zone is a day before, at midnight UTC

READ_STORE = """
import json, sys
sys.path.insert(0, sys.argv[1])
from conformance.adapters import StoreView
store, run_id, ir_file = sys.argv[2:5]
view = StoreView(store, run_id, json.load(open(ir_file, encoding="utf-8")))
print(json.dumps({"metrics": view.metrics(), "gates": view.gates(), "validation": view.validation(), "rows": view.rows(),
                  "items": view.items(), "deployed": view.deployed(), "tables": view.tables(), "gate_passed": view.gate_passed()}))
"""


def spec_text(data: dict) -> str:
    """The spec as JSON (YAML reads it as the same strings); unicode stays raw, except what YAML 1.1
    reads as a line break even inside quotes (as scenarios.write_spec writes specs)."""
    text = json.dumps(data, indent=1, ensure_ascii=False)
    for char in ("\x85", "\u2028", "\u2029"):
        text = text.replace(char, f"\\u{ord(char):04x}")
    return text + "\n"


class ArgoAdapter(Adapter):
    name = "argo"
    slow = True

    def __init__(self):
        self.server = None
        self.endpoint: str | None = None
        self.lock = threading.Lock()
        self.count = 0

    def unavailable(self) -> str | None:
        import importlib.util

        for module, extra in (("hera", "argo"), ("moto", "test"), ("boto3", "aws")):
            if importlib.util.find_spec(module) is None:
                return f"{module} is not installed: pip install 'dagsmith[{extra}]'"
        return None

    def map_limit_options(self, limit: int) -> dict:
        return {"max_fanout_pods": limit}

    def start(self, workspace: Path) -> None:
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        self.workspace = Path(workspace)
        self.s3().create_bucket(Bucket=BUCKET)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def s3(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                            region_name="us-east-1")

    def environ(self) -> dict:
        """What every pod starts from (see the module docstring), and the child reading the store."""
        # PYTHONPATH: the dagsmith under test is the image's (a worktree's src, not the venv's install)
        python_path = {"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH") else {}
        return {"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "HOME": os.environ.get("HOME", "/root"),
                "LANG": "C.UTF-8", "AWS_ENDPOINT_URL": self.endpoint, **CREDENTIALS, "PYTHONHASHSEED": "0", **python_path}

    def prepare(self, spec: Path, *, env: str | None, workdir: Path):
        spec = Path(spec)
        with self.lock:
            self.count += 1
            tag = f"{Path(workdir).name}-{self.count}"
        data = load_text(spec.read_text(encoding="utf-8"), str(spec))  # as dagsmith reads specs (`on:` stays a key)
        backends = dict(data.get("backends") or {})
        backends["argo"] = {**(backends.get("argo") or {}), "store": f"s3://{BUCKET}/compiled/{tag}"}
        data["backends"] = backends
        # the scenarios name no image (the interpreter runs this checkout's `dagsmith` whatever it is)
        data["defaults"] = {"image": "dagsmith:conformance", **(data.get("defaults") or {})}
        copy_path = spec.parent / "pipeline.argo-conformance.yaml"
        copy_path.write_text(spec_text(data), encoding="utf-8")
        out = Path(workdir) / "argo"
        argv = [str(BIN / "dagsmith"), "compile", copy_path.name, "--target", "argo", "-o", str(out)]
        if env:
            argv += ["--env", env]
        result = subprocess.run(argv, capture_output=True, text=True, cwd=spec.parent)
        assert result.returncode == 0, f"dagsmith compile --target argo failed:\n{result.stderr[-3000:]}"
        from backend_argo import schemas

        (template_file,) = out.glob("*.workflow-template.yaml")
        documents = {path.name: yaml.safe_load(path.read_text(encoding="utf-8")) for path in sorted(out.glob("*.yaml"))}
        for document in documents.values():
            schemas.check(document)
        template = documents[template_file.name]
        (ir_file,) = out.glob("*.ir.json")
        return {"template": template, "ir_key": self.ir_key(template), "ir": read_ir(ir_file), "ir_file": ir_file, "root": spec.parent, "documents": documents,
                "code": sorted(out.glob("code/*.json"))}

    @staticmethod
    def ir_key(template: dict) -> str:
        """Where the pods read the IR (the argument after the verb of every dagsmith command),
        relative to the run's store."""
        uris = set()
        for t in template["spec"]["templates"]:
            if "container" in t:
                args = t["container"].get("args") or []
                assert t["container"].get("command") == ["dagsmith"] and args[0] in ("step", "ranges", "admit"), t
                uris.add(args[1])
        (uri,) = uris
        prefix = "{{workflow.parameters.%s}}/" % STORE_PARAM
        assert uri.startswith(prefix), uri
        return uri[len(prefix):]

    def run(self, handle, *, params: dict, run_date: str | None, workdir: Path) -> Outcome:
        from backend_argo.interpreter import Interpreter

        template = copy.deepcopy(handle["template"])
        for t in template["spec"]["templates"]:
            t.pop("retryStrategy", None)  # retries off
        store = f"s3://{BUCKET}/runs/{Path(workdir).name}"
        created = (dt.datetime.fromisoformat(run_date).replace(tzinfo=dt.timezone.utc) if run_date
                   else dt.datetime.now(dt.timezone.utc))
        self.s3().upload_file(str(handle["ir_file"]), BUCKET, f"runs/{Path(workdir).name}/{handle['ir_key']}")
        for package in handle["code"]:  # the spec folder's code, where the pods' DAGSMITH_CODE points (as deploy puts it)
            self.s3().upload_file(str(package), BUCKET, f"runs/{Path(workdir).name}/code/{package.name}")
        scratch = Path(workdir) / "argo-pods"
        scratch.mkdir(exist_ok=True)
        interpreter = Interpreter(base_env=self.environ(), cwd=handle["root"], max_pods=2, scratch=scratch,
                                  controller_tz=CONTROLLER_TZ)
        arguments = {name: str(value) for name, value in params.items()}
        arguments[STORE_PARAM] = store
        result = interpreter.submit(template, parameters=arguments, created=created)

        ir = handle["ir"]
        steps = {s["id"] for s in ir["steps"]}
        templates = {t["name"]: t for t in template["spec"]["templates"]}
        per_step: dict = {sid: [] for sid in steps}
        pods: dict = {sid: 0 for sid in steps}
        native = {}
        failed_below = self.failed_below(template, result.nodes)
        for node in result.nodes:
            if node.type == "DAG":
                continue
            native[node.name] = (node.phase, node.message or None, node.stderr[-400:] or None) if node.phase != "Succeeded" else node.phase
            task_id = self.task_of(templates, node.template)
            if task_id not in steps:
                continue  # dagsmith-admit, dagsmith-ranges-*
            state = STATES[node.phase]
            if node.phase == "Omitted" and node.task not in failed_below:
                state = "skipped"  # omitted because a decider it reads was Skipped: a "no" upstream
            per_step[task_id].append(state)
            pods[task_id] += node.type in ("Pod", "Resource")  # a task instance that ran (a pod, or a training job)
        got = subprocess.run([sys.executable, "-c", READ_STORE, str(TESTS), store, result.name, str(handle["ir_file"])],
                             capture_output=True, text=True, env=self.environ(), timeout=300)
        assert got.returncode == 0, got.stderr[-3000:]
        view = json.loads(got.stdout)
        status = {"Succeeded": "succeeded"}.get(result.phase, "failed")
        if status == "succeeded" and not view["gate_passed"]:
            status = "gated"
        return Outcome(
            backend=self.name,
            status=status,
            steps={sid: combine(states) if states else "never_started" for sid, states in per_step.items()},
            metrics=view["metrics"],
            gates=view["gates"],
            validation=view["validation"],
            rows=view["rows"],
            items=view["items"],
            deployed=view["deployed"],
            tables=view["tables"],
            run_id=result.name,
            run_date=result.created.date().isoformat(),
            root=Path(handle["root"]),
            instances=pods,
            native={"workflow": (result.phase, result.message), **native},
        )

    @staticmethod
    def failed_below(template: dict, nodes) -> set:
        """The DAG tasks of the entrypoint with a Failed/Error task among their `depends` ancestors."""
        (entry,) = [t for t in template["spec"]["templates"] if t["name"] == template["spec"]["entrypoint"]]
        from backend_argo.interpreter import depends_names

        deps = {t["name"]: depends_names(t["depends"], t["name"]) if t.get("depends") else [] for t in entry["dag"]["tasks"]}
        failed = {n.task for n in nodes if n.phase in ("Failed", "Error")}
        out: set = set()
        changed = True
        while changed:
            changed = False
            for task, ups in deps.items():
                if task not in out and any(up in failed or up in out for up in ups):
                    out.add(task)
                    changed = True
        return out

    @staticmethod
    def task_of(templates: dict, name: str | None) -> str | None:
        """The plan task a template runs: its annotation, or (a fan-out's items DAG template) that
        of the one template its tasks call."""
        template = templates.get(name) or {}
        annotation = ((template.get("metadata") or {}).get("annotations") or {}).get(TASK_ANNOTATION)
        if annotation or "dag" not in template:
            return annotation
        called = {task["template"] for task in template["dag"]["tasks"]}
        return ArgoAdapter.task_of(templates, called.pop()) if len(called) == 1 else None


ADAPTER = ArgoAdapter()
