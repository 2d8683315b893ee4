"""Backend registry. A backend turns an IR into files:
`emit(ir, options, output_dir=None, spec_dir=None) -> {relative_path: text}`, where `output_dir`
is the folder the files will be written to (None when printed) and `spec_dir` the spec's folder,
so that generated files can find it (relative data paths) from where they are, with no absolute
path in them (the IR itself never says where the spec was).

A backend that deploys has `deploy(ir, options, request: DeployRequest, spec_dir=None) ->
list[str]` (the lines to print: what was, or with `request.dry_run` would be, changed); it
raises a DagsmithError, with nothing changed, when it cannot deploy.

Built-in backends register here by name; third-party ones through the `dagsmith.backends`
entry point group (the entry point loads an object with `name` and `emit`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

from ..errors import UsageError
from ..ir import IR


class Backend(Protocol):
    name: str
    default_output: str

    def emit(self, ir: IR, options: dict, output_dir: str | None = None, spec_dir: str | None = None) -> dict[str, str]: ...


@dataclass(frozen=True)
class DeployRequest:
    """`dagsmith deploy`'s flags; each backend reads the ones it documents and refuses a flag
    it does not take (so a typo'd target never deploys half of what was asked)."""

    dry_run: bool = False
    dags_folder: str | None = None  # airflow
    server: str | None = None  # argo: the Argo Server's URL
    namespace: str | None = None  # argo
    token_env: str | None = None  # argo: the environment variable holding the bearer token
    stack_name: str | None = None  # stepfunctions
    region: str | None = None  # stepfunctions

    def given(self) -> dict:
        """The flags set on the command line (dry_run aside)."""
        return {name: value for name, value in vars(self).items() if name != "dry_run" and value is not None}

    def refuse_others(self, target: str, accepted: tuple[str, ...]) -> None:
        extra = sorted(set(self.given()) - set(accepted))
        if extra:
            flags = ", ".join("--" + name.replace("_", "-") for name in extra)
            raise UsageError(f"deploy --target {target} does not take {flags}")


class IRBackend:
    """`--target ir`: the IR's own JSON, the contract every other backend reads."""

    name = "ir"
    default_output = "build/ir"

    def emit(self, ir: IR, options: dict, output_dir: str | None = None, spec_dir: str | None = None) -> dict[str, str]:
        from ..ir import ir_filename

        return {ir_filename(ir.name): ir.dumps()}


def _airflow() -> Backend:
    from .airflow.backend import AirflowBackend

    return AirflowBackend()


def _argo() -> Backend:
    try:
        from .argo.backend import ArgoBackend
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] != "hera":
            raise
        raise UsageError("--target argo needs Hera: pip install 'dagsmith[argo]'") from None
    return ArgoBackend()


def _stepfunctions() -> Backend:
    from .stepfunctions.backend import StepFunctionsBackend

    return StepFunctionsBackend()


_BUILTIN: dict[str, Callable[[], Backend]] = {"ir": IRBackend, "airflow": _airflow, "argo": _argo, "stepfunctions": _stepfunctions}
# Orchestrators this project is building; asking for one before it lands says so plainly.
PLANNED: tuple[str, ...] = ()


def _entry_points():
    from importlib.metadata import entry_points  # imported on use: ~20 ms of every CLI start

    return entry_points(group="dagsmith.backends")


def available() -> list[str]:
    names = set(_BUILTIN)
    names.update(ep.name for ep in _entry_points())
    return sorted(names)


def get(name: str) -> Backend:
    if name in _BUILTIN:
        return _BUILTIN[name]()
    for ep in _entry_points():
        if ep.name == name:
            return ep.load()()
    if name in PLANNED:
        raise UsageError(f"target '{name}' is not available in this version of dagsmith yet; available targets: {', '.join(available())}")
    raise UsageError(f"unknown target '{name}'; available targets: {', '.join(available())}")
