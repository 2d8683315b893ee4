"""The `dagsmith` command line: validate, compile, graph, diff, schema.

Exit codes (docs/ci.md): 0 success; 1 "changed" (diff, compile --check) or, for deploy, a change
failed and everything was put back; 2 a spec or usage error (nothing changed); 3 an internal
error; 4 deploy failed and could not put everything back.
Errors go to stderr, one per line (FILE:LINE:COL: error: spec.path: message); data goes to
stdout, so `--format json` output can be piped.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from . import __version__
from .errors import DagsmithError, SpecError

FORMAT_TEXT_JSON = click.Choice(["text", "json"])


def _spec_option(function):
    function = click.option("--env", "env", metavar="NAME", help="Apply the overlay environments.NAME.")(function)
    return function


def _params_option(function):
    return click.option("--param", "params", multiple=True, metavar="NAME=VALUE", help="Override a parameter's default (repeatable).")(function)


def _spec_folder(spec_path: str) -> str:
    """The spec's folder, as given (relative paths in the spec resolve against it)."""
    return os.path.dirname(spec_path) or "."


def _compile(spec_path: str, env: str | None, params: tuple[str, ...]):
    return _compile_with_document(spec_path, env, params)[0]


def _compile_with_document(spec_path: str, env: str | None, params: tuple[str, ...]):
    from .compiler import compile_spec
    from .spec import load_spec_and_document, parse_param_overrides

    spec, doc = load_spec_and_document(spec_path, env, parse_param_overrides(list(params)))
    return compile_spec(spec), doc


def _for_target(backend, spec_path: str, env: str | None, params: tuple[str, ...]):
    """Compile SPEC and check it against the backend's capabilities: every error at once, at its
    line in the spec (nothing is written); warnings are printed and the command goes on."""
    ir, options = _for_targets([backend], spec_path, env, params)
    return ir, options[backend.name]


def _for_targets(chosen: list, spec_path: str, env: str | None, params: tuple[str, ...]):
    """_for_target for several backends at once: the spec is compiled once, and every backend's
    errors are reported together (each once, however many backends find it). A backend's
    `check_code` looks at the spec's folder too (user code its pods would not get: backends/code.py)."""
    from .errors import SpecError
    from .spec import diagnostics_at

    ir, doc = _compile_with_document(spec_path, env, params)
    options = {backend.name: ir.backends.get(backend.name, {}) for backend in chosen}
    diagnostics = list(getattr(doc, "warnings", ()))
    for backend in chosen:
        check = getattr(backend, "check", None)
        if check:
            diagnostics += [d for d in diagnostics_at(doc, check(ir, options[backend.name])) if d not in diagnostics]
        check_code = getattr(backend, "check_code", None)
        if check_code and not any(d.level == "error" for d in diagnostics):
            diagnostics += [d for d in diagnostics_at(doc, check_code(ir, options[backend.name], _spec_folder(spec_path))) if d not in diagnostics]
    errors = [d for d in diagnostics if d.level == "error"]
    if errors:
        raise SpecError(errors)
    for warning in diagnostics:
        click.echo(warning.format(), err=True)
    return ir, options


# `compile -o -` of a target with several files: each file follows a line of its own, so the
# stream can be split on it (a one-file target prints just its file).
FILE_HEADER = "# ---- file: {name} ----"


def stdout_text(files: dict[str, str]) -> str:
    """What `compile -o -` prints: the file itself, or each file (sorted by name) under its header."""
    if len(files) == 1:
        return next(iter(files.values()))
    parts = []
    for name in sorted(files):
        text = files[name]
        parts.append(FILE_HEADER.format(name=name) + "\n" + text + ("" if text.endswith("\n") else "\n"))
    return "".join(parts)


def _targets(deploy: bool = False) -> str:
    """The --target help: the targets this installation has (backends.available(), including
    plugins), then the planned ones. Computed when help is shown, not at every start."""
    from . import backends

    names = backends.available()
    if deploy:
        names = [name for name in names if hasattr(backends.get(name), "deploy")]
    planned = [name for name in backends.PLANNED if name not in names]
    text = "One of: " + ", ".join(names) + "."
    if planned:
        text += f" Planned, not available yet: {', '.join(planned)}."
    return text


class _TargetOption(click.Option):
    """An option whose help text is computed when --help is shown (see _targets)."""

    def __init__(self, *args, targets, extra_help: str = "", **kwargs):
        super().__init__(*args, **kwargs)
        self._targets = targets
        self._extra_help = extra_help

    def get_help_record(self, ctx):
        self.help = self._targets() + self._extra_help
        return super().get_help_record(ctx)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="dagsmith")
def app():
    """dagsmith: one YAML pipeline spec -> Airflow, Argo Workflows, Step Functions, or a local run.

    \b
    Example:
      dagsmith validate examples/churn/pipeline.yaml
      dagsmith compile examples/churn/pipeline.yaml --target ir -o build/ir
    """


@app.command(epilog="""\b
Examples:
  dagsmith validate pipeline.yaml              # the spec and every environment
  dagsmith validate pipeline.yaml --env prod   # the spec with the prod overlay
  dagsmith validate pipelines/*.yaml           # several specs (what the pre-commit hook runs)
  dagsmith validate pipeline.yaml --format json""")
@click.argument("specs", nargs=-1, required=True, type=click.Path(dir_okay=False), metavar="SPEC...")
@_spec_option
@click.option("--format", "fmt", type=FORMAT_TEXT_JSON, default="text", show_default=True)
def validate(specs: tuple[str, ...], env: str | None, fmt: str):
    """Check each SPEC. Without --env, the spec and each of its environments are checked.

    Exit 0 when every spec is valid, 2 with every error of every spec listed on stderr.
    JSON: one object per spec ({"valid", "errors", "warnings"}; with several specs, a list
    of them, each with its "spec").
    """
    from .spec import check_all, environment_names

    reports, errors = [], []
    for spec in specs:
        targets = [env] if env else [None] + environment_names(spec)
        diagnostics, warnings = check_all(spec, targets)  # one parse, every environment
        reports.append({"spec": spec, "valid": not diagnostics, "errors": [d.to_json() for d in diagnostics],
                        "warnings": [w.to_json() for w in warnings]})
        errors += diagnostics
        if fmt == "text":
            for warning in warnings:
                click.echo(warning.format(), err=True)
            if not diagnostics:
                checked = "the spec" + (f" with environment {env!r}" if env else "".join(f", env {n!r}" for n in targets[1:]))
                click.echo(f"{spec}: valid ({checked})", err=True)
    if fmt == "json":
        data = {k: v for k, v in reports[0].items() if k != "spec"} if len(reports) == 1 else reports
        click.echo(json.dumps(data, indent=2, sort_keys=True))
    if errors:
        raise SpecError(errors)
    _exit_fast()


@app.command(name="compile", epilog="""\b
Examples:
  dagsmith compile pipeline.yaml --target ir               # -> build/ir/<pipeline>.ir.json
  dagsmith compile pipeline.yaml --target ir -o -          # IR on stdout
  dagsmith compile pipeline.yaml --target airflow -o -     # each file under '""" + FILE_HEADER.format(name="NAME") + """'
  dagsmith compile pipeline.yaml --target ir --env prod --param lookback_days=60""")
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--target", "-t", "targets", cls=_TargetOption, required=True, multiple=True, metavar="TARGET", targets=_targets,
              extra_help=" Repeat it, or say 'all', for several targets from one compile: each then goes to "
                         "DIR/<target> (default build/<target>).")
@click.option("-o", "--output", "output", metavar="DIR",
              help="Output folder (default build/<target>); '-' prints to stdout: the file of a one-file "
                   "target (ir) as it is, the files of a several-file target (airflow) each under a header "
                   "line (see the examples).")
@click.option("--check", is_flag=True, help="Write nothing: exit 1 with a diff when the files in the output folder are not what "
                                          "SPEC compiles to (for teams that commit generated files), 0 when they are.")
@_spec_option
@_params_option
def compile_(spec: str, targets: tuple[str, ...], output: str | None, check: bool, env: str | None, params: tuple[str, ...]):
    """Compile SPEC for an orchestrator TARGET (or several), writing files atomically."""
    from . import backends
    from .output import write_files

    names = _target_names(targets)
    chosen = [backends.get(name) for name in names]
    ir, options = _for_targets(chosen, spec, env, params)

    def folder(backend) -> str:
        if len(chosen) == 1:
            return output or backend.default_output
        return str(Path(output) / backend.name) if output else backend.default_output

    # Everything is generated before anything is written: a backend that fails writes nothing,
    # and neither do the others.
    outputs = {}
    for backend in chosen:
        where = folder(backend)
        files = backend.emit(ir, options[backend.name], output_dir=None if output == "-" else where, spec_dir=_spec_folder(spec))
        outputs[backend.name] = (Path(where), files)
    if output == "-":
        if len(chosen) == 1:
            click.echo(stdout_text(outputs[names[0]][1]), nl=False)
        else:  # one stream: each file under its header, named <target>/<file>
            click.echo(stdout_text({f"{name}/{file}": text for name, (_, files) in outputs.items() for file, text in files.items()}), nl=False)
        return
    if check:
        from . import irdiff

        out_of_date = 0
        for name, (path, files) in outputs.items():
            existing = {file: (path / file).read_text(encoding="utf-8") for file in files if (path / file).is_file()}
            stale = irdiff.file_diffs(existing, files)
            for text in stale.values():
                click.echo(text, nl=False)
            if stale:
                out_of_date += 1
                click.echo(f"{path}: {len(stale)} of {len(files)} generated files are out of date: run "
                           f"dagsmith compile {spec} --target {name} -o {path}", err=True)
            else:
                click.echo(f"{path}: up to date", err=True)
        if out_of_date:
            sys.exit(1)
        _exit_fast()
        return
    for path, files in outputs.values():
        for written in write_files(path, files):
            click.echo(f"wrote {written}", err=True)
    _exit_fast()


def _target_names(targets: tuple[str, ...]) -> list[str]:
    """--target values in order, each once; 'all' is every available backend."""
    from . import backends

    names: list[str] = []
    for target in targets:
        for name in backends.available() if target == "all" else [target]:
            if name not in names:
                names.append(name)
    return names


@app.command(epilog="""\b
Examples:
  dagsmith graph pipeline.yaml                 # Mermaid (paste into a Markdown file)
  dagsmith graph pipeline.yaml --format dot | dot -Tsvg > graph.svg
  dagsmith graph pipeline.yaml --format html > graph.html   # the picture of `dagsmith report`""")
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["mermaid", "dot", "json", "svg", "html"]), default="mermaid", show_default=True,
              help="svg: the step graph drawn as in `dagsmith report`; html: that picture on a self-contained page.")
@_spec_option
@_params_option
def graph(spec: str, fmt: str, env: str | None, params: tuple[str, ...]):
    """Print the step graph of SPEC as Mermaid, Graphviz DOT, JSON, an SVG picture or an HTML page."""
    from . import graphviz

    ir = _compile(spec, env, params)
    if fmt in ("svg", "html"):
        from . import report

        click.echo(report.graph_svg(ir, standalone=True) + "\n" if fmt == "svg" else report.graph_page(ir), nl=False)
        return
    render = {"mermaid": graphviz.to_mermaid, "dot": graphviz.to_dot, "json": graphviz.to_json}[fmt]
    click.echo(render(ir), nl=False)


@app.command(epilog="""\b
Examples:
  git show main:pipeline.yaml > /tmp/old.yaml && dagsmith diff /tmp/old.yaml pipeline.yaml
  dagsmith diff old.yaml new.yaml --format json
  dagsmith diff old.yaml new.yaml --target argo   # + a unified diff of the generated files""")
@click.argument("old_spec", type=click.Path(dir_okay=False))
@click.argument("new_spec", type=click.Path(dir_okay=False))
@click.option("--target", "-t", cls=_TargetOption, metavar="TARGET", targets=_targets,
              help="Also diff the files generated for TARGET.")
@_spec_option
@click.option("--format", "fmt", type=FORMAT_TEXT_JSON, default="text", show_default=True)
def diff(old_spec: str, new_spec: str, target: str | None, env: str | None, fmt: str):
    """Show what changes in the compiled pipeline from OLD_SPEC to NEW_SPEC.

    \b
    Steps added (+), removed (-) and changed (~, with each changed field once,
    at its leaf: `resources.cpu: "1" -> "2"`, `config.gates[1].delta: ...`;
    a field only one side has is marked (added) or (removed)), then changes
    of the pipeline's name, description, owner, tags, params, triggers and
    backend options.
    A step that only moved in the spec (its origin: where it is written,
    e.g. validation[0] -> validation[1]) does not change what the pipeline
    does: it is listed with `=` (json: "moved") and does not count as a
    change. spec_hash and spec_dir are never compared.
    With --target, a unified diff of the files generated for TARGET follows
    (json: "files": {name: diff text}); a file that differs counts as a change.

    Exit 0 when nothing the pipeline does changes, 1 when something does, 2 on a spec error.
    """
    from . import irdiff

    if target is None:
        old_ir, new_ir = _compile(old_spec, env, ()), _compile(new_spec, env, ())
        files = {}
    else:
        from . import backends

        backend = backends.get(target)
        # Both sides generated as if written to the same folder: only what the specs change differs.
        (old_ir, old_options), (new_ir, new_options) = (_for_target(backend, path, env, ()) for path in (old_spec, new_spec))
        where = backend.default_output
        files = irdiff.file_diffs(backend.emit(old_ir, old_options, output_dir=where, spec_dir=_spec_folder(old_spec)),
                                  backend.emit(new_ir, new_options, output_dir=where, spec_dir=_spec_folder(new_spec)))
    result = irdiff.diff(old_ir, new_ir)
    if fmt == "json":
        click.echo(json.dumps({**result, "files": files} if target else result, indent=2, sort_keys=True))
    else:
        click.echo(irdiff.render(result), nl=False)
        for text in files.values():
            click.echo(text, nl=False)
    sys.exit(0 if irdiff.is_empty(result) and not files else 1)


@app.command(epilog="""\b
Examples:
  dagsmith deploy pipeline.yaml --target airflow --dags-folder /opt/airflow/dags --env prod
  ARGO_TOKEN=... dagsmith deploy pipeline.yaml --target argo --server https://argo.example.com --token-env ARGO_TOKEN
  dagsmith deploy pipeline.yaml --target stepfunctions --stack-name churn --region eu-west-1 --dry-run""")
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--target", "-t", cls=_TargetOption, required=True, metavar="TARGET", targets=lambda: _targets(deploy=True))
@click.option("--dry-run", is_flag=True, help="Check everything and print what would change; change nothing.")
@click.option("--dags-folder", type=click.Path(file_okay=False), metavar="DIR", help="airflow: the dags folder to deploy into.")
@click.option("--server", metavar="URL", help="argo: the Argo Server's URL.")
@click.option("--namespace", metavar="NS", help="argo: the namespace (default: backends.argo.namespace).")
@click.option("--token-env", metavar="VAR", help="argo: the environment variable that holds the bearer token (never the token itself).")
@click.option("--stack-name", metavar="NAME", help="stepfunctions: the CloudFormation stack (default: the pipeline's name).")
@click.option("--region", metavar="REGION", help="stepfunctions: the AWS region (default: backends.stepfunctions.region).")
@_spec_option
@_params_option
def deploy(spec: str, target: str, dry_run: bool, dags_folder, server, namespace, token_env, stack_name, region,
           env: str | None, params: tuple[str, ...]):
    """Compile SPEC, prove the orchestrator accepts it, then deploy it atomically.

    Nothing is deployed when anything fails: the destination stays as it was.
    Exit 0 deployed (or, with --dry-run, checked), 1 a change failed and all
    was put back, 2 refused before anything changed (also a server that cannot
    be reached, stalls or misbehaves), 3 an internal error, 4 a change failed
    and putting back failed too. Each request to a server ends within
    $DAGSMITH_REQUEST_TIMEOUT seconds (default 30).
    """
    from . import backends
    from .errors import UsageError

    backend = backends.get(target)
    if not hasattr(backend, "deploy"):
        raise UsageError(f"deploy is not available for target {target!r} yet")
    request = backends.DeployRequest(dry_run=dry_run, dags_folder=dags_folder, server=server, namespace=namespace,
                                     token_env=token_env, stack_name=stack_name, region=region)
    ir, options = _for_target(backend, spec, env, params)
    for line in backend.deploy(ir, options, request, spec_dir=_spec_folder(spec)):
        click.echo(line, err=True)


@app.command(epilog="""\b
Examples:
  dagsmith image pipeline.yaml > Dockerfile && docker build -t ghcr.io/acme/churn:1 .
  dagsmith image pipeline.yaml --env prod""")
@click.argument("spec", type=click.Path(dir_okay=False))
@_spec_option
def image(spec: str, env: str | None):
    """Print a Dockerfile for the image SPEC's tasks run in (Argo, Step Functions, Airflow's
    kubernetes mode): dagsmith at this version with the extras the pipeline needs. The spec
    folder's modules are shipped through the store, not baked in (docs/shipping-code.md)."""
    from .imagerecipe import for_pipeline

    click.echo(for_pipeline(_compile(spec, env, ())), nl=False)


@app.command(epilog="""\b
Example:
  dagsmith schema > pipeline.schema.json""")
def schema():
    """Print the JSON Schema of the pipeline spec (for editors and other tools)."""
    from importlib import resources

    click.echo(resources.files("dagsmith.schema").joinpath("pipeline.schema.json").read_text(encoding="utf-8"), nl=False)


_STEP_ENVIRONMENT = """\b
Environment (runtime/environment.py): DAGSMITH_RUN_ID, DAGSMITH_RUN_DATE, DAGSMITH_PARAMS (JSON),
DAGSMITH_PARAM_<NAME> (one value as text), DAGSMITH_ROOT (folder relative spec paths resolve against), DAGSMITH_STORE, DAGSMITH_TRIGGER."""
_STORE_OPTION = click.option("--store", metavar="URI", help="Artifact store: a folder or s3://bucket/prefix (default $DAGSMITH_STORE or .dagsmith).")
_OUTCOME_OPTION = click.option("--outcome", metavar="PATH", help="Also write the result as one JSON file at PATH (for Argo output parameters, Step Functions task results).")
_STATUS_OPTION = click.option("--status", "status", metavar="PATH", help="Also write the outcome as one word at PATH (for conditions that compare strings, as Argo's `when`).")


@app.command(epilog="""\b
Examples (what orchestrator tasks run):
  dagsmith step build/ir/churn-model.ir.json churn_features --store s3://bucket/dagsmith
  DAGSMITH_RUN_ID=r1 dagsmith step churn-model.ir.json train --item '{"start": 0, "stop": 20}'
  dagsmith step churn-model.ir.json gate --outcome /tmp/outcome.json --skip-exit-code 99
""" + _STEP_ENVIRONMENT)
@click.argument("ir_file", type=click.Path(dir_okay=False))
@click.argument("step_id")
@click.option("--item", metavar="JSON", help="Fan-out items: an index (3), {\"index\": 3} or a range {\"start\": 0, \"stop\": 20}.")
@_STORE_OPTION
@_OUTCOME_OPTION
@_STATUS_OPTION
@click.option("--skip-exit-code", type=click.IntRange(2, 255), metavar="N", help="Exit N when a gate does not pass (for orchestrators that skip on an exit code).")
def step(ir_file: str, step_id: str, item: str | None, store: str | None, outcome: str | None, status: str | None,
         skip_exit_code: int | None):
    """Run ONE step of a compiled pipeline (or items of a fan-out); exit 0 or 1.

    Prints each item's result as a JSON line on stdout.
    """
    from .runtime.commands import main_step

    sys.exit(main_step(ir_file, step_id, item, store, skip_exit_code, outcome, status))


@app.command(epilog="""\b
Example (what a fan-out's listing task runs; each range is a valid --item of `dagsmith step`):
  dagsmith ranges churn-model.ir.json train --max 1024 --outcome /tmp/ranges.json
""" + _STEP_ENVIRONMENT)
@click.argument("ir_file", type=click.Path(dir_okay=False))
@click.argument("step_id")
@click.option("--max", "max_ranges", type=click.IntRange(1), required=True, metavar="N", help="At most N ranges (the orchestrator's map limit).")
@_STORE_OPTION
@_OUTCOME_OPTION
def ranges(ir_file: str, step_id: str, max_ranges: int, store: str | None, outcome: str | None):
    """Print the items of fan-out STEP_ID as at most N ranges: [{"start": 0, "stop": 2}, ...].

    Partitions found at run time are read from the run's plan step, which must have run.
    """
    from .runtime.commands import main_ranges

    sys.exit(main_ranges(ir_file, step_id, max_ranges, store, outcome))


@app.command(epilog="""\b
Examples (the first task of a pipeline with on_new_data min_interval):
  DAGSMITH_TRIGGER='{"sources": ["events"], "at": "2026-11-30T08:00:00Z"}' dagsmith admit churn-model.ir.json --wait
  dagsmith admit churn-model.ir.json --outcome /tmp/admit.json --skip-exit-code 99
""" + _STEP_ENVIRONMENT)
@click.argument("ir_file", type=click.Path(dir_okay=False))
@_STORE_OPTION
@_OUTCOME_OPTION
@_STATUS_OPTION
@click.option("--skip-exit-code", type=click.IntRange(2, 255), metavar="N", help="Exit N when the run is covered by an earlier one (skip it whole).")
@click.option("--wait", is_flag=True, help="When min_interval holds the run, sleep until it may start instead of exiting 75.")
def admit(ir_file: str, store: str | None, outcome: str | None, status: str | None, skip_exit_code: int | None, wait: bool):
    """Admit this run under triggers.on_new_data min_interval (see docs/triggers.md).

    Prints {"action": "admit" | "hold" | "covered", "admitted", "wait_seconds", "reason"}.
    Exit 0 admitted; covered: --skip-exit-code (or 0); hold: 75 (try again later) unless --wait.
    """
    from .runtime.commands import main_admit

    sys.exit(main_admit(ir_file, store, outcome, skip_exit_code, wait, status=status))


@app.command(epilog="""\b
Examples:
  dagsmith run examples/churn/pipeline.yaml
  dagsmith run pipeline.yaml --env dev --param lookback_days=60 --max-parallel 4
  dagsmith run pipeline.yaml --resume 20261125-101500-a1b2c3
  dagsmith run pipeline.yaml --format json | jq .status""")
@click.argument("spec", type=click.Path(dir_okay=False))
@_spec_option
@_params_option
@click.option("--workdir", default=".dagsmith", show_default=True, metavar="DIR", help="Runs, cache and the local model registry.")
@click.option("--max-parallel", type=click.IntRange(1), metavar="N", help="Parallel worker processes (default: CPU count).")
@click.option("--resume", "resume_id", metavar="RUN_ID", help="Continue an interrupted or failed run; finished steps are kept.")
@click.option("--no-cache", is_flag=True, help="Run every step, even when its inputs and code are unchanged.")
@click.option("--run-date", metavar="YYYY-MM-DD", help="The run's logical date (${run.date}); default today.")
@click.option("--format", "fmt", type=FORMAT_TEXT_JSON, default="text", show_default=True, help="json: the final run record on stdout, nothing else.")
def run(spec: str, env, params, workdir: str, max_parallel, resume_id, no_cache: bool, run_date, fmt: str):
    """Run SPEC on this machine, no orchestrator needed.

    Exit 0 when the run succeeded or was gated, 1 when a step failed, 2 on a spec error.
    """
    from . import runner

    runner.warm_up(None if resume_id is not None else spec)  # the workers' fork server starts (and imports) while the spec compiles
    from rich.console import Console  # after: imports before warm_up delay the whole run

    from .runner.progress import reporter_for, summary

    reporter = reporter_for(quiet=False)
    if resume_id is not None:  # "" too: refused as no run id, not taken as "no --resume"
        record = runner.resume(Path(workdir), resume_id, max_parallel=max_parallel, use_cache=not no_cache, reporter=reporter)
    else:
        ir = _compile(spec, env, params)
        record = runner.start(ir, Path(workdir), max_parallel=max_parallel, use_cache=not no_cache, reporter=reporter, run_date=run_date,
                              root=_spec_folder(spec))
    if fmt == "json":
        click.echo(json.dumps(record, indent=2, sort_keys=True, default=str))
    else:
        summary(record, Console(), workdir=workdir)
    _write_run_report(workdir, record["run_id"], err=fmt == "json")
    sys.exit(1 if record["status"] == "failed" else 0)


def _write_run_report(workdir: str, run_id: str, err: bool) -> None:
    """The end of `dagsmith run`: the run's HTML report, and its path (a report that cannot be
    written is a warning: the run itself is over and recorded)."""
    from .report import write_report

    try:
        path = write_report(Path(workdir), run_id)
    except Exception as exc:  # noqa: BLE001 - the run's outcome stands, whatever the report met
        if os.environ.get("DAGSMITH_DEBUG"):
            raise
        click.echo(f"warning: report not written: {exc}", err=True)
        return
    click.echo(f"report: {path}", err=err)


@app.command(epilog="""\b
Examples:
  dagsmith report                              # the latest run in .dagsmith
  dagsmith report 20261125-101500-a1b2c3 --workdir .dagsmith -o churn.html""")
@click.argument("run_id", required=False)
@click.option("--workdir", default=".dagsmith", show_default=True, metavar="DIR")
@click.option("-o", "--output", "output", type=click.Path(dir_okay=False), metavar="FILE",
              help="Where to write the report (default <workdir>/runs/<run_id>/report.html).")
def report(run_id: str | None, workdir: str, output: str | None):
    """Write RUN_ID's report (default: the latest run) as one self-contained HTML file.

    Step graph colored by state, timeline, sweep trials and plots, metrics, gates, validation,
    what was deployed and its lineage. It works offline: nothing is fetched. Prints its path.
    """
    from .report import write_report

    _existing_workdir(workdir)
    click.echo(str(write_report(Path(workdir), run_id, output)))


@app.group()
def runs():
    """Past local runs: `dagsmith runs list`, `dagsmith runs show RUN_ID`."""


@runs.command(name="list", epilog="""\b
Example:
  dagsmith runs list --workdir .dagsmith""")
@click.option("--workdir", default=".dagsmith", show_default=True, metavar="DIR")
@click.option("--format", "fmt", type=FORMAT_TEXT_JSON, default="text", show_default=True)
def runs_list(workdir: str, fmt: str):
    """List runs, oldest first: id, pipeline, status, start.

    Exit 2 when WORKDIR does not exist (a workdir without runs lists none, exit 0).
    """
    from . import runner

    _existing_workdir(workdir)
    records = [runner.load_record(Path(workdir), run_id) for run_id in runner.list_runs(Path(workdir))]
    if fmt == "json":
        click.echo(json.dumps([{k: r.get(k) for k in ("run_id", "pipeline", "status", "started", "ended")} for r in records], indent=2))
        return
    click.echo(f"{'RUN_ID':<22}  {'PIPELINE':<24} {'STATUS':<10} STARTED")
    for r in records:
        click.echo(f"{r['run_id']:<22}  {r['pipeline']:<24} {r['status']:<10} {r['started']}")
    if not records:
        click.echo(f"no runs in {workdir} yet", err=True)


def _existing_workdir(workdir: str) -> None:
    from .errors import UsageError

    if not Path(workdir).is_dir():
        raise UsageError(f"--workdir {workdir}: no such folder (runs are kept in the --workdir of `dagsmith run`, default .dagsmith)")


@runs.command(name="show", epilog="""\b
Example:
  dagsmith runs show 20261125-101500-a1b2c3 --format json""")
@click.argument("run_id")
@click.option("--workdir", default=".dagsmith", show_default=True, metavar="DIR")
@click.option("--format", "fmt", type=FORMAT_TEXT_JSON, default="text", show_default=True)
def runs_show(run_id: str, workdir: str, fmt: str):
    """Show one run: steps, durations, metrics, gates, what deploy did, and every validation
    expectation with its result and what it observed."""
    from rich.console import Console

    from . import runner
    from .runner.progress import summary

    _existing_workdir(workdir)
    record = runner.load_record(Path(workdir), run_id)
    if fmt == "json":
        click.echo(json.dumps(record, indent=2, sort_keys=True))
    else:
        summary(record, Console(), workdir=workdir, validation="all")


# --- serving commands: serve, promote, rollback (issue 6) ---

def _serve_epilog() -> str:
    from .serving.example import curl_command

    return f"""\b
Examples (the model of examples/churn, after `dagsmith run examples/churn/pipeline.yaml`):
  dagsmith serve churn --workdir .dagsmith --port 8080
  {curl_command()}
  curl -s localhost:8080/health; curl -s localhost:8080/metrics"""


class _LazyEpilogCommand(click.Command):
    """A command whose epilog is made when --help is shown (it may import what a start must not)."""

    def __init__(self, *args, epilog_fn, **kwargs):
        super().__init__(*args, **kwargs)
        self._epilog_fn = epilog_fn

    def format_epilog(self, ctx, formatter):
        self.epilog = self._epilog_fn()
        super().format_epilog(ctx, formatter)


@app.command(name="serve", cls=_LazyEpilogCommand, epilog_fn=_serve_epilog)
@click.argument("model")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="0: any free port (printed).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every interface).")
@click.option("--workdir", default=".dagsmith", show_default=True, metavar="DIR", help="Where the local model registry is (as for `dagsmith run`).")
@click.option("--access-log", is_flag=True, help="Log every request on stderr.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, metavar="N",
              help="Worker processes, each with its own copy of the models (about one per core).")
@click.option("--backlog", type=click.IntRange(min=1), default=2048, show_default=True, metavar="N",
              help="Listen queue of connections not yet accepted (capped by net.core.somaxconn).")
@click.option("--read-timeout", type=click.FloatRange(min=0, min_open=True), default=30.0, show_default=True, metavar="S",
              help="A request that sends nothing for S seconds (headers or body) is answered 408.")
@click.option("--graceful-timeout", type=click.FloatRange(min=0), default=30.0, show_default=True, metavar="S",
              help="On Ctrl-C / SIGTERM, how long requests in flight may take to finish.")
def serve_command(model: str, port: int, host: str, workdir: str, access_log: bool, workers: int, backlog: int,
                  read_timeout: float, graceful_timeout: float):
    """Serve MODEL's production version (and its canary, at its traffic percent) over HTTP.

    POST /predict, GET /health, GET /metrics (Prometheus), served by uvicorn. promote /
    rollback take effect without a restart. Ctrl-C or SIGTERM stops after the requests in
    flight. See docs/serving.md.
    """
    from .serving import serve

    serve(workdir, model, host, port, workers=workers, backlog=backlog, read_timeout=read_timeout,
          graceful_timeout=graceful_timeout, access_log=access_log, echo=lambda text: click.echo(text))


_TARGET = click.option(
    "--target", type=click.Choice(["local", "sagemaker", "kserve"]), default="local", show_default=True,
    help="Also move the traffic where the deploy step served the model: a SageMaker endpoint's variant weights, "
         "a KServe InferenceService's canary (see docs/deployment.md). A refusal there leaves the aliases as they were (exit 1).")
_MLFLOW = click.option(
    "--mlflow", "mlflow_connection", metavar="CONNECTION",
    help="Also move the MLflow Model Registry's champion/challenger aliases, on the tracking server of this connection "
         "(its URI in $DAGSMITH_CONN_<CONNECTION>, as for deployment.mlflow.connection).")


def _move_remote(store, model: str, target: str, change: dict, mlflow_connection: str | None = None) -> None:
    """The aliases moved locally: move the target's traffic (and MLflow's aliases) too, or put
    the aliases back (unless another change moved them since: that one stands)."""
    from .runtime import registry

    if mlflow_connection:
        from .runtime.deploy_mlflow import Tracking, move_aliases

        try:
            moved = move_aliases(Tracking({"connection": mlflow_connection}), model, change["after"])
        except BaseException:
            registry.put_back_aliases(store, model, change["before"], change["after"])
            raise
        click.echo(f"{model}: MLflow aliases now {json.dumps(moved, sort_keys=True)}")
    if target == "local":
        return
    try:
        if target == "sagemaker":
            from .runtime.deploy_sagemaker import move_traffic
        else:
            from .runtime.deploy_kserve import move_traffic
        done = move_traffic(store, model, change["after"])
    except BaseException:
        registry.put_back_aliases(store, model, change["before"], change["after"])
        raise
    click.echo(f"{model}: {target} traffic now {json.dumps(done.get('weights') or done.get('traffic'), sort_keys=True)}")


@app.command(name="promote", epilog="""\b
Example:
  dagsmith promote churn --workdir .dagsmith
  dagsmith promote churn --workdir s3://acme-ml/dagsmith --target sagemaker""")
@click.argument("model")
@click.option("--workdir", default=".dagsmith", show_default=True, metavar="DIR")
@_TARGET
@_MLFLOW
def promote_command(model: str, workdir: str, target: str, mlflow_connection: str | None):
    """Make MODEL's canary the production version (the old one goes to history).

    Exit 2 when there is no canary.
    """
    from .runtime.store import Store
    from .serving import promote

    store = Store.open(workdir)
    change = promote(store, model)
    _move_remote(store, model, target, change, mlflow_connection)
    click.echo(change["message"])


@app.command(name="rollback", epilog="""\b
Example:
  dagsmith rollback churn --workdir .dagsmith
  dagsmith rollback churn --workdir s3://acme-ml/dagsmith --target kserve""")
@click.argument("model")
@click.option("--workdir", default=".dagsmith", show_default=True, metavar="DIR")
@_TARGET
@_MLFLOW
def rollback_command(model: str, workdir: str, target: str, mlflow_connection: str | None):
    """Restore MODEL's previous production version (from history); any canary ends.

    Exit 2 when there is no earlier production version.
    """
    from .runtime.store import Store
    from .serving import rollback

    store = Store.open(workdir)
    change = rollback(store, model)
    _move_remote(store, model, target, change, mlflow_connection)
    click.echo(change["message"])



# --- continuous training: watch (issue 6) ---


@app.command(epilog="""\b
Examples:
  dagsmith watch pipeline.yaml                         # poll every 30 s, run on new data
  dagsmith watch pipeline.yaml --env prod --interval 300
  dagsmith watch pipeline.yaml --once --format json    # from cron / CI: check, run if due, exit
\b
State: <workdir>/watch/<pipeline>.json; lock: <workdir>/watch/<pipeline>.lock. See docs/watch.md.""")
@click.argument("spec", type=click.Path(dir_okay=False))
@_spec_option
@_params_option
@click.option("--workdir", default=".dagsmith", show_default=True, metavar="DIR", help="Runs, cache, registry and the watch state.")
@click.option("--once", is_flag=True, help="Check once (and run if due), then exit.")
@click.option("--interval", type=click.FloatRange(min=0, min_open=True), default=30.0, show_default=True, metavar="S", help="Polling period in seconds.")
@click.option("--format", "fmt", type=FORMAT_TEXT_JSON, default="text", show_default=True, help="json: each check's outcome as one JSON line on stdout.")
def watch(spec: str, env, params, workdir: str, once: bool, interval: float, fmt: str):
    """Watch SPEC's triggers.on_new_data sources and run the pipeline when new data lands.

    At most one run per min_interval, never two at once. Decisions are logged on stderr.
    Exit 0 (nothing to do, or the run succeeded / was gated), 1 when a run failed (--once),
    2 on a spec error, a spec without on_new_data, or another watcher holding the lock.
    Ctrl-C (or SIGTERM) stops the watcher cleanly with exit 0.
    """
    import signal

    from . import runner
    from .runner.progress import reporter_for
    from .runner.watch import Watcher

    ir = _compile(spec, env, params)

    def start(ir_, workdir_):
        record = runner.start(ir_, workdir_, reporter=reporter_for(quiet=False), root=_spec_folder(spec))
        _write_run_report(str(workdir_), record["run_id"], err=True)
        return record

    def emit(outcome: dict) -> None:
        if fmt == "json":
            click.echo(json.dumps(outcome, sort_keys=True))

    watcher = Watcher(ir, Path(workdir), run=start, root=_spec_folder(spec))
    with watcher:
        if once:
            outcome = watcher.check()
            emit(outcome)
            sys.exit(1 if (outcome["run"] or {}).get("status") == "failed" else 0)

        def stop(signum, frame):
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGTERM, stop)
        click.echo(f"watch {ir.name}: watching {', '.join(t.source for t in watcher.triggers)} every {interval:g}s (Ctrl-C stops)", err=True)
        try:
            watcher.loop(interval, on_check=emit)
        except KeyboardInterrupt:
            click.echo(f"watch {ir.name}: stopped", err=True)
        finally:
            signal.signal(signal.SIGTERM, previous)


_EXIT_FAST = False


def _exit_fast() -> None:
    """Let `entry` end this process without the interpreter's teardown, which frees every module
    and class one by one (~0.1 s once Hera's models are loaded) for nothing: only for a command
    that started no thread or process and has closed every file it wrote."""
    global _EXIT_FAST
    _EXIT_FAST = True


def entry() -> None:
    """The console script: main(), then exit, quickly when the command allowed it."""
    code = main()
    if _EXIT_FAST:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (OSError, ValueError):  # a closed pipe: let the usual exit report it
            sys.exit(code)
        os._exit(code)
    sys.exit(code)


def main(argv: list[str] | None = None) -> int:
    """Entry point: every DagsmithError becomes its lines on stderr and its exit code."""
    global _EXIT_FAST
    _EXIT_FAST = False
    try:
        app.main(args=argv, prog_name="dagsmith", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return 2
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except (SystemExit, Exception) as exc:  # a DagsmithError, a SystemExit, or a bug: errors.exit_code_of
        from .errors import exit_code_of

        return exit_code_of(exc, lambda line: click.echo(line, err=True))
    return 0


if __name__ == "__main__":
    entry()
