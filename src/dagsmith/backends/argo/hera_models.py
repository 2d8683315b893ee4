"""Hera's typed Argo Workflows models (`hera.workflows.models`), without the rest of Hera's DSL.

`from hera.workflows import models` first runs hera/workflows/__init__.py, which imports Hera's
whole workflow DSL (Workflow, Container, its REST client and `requests`, ...): about a quarter
of a second of every `dagsmith compile --target argo`, for classes dagsmith never uses. The
models import only pydantic, `hera.shared._pydantic` and each other, so the package
`hera.workflows` is created from its spec WITHOUT running its __init__, the models are imported
under it, and the package runs its __init__ (in place, the same module object) the first time
anything else of it is asked for (PEP 562 module `__getattr__`): whoever imports Hera's DSL
later in the same process gets all of it, with these same models.
"""

from __future__ import annotations

import importlib.util
import sys


def _load():
    import hera.shared._pydantic  # noqa: F401  (ModuleNotFoundError, name 'hera', without Hera)

    if "hera.workflows" not in sys.modules:
        spec = importlib.util.find_spec("hera.workflows")
        package = importlib.util.module_from_spec(spec)  # created, its __init__ not run

        def __getattr__(name: str):
            del package.__dict__["__getattr__"]
            spec.loader.exec_module(package)  # the rest of hera.workflows, on first use
            return getattr(package, name)

        package.__getattr__ = __getattr__
        sys.modules["hera.workflows"] = package
        sys.modules["hera"].workflows = package
    import hera.workflows.models

    return hera.workflows.models


models = _load()
