"""The raw spec document: includes, environment overlays and position look-ups.

Everything here works on YMap/YList trees, so a value keeps the Mark of the file and line it
came from even after it was merged in from an include or an overlay.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ..errors import Diagnostic, Mark, SpecError, did_you_mean, format_path
from . import limits
from .yamlpos import YList, YMap, describe, load_file


def display_name(path: Path) -> str:
    """How errors name a file: relative to the working directory when it is below it."""
    try:
        return Path(os.path.relpath(path)).as_posix() if not path.is_absolute() or path.is_relative_to(Path.cwd()) else path.as_posix()
    except ValueError:  # another drive on Windows
        return path.as_posix()


INCLUDE_ROOT_ENV = "DAGSMITH_INCLUDE_ROOT"


def include_roots(spec_path: Path) -> tuple[Path, ...]:
    """The folders includes may read from: the git work tree holding the spec (the nearest parent
    with a `.git` entry), else the spec's own folder; plus $DAGSMITH_INCLUDE_ROOT when set."""
    try:
        folder = Path(spec_path).resolve().parent
    except (OSError, RuntimeError):
        folder = Path(spec_path).absolute().parent
    default = folder
    for candidate in (folder, *folder.parents):
        if os.path.lexists(candidate / ".git"):
            default = candidate
            break
    roots = [default]
    extra = os.environ.get(INCLUDE_ROOT_ENV)
    if extra:
        try:
            roots.append(Path(extra).resolve())
        except (OSError, RuntimeError):
            roots.append(Path(extra).absolute())
    return tuple(roots)


def _inside(path: Path, roots: tuple[Path, ...]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


def load_document(path: Path) -> YMap:
    """Load a spec with its includes merged in (the including file wins over its includes).

    Each file is read and parsed once per call, however often it is included (a file that
    includes the next one twice, 16 levels deep, is 17 reads, not 65,536); the include depth and
    the number of files are limited (spec/limits.py), and each is checked before the file is read."""
    path = Path(path)
    return _Loader(include_roots(path)).load(path, stack=())


def _check_regular(path: Path, display: str) -> None:
    """Refuse a FIFO, a device (/dev/zero)...: reading one would block or never end; and a file
    larger than the limit (before reading it)."""
    try:
        info = path.stat()
    except OSError:
        return  # load_file reports why it cannot be read
    if not stat.S_ISREG(info.st_mode):
        raise SpecError([Diagnostic(Mark(display, 1, 1), "", "not a regular file (a folder, a device or a pipe cannot be a spec)")])
    if info.st_size > limits.MAX_FILE_BYTES:
        raise SpecError([Diagnostic(Mark(display, 1, 1), "", f"file too large: {info.st_size:,} bytes, at most {limits.MAX_FILE_BYTES:,}")])


class _Loader:
    """One load_document call: the files loaded so far (their merged tree, or their SpecError)."""

    def __init__(self, roots: tuple[Path, ...]):
        self.roots = roots
        self.done: dict[Path, YMap | SpecError] = {}
        self.height: dict[Path, int] = {}  # a loaded file -> how many levels of includes it has below it
        self.reads = 0  # files read so far

    def load(self, path: Path, stack: tuple[Path, ...]) -> YMap:
        try:
            real = path.resolve()
        except (OSError, RuntimeError):
            real = path.absolute()
        found = self.done.get(real)
        if found is None:
            try:
                found = self._load(path, real, stack)
            except SpecError as exc:
                found = exc
            self.done[real] = found
        if isinstance(found, SpecError):
            raise SpecError(found.diagnostics)
        return found

    def _load(self, path: Path, real: Path, stack: tuple[Path, ...]) -> YMap:
        roots = self.roots
        display = display_name(path)
        _check_regular(path, display)
        self.reads += 1
        root = load_file(path, display)
        if not isinstance(root, YMap):
            mark = getattr(root, "mark", None) or Mark(display, 1, 1)
            raise SpecError([Diagnostic(mark, "", f"the top level must be a mapping of sections (dagsmith:, pipeline:, ...), got {describe(root)}")])
        if "include" not in root:
            return root
        includes = root["include"]
        key_mark = root.key_marks["include"]
        items = [includes] if isinstance(includes, str) else includes
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise SpecError([Diagnostic(key_mark, "include", "include takes a file path or a list of file paths")])
        merged: YMap | None = None
        problems: list[Diagnostic] = []
        for index, item in enumerate(items):
            where = format_path(("include",) if isinstance(includes, str) else ("include", index))
            mark = root.value_marks["include"] if isinstance(includes, str) else includes.item_marks[index]
            target = path.parent / item
            outside = f"included file {item!r} leaves the include root {display_name(roots[0])!r} (the git work tree holding the spec, else its folder; set ${INCLUDE_ROOT_ENV} to allow another folder)"
            if "\x00" in item or not _inside(Path(os.path.normpath(real.parent / item)), roots):
                problems.append(Diagnostic(mark, where, outside))
                continue
            try:
                is_file, is_dir = target.is_file(), target.is_dir()
                target_real = target.resolve()
            except (OSError, ValueError, RuntimeError):  # a name too long, a symlink loop (RuntimeError before 3.13)...
                is_file, is_dir, target_real = False, False, Path(os.path.normpath(real.parent / item))
            if not _inside(target_real, roots):  # a symlink that leads out of the root
                problems.append(Diagnostic(mark, where, outside))
                continue
            if target_real in stack + (real,):
                chain = " -> ".join(display_name(p) for p in stack + (real, target_real))
                problems.append(Diagnostic(mark, where, f"include cycle: {chain}"))
                continue
            if not is_file:
                exists = not is_dir and os.path.exists(target)
                what = "is a folder, not a file" if is_dir else "is not a regular file" if exists else "does not exist"
                problems.append(Diagnostic(mark, where, f"included file {item!r} {what} (paths are relative to {display_name(path.parent) or '.'})"))
                continue
            if len(stack) + 1 + self.height.get(target_real, 0) > limits.MAX_INCLUDE_DEPTH:  # checked before reading it
                problems.append(Diagnostic(mark, where, f"includes nested too deeply: more than {limits.MAX_INCLUDE_DEPTH} levels of files including files"))
                continue
            if target_real not in self.done and self.reads >= limits.MAX_INCLUDE_FILES:
                problems.append(Diagnostic(mark, where, f"too many included files: a spec may read at most {limits.MAX_INCLUDE_FILES} files, itself included"))
                break
            try:
                included = self.load(target, stack + (real,))
            except SpecError as exc:
                problems.extend(exc.diagnostics)
                continue
            merged = included if merged is None else merge(merged, included)
            self.height[real] = max(self.height.get(real, 0), 1 + self.height.get(target_real, 0))
        if problems:
            raise SpecError(problems)
        own = YMap(((k, v) for k, v in root.items() if k != "include"), mark=root.mark)
        for key in own:
            own.key_marks[key] = root.key_marks[key]
            own.value_marks[key] = root.value_marks[key]
        return merge(merged, own) if merged is not None else own


def merge(base: YMap, overlay: YMap) -> YMap:
    """Deep merge: mappings merge key by key, other values replace, null deletes."""
    out = YMap(base, mark=base.mark)
    out.key_marks = dict(base.key_marks)
    out.value_marks = dict(base.value_marks)
    for key, value in overlay.items():
        if value is None:
            out.pop(key, None)
            out.key_marks.pop(key, None)
            out.value_marks.pop(key, None)
            continue
        if isinstance(value, YMap) and isinstance(out.get(key), YMap):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
        out.key_marks[key] = overlay.key_marks[key]
        out.value_marks[key] = overlay.value_marks[key]
    return out


def apply_environment(doc: YMap, env: str | None) -> YMap:
    """Merge `environments.<env>` onto the spec; the result has no `environments` section."""
    environments = doc.get("environments")
    base = YMap(((k, v) for k, v in doc.items() if k != "environments"), mark=doc.mark)
    for key in base:
        base.key_marks[key] = doc.key_marks[key]
        base.value_marks[key] = doc.value_marks[key]
    if env is None:
        return base
    known = sorted(environments) if isinstance(environments, dict) else []
    if env not in known:
        mark = doc.key_marks.get("environments", doc.mark)
        listing = ", ".join(known) if known else "none are defined"
        hint = did_you_mean(env, known)
        raise SpecError([Diagnostic(mark, "environments", f"unknown environment {env!r} (known: {listing})", hint)])
    overlay = environments[env]
    if not isinstance(overlay, YMap):
        raise SpecError([Diagnostic(environments.value_marks[env], f"environments.{env}", f"an environment must be a mapping of spec sections, got {describe(overlay)}")])
    for key in ("dagsmith", "environments", "include"):
        if key in overlay:
            raise SpecError([Diagnostic(overlay.key_marks[key], f"environments.{env}.{key}", f"an environment cannot set '{key}'")])
    return merge(base, overlay)


def locate(doc, path: tuple, *, key: bool = False) -> Mark:
    """The Mark of the value (or key) at `path`, or of its nearest ancestor that has one."""
    mark = getattr(doc, "mark", None)
    node = doc
    for index, part in enumerate(path):
        last = index == len(path) - 1
        if isinstance(node, YMap) and part in node:
            mark = node.key_marks[part] if (key and last) else node.value_marks[part]
            node = node[part]
        elif isinstance(node, YList) and isinstance(part, int) and 0 <= part < len(node):
            mark = node.item_marks[part]
            node = node[part]
        else:
            break
    return mark or Mark("<spec>", 1, 1)


def locate_nearest(doc, path: tuple) -> Mark:
    """Where a message about `path` goes: its value when the spec has it; else the key of its
    nearest parent the spec has (`backends:` for a missing backends.argo.store); else the top of
    the file. Never a line that holds something else (the value of a neighbour)."""
    node = doc
    parent_key: Mark | None = None
    for part in path:
        if isinstance(node, YMap) and part in node:
            parent_key = node.key_marks.get(part)
            node = node[part]
        elif isinstance(node, YList) and isinstance(part, int) and 0 <= part < len(node):
            parent_key = node.item_marks[part]
            node = node[part]
        else:
            top = getattr(doc, "mark", None)
            return parent_key or Mark(top.file if top else "<spec>", 1, 1)
    return locate(doc, path)
