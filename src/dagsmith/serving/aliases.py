"""promote and rollback: move a model's aliases (registry/<model>/aliases.json).

promote   the canary becomes production; the previous production goes to the end of history;
          the canary is cleared. No canary: an error.
rollback  the last version of history becomes production again (it leaves history); the
          production being rolled back is dropped (not pushed to history, so two rollbacks go
          two versions back); any canary is cleared. No history: an error.

Each is a compare-and-swap of the file (registry.move_aliases): a deploy or another command that
moves the aliases meanwhile is not undone, the change is decided again on what it wrote. A
running `dagsmith serve` notices the new file and switches without a restart.
"""

from __future__ import annotations

from ..runtime import registry
from ..runtime.store import Store
from .app import ServingError


def _aliases(store: Store, model: str) -> dict:
    if store.read_json(registry.aliases_key(model)) is None:
        known = sorted({key.split("/")[1] for key in store.list("registry/") if key.count("/") >= 2})
        hint = f" (models: {', '.join(known)})" if known else " (no model has been deployed there)"
        raise ServingError(f"model {model!r} is not in the registry of {store.uri}{hint}")
    return registry.read_aliases(store, model)


def promote(store: Store, model: str) -> dict:
    """Canary -> production. Returns {"before": aliases, "after": aliases, "message": text}."""
    _aliases(store, model)

    def change(before: dict) -> dict:
        canary = before.get("canary")
        if not canary or canary.get("version") is None:
            raise ServingError(f"model {model!r} has no canary to promote (production is {_v(before['production'])})")
        version = int(canary["version"])
        if version not in registry.versions(store, model):
            raise ServingError(f"model {model!r}: the canary names version {version}, which is not in the registry")
        history = list(before.get("history") or [])
        previous = before.get("production")
        if previous is not None and previous != version:
            history.append(previous)
        return {**before, "production": version, "canary": None, "history": history}

    before, after = registry.move_aliases(store, model, change)
    version, previous = after["production"], before.get("production")
    was = f"was {_v(previous)}, now in history" if previous is not None and previous != version else f"was {_v(previous)}"
    message = f"{model}: promoted canary {_v(version)} to production ({was}); canary cleared"
    return {"before": before, "after": after, "message": message}


def rollback(store: Store, model: str) -> dict:
    """The previous production (last of history) -> production. Returns {before, after, message}."""
    _aliases(store, model)

    def change(before: dict) -> dict:
        history = list(before.get("history") or [])
        if not history:
            raise ServingError(f"model {model!r} has no earlier production version to roll back to "
                               f"(history is empty; production is {_v(before['production'])})")
        version = int(history.pop())
        if version not in registry.versions(store, model):
            raise ServingError(f"model {model!r}: history names version {version}, which is not in the registry")
        return {**before, "production": version, "canary": None, "history": history}

    before, after = registry.move_aliases(store, model, change)
    message = f"{model}: rolled back production {_v(before.get('production'))} -> {_v(after['production'])}"
    if before.get("canary"):
        message += f"; canary {_v(before['canary'].get('version'))} cleared"
    return {"before": before, "after": after, "message": message}


def _v(version) -> str:
    return "none" if version is None else f"v{version}"
