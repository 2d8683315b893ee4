"""What a backend cannot express, reported all at once, never dropped.

Each backend declares its `Capabilities` (as a SQL dialect declares what it supports); the shared
`check_capabilities` turns what the IR asks for and the backend lacks into `Problem`s: an
error stops the compile, a warning is printed and the compile goes on. A problem names the spec
path it comes from (steps carry theirs as `Step.origin`), so the CLI, which holds the spec
document, prints it as FILE:LINE:COL.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UsageError
from ..ir import IR, Step

ERROR, WARNING = "error", "warning"


@dataclass(frozen=True)
class Problem:
    level: str  # error | warning
    path: tuple  # spec path, e.g. ("backends", "airflow", "operator") or ("steps", "notify", "image")
    message: str


def error(path: tuple, message: str) -> Problem:
    return Problem(ERROR, tuple(path), message)


def warning(path: tuple, message: str) -> Problem:
    return Problem(WARNING, tuple(path), message)


def step_path(step: Step, *field: str) -> tuple:
    """Where a step (or one of its fields) stands in the spec."""
    return tuple(step.origin) + field


class BackendProblems(UsageError):
    """The errors among a backend's problems, for callers without a spec document (positions
    are added by the CLI when it compiles from a spec)."""

    def __init__(self, target: str, problems: list[Problem]):
        self.target = target
        self.problems = [p for p in problems if p.level == ERROR]
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        from ..errors import format_path

        return [f"error: {format_path(p.path) or '<root>'}: {p.message}" for p in self.problems]


def raise_errors(target: str, problems: list[Problem]) -> None:
    if any(p.level == ERROR for p in problems):
        raise BackendProblems(target, problems)


@dataclass(frozen=True)
class Capabilities:
    """What a backend (in one of its modes) can do with the IR."""

    target: str  # e.g. "airflow"
    mode: str  # how it says itself in messages, e.g. "operator mode python"
    runs_images: bool  # each step runs in its own container image (image, resources apply)
    shared_disk: bool  # tasks share a file system (a folder store works)
    options_path: tuple = ()  # where this backend's options are: ("backends", "airflow")
    image_at_compile: bool = True  # runs_images: a step without an image is an error (False: the
    #                                backend takes a default image when it is deployed, and says so)


def check_capabilities(ir: IR, caps: Capabilities, store: str | None) -> list[Problem]:
    problems: list[Problem] = []
    imageless = [step for step in ir.steps if not step.image] if caps.runs_images and caps.image_at_compile else []
    if imageless and len(imageless) == len(ir.steps):
        # A spec written for a local run (no image anywhere): say ONCE what this backend needs,
        # at its options (the CLI puts a missing key at its nearest parent, else the top), not
        # one error per step.
        needs = "defaults.image (an image with dagsmith and your code installed)"
        if not caps.shared_disk and not store:
            needs += (f" and {'.'.join(caps.options_path)}.store (s3://bucket/prefix: the containers share no disk, "
                      "a run keeps its data there)")
            store = "s3://"  # said here: not again below
        problems.append(error(caps.options_path, f"{caps.mode} runs each step in a container, and no step has an image: "
                              f"set {needs}; the README's quick start shows both"))
        imageless = []
    if not caps.shared_disk and not (store or "").startswith("s3://"):
        problems.append(error(
            caps.options_path + ("store",),
            f"{caps.mode} runs each task in its own container, which share no disk: set "
            f"{'.'.join(caps.options_path)}.store: s3://bucket/prefix",
        ))
    if not caps.shared_disk:
        for step in ir.steps:
            uri = (step.config or {}).get("uri") if step.kind == "source" else None
            if uri and "://" not in uri:
                problems.append(warning(step_path(step, "uri"), f"{uri!r} is a path on this machine, but {caps.mode} runs tasks in "
                                        "containers that cannot see its files: use an s3:// URI (or a path inside the image)"))
    if caps.runs_images:
        for step in imageless:  # some steps have an image: each one without is an error at its place
            problems.append(error(step_path(step, "image"), f"{caps.mode} runs each step in its image: step {step.id!r} has none (set defaults.image or the step's image)"))
    else:
        for field in ("image", "resources"):
            problems.extend(_not_applied(ir, field, caps))
    return problems


def _not_applied(ir: IR, field: str, caps: Capabilities) -> list[Problem]:
    """ONE warning per field the backend cannot honour: at defaults.<field> when every step has
    a value (it came from defaults), else at the first step that has one, naming them all."""
    having = [step for step in ir.steps if getattr(step, field)]
    if not having:
        return []
    why = f"does not apply in {caps.mode}: steps run in the {caps.target} worker"
    if len(having) == len(ir.steps):
        return [warning(("defaults", field), why)]
    names = ", ".join(repr(step.id) for step in having[:5]) + (f" and {len(having) - 5} more" if len(having) > 5 else "")
    return [warning(step_path(having[0], field), f"{field} (of {names}) {why}")]
