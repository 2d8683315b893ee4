"""Limits on what a spec may hold, each checked before the work it bounds (docs/spec.md, "Limits").

Every real spec is far below them; they are there so that a hostile or generated file fails fast
with a positioned error instead of taking minutes or all the memory.
"""

from __future__ import annotations

from ..errors import Diagnostic, Mark, format_path

MAX_FILE_BYTES = 10_000_000  # one spec or included file (read only when it is a regular file)
MAX_INCLUDE_DEPTH = 32  # a file including a file including ... (the spec itself is depth 0)
MAX_INCLUDE_FILES = 256  # files read for one spec, the spec itself included
MAX_STEPS = 10_000  # sources + features + validations + custom steps
MAX_TEXT_LENGTH = 1_000_000  # characters in one text value or key
MAX_TOTAL_TEXT = 20_000_000  # characters in all text values and keys, after expanding aliases

STEP_SECTIONS = ("sources", "features", "validation", "steps", "predict")


def too_many_steps(total: int) -> str:
    return f"too many steps: {total:,} sources, features, validations and steps together, at most {MAX_STEPS:,}"


def step_count_problem(doc) -> Diagnostic | None:
    """More than MAX_STEPS steps in the merged document: placed at the largest section's key.
    (yamlpos checks each file the same way before converting it.)"""
    sizes = {s: len(doc[s]) for s in STEP_SECTIONS if isinstance(doc.get(s), (dict, list))}
    total = sum(sizes.values())
    if total <= MAX_STEPS:
        return None
    largest = max(sizes, key=sizes.get)
    mark = doc.key_marks.get(largest) or getattr(doc, "mark", None) or Mark("<spec>", 1, 1)
    return Diagnostic(mark, largest, too_many_steps(total))


def text_problems(doc) -> list[Diagnostic]:
    """Every text value or key longer than MAX_TEXT_LENGTH, and one error when all of them
    together exceed MAX_TOTAL_TEXT (aliases repeat a text without making the file longer)."""
    out: list[Diagnostic] = []
    total = 0
    stack: list[tuple[object, tuple, Mark | None, bool]] = [(doc, (), getattr(doc, "mark", None), False)]
    while stack:
        node, path, mark, is_key = stack.pop()
        if isinstance(node, str):
            total += len(node)
            if len(node) > MAX_TEXT_LENGTH:
                what = "key" if is_key else "text"
                out.append(Diagnostic(mark or Mark("<spec>", 1, 1), format_path(path),
                                      f"{what} too long: {len(node):,} characters, at most {MAX_TEXT_LENGTH:,}"))
            if total > MAX_TOTAL_TEXT:
                return out + [Diagnostic(mark or Mark("<spec>", 1, 1), format_path(path),
                                         f"too much text: more than {MAX_TOTAL_TEXT:,} characters in all "
                                         "(aliases count each time they are used)")]
        elif isinstance(node, dict):
            key_marks = getattr(node, "key_marks", {})
            value_marks = getattr(node, "value_marks", {})
            for key, value in reversed(node.items()):
                sub = path + (key,)
                stack.append((value, sub, value_marks.get(key, mark), False))
                stack.append((key, sub, key_marks.get(key, mark), True))
        elif isinstance(node, list):
            item_marks = getattr(node, "item_marks", [])
            for index in range(len(node) - 1, -1, -1):
                stack.append((node[index], path + (index,), item_marks[index] if index < len(item_marks) else mark, False))
    return out
