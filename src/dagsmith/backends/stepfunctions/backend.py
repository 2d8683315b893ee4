"""AWS Step Functions backend: the execution plan as a state machine (ASL) and the CloudFormation
template that deploys it with its compute, roles, schedule and new-data rules; the IR beside them.

    <name>.asl.json        the definition; `${Name}` are the template's parameters/resources
    <name>.template.yaml   CloudFormation: the state machine (definition embedded with Fn::Sub),
                           ECS task definitions or Batch job definitions, least-privilege roles,
                           an EventBridge Scheduler schedule, EventBridge rules on S3 Object
                           Created, the admission lock table
    <name>.ir.json         the IR (deploy uploads it to the store, where tasks read it)
    code/<sha256>.json     the spec folder's Python modules, when steps name them (backends/code.py;
                           deploy uploads it beside the IR, tasks get it as DAGSMITH_CODE)

Options (`backends.stepfunctions`): compute (ecs | batch), store (s3://bucket/prefix), role_arn
(use this role instead of creating one), region, state_machine_name, max_map_length (task
instances per fan-out, default 10,000), inline_map_limit (Map items up to which an inline Map
runs, at most 40; more go to a Distributed Map), admission_lease_seconds (min_interval's lock
lease, default 1800), parameters (template parameter values), new_data_marker (the object whose
arrival starts a run for on_new_data, default _SUCCESS; null: every object), code (store | image:
where tasks get the user's modules, backends/code.py).
docs/backends/stepfunctions.md has the mapping and the reasons.
"""

from __future__ import annotations

import re

from ... import naming
from ...errors import UsageError
from ...ir import IR
from .. import code
from . import asl, limits
from ..plan import Plan, build_plan
from ..problems import Capabilities, Problem, check_capabilities, error, raise_errors, step_path, warning
from .cfn import NEW_DATA_MARKER, S3_BUCKET, STORE_PREFIX_MAX, STORE_PREFIX_PATTERN, TemplateBuilder, s3_parts, cron_expression, fargate_size, image_param, logical_id

OPTIONS = ("backends", "stepfunctions")
CAPABILITIES = Capabilities("stepfunctions", "Step Functions", runs_images=True, shared_disk=False, options_path=OPTIONS,
                            image_at_compile=False)  # the template's DefaultImage parameter
DEFAULT_MAX_MAP_LENGTH = 10_000
STORE_PLACEHOLDER = "s3://${ArtifactBucket}/${StorePrefix}"
_MACHINE_NAME = re.compile(r"[A-Za-z0-9_-]{1,80}")


def machine_name(ir: IR, options: dict) -> str:
    return options.get("state_machine_name") or naming.sfn_state_name(ir.name)


class StepFunctionsBackend:
    name = "stepfunctions"
    default_output = "build/stepfunctions"

    # --- the plan -------------------------------------------------------------------------

    def plan(self, ir: IR, options: dict, package=None) -> Plan:
        """The store is the template's bucket and prefix (Fn::Sub), filled in at deploy time;
        tasks read the IR from the store, named by the spec's hash, and the code `package` (when
        the spec folder's code is shipped: backends/code.py) under it too."""
        return build_plan(ir, store=STORE_PLACEHOLDER, max_ranges=int(options.get("max_map_length", DEFAULT_MAX_MAP_LENGTH)),
                          ir_uri=self.ir_uri(ir, STORE_PLACEHOLDER), code_key=package.key if package else None)

    @staticmethod
    def ir_key(ir: IR) -> str:
        return f"ir/{ir.name}-{(ir.pipeline.get('spec_hash') or '')[:12]}.ir.json"

    def ir_uri(self, ir: IR, store: str) -> str:
        return f"{store.rstrip('/')}/{self.ir_key(ir)}"

    def settings(self, plan: Plan, options: dict) -> asl.Settings:
        return asl.Settings(
            compute=options.get("compute", "ecs"),
            inline_limit=int(options.get("inline_map_limit", asl.INLINE_MAP_MAX)),
            ir_uri=plan.ir_uri,
            task_ref={t.id: logical_id("Job" if options.get("compute") == "batch" else "Task", t.id) for t in plan.tasks},
            image_param={t.id: image_param(t.step.image if t.step else None) for t in plan.tasks},
            locking=True,
            lease_seconds=int(options.get("admission_lease_seconds", asl.LOCK_LEASE_SECONDS)),
            code=plan.code,
        )

    # --- capabilities ---------------------------------------------------------------------

    def check(self, ir: IR, options: dict) -> list[Problem]:
        store = options.get("store")
        problems = check_capabilities(ir, CAPABILITIES, store or STORE_PLACEHOLDER)
        problems += code.option_problems(CAPABILITIES, options)
        imageless = [step for step in ir.steps if not step.image]
        if imageless and len(imageless) == len(ir.steps):  # once, not once per step
            problems.append(warning(OPTIONS, "no step has an image: the template's DefaultImage parameter must be given when it "
                                    "is deployed (or set defaults.image)"))
        for step in imageless if len(imageless) < len(ir.steps) else ():
            problems.append(warning(step_path(step, "image"), f"step {step.id!r} has no image: the template's DefaultImage "
                                    "parameter must be given when it is deployed (or set defaults.image)"))
        if store is not None and (not store.startswith("s3://") or "${" in store or not store[5:].split("/")[0]):
            problems.append(error(OPTIONS + ("store",), f"{store!r}: the store is an S3 location, s3://bucket/prefix"))
        compute = options.get("compute", "ecs")
        if compute not in ("ecs", "batch"):
            problems.append(error(OPTIONS + ("compute",), f"{compute!r} is not a Step Functions compute (ecs | batch)"))
        name = machine_name(ir, options)
        if not _MACHINE_NAME.fullmatch(name):
            problems.append(error(OPTIONS + ("state_machine_name",), f"{name[:40]!r}: a state machine name is 1 to 80 letters, digits, '-' and '_'"))
        limit = options.get("inline_map_limit", asl.INLINE_MAP_MAX)
        if not 1 <= int(limit) <= asl.INLINE_MAP_MAX:
            problems.append(error(OPTIONS + ("inline_map_limit",), f"must be 1 to {asl.INLINE_MAP_MAX} (an inline Map's limit)"))
        lease = options.get("admission_lease_seconds", asl.LOCK_LEASE_SECONDS)
        if not isinstance(lease, int) or isinstance(lease, bool) or not 1 <= lease <= 86_400:
            problems.append(error(OPTIONS + ("admission_lease_seconds",), "must be a whole number of seconds, 1 to 86400"))
        elif lease <= asl.ADMIT_TIMEOUT_SECONDS:
            problems.append(warning(OPTIONS + ("admission_lease_seconds",), f"{lease} s is not longer than an admission may take "
                                    f"({asl.ADMIT_TIMEOUT_SECONDS} s): a live admission's lock can be taken over"))
        if int(options.get("max_map_length", DEFAULT_MAX_MAP_LENGTH)) < 1:
            problems.append(error(OPTIONS + ("max_map_length",), "must be at least 1"))
        for index, value in enumerate((options.get("parameters") or {}).items()):
            if "${" in str(value[1]):
                problems.append(error(OPTIONS + ("parameters", value[0]), "a parameter value cannot contain '${'"))
        if ir.triggers.get("schedule"):
            try:
                cron_expression(ir.triggers["schedule"])
            except ValueError as exc:
                problems.append(error(("triggers", "schedule"), str(exc)))
        marker = options.get("new_data_marker", NEW_DATA_MARKER)
        if marker is not None and (not isinstance(marker, str) or not marker or "/" in marker):
            problems.append(error(OPTIONS + ("new_data_marker",), f"{marker!r}: the marker is an object's name (no '/'), "
                                  "e.g. _SUCCESS, or null to start a run for every object"))
        for index, trigger in enumerate(ir.triggers.get("on_new_data") or []):
            if marker is None and not trigger.get("min_interval"):
                problems.append(warning(("triggers", "on_new_data", index), "new_data_marker is null: every object that lands "
                                        "starts an execution (a drop of 100 files, 100 runs); set min_interval or a marker"))
            if trigger.get("queue"):
                problems.append(warning(("triggers", "on_new_data", index, "queue"), "Step Functions starts runs from an EventBridge "
                                        "rule on the bucket's Object Created events (turn on its EventBridge notifications); the SQS queue is not used"))
        for step in ir.steps:
            uri = str((step.config or {}).get("uri") or "") if step.kind == "source" else ""
            if uri.startswith("s3://") and not S3_BUCKET.fullmatch(s3_parts(uri)[0]):
                problems.append(error(step_path(step, "uri"), f"{s3_parts(uri)[0][:80]!r} is not an S3 bucket name: the tasks' role may read "
                                      "exactly this bucket, named when the stack is deployed (a reference cannot name it; the key may hold one)"))
            distributed = (step.config or {}).get("distributed") if step.kind == "train" else None
            if distributed and step.fanout is not None:
                problems.append(error(step_path(step, "distributed"), "distributed training inside a sweep is not supported on Step Functions"))
            gpus = int((distributed or {}).get("gpus_per_worker") or step.resources.get("gpu") or 0)
            if gpus and not distributed and compute == "ecs":
                problems.append(error(step_path(step, "resources", "gpu"), "ECS Fargate has no GPUs: set backends.stepfunctions.compute: batch "
                                      "(a job queue on an EC2 compute environment with GPUs)"))
            if not distributed and not gpus:
                try:
                    fargate_size(step.resources)
                except ValueError as exc:
                    problems.append(error(step_path(step, "resources"), str(exc)))
        _, prefix = s3_parts((store or "s3://b/dagsmith").rstrip("/"))
        if store and store.startswith("s3://") and not prefix:  # `${StorePrefix}/ir/...` would be `/ir/...`
            problems.append(error(OPTIONS + ("store",), f"{store!r} has no prefix: the template's StorePrefix keys every "
                                  "artifact, so write s3://bucket/prefix (e.g. s3://bucket/dagsmith)"))
        given_prefix = (options.get("parameters") or {}).get("StorePrefix")
        if given_prefix is not None and not re.fullmatch(STORE_PREFIX_PATTERN, str(given_prefix)):
            problems.append(error(OPTIONS + ("parameters", "StorePrefix"), f"{str(given_prefix)[:60]!r}: a key prefix is segments "
                                  "joined by single '/', none before or after (CloudFormation refuses another)"))
        if len(prefix.strip("/")) > STORE_PREFIX_MAX:
            problems.append(error(OPTIONS + ("store",), f"the store's prefix is {len(prefix.strip('/'))} characters: at most "
                                  f"{STORE_PREFIX_MAX} (the template's StorePrefix, in every task's environment)"))
        if not any(p.level == "error" for p in problems):  # what AWS refuses at run time and moto does not
            plan = self.plan(ir, options)
            problems += limits.check(plan, self.settings(plan, options))
        return list(dict.fromkeys(problems))

    # --- files ----------------------------------------------------------------------------

    def build(self, ir: IR, options: dict, package=None) -> tuple[Plan, dict, dict]:
        """(plan, definition, template), or a BackendProblems naming what cannot be built."""
        raise_errors(self.name, self.check(ir, options))
        plan = self.plan(ir, options, package)
        settings = self.settings(plan, options)
        try:
            definition = asl.build(plan, settings)
        except asl.NameCollision as exc:
            raise_errors(self.name, [error(OPTIONS, str(exc))])
        text = asl.dumps(definition)
        size = len(text.encode("utf-8"))
        problems = []
        if size > asl.MAX_DEFINITION_BYTES:
            problems.append(error(OPTIONS, f"the state machine definition is {size:,} bytes, over Step Functions' 1 MB"))
        events = asl.history_bound(plan, settings)
        if events > asl.HISTORY_LIMIT:
            problems.append(error(OPTIONS, f"an execution could use up to {events:,} history events (limit {asl.HISTORY_LIMIT:,}): "
                                           "lower retries, or set inline_map_limit lower so that fan-outs run as a Distributed Map"))
        raise_errors(self.name, problems)
        template = TemplateBuilder(plan, options, machine_name(ir, options), escape_sub(text, known_names(settings, options)),
                                   settings.task_ref).build()
        return plan, definition, template

    def emit(self, ir: IR, options: dict, output_dir: str | None = None, spec_dir: str | None = None) -> dict[str, str]:
        package = self.package(ir, options, spec_dir, output_dir)
        plan, definition, template = self.build(ir, options, package)
        name = machine_name(ir, options)
        files = {f"{name}.asl.json": asl.dumps(definition), f"{name}.template.yaml": dump_yaml(template), plan.ir_file: ir.dumps()}
        if package:
            files[package.key] = package.text
        return files

    @staticmethod
    def package(ir: IR, options: dict, spec_dir: str | None, output_dir: str | None = None):
        """The code package of the spec folder, when its modules are shipped (backends/code.py)."""
        if code.option_problems(CAPABILITIES, options):
            return None  # reported by check
        return code.package(ir, CAPABILITIES, options, spec_dir, output_dir)

    def check_code(self, ir: IR, options: dict, spec_dir: str | None) -> list[Problem]:
        """Referenced user code the tasks will not get (backends/code.py): warnings."""
        return code.problems(ir, CAPABILITIES, options, spec_dir)

    machine_name = staticmethod(machine_name)

    @staticmethod
    def template_text(template: dict) -> str:
        return dump_yaml(template)

    def deploy(self, ir: IR, options: dict, request, spec_dir: str | None = None) -> list[str]:
        from .deploy import deploy

        return deploy(self, ir, options, request, spec_dir=spec_dir)


def known_names(settings: asl.Settings, options: dict) -> set[str]:
    """What `${...}` in the definition may name: the template's parameters and resources."""
    return ({"ArtifactBucket", "StorePrefix", "Cluster", "Subnets", "SecurityGroups", "AssignPublicIp", "JobQueue",
             "TrainingInstanceType", "LockTable", "SageMakerRole.Arn"}
            | set(settings.task_ref.values()) | set(settings.image_param.values()))


def escape_sub(text: str, known: set[str]) -> str:
    """The definition for Fn::Sub: `${Name}` of the template stays, any other `${` is written
    `${!` (Fn::Sub's literal), so no spec text becomes a reference."""
    return re.sub(r"\$\{(?!(?:" + "|".join(re.escape(k) for k in sorted(known, key=len, reverse=True)) + r")\})", "${!", text)


def dump_yaml(data: dict) -> str:
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper, value: str):
        style = "|" if "\n" in value and not any(line != line.rstrip() for line in value.split("\n")) else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)
    return yaml.dump(data, Dumper=Dumper, sort_keys=True, allow_unicode=True, width=120, default_flow_style=False)
