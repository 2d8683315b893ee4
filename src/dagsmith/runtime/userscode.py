"""Importing the user's own code (`package.module:function`) from the spec's folder."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path

from .context import StepFailed


def _with_root(root: Path) -> None:
    folder = str(Path(root).resolve())
    if folder not in sys.path:
        sys.path.insert(0, folder)


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
