"""libyaml (fast) and PyYAML's Python parser must read every spec the same way: same values,
same positions, same errors (a document libyaml rejects is re-read by the Python parser)."""

from __future__ import annotations

import pytest

from dagsmith_testing import REPO
from dagsmith.errors import SpecError
from dagsmith.spec import yamlpos

# Files with non-printable characters never reach libyaml (load_text sends them to the Python
# parser, whose reader rejects them), so only the others can be compared.
FILES = [
    path
    for path in sorted(REPO.glob("examples/*/pipeline.yaml")) + sorted((REPO / "tests" / "errors").rglob("*.yaml"))
    if not yamlpos._NON_PRINTABLE.search(path.read_text(encoding="utf-8", errors="replace"))
]


def _walk(node, path=()):
    yield path, type(node).__name__, node if not isinstance(node, (dict, list)) else None
    if isinstance(node, dict):
        yield path, "marks", (node.mark, tuple(sorted(node.key_marks.items())), tuple(sorted(node.value_marks.items())))
        for key, value in node.items():
            yield from _walk(value, path + (key,))
    elif isinstance(node, list):
        yield path, "marks", (node.mark, tuple(node.item_marks))
        for index, value in enumerate(node):
            yield from _walk(value, path + (index,))


def _read(text, loader):
    try:
        return list(_walk(yamlpos._load(text, "f.yaml", loader, fast=loader is yamlpos._FastLoader)))
    except SpecError as exc:
        return exc.lines()
    except Exception as exc:  # noqa: BLE001 - libyaml's own error: load_text re-reads with Python
        return ("fallback", type(exc).__name__)


@pytest.mark.skipif(yamlpos._FastLoader is None, reason="PyYAML built without libyaml")
@pytest.mark.parametrize("path", FILES, ids=[p.relative_to(REPO).as_posix() for p in FILES])
def test_fast_and_python_parsers_agree(path):
    text = path.read_text(encoding="utf-8", errors="replace")
    fast, python = _read(text, yamlpos._FastLoader), _read(text, yamlpos._Loader)
    if fast and fast[0] == "fallback":
        assert isinstance(python, list) and python and isinstance(python[0], str)  # Python reports it
    else:
        assert fast == python
