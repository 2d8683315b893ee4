"""The artifact store: where steps read their inputs and write their outputs.

A local folder (the default, and a local run's workdir) or ``s3://bucket/prefix`` (what the
orchestrators use). Layout under the root:

    runs/<run_id>/run.json                      the local runner's record of a run
    runs/<run_id>/steps/<step_id>/              one step's outputs
    runs/<run_id>/items/<step_id>/<n>/          one fan-out item's outputs
    cache/<key>.json                            cache index: key -> outputs of an earlier run
    registry/<model>/<version>/                 deployed models (local target)

A step's outputs appear all at once: files go to a staging area, and ``manifest.json`` (the list
of files with their sha256) is written last. Readers only trust a location whose manifest
exists. Locally the staged folder is also renamed into place; on S3 the manifest is the commit.
A manifest may point at files of another run (a cache hit reuses outputs without copying).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

from ..errors import DagsmithError
from ..storeuri import store_uri

MANIFEST = "manifest.json"

# URI scheme -> the Store class for it, registered by the module that implements it (runtime/s3.py:
# "s3", imported with the runtime package): this module, their base, imports none of them.
STORES: dict[str, Callable[[str], "Store"]] = {}


class StoreError(DagsmithError):
    exit_code = 1


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _synced_temp(path: Path, data: bytes) -> str:
    """`data` written and fsynced to a temporary file beside `path` (so a rename or link of it
    is atomic); the caller removes it if it does not become `path`."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _synced_temp(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _create(path: Path, data: bytes) -> bool:
    """Write `path` only if it does not exist; whether it was written."""
    tmp = _synced_temp(path, data)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        Path(tmp).unlink(missing_ok=True)


def dumps(data) -> bytes:
    return (json.dumps(data, indent=1, sort_keys=True, default=str) + "\n").encode("utf-8")


class Staging:
    """A temporary local folder a step writes its outputs into before the commit."""

    def __init__(self, store: "Store", key: str):
        self.store = store
        self.key = key
        self.dir = Path(tempfile.mkdtemp(prefix="dagsmith-out-", dir=store.staging_root()))
        self.extra: dict = {}

    def path(self, name: str) -> Path:
        target = self.dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def write_json(self, name: str, data) -> None:
        self.path(name).write_bytes(dumps(data))

    def discard(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


class Store(ABC):
    """Common logic; subclasses move bytes (local filesystem or S3)."""

    uri: str

    @staticmethod
    def open(uri: str | os.PathLike) -> "Store":
        """A folder, or `scheme://...` for a store registered under that scheme."""
        try:
            text = store_uri(str(uri))  # `s3://b/p/` is `s3://b/p`: one key for each artifact
        except ValueError as exc:
            raise StoreError(str(exc)) from None
        scheme, separator, _ = text.partition("://")
        if not separator:
            return LocalStore(Path(text))
        if scheme not in STORES:
            raise StoreError(f"no artifact store for {scheme}:// URIs ({text}): use a folder or "
                             + ", ".join(f"{known}://" for known in sorted(STORES)))
        return STORES[scheme](text)

    # --- keys -----------------------------------------------------------------------------

    @staticmethod
    def step_key(run_id: str, step_id: str, item: int | None = None) -> str:
        # Items live apart from their step's folder, which is replaced whole on commit.
        return f"runs/{run_id}/steps/{step_id}" if item is None else f"runs/{run_id}/items/{step_id}/{item}"

    # --- outputs --------------------------------------------------------------------------

    def stage(self, key: str) -> Staging:
        return Staging(self, key)

    def commit(self, staging: Staging, extra: dict | None = None, exclusive: bool = False) -> dict:
        """Publish the staged files under staging.key; returns the manifest. `exclusive`: only if
        nothing is published there yet (a model version is never replaced): StoreError if it is."""
        files = {}
        for path in sorted(p for p in staging.dir.rglob("*") if p.is_file()):
            name = path.relative_to(staging.dir).as_posix()
            files[name] = {"key": f"{staging.key}/{name}", "sha256": sha256_file(path), "size": path.stat().st_size}
        manifest = {"files": files, **(extra or {}), **staging.extra}
        manifest["fingerprint"] = hashlib.sha256(
            json.dumps({n: f["sha256"] for n, f in files.items()}, sort_keys=True).encode()
        ).hexdigest()
        self._publish(staging, manifest, exclusive)
        return manifest

    def link(self, key: str, manifest: dict) -> None:
        """Publish an existing manifest (files stay where they are) at another key: a cache hit."""
        self.write_json(f"{key}/{MANIFEST}", manifest)

    def manifest(self, key: str) -> dict | None:
        return self.read_json(f"{key}/{MANIFEST}")

    def require(self, key: str) -> dict:
        manifest = self.manifest(key)
        if manifest is None:
            raise StoreError(f"no outputs at {self.uri.rstrip('/')}/{key} (did the step that makes them run?)")
        return manifest

    def file(self, manifest: dict, name: str) -> Path:
        """A local path to one file of a manifest (downloaded first on S3)."""
        entry = manifest["files"].get(name)
        if entry is None:
            raise StoreError(f"outputs have no file {name!r} (have: {', '.join(sorted(manifest['files']))})")
        return self.fetch(entry["key"])

    # --- subclass interface -----------------------------------------------------------------

    def staging_root(self) -> str | None:
        return None

    @abstractmethod
    def _publish(self, staging: Staging, manifest: dict, exclusive: bool) -> None: ...

    def _published_already(self, staging: Staging) -> StoreError:
        staging.discard()
        return StoreError(f"{self.uri.rstrip('/')}/{staging.key} is already published: it is never replaced")

    @abstractmethod
    def fetch(self, key: str) -> Path: ...

    @abstractmethod
    def read_json(self, key: str): ...

    @abstractmethod
    def write_json(self, key: str, data) -> None: ...

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    # Compare-and-swap of one small JSON object, for state that concurrent runs decide on
    # (min_interval admission): `read_versioned` gives the data and a version token (None: no
    # object), `write_if` writes only if the object is still at that version (None: only if it
    # still does not exist) and says whether it did. Two writers of one version: one wins.

    @abstractmethod
    def read_versioned(self, key: str) -> tuple[object, str | None]: ...

    @abstractmethod
    def write_if(self, key: str, data, version: str | None) -> bool: ...

    @abstractmethod
    def list(self, prefix: str) -> list[str]: ...


class LocalStore(Store):
    def __init__(self, root: Path):
        self.root = Path(root)
        self.uri = str(root)

    def staging_root(self) -> str:
        path = self.root / ".staging"
        path.mkdir(parents=True, exist_ok=True)
        return str(path)

    def _publish(self, staging: Staging, manifest: dict, exclusive: bool) -> None:
        (staging.dir / MANIFEST).write_bytes(dumps(manifest))
        target = self.root / staging.key
        target.parent.mkdir(parents=True, exist_ok=True)
        if exclusive:
            # rename(2) of a folder onto a folder that is not empty fails (ENOTEMPTY/EEXIST), and a
            # published folder holds at least its manifest: of two publishers, exactly one wins.
            try:
                os.rename(staging.dir, target)
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    raise self._published_already(staging) from None
                raise
            return
        if target.exists():  # a retry or a re-run: move the old outputs aside, then replace
            trash = self.root / ".staging" / f"old-{uuid.uuid4().hex}"
            os.replace(target, trash)
            shutil.rmtree(trash, ignore_errors=True)
        os.replace(staging.dir, target)

    def fetch(self, key: str) -> Path:
        return self.root / key

    def read_json(self, key: str):
        try:
            return json.loads((self.root / key).read_bytes())
        except FileNotFoundError:
            return None

    def write_json(self, key: str, data) -> None:
        atomic_write_bytes(self.root / key, dumps(data))

    def exists(self, key: str) -> bool:
        return (self.root / key).exists()

    def read_versioned(self, key: str) -> tuple[object, str | None]:
        try:
            raw = (self.root / key).read_bytes()
        except FileNotFoundError:
            return None, None
        return json.loads(raw), hashlib.sha256(raw).hexdigest()

    def write_if(self, key: str, data, version: str | None) -> bool:
        """Create (version None): link(2) of a complete temporary file to the name, which fails if
        the name exists (atomic, NFS included): of two creators exactly one wins, and no reader
        sees a partial file. Replace: under an exclusive lock of `<key>.lock` (flock: every process
        on this machine, the local runner's and Airflow's workers included), compare the current
        version, then replace the file atomically."""
        import fcntl

        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        if version is None:
            return _create(path, dumps(data))
        with open(path.with_name(path.name + ".lock"), "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                if self.read_versioned(key)[1] != version:
                    return False
                atomic_write_bytes(path, dumps(data))
                return True
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def list(self, prefix: str) -> list[str]:
        base = self.root / prefix
        if not base.is_dir():
            return []
        return sorted(p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file())
