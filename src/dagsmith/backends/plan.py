"""The execution plan: how a pipeline runs on an orchestrator, computed once from the IR.

Every backend is written against this plan, never against the spec, so what "a task", "a
fan-out", "a gate's scope" or "the command a container runs" means is decided here, once:

- tasks: one per IR step, plus the synthetic ones an orchestrator needs: a fan-out's range
  listing (`dagsmith-ranges-<step>`) and the `min_interval` admission (`dagsmith-admit`).
  Synthetic ids start with `dagsmith-`, a prefix the spec validator reserves, so no spec name
  can take one on any backend;
- edges between task ids, and each gate's scope (what a "no" skips: everything downstream);
- the command each task runs (`Command.argv`: the one place a `dagsmith` command line is
  built), with the run-environment contract of runtime/environment.py;
- where the run keeps its data (`store`) and where tasks read the IR, resolved at compile
  time from `backends.<name>` options: the runtime never looks them up;
- where tasks fetch the user's code (`code`: the code package under the store, backends/code.py),
  given to every step's container as DAGSMITH_CODE through `container_env`.

A backend turns tasks into its own objects (operators, templates, states); the shared checks
of `capabilities` report what it cannot express.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote_plus

from .. import cron, naming, references
from ..errors import DagsmithError
from ..ir import IR, Step, ir_filename
from ..runtime import environment as E
from ..runtime.environment import SKIP_EXIT_CODE

SYNTHETIC_PREFIX = "dagsmith-"
ADMIT_TASK = SYNTHETIC_PREFIX + "admit"


def ranges_task_id(step_id: str) -> str:
    return f"{SYNTHETIC_PREFIX}ranges-{step_id}"


class PlanBug(DagsmithError):
    """The plan broke an invariant a backend relies on: a dagsmith bug, reported as such."""

    exit_code = 3


@dataclass(frozen=True)
class Command:
    """A `dagsmith` command line, without the values only a backend knows (where the IR file
    is, which item range, where to write the outcome): `argv()` adds them. Holds no spec text
    but step ids (validated names), so it is safe in any shell or template."""

    verb: str  # "step" | "ranges" | "admit"
    step_id: str | None = None
    store: str | None = None
    max_ranges: int | None = None  # ranges: how many at most
    skip_exit_code: int | None = None  # gate / admit: exit code that means "skip what follows"
    takes_item: bool = False  # a fan-out's task: --item gets one range from the listing

    def argv(self, ir: str, *, item: str | None = None, outcome: str | None = None, status: str | None = None,
             wait: bool = False, program: str = "dagsmith") -> list[str]:
        """The whole command line; a fan-out's task needs its `item` (one range, as JSON)."""
        if self.takes_item != (item is not None):
            raise PlanBug(f"internal error (please report): {self.verb} {self.step_id!r} takes an item: {self.takes_item}")
        return self.prefix(ir, outcome=outcome, status=status, wait=wait, program=program) + (["--item", item] if item is not None else [])

    def prefix(self, ir: str, *, outcome: str | None = None, status: str | None = None, wait: bool = False,
               program: str = "dagsmith") -> list[str]:
        """The command line without its --item (a mapped task appends `--item RANGE`). `status`:
        where to write the one-word outcome; `wait` (admit): hold in the task, not by exit code."""
        if wait and self.verb != "admit":
            raise PlanBug(f"internal error (please report): only admit waits, not {self.verb}")
        out = [program, self.verb, ir]
        if self.step_id is not None:
            out.append(self.step_id)
        if self.verb == "ranges":
            out += ["--max", str(self.max_ranges)]
        if self.store:
            out += ["--store", self.store]
        if outcome is not None:
            out += ["--outcome", outcome]
        if status is not None:
            out += ["--status", status]
        if self.skip_exit_code is not None:
            out += ["--skip-exit-code", str(self.skip_exit_code)]
        if wait:
            out.append("--wait")
        return out


@dataclass(frozen=True)
class Task:
    id: str  # unique in the plan; a backend derives its own identifier (naming.*) from it
    kind: str  # "step" | "ranges" | "admit"
    command: Command
    step: Step | None = None  # the IR step it runs (or lists ranges for); None for admit
    upstream: tuple[str, ...] = ()
    maps_over: str | None = None  # a fan-out step: the ranges task whose JSON list it maps over
    skips: tuple[str, ...] = ()  # gate / admit: the tasks a "no" skips (its whole downstream)

    @property
    def synthetic(self) -> bool:
        return self.kind != "step"

    @property
    def decides(self) -> bool:
        """A gate or an admission: its outcome may skip what follows instead of failing it."""
        return bool(self.skips)


@dataclass(frozen=True)
class Admission:
    """`min_interval` on data-triggered runs (runtime/admission.py: one meaning everywhere)."""

    intervals: dict  # source -> seconds (0: none)


@dataclass(frozen=True)
class Param:
    name: str
    type: str  # integer | number | string | boolean
    default: object
    required: bool
    description: str | None
    enum: tuple | None


@dataclass(frozen=True)
class Plan:
    ir: IR
    tasks: tuple[Task, ...]  # topological order
    store: str | None  # None: the backend's own default (it must pass one to its tasks)
    ir_file: str  # the IR file's name beside the generated files
    ir_uri: str | None  # where containers read the IR when they share no disk (in the store)
    params: tuple[Param, ...]
    admission: Admission | None
    max_ranges: int
    root: str | None = None  # the spec's folder relative to the generated files' (None: unknown)
    code: str | None = None  # the code package's URI under the run's store (None: the code is in the image)
    _by_id: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        self._by_id.update({task.id: task for task in self.tasks})

    def task(self, task_id: str) -> Task:
        return self._by_id[task_id]

    @property
    def edges(self) -> list[tuple[str, str]]:
        return [(up, task.id) for task in self.tasks for up in task.upstream]

    def step_tasks(self) -> list[Task]:
        return [task for task in self.tasks if task.kind == "step"]

    @property
    def name(self) -> str:
        return self.ir.name

    @property
    def schedule(self) -> str | None:
        return self.ir.triggers.get("schedule")

    @property
    def schedule_written(self) -> str | None:
        """The schedule as a cron of the times it matches (cron.written), which Airflow's croniter
        and Argo's robfig/cron read as the spec means; the spec's text may read otherwise there."""
        return cron.written(self.schedule) if self.schedule else None

    @property
    def on_new_data(self) -> list[dict]:
        """The triggers, each `uri` the location it watches: the source's uri with `$${` read as
        the literal `${` (the spec check refuses a reference there, since a trigger is set up
        before any run's values exist; one that reaches here is a bug, never written raw)."""
        return [dict(trigger, uri=watched_location(trigger.get("uri"))) for trigger in self.ir.triggers.get("on_new_data") or []]


def watched_location(uri: str | None) -> str | None:
    if uri is None:
        return None

    def no_reference(name: str) -> str:
        raise PlanBug(f"internal error (please report): the watched uri {uri[:80]!r} holds the reference ${{{name}}}")

    return references.substitute(uri, no_reference)


def watched_key(key_pattern: str) -> tuple[str, bool]:
    """What new data in a watched S3 source is, from the key part of its uri: (the key prefix up to
    the first wildcard, True when the source is that ONE object: no wildcard, not a folder, a file
    name with an extension). One object arrives as exactly that key (`t.csv.bak` is not new data of
    `t.csv`); anything else arrives under the prefix. One rule for every backend's trigger."""
    prefix = re.sub(r"[*?\[].*$", "", key_pattern)  # up to the first wildcard
    one = prefix == key_pattern and bool(prefix) and not prefix.endswith("/") and "." in prefix.rsplit("/", 1)[-1]
    return prefix, one


@dataclass(frozen=True)
class NewObject:
    """Which S3 object-created notification is new data of a watched source (every backend's SQS
    filter): its bucket (None: any, the source is not on S3), and the key as S3 notifications
    carry it, URL-encoded with a space as '+': exactly `key` when `exact`, else any key starting
    with it."""
    bucket: str | None
    key: str
    exact: bool


def new_object(uri: str | None) -> NewObject:
    if not (uri or "").startswith("s3://"):
        return NewObject(None, "", False)
    bucket, _, key_pattern = str(uri)[len("s3://"):].partition("/")
    prefix, one_object = watched_key(key_pattern)
    return NewObject(bucket, quote_plus(prefix, safe="/"), one_object and bool(prefix))


def build_plan(ir: IR, *, store: str | None = None, max_ranges: int = 1024, ir_uri: str | None = None,
               output_dir: str | None = None, spec_dir: str | None = None, code_key: str | None = None) -> Plan:
    """The plan of `ir` for a backend that maps at most `max_ranges` instances per fan-out and
    keeps run data in `store` (None: the backend supplies its default at run time), writing its
    files to `output_dir` (relative paths of the spec resolve from there to the spec's folder);
    `code_key`: the code package's name (`code/<sha256>.json`), which tasks read under the store."""
    if max_ranges < 1:
        raise PlanBug(f"internal error (please report): max_ranges must be >= 1, got {max_ranges}")
    intervals = {t["source"]: int(t.get("min_interval") or 0) for t in ir.triggers.get("on_new_data") or []}
    admission = Admission(intervals) if any(intervals.values()) else None
    tasks: list[Task] = []
    if admission:
        tasks.append(Task(ADMIT_TASK, "admit", Command("admit", store=store, skip_exit_code=SKIP_EXIT_CODE)))
    last_task = {}  # step id -> the task whose success means the step is done
    for step in ir.steps:
        upstream = tuple(last_task[up] for up in step.depends_on)
        if admission and not step.depends_on:
            upstream = (ADMIT_TASK,)  # every root waits for admission
        maps_over = None
        if step.fanout is not None:
            listing = ranges_task_id(step.id)
            tasks.append(Task(listing, "ranges", Command("ranges", step.id, store=store, max_ranges=max_ranges), step=step, upstream=upstream))
            upstream, maps_over = (listing,), listing
        gate = step.kind == "gate"
        command = Command("step", step.id, store=store, skip_exit_code=SKIP_EXIT_CODE if gate else None, takes_item=maps_over is not None)
        tasks.append(Task(step.id, "step", command, step=step, upstream=upstream, maps_over=maps_over))
        last_task[step.id] = step.id
    tasks = _with_scopes(tasks)
    plan = Plan(
        ir=ir, tasks=tuple(tasks), store=store, ir_file=ir_filename(ir.name), ir_uri=ir_uri,
        params=tuple(Param(name, p["type"], p["default"], p["required"], p.get("description"), tuple(p["enum"]) if p.get("enum") else None)
                     for name, p in ir.params.items()),
        admission=admission, max_ranges=max_ranges, root=spec_folder_from(spec_dir, output_dir),
        code=f"{store.rstrip('/')}/{code_key}" if code_key and store else None,
    )
    _check(plan)
    return plan


def container_env(step: Step, writable=lambda value: True, code: str | None = None) -> dict[str, str]:
    """The step's `env` a container backend writes into the container's own environment: each
    value with no run-time reference, as the step gets it (`$${` written `${`), that the backend
    can write literally (`writable`: e.g. Argo substitutes every '{{' of a pod's spec). Then it is
    there from the process's start (a proxy or an S3 endpoint the IR is read through, a PYTHON*
    variable). The runtime sets EVERY `env` value when the step starts, references filled in with
    the run's values (runtime: step_variables), on every backend: what a container gets here is
    the same value, earlier; a value with `${run.id}` exists only once the run does.
    `code`: the plan's code package (Plan.code), as DAGSMITH_CODE: the backend's own expression of
    a location under the run's store, never spec text (a spec cannot set DAGSMITH_* variables)."""
    out = {E.CODE: code} if code else {}
    for name, value in sorted(step.env.items()):
        if next(references.references(value), None) is None:
            text = references.substitute(value, lambda _name: "")  # no reference: only `$${` -> `${`
            if writable(text):
                out[name] = text
    return out


def spec_folder_from(spec_dir: str | None, output_dir: str | None) -> str | None:
    """The spec's folder as seen from `output_dir` (both as given at compile time): generated
    files find the data a local run finds, with no absolute path written into them."""
    if output_dir is None or spec_dir is None:
        return None
    return Path(os.path.relpath(spec_dir, output_dir)).as_posix()


def _with_scopes(tasks: list[Task]) -> list[Task]:
    """A gate's or an admission's scope: every task downstream of it (tasks are topological)."""
    from dataclasses import replace

    downstream: dict[str, set[str]] = {task.id: set() for task in tasks}
    for task in reversed(tasks):
        for up in task.upstream:
            downstream[up] |= {task.id} | downstream[task.id]
    order = {task.id: index for index, task in enumerate(tasks)}
    return [
        replace(task, skips=tuple(sorted(downstream[task.id], key=order.get)))
        if task.kind == "admit" or (task.step is not None and task.step.kind == "gate") else task
        for task in tasks
    ]


def _check(plan: Plan) -> None:
    ids = [task.id for task in plan.tasks]
    problems = []
    if len(set(ids)) != len(ids):
        problems.append("duplicate task ids")
    if naming.collisions(ids):
        problems.append(f"task ids collide on a backend: {naming.collisions(ids)}")
    seen: set[str] = set()
    for task in plan.tasks:
        if not set(task.upstream) <= seen:
            problems.append(f"task {task.id!r} comes before its upstream {sorted(set(task.upstream) - seen)}")
        seen.add(task.id)
    if problems:
        raise PlanBug("internal error (please report): " + "; ".join(problems))

