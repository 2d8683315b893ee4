"""What changes between two IRs: steps added, removed, changed (with the changed fields).

Changes are leaves, each reported once: two mappings (or a mapping and null) are compared key
by key, a key on one side only being one change with its whole value (`old` or `new` left
out); lists of mappings of the same length item by item (`config.gates[1].delta`); anything
else as a whole value (`depends_on`). So `resources: {}` -> `{cpu: "1"}` is the one change
`resources.cpu` (added), and a new param is one change `params.NAME` (added).

A step's `origin` (where it stands in the spec, for messages) is metadata, not what the step
does: a step whose only change is its origin is not "changed"; it is listed under `moved` and
does not count as a change (`is_empty`, the exit code of `dagsmith diff`).
"""

from __future__ import annotations

import json

from .ir import IR

# spec_hash and spec_dir change with any edit or checkout location; they are not behaviour.
_IGNORED_PIPELINE_KEYS = ("spec_hash", "spec_dir")
# Step fields that say where a step is defined, not what it does.
_METADATA_STEP_KEYS = ("origin",)
_ABSENT = object()


def _changes(old, new, field: str = "") -> list[dict]:
    """Leaf changes from `old` to `new`: [{"field", "old"?, "new"?}] ("old"/"new" left out when
    the field is absent on that side)."""
    if old == new:
        return []
    if old is not _ABSENT and new is not _ABSENT and (isinstance(old, dict) or isinstance(new, dict)) \
            and (isinstance(old, dict) or old is None) and (isinstance(new, dict) or new is None):
        a, b = old or {}, new or {}
        out = []
        for key in sorted(set(a) | set(b), key=str):
            out.extend(_changes(a.get(key, _ABSENT), b.get(key, _ABSENT), f"{field}.{key}" if field else str(key)))
        return out
    if (isinstance(old, list) and isinstance(new, list) and len(old) == len(new)
            and all(isinstance(item, dict) for item in old + new)):
        out = []
        for index, (a, b) in enumerate(zip(old, new)):
            out.extend(_changes(a, b, f"{field}[{index}]"))
        return out
    change = {"field": field}
    if old is not _ABSENT:
        change["old"] = old
    if new is not _ABSENT:
        change["new"] = new
    return [change]


def diff(old: IR, new: IR) -> dict:
    old_json, new_json = old.to_json(), new.to_json()
    old_steps = {s["id"]: s for s in old_json["steps"]}
    new_steps = {s["id"]: s for s in new_json["steps"]}
    changed, moved = {}, {}
    for step_id in sorted(set(old_steps) & set(new_steps)):
        a, b = old_steps[step_id], new_steps[step_id]
        fields = _changes({k: v for k, v in a.items() if k not in _METADATA_STEP_KEYS},
                          {k: v for k, v in b.items() if k not in _METADATA_STEP_KEYS})
        if fields:
            changed[step_id] = fields
        if a.get("origin") != b.get("origin"):
            moved[step_id] = {"old": a.get("origin"), "new": b.get("origin")}
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
        "moved": moved,
    }


def is_empty(result: dict) -> bool:
    """True when nothing the pipeline does changes (a step that only moved in the spec does not count)."""
    return not (result["added"] or result["removed"] or result["changed"] or result["pipeline"])


def render(result: dict) -> str:
    moved = result.get("moved") or {}
    lines = []
    for step_id in result["added"]:
        lines.append(f"+ step {step_id}")
    for step_id in result["removed"]:
        lines.append(f"- step {step_id}")
    for step_id, fields in result["changed"].items():
        lines.append(f"~ step {step_id}")
        lines.extend(f"    {_line(change)}" for change in fields)
        if step_id in moved:
            lines.append(f"    (also moved in the spec: {_where(moved[step_id])})")
    for change in result["pipeline"]:
        lines.append(f"~ {_line(change)}")
    if is_empty(result):
        lines.append("no changes in what the pipeline does" if moved else "no changes")
    for step_id, origin in moved.items():
        if step_id not in result["changed"]:
            lines.append(f"= step {step_id}: only moved in the spec ({_where(origin)})")
    return "\n".join(lines) + "\n"


def _line(change: dict) -> str:
    if "old" not in change:
        return f"{change['field']}: {_short(change['new'])} (added)"
    if "new" not in change:
        return f"{change['field']}: {_short(change['old'])} (removed)"
    old, new = change["old"], change["new"]
    if isinstance(old, list) and isinstance(new, list) and len(_short(old, None)) + len(_short(new, None)) > 80:
        # a long list: say what differs rather than two cut-off values
        if sorted(map(_short, old)) == sorted(map(_short, new)):
            return f"{change['field']}: the same {len(new)} items in another order"
        added = [item for item in new if item not in old]
        removed = [item for item in old if item not in new]
        parts = ([f"added {_short(added)}"] if added else []) + ([f"removed {_short(removed)}"] if removed else [])
        return f"{change['field']}: {', '.join(parts) or 'items repeated differently'}"
    return f"{change['field']}: {_short(old)} -> {_short(new)}"


def _where(origin: dict) -> str:
    return f"{_path(origin['old'])} -> {_path(origin['new'])}"


def _path(origin) -> str:
    if not origin:
        return "?"
    text = str(origin[0])
    for part in origin[1:]:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def _short(value, limit: int | None = 80) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    return text if limit is None or len(text) <= limit else text[:limit - 3] + "..."


def file_diffs(old: dict[str, str], new: dict[str, str]) -> dict[str, str]:
    """{name: unified diff} of two sets of generated files, for every file that differs (one
    side missing: diffed against nothing, as `diff -N` does)."""
    import difflib

    out = {}
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name), new.get(name)
        if a == b:
            continue
        lines = difflib.unified_diff(
            (a or "").splitlines(keepends=True), (b or "").splitlines(keepends=True),
            fromfile=f"a/{name}" if a is not None else "/dev/null", tofile=f"b/{name}" if b is not None else "/dev/null",
        )
        out[name] = "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)
    return out
