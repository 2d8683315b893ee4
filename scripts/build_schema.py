"""Build src/dagsmith/schema/pipeline.schema.json, the JSON Schema of the pipeline spec.

The schema is written out as data (editors and other tools read it), but kept here as Python
so that the step options every section shares are written once. Regenerate after a change:

    python scripts/build_schema.py

tests/test_schema.py fails when the checked-in file differs from what this script builds.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "src" / "dagsmith" / "schema" / "pipeline.schema.json"

METRIC_NAME = (
    "A metric, by name: one of dagsmith's (accuracy, balanced_accuracy, f1, precision, recall, roc_auc, log_loss; "
    "r2, mean_absolute_error, mean_squared_error, root_mean_squared_error, median_absolute_error, explained_variance), "
    "a scikit-learn scorer (sklearn.metrics.get_scorer_names(): neg_mean_absolute_error, f1_macro, roc_auc_ovr...; "
    "a neg_ scorer's value is negated, greater is better), or a user metric listed in evaluation.metrics."
)
# A gate's value or delta: a number, or ${params.NAME} of a number or integer parameter.
THRESHOLD = "a number, or ${params.NAME} of a number or integer parameter (each run's value)"
PARAM_NUMBER = {"type": "string", "pattern": r"^\$\{params\.[A-Za-z_][A-Za-z0-9_]*\}$"}
NAME = {
    "type": "string",
    "pattern": "^[A-Za-z][A-Za-z0-9_-]*$",
    "description": "A step name: a letter, then letters, digits, '_' or '-'. Unique across sources, "
    "features, validations and steps.",
}
DURATION = {
    "description": "A duration: 30s, 5m, 2h, 1d or combined (1h30m); a bare integer is seconds.",
    "anyOf": [
        {"type": "string", "pattern": "^([0-9]+[smhd])+$"},
        {"type": "integer", "minimum": 0},
    ],
}
QUANTITY = {"anyOf": [{"type": "string"}, {"type": "number", "exclusiveMinimum": 0}]}
# How every text value reads ${...}; repeated where references matter most.
REFERENCES = ("${params.NAME}, ${run.date} and ${run.id} are filled in with each run's values; "
              "$${ writes a literal ${ (e.g. $${HOME}).")
SQL_REFERENCES = ("References are bound as query parameters, never pasted into the SQL, also inside a quoted "
                  "literal ('${params.label}'); $${ writes a literal ${. Parsed at validate time (DuckDB dialect): "
                  "syntax errors point at their line and column.")


def obj(description: str, properties: dict, required: list[str] | None = None, **extra) -> dict:
    """A closed object: unknown keys are errors, except x-* extension keys."""
    out = {
        "type": "object",
        "description": description,
        "properties": properties,
        "patternProperties": {"^x-": {"description": "Extension key: ignored by dagsmith."}},
        "additionalProperties": False,
    }
    if required:
        out["required"] = required
    out.update(extra)
    return out


METRIC = {
    "description": "Metric to compute: a name (a dagsmith metric, e.g. roc_auc, or a scikit-learn scorer, e.g. "
    "neg_mean_absolute_error), `package.module:function` (called function(y_true, y_pred)), or "
    "{name, function, needs, params}.",
    "anyOf": [
        {"type": "string", "minLength": 1},
        obj(
            "A user metric function, called function(y_true, y_pred, **params), or with the predicted "
            "probabilities instead of y_pred when needs: proba.",
            {
                "name": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$", "description": "The metric's name in results and gates."},
                "function": {"type": "string", "description": "`package.module:function`, imported from the spec's folder."},
                "needs": {"enum": ["prediction", "proba"], "description": "prediction (default): y_pred; proba: the positive "
                          "class's probability (two classes) or the rows x classes matrix."},
                "params": {"type": "object", "description": "Keyword arguments for the function."},
            },
            ["name", "function"],
        ),
    ],
}


def string(description: str, **extra) -> dict:
    return {"type": "string", "description": description, **extra}


def names(description: str) -> dict:
    return {"type": "array", "description": description, "items": {"$ref": "#/$defs/name"}, "uniqueItems": True}


STEP_OPTIONS = {
    "image": {"$ref": "#/$defs/image"},
    "retries": {"$ref": "#/$defs/retries"},
    "retry_delay": {"$ref": "#/$defs/retry_delay"},
    "timeout": {"$ref": "#/$defs/timeout"},
    "resources": {"$ref": "#/$defs/resources"},
    "secrets": {"$ref": "#/$defs/secrets"},
    "env": {"$ref": "#/$defs/env"},
}


def step(description: str, properties: dict, required: list[str] | None = None, **extra) -> dict:
    """A section that becomes a step: its own fields plus the options `defaults:` sets."""
    return obj(description, {**properties, **STEP_OPTIONS}, required, **extra)


DEFS = {
    "name": NAME,
    "duration": DURATION,
    "image": string("Container image the step runs in (Argo, Kubernetes, Step Functions tasks)."),
    "retries": {"type": "integer", "minimum": 0, "maximum": 100, "description": "How many times a failed step is retried."},
    "retry_delay": {"$ref": "#/$defs/duration", "description": "Wait between retries (e.g. 5m)."},
    "timeout": {"$ref": "#/$defs/duration", "description": "A step running longer than this is killed and fails (e.g. 1h)."},
    "resources": obj(
        "Compute requested per task, in Kubernetes units.",
        {
            "cpu": {**QUANTITY, "description": "CPU cores: 2, 0.5 or 500m."},
            "memory": {**QUANTITY, "description": "Memory: 512Mi, 2Gi, 1G; a bare number is bytes."},
            "gpu": {"type": "integer", "minimum": 0, "description": "Number of GPUs."},
        },
    ),
    "secrets": {
        "type": "array",
        "uniqueItems": True,
        "description": "Secret NAMES made available to the step as environment variables; never values. "
        "Resolved by each backend (Airflow Variable, Kubernetes Secret, Secrets Manager) and locally from "
        "the environment.",
        "items": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
    },
    "env": {
        "type": "object",
        "description": "Plain (non-secret) environment variables for the step. " + REFERENCES,
        "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
        "additionalProperties": {"type": ["string", "number", "boolean"]},
    },
    "param": obj(
        "A run-time parameter, referenced in text as ${params.NAME} ($${ writes a literal ${).",
        {
            "type": {"enum": ["integer", "number", "string", "boolean"], "description": "The value's type."},
            "default": {"description": "Value used when a run does not set it. Without a default the parameter is required."},
            "description": string("What the parameter means."),
            "enum": {"type": "array", "minItems": 1, "description": "The only values allowed."},
        },
        ["type"],
    ),
    "source": step(
        "Where data comes from. csv/parquet/json/jsonl/xlsx/s3 read `uri`; sql runs `query` on `connection`. "
        "How files are read, and which options apply to which type: docs/spec.md, \"How a CSV is read\".",
        {
            "type": {"enum": ["csv", "parquet", "json", "jsonl", "xlsx", "sql", "s3"],
                     "description": "csv | parquet | json (an array of objects) | jsonl (one object per line) | xlsx (a sheet; "
                     "needs the xlsx extra) | sql | s3 (objects under a prefix)."},
            "uri": string("A file path, glob or folder (relative to the spec's folder), or an s3:// URI. " + REFERENCES),
            "format": {"enum": ["csv", "parquet", "json", "jsonl", "xlsx"],
                       "description": "For type s3: the format of the objects (default parquet)."},
            "delimiter": string("csv: the character between values (default ',').", minLength=1, maxLength=1),
            "header": {"type": "boolean", "description": "csv, xlsx: the first row (after skip_rows) names the columns "
                       "(default true). Without one, columns are named column0, column1, ... (zero-padded: column00 ... for 10 or more)"},
            "quote": string("csv: the character quoting a value (default '\"').", minLength=1, maxLength=1),
            "escape": string("csv: the character escaping a quote inside a quoted value (default: the quote, "
                             "i.e. a doubled quote as in RFC 4180).", minLength=1, maxLength=1),
            "encoding": {"enum": ["utf-8", "utf-16", "latin-1"], "description": "csv: the file's text encoding (default utf-8)."},
            "null_values": {"type": "array", "items": {"type": "string"}, "uniqueItems": True,
                            "description": "csv, xlsx: the texts read as null, exactly (case matters). Default: pandas' "
                            "list: '', #N/A, #N/A N/A, #NA, -1.#IND, -1.#QNAN, -NaN, -nan, 1.#IND, 1.#QNAN, <NA>, N/A, "
                            "NA, NULL, NaN, None, n/a, nan, null. [] reads every text as a value."},
            "skip_rows": {"type": "integer", "minimum": 0, "description": "csv, xlsx: lines (rows) skipped before the header (default 0)."},
            "sheet": {"description": "xlsx: the sheet, by name or by index (0 is the first; default 0).",
                      "anyOf": [{"type": "string", "minLength": 1}, {"type": "integer", "minimum": 0}]},
            "columns": {"type": "object", "description": "csv, json, jsonl, xlsx: declared column types, enforced: "
                        "a value that does not convert fails the step naming its line and column (or is null with "
                        "on_bad_value: null). Columns not declared keep the reader's inferred type.",
                        "propertyNames": {"minLength": 1},
                        "additionalProperties": {"enum": ["string", "integer", "double", "number", "boolean", "date", "timestamp"]}},
            "on_bad_value": {"enum": ["fail", "null", None], "description": "A declared column's value that does not convert: "
                             "fail the step (default) or read it as null (`on_bad_value: null`, YAML's null or the text)."},
            "connection": string(
                "For type sql: the NAME of a connection (Airflow connection id; locally the environment "
                "variable DAGSMITH_CONN_<NAME>). Never a URL or a password.",
                pattern="^[A-Za-z][A-Za-z0-9_-]*$",
            ),
            "query": string("For type sql: the query that returns the table, in the connection's SQL. " + SQL_REFERENCES),
            "description": string("What this data is."),
        },
        ["type"],
        allOf=[
            {"if": {"properties": {"type": {"const": "sql"}}, "required": ["type"]},
             "then": {"required": ["connection", "query"]},
             "else": {"required": ["uri"]}},
        ],
    ),
    "feature": step(
        "A derived table: DuckDB SQL over its inputs (each registered under its name), or a Python transform.",
        {
            "inputs": names("Sources or features this feature reads, by name."),
            "sql": string("A DuckDB SQL query over the inputs, each a table under its name; it may read only "
                          "its inputs. " + SQL_REFERENCES),
            "transform": string(
                "A Python function `package.module:function(frames: dict) -> DataFrame`.",
                pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$",
            ),
            "key": {
                "description": "The column (or columns) that identify a row.",
                "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}],
            },
            "description": string("What this feature table holds."),
        },
    ),
    "validation": step(
        "A data check: Great Expectations expectations run on one table.",
        {
            "name": {"$ref": "#/$defs/name"},
            "on": {"$ref": "#/$defs/name", "description": "The source or feature to check."},
            "expectations": {
                "type": "array",
                "minItems": 1,
                "description": "Each item: {expectation_name: {kwargs}}, e.g. "
                "{expect_column_values_to_not_be_null: {column: id}}.",
                "items": {
                    "type": "object",
                    "minProperties": 1,
                    "maxProperties": 1,
                    "additionalProperties": {"type": ["object", "null"], "description": "The expectation's keyword arguments."},
                },
            },
            "on_failure": {"enum": ["fail", "warn"], "description": "fail: stop the run (default). warn: record and go on."},
            "description": string("What this check protects."),
        },
        ["name", "on", "expectations"],
    ),
    "sweep": obj(
        "Hyperparameter search: ONE fan-out with one training task per combination.",
        {
            "method": {"enum": ["grid", "random"], "description": "grid: every combination. random: `samples` draws."},
            "parameters": {
                "type": "object",
                "minProperties": 1,
                "description": "Estimator parameter -> a list of values; for random also {low, high, log, type}.",
                "additionalProperties": {
                    "anyOf": [
                        {"type": "array", "minItems": 1},
                        obj(
                            "A range to draw from (random sweeps only).",
                            {
                                "low": {"type": "number", "description": "Smallest value."},
                                "high": {"type": "number", "description": "Largest value."},
                                "log": {"type": "boolean", "description": "Draw uniformly on a log scale."},
                                "type": {"enum": ["int", "float"], "description": "int or float (default float)."},
                            },
                            ["low", "high"],
                        ),
                    ]
                },
            },
            "samples": {"type": "integer", "minimum": 1, "description": "random: how many combinations to draw."},
            "seed": {"type": "integer", "description": "random: the seed of the draws (default 0)."},
            "max_parallel": {"type": "integer", "minimum": 1, "description": "At most this many trials at once."},
            "select": obj(
                "How the best trial is chosen for evaluation.",
                {
                    "metric": {"type": "string", "minLength": 1, "description": METRIC_NAME},
                    "goal": {"enum": ["max", "min"], "description": "max or min."},
                },
                ["metric", "goal"],
            ),
        },
        ["method", "parameters"],
    ),
    "gate": obj(
        "A condition on a metric. Absolute: {metric, op, value}. Champion/challenger: "
        "{metric, compare_to: production, op, delta}: the new model's metric compared with the production "
        "model's plus delta.",
        {
            "metric": {"type": "string", "minLength": 1, "description": "A metric listed in evaluation.metrics (by its name)."},
            "op": {"enum": [">=", ">", "<=", "<", "=="], "description": "Comparison operator."},
            "value": {"anyOf": [{"type": "number"}, PARAM_NUMBER], "description": "The absolute threshold: " + THRESHOLD + "."},
            "compare_to": {"enum": ["production"], "description": "Compare with the model in production."},
            "delta": {"anyOf": [{"type": "number"}, PARAM_NUMBER], "description": "The allowed difference from production (0.0: at least as good; -0.01 "
                      "with >=: may be 0.01 worse): " + THRESHOLD + "."},
        },
        ["metric", "op"],
    ),
}

SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://dagsmith.dev/schema/pipeline.schema.json",
    "title": "dagsmith pipeline spec, version 1",
    **obj(
        "One ML pipeline: data sources, features, validation, training, evaluation gates, deployment and triggers. "
        "In any text value, " + REFERENCES,
        {
            "dagsmith": {"const": 1, "description": "Spec version. Always 1."},
            "include": {
                "description": "Other spec files (relative to this file's folder) merged under this one before validation.",
                "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
            },
            "pipeline": obj(
                "Who and what this pipeline is.",
                {
                    "name": string("Pipeline name: lowercase letters, digits and '-', at most 63 characters (a Kubernetes label).",
                                   pattern="^[a-z0-9]([a-z0-9-]*[a-z0-9])?$", maxLength=63),
                    "description": string("One line on what the pipeline does."),
                    "owner": string("Owning team or person."),
                    "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True, "description": "Labels for search and grouping."},
                },
                ["name"],
            ),
            "params": {
                "type": "object",
                "description": "Run-time parameters, overridable per run (--param) and per environment.",
                "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
                "additionalProperties": {"$ref": "#/$defs/param"},
            },
            "defaults": obj("Step options every step inherits unless it sets its own.", dict(STEP_OPTIONS)),
            "sources": {
                "type": "object",
                "description": "Data sources by name.",
                "propertyNames": {"$ref": "#/$defs/name"},
                "additionalProperties": {"$ref": "#/$defs/source"},
            },
            "features": {
                "type": "object",
                "description": "Derived tables by name.",
                "propertyNames": {"$ref": "#/$defs/name"},
                "additionalProperties": {"$ref": "#/$defs/feature"},
            },
            "validation": {"type": "array", "description": "Data checks.", "items": {"$ref": "#/$defs/validation"}},
            "training": step(
                "Model training: one model, one per partition, or a sweep of trials.",
                {
                    "inputs": names("Sources or features joined into the training table (usually one feature)."),
                    "target": string("The label column."),
                    "split": obj(
                        "How rows are held out for evaluation: {test_size, seed} at random, {column} precomputed, or "
                        "{hash_of, test_fraction} by a hash of key columns (stable as data grows).",
                        {
                            "test_size": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1, "description": "Share of rows held out."},
                            "seed": {"type": "integer", "description": "Seed of the random split."},
                            "column": string("A column whose value says which rows are held out."),
                            "test_value": {"type": ["string", "integer", "boolean"], "description": "With column: the value that marks held-out rows (default 'test')."},
                            "hash_of": {
                                "type": "array",
                                "minItems": 1,
                                "uniqueItems": True,
                                "items": {"type": "string", "minLength": 1},
                                "description": "Key columns: a row is held out when the SHA-256 of its key values falls below test_fraction, so adding rows never moves a row between train and test.",
                            },
                            "test_fraction": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1, "description": "With hash_of: the share of keys held out (default 0.2)."},
                        },
                    ),
                    "partition_by": string("Train one model per distinct value of this column."),
                    "partitions": {
                        "type": "array",
                        "minItems": 1,
                        "uniqueItems": True,
                        "items": {"type": ["string", "integer"]},
                        "description": "Static partition values; without it, values are found at run time.",
                    },
                    "model": obj(
                        "What is trained: a scikit-learn-style estimator class, or your own entrypoint.",
                        {
                            "estimator": string("Import path of an estimator class, e.g. sklearn.ensemble.GradientBoostingClassifier."),
                            "entrypoint": string("Your training function, `package.module:function`."),
                            "params": {"type": "object", "description": "Keyword arguments for the estimator or entrypoint."},
                        },
                    ),
                    "sweep": {"$ref": "#/$defs/sweep"},
                    "distributed": obj(
                        "Data-parallel training across worker processes.",
                        {
                            "framework": {"enum": ["horovod", "torch"], "description": "horovod | torch (torch.distributed)."},
                            "workers": {"type": "integer", "minimum": 1, "description": "Number of worker processes."},
                            "gpus_per_worker": {"type": "integer", "minimum": 0, "description": "GPUs per worker (0 on CPU)."},
                        },
                        ["framework", "workers"],
                    ),
                },
                ["inputs", "target", "model"],
            ),
            "evaluation": step(
                "Metrics on the held-out split, and the gates that decide whether the model is deployed.",
                {
                    "metrics": {"type": "array", "minItems": 1, "uniqueItems": True, "items": METRIC, "description": "Metrics to compute."},
                    "gates": {"type": "array", "items": {"$ref": "#/$defs/gate"}, "description": "ALL must pass, or nothing after evaluation runs."},
                },
                ["metrics"],
            ),
            "deployment": step(
                "Where the model goes when every gate passes.",
                {
                    "model_name": string("Registry name of the model.", pattern="^[A-Za-z0-9][A-Za-z0-9_.-]*$"),
                    "target": {"enum": ["local", "sagemaker", "kserve"], "description": "local | sagemaker | kserve."},
                    "strategy": {"enum": ["replace", "canary"], "description": "replace: the new model takes all traffic. canary: a share first."},
                    "canary": obj(
                        "Canary settings.",
                        {"traffic_percent": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 100, "description": "Share of requests sent to the new model."}},
                        ["traffic_percent"],
                    ),
                    "sagemaker": obj(
                        "target sagemaker: a SageMaker endpoint serving the model with dagsmith's own server "
                        "(the step's image). Needs an s3:// artifact store. See docs/deployment.md.",
                        {
                            "role_arn": string("IAM role SageMaker assumes to read the model and run the container.",
                                               pattern="^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]{1,512}$", maxLength=2048),
                            "instance_type": string("Instance type of the endpoint's variants (default ml.m5.large).",
                                                    pattern="^ml\\.[a-z0-9]+\\.[a-z0-9]+$", maxLength=64),
                            "instance_count": {"type": "integer", "minimum": 1, "maximum": 100,
                                               "description": "Instances per production variant (default 1)."},
                            "endpoint_name": string("Endpoint name (default: the model name, made SageMaker-safe): "
                                                    "letters, digits and '-', at most 63 characters.",
                                                    pattern="^[a-zA-Z0-9](-*[a-zA-Z0-9])*$", maxLength=63),
                            "region": string("AWS region (default: the environment's).", pattern="^[a-z]{2}(-[a-z]+)+-[0-9]+$"),
                        },
                        ["role_arn"],
                    ),
                    "kserve": obj(
                        "target kserve: an InferenceService (serving.kserve.io/v1beta1) running dagsmith's own server "
                        "(the step's image), created or patched through the Kubernetes API. See docs/deployment.md.",
                        {
                            "namespace": string("Kubernetes namespace (default: the in-cluster one, else default).",
                                                pattern="^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", maxLength=63),
                            "name": string("InferenceService name (default: the model name, made DNS-safe): a DNS-1035 label.",
                                           pattern="^[a-z]([-a-z0-9]*[a-z0-9])?$", maxLength=45),
                            "service_account": string("Service account of the predictor (it reads the model from the store).",
                                                      pattern="^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$", maxLength=253),
                        },
                    ),
                    "mlflow": obj(
                        "MLflow tracking (pip install 'dagsmith[mlflow]'): training trials logged as runs, the deployed model "
                        "registered with lineage tags and the champion/challenger aliases; compare_to: production gates read "
                        "the champion from it.",
                        {
                            "connection": string(
                                "The NAME of the tracking server's connection (locally the environment variable "
                                "DAGSMITH_CONN_<NAME> holds its URI). Never a URL or a password.",
                                pattern="^[A-Za-z][A-Za-z0-9_-]*$", maxLength=100,
                            ),
                            "experiment": string("Experiment the runs go to (default: the pipeline name).", maxLength=500),
                        },
                        ["connection"],
                    ),
                },
                ["model_name"],
            ),
            "triggers": obj(
                "When the pipeline runs.",
                {
                    "schedule": string("Cron expression (5 fields) or @hourly/@daily/@weekly/@monthly/@yearly."),
                    "on_new_data": {
                        "type": "array",
                        "description": "Continuous training: rerun when a source gets new data.",
                        "items": obj(
                            "Rerun when this source gets new data.",
                            {
                                "source": {"$ref": "#/$defs/name", "description": "A source name."},
                                "min_interval": {"$ref": "#/$defs/duration", "description": "At most one run per interval, however much data lands."},
                                "queue": string("Optional SQS queue URL receiving the bucket's object-created notifications."),
                            },
                            ["source"],
                        ),
                    },
                },
            ),
            "steps": {
                "type": "object",
                "description": "Custom steps, placed by `after:`.",
                "propertyNames": {"$ref": "#/$defs/name"},
                "additionalProperties": step(
                    "A custom step.",
                    {
                        "after": {
                            "type": "array",
                            "uniqueItems": True,
                            "items": {"type": "string"},
                            "description": "Steps this one runs after: names, or the built-ins train, evaluate, deploy.",
                        },
                        "inputs": {
                            "type": "array",
                            "uniqueItems": True,
                            "description": "What the step reads through dagsmith.step: table names (sources, features, "
                            "other steps' outputs) and models ({model: trained | production | canary | a registry version}). "
                            "Reading anything else is an error; each input also orders the step after what makes it.",
                            "items": {
                                "anyOf": [
                                    {"$ref": "#/$defs/name"},
                                    obj(
                                        "A model: this run's (trained) or the registry's (deployment.model_name) by alias or version.",
                                        {"model": {
                                            "description": "trained (this run's model), production, canary, or a registry version number.",
                                            "anyOf": [{"enum": ["trained", "production", "canary"]}, {"type": "integer", "minimum": 1}],
                                        }},
                                        ["model"],
                                    ),
                                ],
                            },
                        },
                        "outputs": names("Tables the step writes (dagsmith.step.write_table): names in the one namespace of "
                                         "sources, features, validations and steps, which later features, validations, "
                                         "training and steps may read. A step with outputs is cached like a feature."),
                        "run": obj(
                            "What runs: a Python function or a command (argv, run without a shell).",
                            {
                                "python": string("`package.module:function`, called with no arguments."),
                                "command": {
                                    "type": "array", "minItems": 1, "items": {"type": "string"},
                                    "description": "argv, run without a shell, e.g. [python, -m, tool, \"${run.id}\"]. " + REFERENCES,
                                },
                            },
                        ),
                        "description": string("What the step does."),
                    },
                    ["run"],
                ),
            },
            "predict": {
                "type": "object",
                "description": "Batch scoring: each entry scores a table with a model and writes the table of its NAME "
                               "(the input rows, then prediction, probability and model_version). See docs/spec.md.",
                "propertyNames": {"$ref": "#/$defs/name"},
                "additionalProperties": step(
                    "A batch-scoring step.",
                    {
                        "model": {
                            "anyOf": [
                                {"type": "string", "enum": ["trained", "production", "canary"]},
                                {"type": "integer", "minimum": 1},
                            ],
                            "description": "trained (this run's trained/selected model), production or canary (the registry "
                                           "alias of deployment.model_name, after deploy), or a registry version number.",
                        },
                        "input": {"$ref": "#/$defs/name", "description": "The table to score: a source, a feature or another predict's output."},
                        "output_columns": {
                            "type": "array", "minItems": 1, "uniqueItems": True,
                            "items": {"type": "string", "enum": ["prediction", "probability"]},
                            "description": "Which columns to add (default both); model_version is always added.",
                        },
                        "batch_rows": {"type": "integer", "minimum": 1, "maximum": 1000000,
                                       "description": "Rows scored at once (default 10000): bounds the memory a step needs."},
                        "rows_per_task": {"type": "integer", "minimum": 1000,
                                          "description": "Fan the scoring out over row ranges: task i scores rows "
                                                         "[i*N, (i+1)*N) of the input table (the task count is found at "
                                                         "run time from its row count). Default: one task."},
                        "description": string("What the scores are for."),
                    },
                    ["model", "input"],
                ),
            },
            "environments": {
                "type": "object",
                "description": "Overlays deep-merged onto the spec by --env NAME (mappings merge, other values replace, null deletes).",
                "propertyNames": {"pattern": "^[A-Za-z0-9][A-Za-z0-9_-]*$"},
                "additionalProperties": {"type": "object"},
            },
            "backends": obj(
                "Per-orchestrator options; none are needed for a first compile.",
                {
                    "airflow": obj(
                        "Airflow options.",
                        {
                            "dag_id": string("DAG id (default: the pipeline name).", pattern="^[A-Za-z0-9_.-]+$"),
                            "pool": string("Airflow pool for every task."),
                            "queue": string("Executor queue for every task."),
                            "owner": string("Task owner (default: pipeline.owner)."),
                            "tags": {"type": "array", "items": {"type": "string"}, "description": "Extra DAG tags."},
                            "operator": {"enum": ["python", "bash", "kubernetes"], "description": "How tasks run the step: python (in the worker), bash, kubernetes (a pod)."},
                            "namespace": string("Kubernetes namespace for operator: kubernetes."),
                            "store": string("Artifact store of runs: a folder, or s3://bucket/prefix for distributed workers."),
                            "max_map_length": {
                                "type": "integer", "minimum": 1,
                                "description": "Airflow's [core] max_map_length (default 1024): a larger fan-out maps over this many ranges of items.",
                            },
                            "code": {"enum": ["store", "image"],
                                     "description": "Where operator: kubernetes pods get the user's modules: store (default: the spec folder's *.py files are "
                                                    "packaged, put in the store by deploy and fetched by each step; DAGSMITH_CODE) or image "
                                                    "(baked into the image: nothing is packaged)."},
                        },
                    ),
                    "argo": obj(
                        "Argo Workflows options.",
                        {
                            "namespace": string("Kubernetes namespace."),
                            "service_account": string("Service account the workflow's pods run as (default <pipeline>-steps, made by <name>.prerequisites.yaml)."),
                            "sensor_service_account": string("Service account the Sensor runs as: it may create Workflows, so it must differ from the pods' (default <pipeline>-sensor)."),
                            "event_source_service_account": string("Service account the EventSource runs as (default <pipeline>-eventsource; give it the SQS permissions through IRSA)."),
                            "webhook_secret": string("The Secret whose key 'token' is the bearer token a webhook EventSource requires (default <pipeline>-webhook-token)."),
                            "store": string("Artifact store of runs, s3://bucket/prefix (pods share no disk); pods read the IR from it."),
                            "pod_gc": {"enum": ["OnPodCompletion", "OnPodSuccess", "OnWorkflowCompletion", "OnWorkflowSuccess"],
                                       "description": "When Argo deletes finished pods (default OnPodSuccess: failed pods stay for their logs)."},
                            "ttl": obj(
                                "How long finished workflows are kept (seconds; default 1 day after success, 7 after failure).",
                                {
                                    "after_success": {"type": "integer", "minimum": 0, "description": "Seconds a succeeded workflow is kept."},
                                    "after_failure": {"type": "integer", "minimum": 0, "description": "Seconds a failed workflow is kept."},
                                    "after_completion": {"type": "integer", "minimum": 0, "description": "Seconds any finished workflow is kept."},
                                },
                            ),
                            "max_fanout_pods": {
                                "type": "integer", "minimum": 1, "maximum": 6000,
                                "description": "At most this many pods per fan-out (default 1000): a larger fan-out runs ranges of items per pod.",
                            },
                            "image_pull_policy": {"enum": ["Always", "IfNotPresent", "Never"], "description": "The containers' imagePullPolicy."},
                            "server": string("dagsmith deploy: the Argo Server's URL (or --server)."),
                            "token_env": string("dagsmith deploy: the environment variable holding the Argo Server token (default ARGO_TOKEN).",
                                                pattern="^[A-Za-z_][A-Za-z0-9_]*$"),
                            "code": {"enum": ["store", "image"],
                                     "description": "Where the pods get the user's modules: store (default: the spec folder's *.py files are "
                                                    "packaged, put in the store by deploy and fetched by each step; DAGSMITH_CODE) or image "
                                                    "(baked into the image: nothing is packaged)."},
                        },
                    ),
                    "stepfunctions": obj(
                        "AWS Step Functions options.",
                        {
                            "role_arn": string("IAM role the state machine runs as (default: the template creates one, least privilege).", pattern="^arn:"),
                            "region": string("AWS region, e.g. eu-west-1 (deploy's default for --region)."),
                            "store": string("Artifact store of runs, s3://bucket/prefix (default: the template's ArtifactBucket parameter, prefix dagsmith)."),
                            "compute": {"enum": ["ecs", "batch"], "description": "Where tasks run: ecs (Fargate RunTask, default) or batch (AWS Batch SubmitJob)."},
                            "state_machine_name": string("State machine name (default: the pipeline name), at most 80 letters, digits, '-' and '_'.", pattern="^[A-Za-z0-9_-]{1,80}$"),
                            "max_map_length": {"type": "integer", "minimum": 1, "description": "Task instances per fan-out at most (default 10000): more items run in ranges."},
                            "inline_map_limit": {"type": "integer", "minimum": 1, "maximum": 40, "description": "Map items up to which a fan-out runs as an inline Map (default 40); more run as a Distributed Map."},
                            "parameters": {"type": "object", "additionalProperties": {"type": ["string", "number"]},
                                           "description": "CloudFormation parameter values (Cluster, Subnets, SecurityGroups, JobQueue, ArtifactBucket, ...): the template's defaults."},
                            "admission_lease_seconds": {"type": "integer", "minimum": 1, "maximum": 86400,
                                                        "description": "min_interval's admission lock lease (default 1800): a lock its execution left "
                                                        "(stopped between Lock and Unlock) is taken over after it."},
                            "new_data_marker": {"type": ["string", "null"], "pattern": "^[^/\\s]+$",  # one object name: no folder, no space or newline
                                                "description": "on_new_data: the object whose arrival under the source's prefix starts ONE run "
                                                "(default _SUCCESS, written last by Spark, Hadoop, Glue); null: every object starts one."},
                            "code": {"enum": ["store", "image"],
                                     "description": "Where the tasks get the user's modules: store (default: the spec folder's *.py files are "
                                                    "packaged, put in the store by deploy and fetched by each step; DAGSMITH_CODE) or image "
                                                    "(baked into the image: nothing is packaged)."},
                        },
                    ),
                },
            ),
        },
        ["dagsmith", "pipeline"],
    ),
    "$defs": DEFS,
}


# JSON Schema patterns are ECMA-262, where `$` is the end of the text; Python's jsonschema runs
# them with re.search, where `$` also matches before a final newline ("probe\n" would pass).
# `$(?!\n)` means the end of the text in both dialects, so every anchored pattern ends with it.
END_OF_TEXT = "$(?!\\n)"


def _strict_ends(node):
    if isinstance(node, dict):
        return {
            key: (value[:-1] + END_OF_TEXT if key == "pattern" and isinstance(value, str) and value.endswith("$") else _strict_ends(value))
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_strict_ends(item) for item in node]
    return node


def render() -> str:
    return json.dumps(_strict_ends(SCHEMA), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(render(), encoding="utf-8")
    print(f"wrote {OUT.relative_to(Path.cwd()) if OUT.is_relative_to(Path.cwd()) else OUT}", file=sys.stderr)
