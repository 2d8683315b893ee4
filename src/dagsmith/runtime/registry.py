"""The model registry: deployed models in the artifact store (local folder or S3).

Layout (all through the Store API, so it is the same on S3):

    registry/<model>/<version>/manifest.json    the version's files (committed atomically)
    registry/<model>/<version>/model.json       index: {model_name, version, task, target,
                                                partition_by, models: [{partition, file, version}]}
    registry/<model>/<version>/model.joblib     unpartitioned: the model (see train.py: a dict of
                                                estimator, columns, encoding, target, task, ...)
    registry/<model>/<version>/models/<n>.joblib  partitioned: one model per partition
    registry/<model>/<version>/metrics.json     evaluation metrics ({metric: v} or {partition: {...}})
    registry/<model>/<version>/lineage.json     run id, pipeline, spec hash, input fingerprints, ...
    registry/<model>/aliases.json               {"production": v | null,
                                                 "canary": {"version": v, "traffic_percent": p} | null,
                                                 "history": [earlier production versions]}
    registry/<model>/claims/<version>.json      who allocated the version: {run_id, model_fingerprint}

Versions are 1, 2, 3, ... and never change once written. Deploys of concurrent runs allocate them
atomically: a version is CLAIMED first (a create-only write: an exclusive create locally, a PUT with
If-None-Match: * on S3), and only its claimant publishes it (an exclusive commit, which never replaces
a published version). The aliases move by compare-and-swap (`move_aliases`), so no deploy's move
is lost. A partitioned version lists every
partition it serves; a partition whose new model did not pass the gates keeps the model of the
previous production version (its `models` entry names that `version`).
"""

from __future__ import annotations

import json

from collections.abc import Callable

from .context import StepFailed
from .store import Store, StoreError

_models: dict = {}


class RegistryError(StepFailed):
    pass


def model_key(model: str) -> str:
    return f"registry/{model}"


def version_key(model: str, version: int) -> str:
    return f"registry/{model}/{int(version)}"


def aliases_key(model: str) -> str:
    return f"registry/{model}/aliases.json"


def versions(store: Store, model: str) -> list[int]:
    """Committed versions of a model, ascending."""
    found = set()
    for key in store.list(f"{model_key(model)}/"):
        parts = key.split("/")
        if len(parts) == 4 and parts[3] == "manifest.json" and parts[2].isascii() and parts[2].isdigit():
            found.add(int(parts[2]))
    return sorted(found)


def claim_key(model: str, version: int) -> str:
    return f"registry/{model}/claims/{int(version)}.json"


def claimed(store: Store, model: str) -> list[int]:
    """Allocated versions (published or still being published), ascending."""
    found = set()
    for key in store.list(f"{model_key(model)}/claims/"):
        name = key.rsplit("/", 1)[-1]
        stem = name[: -len(".json")] if name.endswith(".json") else ""
        if stem.isascii() and stem.isdigit():
            found.add(int(stem))
    return sorted(found)


CLAIM_ATTEMPTS = 1000  # versions tried past the highest known one before giving up


def claim_version(store: Store, model: str, owner: dict) -> int:
    """A new version number that no other deploy has or will get: the first free one after every
    version claimed or published, taken by a create-only write of its claim (of racing deploys,
    one wins each number; the others try the next)."""
    version = max([0, *versions(store, model), *claimed(store, model)]) + 1
    for _ in range(CLAIM_ATTEMPTS):
        if store.write_if(claim_key(model, version), owner, None):
            if store.manifest(version_key(model, version)) is None:
                return version
            # published without a claim (by a dagsmith older than claims): never replaced
        version += 1
    raise RegistryError(f"model {model!r}: no free version after {CLAIM_ATTEMPTS} tries in {store.uri}")


def claim_of(store: Store, model: str, version: int) -> dict | None:
    """Who allocated a version: its claim, else (a version older than claims) its lineage."""
    found = store.read_json(claim_key(model, version))
    if found is None and store.manifest(version_key(model, version)) is not None:
        try:
            lineage = read_version_json(store, model, version, "lineage.json")
        except (StepFailed, StoreError, OSError, ValueError):
            return None
        found = {k: lineage.get(k) for k in ("run_id", "model_fingerprint")}
    return found if isinstance(found, dict) else None


def empty_aliases() -> dict:
    return {"production": None, "canary": None, "history": []}


def read_aliases(store: Store, model: str) -> dict:
    data = store.read_json(aliases_key(model))
    return {**empty_aliases(), **(data or {})}


def write_aliases(store: Store, model: str, aliases: dict) -> None:
    store.write_json(aliases_key(model), aliases)  # one atomic write (rename locally, PUT on S3)


ALIAS_ATTEMPTS = 50  # compare-and-swap rounds when other deploys keep moving the aliases


def move_aliases(store: Store, model: str, change: Callable[[dict], dict]) -> tuple[dict, dict]:
    """Apply `change` (current aliases -> new aliases; it may act, e.g. serve them remotely, and
    is called again if another deploy moved them meanwhile) by compare-and-swap. Returns (the
    aliases it was applied to, the new aliases)."""
    for _ in range(ALIAS_ATTEMPTS):
        data, token = store.read_versioned(aliases_key(model))
        current = {**empty_aliases(), **(data or {})}
        new = change(current)
        if new == current or store.write_if(aliases_key(model), new, token):
            return current, new
    raise RegistryError(f"model {model!r}: the aliases changed {ALIAS_ATTEMPTS} times while this deploy moved them: try again")


def put_back_aliases(store: Store, model: str, before: dict, after: dict) -> bool:
    """Undo a move from `before` to `after` that could not be carried out remotely, by
    compare-and-swap: only while the aliases are still `after` (a deploy, promote or rollback
    that moved them since keeps its move). True when they were put back."""
    before, after = {**empty_aliases(), **before}, {**empty_aliases(), **after}
    applied, new = move_aliases(store, model, lambda current: before if current == after else current)
    return applied == after and new == before


def production_version(store: Store, model: str) -> int | None:
    return read_aliases(store, model)["production"]


def canary(store: Store, model: str) -> dict | None:
    return read_aliases(store, model)["canary"]


def resolve(store: Store, model: str, ref: int | str = "production") -> int:
    """'production' | 'canary' | 'latest' | a version number -> a version number."""
    if isinstance(ref, int) or (isinstance(ref, str) and ref.isascii() and ref.isdigit()):
        version = int(ref)
        if version not in versions(store, model):
            raise RegistryError(f"model {model!r} has no version {version} (versions: {versions(store, model)})")
        return version
    if ref == "latest":
        found = versions(store, model)
        if not found:
            raise RegistryError(f"model {model!r} has no versions in {store.uri}")
        return found[-1]
    aliases = read_aliases(store, model)
    if ref == "production":
        if aliases["production"] is None:
            raise RegistryError(f"model {model!r} has no production version in {store.uri}")
        return aliases["production"]
    if ref == "canary":
        if not aliases["canary"]:
            raise RegistryError(f"model {model!r} has no canary")
        return aliases["canary"]["version"]
    raise RegistryError(f"unknown model version {ref!r}: a number, production, canary or latest")


def version_manifest(store: Store, model: str, version: int) -> dict:
    manifest = store.manifest(version_key(model, version))
    if manifest is None:
        raise RegistryError(f"model {model!r} has no version {version} in {store.uri}")
    return manifest


def read_version_json(store: Store, model: str, version: int, name: str):
    manifest = version_manifest(store, model, version)
    return json.loads(store.file(manifest, name).read_text(encoding="utf-8"))


def version_index(store: Store, model: str, version: int) -> dict:
    """The version's model.json."""
    return read_version_json(store, model, version, "model.json")


def model_entry(index: dict, partition=None) -> dict | None:
    """The `models` entry for a partition (None for an unpartitioned model), or None."""
    for entry in index["models"]:
        if entry.get("partition") == partition:
            return entry
    return None


def has_partition(store: Store, model: str, version: int, partition=None) -> bool:
    return model_entry(version_index(store, model, version), partition) is not None


def load_model(store: Store, model: str, version: int, partition=None) -> dict:
    """The model dict of one version (and partition): {estimator, columns, encoding, task, ...}."""
    import joblib

    index = version_index(store, model, version)
    entry = model_entry(index, partition)
    if entry is None:
        have = [e.get("partition") for e in index["models"]]
        what = f"partition {partition!r}" if partition is not None else "an unpartitioned model"
        raise RegistryError(f"model {model!r} version {version} has no {what} (has: {have})")
    source = entry.get("version", version)
    cache_key = (store.uri, model, source, entry["file"])
    if cache_key not in _models:
        if len(_models) >= 32:
            _models.pop(next(iter(_models)))
        path = store.file(version_manifest(store, model, source), entry["file"])
        _models[cache_key] = joblib.load(path)
    return _models[cache_key]
