"""The run-environment contract: what every task's process is told about its run, defined once.

Whoever starts a step (the local runner, an Airflow task, an Argo container, an ECS task) sets
these variables; the runtime reads nothing else about the run. Backends render the values with
their own templating (Airflow macros, Argo workflow variables, Step Functions context paths),
using these names.

    DAGSMITH_RUN_ID      the run's id                       (default "adhoc")
    DAGSMITH_RUN_DATE    the run's logical date, YYYY-MM-DD  (default: today, UTC)
    DAGSMITH_PARAMS      JSON object of parameter values over the IR's defaults (default {})
    DAGSMITH_PARAMS_URI  where that JSON object is (s3://... or a path), read when DAGSMITH_PARAMS
                         is unset: for orchestrators whose per-task environment is too small for
                         the params (ECS overrides, SageMaker's 512-character values)
    DAGSMITH_PARAM_<N>   one parameter's value as text (converted by its declared type,
                         paramtext.convert), over DAGSMITH_PARAMS: for orchestrators whose
                         parameters are strings (Argo), so no backend builds JSON from them;
                         "dagsmith:spec-default" means the IR's default
    DAGSMITH_STORE       the artifact store, a folder or s3://bucket/prefix, when the command
                         line gives no --store (default ".dagsmith")
    DAGSMITH_ROOT        the folder relative spec paths resolve against (default: the spec's
                         folder as compiled, relative to the working directory)
    DAGSMITH_TRIGGER     on a run started by new data: JSON {"source": NAME, "at": ISO time}
                         (read by `dagsmith admit`; empty or unset on other runs)
    DAGSMITH_CODE        the code package (a path or s3://.../code/<sha256>.json) of the spec
                         folder's modules, put first on sys.path before user code is imported
                         (runtime/codepack.py); unset when the code is baked into the image

What user code gets (a custom step's function and its command's process: runtime/custom.py
sets all of these whoever started the step; docs/user-code.md):

    DAGSMITH_STORE, DAGSMITH_RUN_ID, DAGSMITH_RUN_DATE, DAGSMITH_PARAMS (the run's resolved
                         values), DAGSMITH_ROOT (absolute)
    DAGSMITH_IR          a local path of the run's IR file (a local copy when it was read from S3)
    DAGSMITH_STEP        the step's id
    DAGSMITH_OUTPUTS     the local folder dagsmith.step.write_table writes the step's declared
                         output tables into; the step's runner commits them when it ends
"""

from __future__ import annotations

import json
import re

# `dagsmith admit` (without --wait) exits with this (EX_TEMPFAIL) when min_interval holds the run:
# an orchestrator that retries on it holds the run by retrying, with nothing kept in a pod
HOLD_EXIT_CODE = 75

RUN_ID = "DAGSMITH_RUN_ID"
RUN_DATE = "DAGSMITH_RUN_DATE"
PARAMS = "DAGSMITH_PARAMS"
PARAMS_URI = "DAGSMITH_PARAMS_URI"  # the params object by reference (s3://... or a path)
PARAM_PREFIX = "DAGSMITH_PARAM_"  # + a parameter's name: its value as text
# DAGSMITH_PARAM_<NAME> with this text means "the IR's default": for a default an orchestrator
# cannot carry as it is (Argo substitutes every '{{' in a workflow's arguments).
PARAM_SPEC_DEFAULT = "dagsmith:spec-default"
STORE = "DAGSMITH_STORE"
ROOT = "DAGSMITH_ROOT"
TRIGGER = "DAGSMITH_TRIGGER"
STEP = "DAGSMITH_STEP"  # set for a custom step's own process: the step's id
IR = "DAGSMITH_IR"  # for a custom step: a local path of the run's IR file
OUTPUTS = "DAGSMITH_OUTPUTS"  # for a custom step: where its declared output tables are written
CODE = "DAGSMITH_CODE"  # the code package's URI (runtime/codepack.py)

DEFAULT_STORE = ".dagsmith"
DEFAULT_RUN_ID = "adhoc"

# A run id is an id, never a path: it names a folder (runs/<run_id>/) of a workdir or a store. One
# word character, then word characters and . : + ~ - (the local runner's 20261125-101500-a1b2c3,
# Airflow's manual__2026-11-25T10:15:00+00:00, Argo's workflow names, Step Functions' execution
# names): no '/', no '\\', no whitespace, never '.' or '..' alone, never a leading '-'.
RUN_ID_PATTERN = re.compile(r"\w[\w.:+~-]{0,249}")


def run_id_problem(run_id: object) -> str | None:
    """Why `run_id` is not a run id (None: it is one)."""
    if isinstance(run_id, str) and RUN_ID_PATTERN.fullmatch(run_id):
        return None
    return (f"{str(run_id)[:80]!r} is not a run id: run ids are like 20261125-101500-a1b2c3 (letters, digits "
            "and . _ - : + ~, at most 250), never a path")

# Exit code of a step command whose outcome tells the orchestrator to skip what follows (a gate
# that did not pass, a data-triggered run refused by min_interval): `--skip-exit-code`.
SKIP_EXIT_CODE = 99


def run_environment(run_id: str, run_date: str | None, params: dict | str, *, store: str | None = None,
                    root: str | None = None) -> dict[str, str]:
    """The variables for one run. `params` is a dict or already-rendered JSON text (a backend's
    template expression); None values are left out so the runtime's defaults apply."""
    env = {RUN_ID: run_id, PARAMS: params if isinstance(params, str) else json.dumps(params, sort_keys=True, default=str)}
    if run_date:
        env[RUN_DATE] = run_date
    if store:
        env[STORE] = store
    if root:
        env[ROOT] = root
    return env
