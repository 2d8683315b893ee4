"""The serving bundle of one registry version, and the names remote targets give it.

A bundle is a model.tar.gz holding a tiny model registry with one model and one version as its
production (registry/<model>/<v>/..., plus the versions its partitions inherit, and
registry/<model>/aliases.json): unpacked into a folder, `dagsmith serve <model> --workdir
<folder>` (or the SageMaker mode, serving/sagemaker.py) serves exactly that version, with the
same code as a local `dagsmith serve`. Remote targets (SageMaker, KServe) download it; traffic
between versions is split by the target (variant weights, canaryTrafficPercent), not inside it.

It is committed to the store at deployments/<model>/<version>/model.tar.gz (once: a retry
reuses it), next to the registry, so an s3:// store is where SageMaker and KServe read it.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile

from . import registry
from .store import MANIFEST, Store, dumps

BUNDLE = "model.tar.gz"


def bundle_key(model: str, version: int) -> str:
    return f"deployments/{model}/{int(version)}"


def bundle_uri(store: Store, model: str, version: int) -> str:
    return f"{store.uri.rstrip('/')}/{bundle_key(model, version)}/{BUNDLE}"


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tar.addfile(info, io.BytesIO(data))


def publish(store: Store, model: str, version: int) -> str:
    """Commit the bundle of a version (unless it is there already); its URI."""
    key = bundle_key(model, version)
    if store.manifest(key) is None:
        index = registry.version_index(store, model, version)
        versions = sorted({int(version)} | {int(e["version"]) for e in index["models"] if "version" in e})
        staging = store.stage(key)
        with tarfile.open(staging.path(BUNDLE), "w:gz") as tar:
            for v in versions:
                manifest = registry.version_manifest(store, model, v)
                files = {}
                for name, entry in sorted(manifest["files"].items()):
                    inner = f"{registry.version_key(model, v)}/{name}"
                    tar.add(store.file(manifest, name), arcname=inner, recursive=False)
                    files[name] = {**entry, "key": inner}
                _add(tar, f"{registry.version_key(model, v)}/{MANIFEST}", dumps({**manifest, "files": files}))
            _add(tar, registry.aliases_key(model), dumps({"production": int(version), "canary": None, "history": []}))
        store.commit(staging)
    return bundle_uri(store, model, version)


def safe_name(text: str, limit: int, pattern: str = r"[^A-Za-z0-9-]+", lower: bool = False) -> str:
    """`text` with what a target cannot spell replaced by '-', within `limit` characters; when
    anything had to change, a hash of the original keeps two different texts apart."""
    source = text.lower() if lower else text
    cleaned = re.sub(r"-{2,}", "-", re.sub(pattern, "-", source)).strip("-") or "x"
    if cleaned == text and len(cleaned) <= limit:
        return cleaned
    return cleaned[: limit - 9].rstrip("-") + "-" + short_hash(text)


def short_hash(*parts, size: int = 8) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:size]


def read_target_state(store: Store, model: str, target: str) -> dict | None:
    """What the last deploy to a remote target recorded (deployments/<model>/<target>.json):
    where the model is served, so promote / rollback can move its traffic. Never a secret."""
    return store.read_json(f"deployments/{model}/{target}.json")


def write_target_state(store: Store, model: str, target: str, state: dict) -> None:
    store.write_json(f"deployments/{model}/{target}.json", state)


def traffic(aliases: dict) -> dict[int, float]:
    """{version: percent of requests} the aliases mean: production the rest, the canary its share."""
    production, canary = aliases.get("production"), aliases.get("canary")
    if production is None:
        return {}
    if not canary or canary.get("version") in (None, production):
        return {int(production): 100.0}
    percent = float(canary["traffic_percent"])
    return {int(production): 100.0 - percent, int(canary["version"]): percent}
