"""What a step sees while it runs: its IR step, the store, the run's values, its inputs.

Everything comes from the IR, the store and the run environment (runtime/environment.py, the
one definition of it), so a step runs the same way whoever starts it: the runtime never knows
which orchestrator that is.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from .. import references
from ..errors import DagsmithError
from ..ir import IR, Step
from . import environment as E
from .dataset import parts_of
from .store import Staging, Store

# A reference ${...}, or the escape $${ (a literal ${): the one pattern, in dagsmith/references.py.
REFERENCE = references.PATTERN


class StepFailed(DagsmithError):
    """The step ran and failed (bad data, failed validation, user code error)."""

    exit_code = 1


def _read_params(uri: str) -> str:
    """The params object written once for the run (DAGSMITH_PARAMS_URI), as JSON text."""
    try:
        if uri.startswith("s3://"):
            from .s3 import client, split_uri

            bucket, key = split_uri(uri)
            return client().get_object(Bucket=bucket, Key=key)["Body"].read().decode("utf-8")
        return Path(uri).read_text(encoding="utf-8")
    except Exception as exc:  # a missing object, no access: the step fails saying which
        raise StepFailed(f"{E.PARAMS_URI}: cannot read the run's params at {uri!r}: {exc}") from None


@dataclass(frozen=True)
class RunValues:
    run_id: str
    run_date: str
    params: dict

    @classmethod
    def from_env(cls, ir: IR, environ=os.environ) -> "RunValues":
        text = environ.get(E.PARAMS) or (_read_params(environ[E.PARAMS_URI]) if environ.get(E.PARAMS_URI) else "")
        try:
            given = json.loads(text or "{}")
        except ValueError:
            raise StepFailed(f"{E.PARAMS} is not JSON: {text[:80]!r}") from None
        if not isinstance(given, dict):
            raise StepFailed(f"{E.PARAMS} must be a JSON object of parameter values")
        unknown = sorted(set(given) - set(ir.params))
        if unknown:
            raise StepFailed(f"unknown parameters {unknown} (known: {sorted(ir.params)})")
        params = {}
        for name, param in ir.params.items():
            text = environ.get(E.PARAM_PREFIX + name)
            if text is not None and text != E.PARAM_SPEC_DEFAULT:
                params[name] = _param_from_text(name, param, text)
            elif name in given:
                params[name] = given[name]
            elif param["required"]:
                raise StepFailed(f"parameter {name!r} has no default: set it for the run")
            else:
                params[name] = param["default"]
        run_date = environ.get(E.RUN_DATE) or _dt.datetime.now(_dt.timezone.utc).date().isoformat()
        run_id = environ.get(E.RUN_ID) or E.DEFAULT_RUN_ID
        problem = E.run_id_problem(run_id)  # it names the run's folder in the store
        if problem:
            raise StepFailed(f"{E.RUN_ID}: {problem}")
        return cls(run_id=run_id, run_date=run_date, params=params)

    def lookup(self, ref: str):
        if ref == "run.id":
            return self.run_id
        if ref == "run.date":
            return self.run_date
        if ref.startswith("params.") and ref[7:] in self.params:
            return self.params[ref[7:]]
        raise StepFailed(f"unknown reference ${{{ref}}}")

    def resolve(self, text: str) -> str:
        """Substitute ${...} as text, and $${ as a literal ${: for paths, URIs, env values and
        argv items (never SQL, never a shell)."""
        return references.substitute(text, self.lookup)

    def bind_sql(self, sql: str, style: str = "duckdb") -> tuple[str, dict]:
        """References -> bound query parameters: values are never pasted into SQL.

        `${params.x}` where a value stands -> `$p_x` (DuckDB; `:p_x` with style "sqlalchemy");
        inside a quoted literal the literal becomes the parameter, or a concatenation with the
        literal's other text, bound as text (`'a-${params.n}'` -> `('a-' || $t_n)`, n = "3");
        in a comment it stays as written, unbound. `$${` becomes `${`.
        """
        bound: dict = {}

        def name(ref: references.SqlReference) -> str:
            value = self.lookup(ref.name)
            key = references.parameter_name(ref.name)
            if ref.place == "literal" and not isinstance(value, str):
                key, value = references.text_parameter_name(ref.name), str(value)
            bound[key] = value
            return key

        try:
            rewritten = references.rewrite_sql(sql, name, style=style)
        except references.SqlSyntaxError as exc:
            raise StepFailed(f"{exc} (at character {exc.offset + 1} of the SQL)") from None
        for ref in rewritten.problems:
            raise StepFailed(f"${{{ref.name}}} at character {ref.start + 1} of the SQL: {ref.problem}")
        for ref in rewritten.references:
            if ref.place == "comment":
                self.lookup(ref.name)  # an unknown reference is an error wherever it stands
        return rewritten.text, bound


@dataclass
class StepContext:
    ir: IR
    step: Step
    store: Store
    values: RunValues
    root: Path
    item: int | None = None
    notes: list = field(default_factory=list)  # lines for the run summary
    ir_path: str | None = None  # where the IR was read from (a path or s3://...), for user code (DAGSMITH_IR)

    @property
    def key(self) -> str:
        return self.store.step_key(self.values.run_id, self.step.id, self.item)

    def key_of(self, step_id: str, item: int | None = None) -> str:
        return self.store.step_key(self.values.run_id, step_id, item)

    def input_steps(self, kind: str | None = None) -> list[str]:
        """The steps whose outputs this step reads, as its IR inputs declare them ("<kind>:<name>",
        made by IR.producer), in their order; only those of one artifact kind when `kind` is given.
        A registry model (`registry:<alias>`) is no step of the run: it is not among them."""
        return [self.ir.producer(ref) for ref in self.step.inputs
                if (kind is None and not ref.startswith("registry:")) or ref.partition(":")[0] == kind]

    def step_of(self, name: str) -> str:
        """A step id, or a table name resolved to the step that writes it (a custom step's output)."""
        return name if self.ir.has_step(name) else self.ir.producer(f"table:{name}")

    def table_parts(self, name: str) -> list[tuple[dict, str]]:
        """Where table `name` of this run is: (manifest, file name) of each part, in order. A
        source's or feature's `table.parquet`, a custom step's output `tables/<name>.parquet`, in
        that step's manifest (which, on a cache hit, points at the run that made it); a table
        streamed in parts is the folder beside that name, `table/part-<n>.parquet`, ... (every
        part in the manifest, runtime/dataset.py). A predict fanned out over row ranges (fanout
        method "rows") wrote one table per item, `items/<step>/<i>/`; item 0's manifest says how
        many (`items`): the parts are each item's, in item order."""
        producer = self.step_of(name)
        file = table_file_name(name, producer)
        step = self.ir.step(producer) if self.ir.has_step(producer) else None
        if step is None or step.fanout is None or step.fanout.method != "rows":
            manifests = [self.manifest_of(producer)]
        else:
            first = self.manifest_of(producer, 0)
            count = first.get("items")
            if not isinstance(count, int) or isinstance(count, bool) or count < 1:
                raise StepFailed(f"table {name!r}: item 0 of step {producer!r} does not say how many parts the table has "
                                 f"(run {self.values.run_id!r})")
            manifests = [first] + [self.manifest_of(producer, index) for index in range(1, count)]
        parts = []
        for manifest in manifests:
            names = parts_of(manifest, file)
            if not names:
                raise StepFailed(f"table {name!r}: the outputs of step {producer!r} have no {file} nor parts of it "
                                 f"(have: {', '.join(sorted(manifest.get('files') or {}))})")
            parts.extend((manifest, part) for part in names)
        return parts

    def table_files(self, name: str) -> list[Path]:
        """The local paths of table `name`'s parts, in order (one for a table of one file)."""
        return [self.store.file(manifest, file) for manifest, file in self.table_parts(name)]

    def table_file(self, name: str) -> Path:
        """The local path of table `name` when it is ONE file; a table in parts (streamed in parts,
        or a predict fanned out over row ranges) is read with `table_files` or `read_table`."""
        files = self.table_files(name)
        if len(files) != 1:
            raise StepFailed(f"table {name!r} is in {len(files)} parts: read it with table_files or read_table (a dagsmith bug)")
        return files[0]

    def table_fingerprint(self, name: str) -> str | None:
        """What identifies table `name`'s content: its manifest's fingerprint, or its parts' in order."""
        manifests = []  # each manifest once: its fingerprint covers all its parts
        for manifest, _ in self.table_parts(name):
            if not manifests or manifests[-1] is not manifest:
                manifests.append(manifest)
        fingerprints = [manifest.get("fingerprint") for manifest in manifests]
        if len(fingerprints) == 1:
            return fingerprints[0]
        import hashlib

        return hashlib.sha256(json.dumps(fingerprints).encode()).hexdigest()

    def manifest_of(self, step_id: str, item: int | None = None, *, missing_ok: bool = False) -> dict | None:
        """Outputs of a step of this run (its manifest); with `missing_ok`, None when it has none.
        `step_id` may be a table's name: the manifest of the step that writes it. Every read of
        another step's outputs comes through here, and only declared inputs are readable, so the
        IR's inputs say exactly what each step reads, on every backend."""
        step_id = self.step_of(step_id)
        if step_id != self.step.id and step_id not in self.input_steps():
            declared = self.ir.step(step_id).outputs if self.ir.has_step(step_id) else ()
            artifact = ", ".join(declared) or f"the outputs of step {step_id!r}"
            raise StepFailed(f"step {self.step.id!r} reads {artifact}, which is not declared in its inputs "
                             f"(a dagsmith bug); its inputs: {', '.join(self.step.inputs) or 'none'}")
        key = self.key_of(step_id, item)
        return self.store.manifest(key) if missing_ok else self.store.require(key)

    def input_file(self, step_id: str, name: str, item: int | None = None) -> Path:
        return self.store.file(self.manifest_of(step_id, item), name)

    def read_table(self, name: str):
        """Table `name` of this run (pyarrow.Table): a source's, a feature's, one a custom step
        wrote (found through IR.producer), a predict's: its parts in order, as one table."""
        import pyarrow.parquet as pq

        files = self.table_files(name)
        if len(files) == 1:
            return pq.read_table(files[0])
        import pyarrow as pa

        return pa.concat_tables([pq.read_table(path) for path in files], promote_options="default")

    def read_json(self, step_id: str, name: str, item: int | None = None):
        return json.loads(self.input_file(step_id, name, item).read_text(encoding="utf-8"))

    def stage(self) -> Staging:
        return self.store.stage(self.key)

    def path(self, uri: str) -> str:
        """A spec path, resolved: ${...} substituted, relative paths under the spec's folder."""
        text = self.values.resolve(uri)
        if "://" in text or os.path.isabs(text):
            return text
        return str(self.root / text)

    def variables(self) -> dict[str, str]:
        """The step's `env` as the step gets it: each value's references filled in with the run's
        values, `$${` written `${` (the spec's References). The same on every backend: whoever
        starts the step, `run_step` sets these while it runs."""
        return {name: self.values.resolve(str(value)) for name, value in sorted(self.step.env.items())}

    def write_result(self, data: dict) -> None:
        """A small report next to the outputs (metrics, gate outcomes, validation results).
        Written even when the step fails, so the run summary can say why."""
        self.store.write_json(f"{self.key}/result.json", data)


TABLE_FILE = "table.parquet"  # a source's or feature's table in its step's manifest


def table_file_name(name: str, producer: str) -> str:
    """The file of table `name` in the manifest of `producer`, the step that writes it: a custom
    step writes several, each `tables/<name>.parquet`."""
    return TABLE_FILE if producer == name else f"tables/{name}.parquet"


def default_root(ir: IR, environ=os.environ) -> Path:
    """$DAGSMITH_ROOT, else the working directory. The IR does not say where its spec was (the
    same spec gives the same IR bytes from any folder): whoever starts a step sets DAGSMITH_ROOT
    (the local runner: the spec's folder; an Airflow DAG file: the spec's folder as seen from it)."""
    if environ.get(E.ROOT):
        return Path(environ[E.ROOT])
    return Path(".")


def default_store_uri(environ=os.environ) -> str:
    """$DAGSMITH_STORE, else .dagsmith in the working directory. A backend resolves its store at
    compile time (backends.<name>.store, its execution plan) and passes it as --store or
    DAGSMITH_STORE: the runtime never looks up an orchestrator's options."""
    return environ.get(E.STORE) or E.DEFAULT_STORE


def _param_from_text(name: str, param: dict, text: str):
    """A parameter given as text (DAGSMITH_PARAM_<NAME>), typed and checked against its enum."""
    from ..paramtext import convert

    try:
        value = convert(param["type"], text)
    except ValueError as exc:
        raise StepFailed(f"parameter {name}: {exc}") from None
    if param.get("enum") and value not in param["enum"]:
        raise StepFailed(f"parameter {name}: {text[:80]!r} is not one of {param['enum']}")
    return value
