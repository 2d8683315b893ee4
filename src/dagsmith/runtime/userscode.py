"""The user's own code: importing it (`package.module:function`) from the spec's folder, what a
training entrypoint is given, and how its errors are reported."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import os
import sys
import traceback
from pathlib import Path

from .context import StepFailed
from .environment import CODE


@dataclasses.dataclass(frozen=True)
class TrainContext:
    """What a training entrypoint gets as `context` (runtime/train.py, one per worker in
    runtime/distributed.py)."""

    rank: int
    world_size: int
    output_dir: Path
    target: str
    features: list
    partition: object
    trial: int | None
    run_id: str
    params: dict


def user_code_error(what: str, exc: BaseException) -> StepFailed:
    """The step's failure for an exception raised in user code, with the user's traceback."""
    frames = traceback.format_exception(type(exc), exc, exc.__traceback__)
    # Drop our own frame (the call into user code), keep theirs.
    detail = "".join(frames[:1] + frames[2:]).rstrip()
    return StepFailed(f"{what} raised {type(exc).__name__}: {exc}\n{detail}")


def _with_root(root: Path) -> None:
    """The folders user modules import from: the code package of DAGSMITH_CODE first (what was
    deployed wins over whatever the image's folder holds), then the spec's folder."""
    folder = str(Path(root).resolve())
    if folder not in sys.path:
        sys.path.insert(0, folder)
    code = os.environ.get(CODE)
    if code:
        from .codepack import activate

        activate(code)  # first on sys.path


user_path = _with_root


def import_function(reference: str, root: Path):
    module_name, _, attribute = reference.partition(":")
    _with_root(root)
    try:
        target = importlib.import_module(module_name)
    except ImportError as exc:
        raise StepFailed(f"cannot import {module_name!r} for {reference!r}: {exc}") from None
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise StepFailed(f"{module_name!r} has no {attribute!r} (from {reference!r})") from None
    if not callable(target):
        raise StepFailed(f"{reference!r} is not callable")
    return target


def code_fingerprint(reference: str, root: Path) -> str:
    """A hash of the module file behind `package.module:function` (without importing it),
    so a cached step re-runs when the user's code changes."""
    module_name = reference.partition(":")[0]
    _with_root(root)
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        spec = None
    origin = getattr(spec, "origin", None)
    if not origin or not Path(origin).is_file():
        return f"unresolved:{reference}"
    return hashlib.sha256(Path(origin).read_bytes()).hexdigest()
