"""The code package: the spec folder's Python modules, shipped to pods through the store.

A pipeline whose steps name user code (a custom `python:` step, a feature `transform:`,
`training.model.entrypoint`, an estimator or a metric function of a module in the spec folder)
runs on an orchestrator's pods, which do not have the spec folder. `dagsmith compile` packages
the folder's `*.py` files into ONE JSON text document and writes it beside the generated files;
`dagsmith deploy` puts it in the store; every task gets its URI as DAGSMITH_CODE, and
`dagsmith step` fetches it, checks its hash, unpacks it once per machine and puts it FIRST on
sys.path before any user code is imported (docs/shipping-code.md).

The package is deterministic and content-addressed:

    {"files": {"my_pkg/__init__.py": "...", "steps.py": "..."}, "format": "dagsmith-code/1"}

(keys sorted; paths relative, '/'-separated), named `code/<sha256 of its bytes>.json`: the same
sources give the same name on every machine, and a pod can verify what it fetched.

What is packaged (every rule here; docs/shipping-code.md repeats them): every `*.py` file under the
spec folder, except in hidden folders (`.git`, `.venv`, the local store `.dagsmith`), hidden files,
`__pycache__`, `node_modules`, `site-packages`, `build` and `dist` folders, virtualenvs (a folder
with a `pyvenv.cfg`), the folder a compile writes to, and DAG files dagsmith generated. Symlinked folders are not followed; a
`.py` symlink leaving the folder, a file that is not UTF-8, more than MAX_FILES files or a
package over MAX_BYTES is an error.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from .context import StepFailed

FORMAT = "dagsmith-code/1"
FOLDER = "code"  # under the store: <store>/code/<sha256>.json
MAX_FILES = 2000
MAX_BYTES = 16 * 1024 * 1024  # the whole package (JSON text, UTF-8)
SKIPPED_FOLDERS = frozenset({"__pycache__", "node_modules", "site-packages", "build", "dist"})
CACHE_ENV = "DAGSMITH_CODE_CACHE"  # where pods unpack packages (default: <tmp>/dagsmith-code-<uid>)
_NAME = re.compile(r"(?:^|/)([0-9a-f]{64})\.json\Z")  # \Z: not before a final newline
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class CodePackageError(UsageError):
    """The spec folder cannot be packaged (compile time: nothing is written)."""


@dataclass(frozen=True)
class Package:
    text: str  # the JSON document
    files: tuple[str, ...]  # the relative paths it holds

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    @property
    def key(self) -> str:
        """Its name under the store and beside the generated files."""
        return f"{FOLDER}/{self.sha256}.json"

    def has_module(self, top: str) -> bool:
        return any(path == f"{top}.py" or path.startswith(f"{top}/") for path in self.files)


# --- compile time: what is referenced, and the package ---------------------------------------


def top_module(reference: str) -> str | None:
    """`pkg.mod:function` / `pkg.mod.Name` -> "pkg"; None when it is no Python reference."""
    module = reference.partition(":")[0].strip()
    top = module.split(".")[0]
    return top if _IDENTIFIER.fullmatch(top or "") else None


def in_folder(top: str, folder: str | os.PathLike) -> bool:
    """Whether the top-level module `top` is a module or package of `folder` that the package
    holds (a package in a folder the rules leave out, e.g. `build/`, is not)."""
    base = Path(folder)
    if (base / f"{top}.py").is_file():
        return not top.startswith(".")
    return (base / top).is_dir() and _descend(base / top, top, set())


def build(folder: str | os.PathLike, exclude: tuple = (), skip=None) -> Package:
    """The package of `folder` (see the module's rules); `exclude`: folders left out (the outputs);
    `skip(text)`: whether a file is left out for what it holds (a generated DAG file)."""
    base = Path(folder)
    root = base.resolve()
    excluded = {Path(path).resolve() for path in exclude if path}
    files: dict[str, str] = {}
    total = 0
    for current, folders, names in os.walk(base, followlinks=False):
        here = Path(current)
        folders[:] = sorted(name for name in folders if _descend(here / name, name, excluded))
        for name in sorted(names):
            if name.startswith(".") or not name.endswith(".py"):
                continue
            path = here / name
            relative = path.relative_to(base).as_posix()
            if path.is_symlink():
                target = path.resolve()
                if not target.is_relative_to(root) or not target.is_file():
                    raise CodePackageError(f"{relative}: a symlink to {target} outside the spec folder {root}; the code package holds "
                                           "only the spec folder's files: copy the module in, or bake it into the image (backends.<target>.code: image)")
            try:
                source = path.read_bytes().decode("utf-8")
            except UnicodeDecodeError as exc:
                raise CodePackageError(f"{relative} is not UTF-8 text ({exc.reason} at byte {exc.start}): the code package holds "
                                       "Python sources as text") from None
            except OSError as exc:
                raise CodePackageError(f"cannot read {relative}: {exc.strerror}") from None
            if skip is not None and skip(source):
                continue
            files[relative] = source
            total += len(source.encode("utf-8"))
            if len(files) > MAX_FILES:
                raise CodePackageError(f"the spec folder {base} has more than {MAX_FILES} Python files to package: keep the pipeline's "
                                       "code in a smaller folder, or bake it into the image (backends.<target>.code: image)")
            if total > MAX_BYTES:
                raise CodePackageError(f"the Python files of the spec folder {base} are over {MAX_BYTES // (1024 * 1024)} MB: keep the "
                                       "pipeline's code in a smaller folder, or bake it into the image (backends.<target>.code: image)")
    text = json.dumps({"format": FORMAT, "files": files}, sort_keys=True, indent=1, ensure_ascii=False) + "\n"
    if len(text.encode("utf-8")) > MAX_BYTES:
        raise CodePackageError(f"the code package of {base} would be over {MAX_BYTES // (1024 * 1024)} MB")
    return Package(text, tuple(sorted(files)))


def _descend(path: Path, name: str, excluded: set) -> bool:
    if name.startswith(".") or name in SKIPPED_FOLDERS or path.is_symlink():
        return False
    if (path / "pyvenv.cfg").is_file():  # a virtualenv
        return False
    return path.resolve() not in excluded


# --- run time: fetch, verify, unpack, import ------------------------------------------------

_active: dict[str, Path] = {}  # URI -> its unpacked folder, in this process


def sha_of(uri: str) -> str:
    match = _NAME.search(uri)
    if not match:
        raise StepFailed(f"DAGSMITH_CODE={uri[:200]!r} is not a code package (…/code/<sha256>.json)")
    return match.group(1)


def fetch(uri: str) -> bytes:
    """The package's bytes, from a path or s3://, at most MAX_BYTES."""
    if uri.startswith("s3://"):
        from .s3 import client, split_uri

        try:
            bucket, key = split_uri(uri)
            key = "/".join(part for part in key.split("/") if part)  # a store given with a trailing '/'
            body = client().get_object(Bucket=bucket, Key=key)["Body"]
            data = body.read(MAX_BYTES + 1)
        except Exception as exc:  # noqa: BLE001 - any S3 failure means the same to the user
            raise StepFailed(f"cannot read the code package {uri}: {_short(exc)}") from None
    elif "://" in uri:
        raise StepFailed(f"cannot read the code package {uri}: only a path or s3:// is supported")
    else:
        try:
            with open(uri, "rb") as handle:
                data = handle.read(MAX_BYTES + 1)
        except OSError as exc:
            raise StepFailed(f"cannot read the code package {uri}: {exc.strerror}") from None
    if len(data) > MAX_BYTES:
        raise StepFailed(f"the code package {uri} is over {MAX_BYTES // (1024 * 1024)} MB: not a package dagsmith wrote")
    return data


def _short(exc: BaseException) -> str:
    from ..errors import hide_connections

    return hide_connections(f"{type(exc).__name__}: {exc}")[:300]


def files_of(uri: str, data: bytes) -> dict[str, str]:
    """The package's files, after checking its hash against its name and every path."""
    sha = sha_of(uri)
    if hashlib.sha256(data).hexdigest() != sha:
        raise StepFailed(f"the code package {uri} does not match its name (sha256 {hashlib.sha256(data).hexdigest()[:12]}…): "
                         "it was changed or cut short; deploy again")
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise StepFailed(f"the code package {uri} is not JSON") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT or not isinstance(document.get("files"), dict):
        raise StepFailed(f"the code package {uri} is not a {FORMAT} package (a newer dagsmith wrote it?)")
    files = document["files"]
    if len(files) > MAX_FILES:
        raise StepFailed(f"the code package {uri} holds more than {MAX_FILES} files")
    for path, source in files.items():
        parts = str(path).split("/")
        if (not isinstance(source, str) or not str(path).endswith(".py") or str(path).startswith("/") or "\\" in str(path)
                or "\x00" in str(path) or any(part in ("", ".", "..") for part in parts)):
            raise StepFailed(f"the code package {uri} holds {str(path)[:80]!r}, which is not a relative path of a .py file")
    return files


def cache_root() -> Path:
    """This user's folder of unpacked packages: owned by it, writable by it alone (a shared /tmp
    must not let another user put code where a step imports it)."""
    root = Path(os.environ.get(CACHE_ENV) or Path(tempfile.gettempdir()) / f"dagsmith-code-{os.getuid()}")
    try:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = root.lstat()
    except OSError as exc:
        raise StepFailed(f"cannot make the code cache {root}: {exc.strerror}") from None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
        raise StepFailed(f"the code cache {root} is not a folder of this user's alone (owner, mode): remove it, or set {CACHE_ENV}")
    return root


def unpack(uri: str, data: bytes) -> Path:
    """The package's folder `<cache>/<sha256>`, made once: written in a temporary folder beside it,
    then renamed into place (atomic), so concurrent steps never import a half-written package;
    the one that loses the race drops its copy and uses the winner's (the same bytes)."""
    files = files_of(uri, data)
    root = cache_root()
    target = root / sha_of(uri)
    if target.is_dir():
        return target
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name[:12]}-", dir=root))
    try:
        for path, source in sorted(files.items()):
            destination = staging / path
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_bytes(source.encode("utf-8"))
        try:
            os.rename(staging, target)
        except OSError:
            if not target.is_dir():  # not another step's copy: a real failure
                raise
    except OSError as exc:
        raise StepFailed(f"cannot unpack the code package {uri} into {root}: {exc.strerror}") from None
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def activate(uri: str) -> Path:
    """Fetch (once per process), verify and unpack the package at `uri`, and put its folder first
    on sys.path. Every failure is a StepFailed naming the URI."""
    folder = _active.get(uri)
    if folder is None:
        sha = sha_of(uri)
        cached = cache_root() / sha
        folder = cached if cached.is_dir() else unpack(uri, fetch(uri))
        _active[uri] = folder
    entry = str(folder)
    if entry in sys.path:
        sys.path.remove(entry)
    sys.path.insert(0, entry)
    import importlib

    importlib.invalidate_caches()
    return folder


def active_folders() -> list[str]:
    return [str(folder) for folder in _active.values()]
