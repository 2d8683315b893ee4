"""The image recipe: a Dockerfile for the image a pipeline's tasks run in (`dagsmith image SPEC`).

One template (templates/Dockerfile.in) is the single source: the repository's docker/Dockerfile is
it with the default extras and no pinned version (build arguments choose them), `dagsmith image`
prints it with the extras the spec needs and this dagsmith's version (an IR is run by the runtime
of the version that compiled it). The spec's own modules are not baked in: they are shipped in
the store (runtime/codepack.py).

Extras (pyproject.toml's optional dependencies), from what the compiled pipeline does:
  run, aws      always: the step runtime, and the S3 store pods read the IR and the code from
  validation    a validation step (Great Expectations)
  train         torch: distributed training with framework torch, or a dagsmith.estimators Torch model
  mlflow        deployment.mlflow (MLflow tracking and Model Registry)
  xlsx          an xlsx source (openpyxl)
"""

from __future__ import annotations

from pathlib import Path

from .ir import IR

TEMPLATE = Path(__file__).resolve().parent / "templates" / "Dockerfile.in"

BASE_EXTRAS = ("run", "aws")
_ORDER = ("run", "aws", "validation", "train", "mlflow", "xlsx")


def extras(ir: IR) -> tuple[str, ...]:
    """The extras a pipeline's tasks need, in a fixed order."""
    chosen = set(BASE_EXTRAS)
    for step in ir.steps:
        config = step.config or {}
        if step.kind == "validate":
            chosen.add("validation")
        if step.kind == "source" and "xlsx" in (config.get("type"), config.get("format")):
            chosen.add("xlsx")
        if step.kind == "train":
            model = config.get("model") or {}
            distributed = config.get("distributed") or {}
            if distributed.get("framework") == "torch" or str(model.get("estimator") or "").startswith("dagsmith.estimators."):
                chosen.add("train")
        if config.get("mlflow"):  # deployment.mlflow: the registry and tracking client
            chosen.add("mlflow")
    return tuple(name for name in _ORDER if name in chosen)


def dockerfile(chosen: tuple[str, ...] = BASE_EXTRAS, version: str = "") -> str:
    """The Dockerfile with these extras and this dagsmith version ("": the latest) as its defaults."""
    text = TEMPLATE.read_text(encoding="utf-8")
    return text.replace("@EXTRAS@", ",".join(chosen)).replace("@VERSION@", version)


def for_pipeline(ir: IR) -> str:
    from . import __version__

    return dockerfile(extras(ir), __version__)
