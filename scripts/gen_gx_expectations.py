"""Regenerate ``src/dagsmith/spec/gx_expectations.json`` from Great Expectations.

dagsmith checks expectation names and kwargs in a spec against this static file
so that validation never has to import GX (slow, and an optional extra). The file
has to match the installed GX, so regenerate it whenever the pinned
``great-expectations`` version changes. ``tests/test_gx_registry.py`` fails when
the file is stale.

Run it from the repository root with a Python that has GX installed::

    python scripts/gen_gx_expectations.py          # rewrite the file
    python scripts/gen_gx_expectations.py --check  # exit 1 if the file is stale

How the data is built (GX 1.x):

* Importing ``great_expectations.expectations.core`` (done by
  ``registry.register_core_expectations()``) defines every core Expectation class.
  ``MetaExpectation.__new__`` registers each concrete class under its
  ``expectation_type`` (the snake_case class name). We read the names from
  ``registry.list_registered_expectation_implementations()`` and the classes from
  ``registry.get_expectation_impl(name)``. We keep only classes defined inside the
  ``great_expectations`` package, so custom expectations registered by other code in
  the same process are ignored.
* Expectations are pydantic v1 models (``great_expectations.compatibility.pydantic``).
  Each entry in ``cls.__fields__`` is a kwarg: ``ModelField.required`` tells
  required apart from optional. Fields in ``EXCLUDED_FIELDS`` are left out because
  they are bookkeeping on the base classes, not kwargs of one expectation.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
OUTPUT_PATH = REPO_ROOT / "src" / "dagsmith" / "spec" / "gx_expectations.json"

# Fields that are not user kwargs of a particular expectation.
#   From the ``Expectation`` base model: id, meta, notes, description,
#     result_format, catch_exceptions, rendered_content, severity, windows.
#   ``batch_id``: a domain key declared on ``BatchExpectation``. GX fills it in from the batch at run time.
#   ``library_metadata``: a class attribute with no annotation (maturity, tags,
#     ...) on some core classes, which pydantic v1 nevertheless turns into a field.
# ``mostly``, ``row_condition`` and ``condition_parser`` are user kwargs, so we keep them.
EXCLUDED_FIELDS: frozenset[str] = frozenset(
    {
        "batch_id",
        "catch_exceptions",
        "description",
        "id",
        "library_metadata",
        "meta",
        "notes",
        "rendered_content",
        "result_format",
        "severity",
        "windows",
    }
)


def compute_expectations() -> dict[str, dict[str, list[str]]]:
    """Return ``{expectation_type: {"required": [...], "optional": [...]}}`` from GX."""
    from great_expectations.expectations import registry
    from great_expectations.expectations.expectation import Expectation

    registry.register_core_expectations()

    # A new field on the base model must be looked at by a person: is it a user kwarg?
    unknown_base = set(Expectation.__fields__) - EXCLUDED_FIELDS
    if unknown_base:
        raise RuntimeError(
            f"great_expectations Expectation has new base fields {sorted(unknown_base)}; "
            "decide whether they are user kwargs and update EXCLUDED_FIELDS"
        )

    result: dict[str, dict[str, list[str]]] = {}
    for name in registry.list_registered_expectation_implementations():
        cls = registry.get_expectation_impl(name)
        if not cls.__module__.startswith("great_expectations."):
            continue
        required: list[str] = []
        optional: list[str] = []
        for field_name, field in cls.__fields__.items():
            if field_name in EXCLUDED_FIELDS:
                continue
            (required if field.required is True else optional).append(field_name)
        result[name] = {"required": sorted(required), "optional": sorted(optional)}
    return dict(sorted(result.items()))


def build_document() -> dict[str, Any]:
    import great_expectations

    return {
        "expectations": compute_expectations(),
        "gx_version": great_expectations.__version__,
    }


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=1, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="do not write; exit 1 if the file is stale"
    )
    parser.add_argument("--output", type=Path, default=OUTPUT_PATH)
    args = parser.parse_args(argv)

    text = render(build_document())
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else None
        if current != text:
            print(f"{args.output} is stale; run scripts/gen_gx_expectations.py", file=sys.stderr)
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with open(args.output, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(text)
    print(f"wrote {args.output} ({len(json.loads(text)['expectations'])} expectations)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
