"""What changes between two IRs: steps added, removed, changed (with the changed fields)."""

from __future__ import annotations

from .ir import IR

# spec_hash and spec_dir change with any edit or checkout location; they are not behaviour.
_IGNORED_PIPELINE_KEYS = ("spec_hash", "spec_dir")


def _flatten(value, prefix: str = "") -> dict[str, object]:
    if isinstance(value, dict) and value:
        out = {}
        for key in value:
            out.update(_flatten(value[key], f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def _changes(old, new, prefix: str = "") -> list[dict]:
    a, b = _flatten(old, prefix), _flatten(new, prefix)
    return [
        {"field": key, "old": a.get(key), "new": b.get(key)}
        for key in sorted(set(a) | set(b))
        if a.get(key) != b.get(key)
    ]


def diff(old: IR, new: IR) -> dict:
    old_steps = {s["id"]: s for s in old.to_json()["steps"]}
    new_steps = {s["id"]: s for s in new.to_json()["steps"]}
    changed = {}
    for step_id in sorted(set(old_steps) & set(new_steps)):
        fields = _changes(old_steps[step_id], new_steps[step_id])
        if fields:
            changed[step_id] = fields
    old_json, new_json = old.to_json(), new.to_json()
    for data in (old_json, new_json):
        data["pipeline"] = {k: v for k, v in data["pipeline"].items() if k not in _IGNORED_PIPELINE_KEYS}
    pipeline = []
    for section in ("pipeline", "params", "triggers", "backends"):
        pipeline.extend(_changes(old_json[section], new_json[section], section))
    return {
        "added": sorted(set(new_steps) - set(old_steps)),
        "removed": sorted(set(old_steps) - set(new_steps)),
        "changed": changed,
        "pipeline": pipeline,
    }


def is_empty(result: dict) -> bool:
    return not (result["added"] or result["removed"] or result["changed"] or result["pipeline"])


def render(result: dict) -> str:
    if is_empty(result):
        return "no changes\n"
    lines = []
    for step_id in result["added"]:
        lines.append(f"+ step {step_id}")
    for step_id in result["removed"]:
        lines.append(f"- step {step_id}")
    for step_id, fields in result["changed"].items():
        lines.append(f"~ step {step_id}")
        lines.extend(f"    {c['field']}: {_short(c['old'])} -> {_short(c['new'])}" for c in fields)
    for change in result["pipeline"]:
        lines.append(f"~ {change['field']}: {_short(change['old'])} -> {_short(change['new'])}")
    return "\n".join(lines) + "\n"


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
