"""Architecture rules: the import contracts in pyproject.toml ([tool.importlinter]), no import
cycle between dagsmith's modules, and no private name imported from another module.

Lazy (function-level) imports count everywhere here: they are dependencies all the same.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp
import networkx as nx

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "src" / "dagsmith"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"

# Private names still imported across modules, each with the public name that replaces it. The
# old names stay as aliases in runtime/sources.py until runner/watch.py uses the public ones;
# then empty this and delete the aliases.
PENDING_PRIVATE_IMPORTS: dict = {}


def test_import_contracts_are_kept():
    result = subprocess.run([str(LINT_IMPORTS), "--no-cache", "--no-logo"], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def import_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Groups of modules that import each other, directly or through others (a package's
    __init__ counts as a module of its own)."""
    edges = nx.DiGraph((module, imported) for module in graph.modules
                       for imported in graph.find_modules_directly_imported_by(module))
    return sorted(sorted(group) for group in nx.strongly_connected_components(edges) if len(group) > 1)


def describe(graph: grimp.ImportGraph, group: list[str]) -> str:
    lines = []
    for importer in group:
        for imported in sorted(graph.find_modules_directly_imported_by(importer) & set(group)):
            for detail in graph.get_import_details(importer=importer, imported=imported):
                lines.append(f"  {importer}:{detail['line_number']} imports {imported}: {detail['line_contents']}")
    return "\n".join(lines)


def test_no_import_cycle_between_modules():
    graph = grimp.build_graph("dagsmith", cache_dir=None)
    cycles = import_cycles(graph)
    assert not cycles, "import cycles (move what both need into one of them, or a module of its own):\n" + "\n".join(
        describe(graph, group) for group in cycles)


def test_the_cycle_check_sees_a_two_module_cycle_of_lazy_imports(tmp_path, monkeypatch):
    package = tmp_path / "cyclepkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from .b import g\n    return g\n")
    (package / "b.py").write_text("from . import a\n\ndef g():\n    return a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert import_cycles(grimp.build_graph("cyclepkg", cache_dir=None)) == [["cyclepkg.a", "cyclepkg.b"]]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_module(node: ast.ImportFrom, package: str) -> str:
    """The absolute name of the module a `from ... import` reads from."""
    if not node.level:
        return node.module or ""
    base = package.split(".")
    return ".".join(base[:len(base) - node.level + 1] + ([node.module] if node.module else []))


def private_imports() -> set[tuple[str, str, str]]:
    """(importer, imported module, name) for each `from <dagsmith module> import _name`."""
    found = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        importer = module_name(path)
        package = importer if path.name == "__init__.py" else importer.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.ImportFrom) and imported_module(node, package).startswith("dagsmith"):
                found.update((importer, imported_module(node, package), alias.name) for alias in node.names
                             if alias.name.startswith("_") and not alias.name.startswith("__"))
    return found


def test_no_private_name_is_imported_from_another_module():
    unexpected = private_imports() - set(PENDING_PRIVATE_IMPORTS)
    assert not unexpected, "private names imported across modules (make them public, well named): " + ", ".join(
        f"{importer} imports {name} from {imported}" for importer, imported, name in sorted(unexpected))


def test_pending_private_names_still_have_their_public_replacement():
    import importlib

    for (_, module, name), public in PENDING_PRIVATE_IMPORTS.items():
        loaded = importlib.import_module(module)
        assert getattr(loaded, name) is getattr(loaded, public)
