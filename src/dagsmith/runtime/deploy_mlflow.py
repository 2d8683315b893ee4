"""deployment.mlflow: an MLflow tracking server and Model Registry (pip install 'dagsmith[mlflow]').

The spec names a CONNECTION, never a URL: DAGSMITH_CONN_<NAME> holds the tracking URI at run
time (http(s)://..., sqlite:///..., databricks, a folder); credentials go in that variable or in
MLflow's own (MLFLOW_TRACKING_TOKEN, ...), and no message dagsmith writes holds its value.

    log_trials (select step)   every trial of the sweep is a run in the experiment (default: the
                               pipeline name): params, metrics, the trial's model (artifact
                               model/model.joblib), tags dagsmith.run_id / item / partition /
                               trial / pipeline / spec_hash. A retry logs nothing twice.
    register (deploy step)     a run "<model> v<version>" holding the version's bundle (the
                               one-version registry deploy_bundle makes) under model/, registered
                               as a version of the registered model <model_name> with lineage tags
                               (dagsmith.version, dagsmith.run_id, dagsmith.spec_hash,
                               dagsmith.model_fingerprint, dagsmith.input.<source>=fingerprint,
                               dagsmith.trial_runs); then the aliases follow the local registry's:
                               champion = production, challenger = the canary (removed without).
    champion (gate step)       compare_to: production scores the model the champion alias names.
"""

from __future__ import annotations

import json
import os
import tarfile
import tempfile
from pathlib import Path

from .context import StepContext, StepFailed
from .sources import connection_env

CHAMPION, CHALLENGER = "champion", "challenger"


class MLflowError(StepFailed):
    pass


class Tracking:
    """An MlflowClient on the connection's URI; errors never show the URI."""

    def __init__(self, settings: dict):
        self.name = settings["connection"]
        self.variable = connection_env(self.name)
        self.uri = os.environ.get(self.variable) or ""
        if not self.uri:
            raise MLflowError(f"mlflow connection {self.name!r} is not set: set {self.variable} to the tracking server's URI")
        try:
            from mlflow import MlflowClient
        except ImportError as exc:
            raise MLflowError(f"deployment.mlflow needs the MLflow client ({exc.name} is not installed): "
                              "pip install 'dagsmith[mlflow]'") from None
        try:  # the client may refuse the URI, quoting it
            self.client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
        except Exception as exc:
            raise self.fail("opening the tracking URI", exc) from None

    def hide(self, text: str) -> str:
        """The client's text without the URI or any piece of it (it splits the URI: the path and
        query of http://host/SecretPath/?token=... are printed apart from the host)."""
        from ..errors import hide_value

        return hide_value(text, self.uri, self.variable) or ""

    def fail(self, what: str, exc: Exception) -> MLflowError:
        return MLflowError(f"mlflow ({self.name}): {what} failed: {self.hide(f'{type(exc).__name__}: {exc}')}")

    def experiment(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        return found.experiment_id if found is not None else self.client.create_experiment(name)

    def find_run(self, experiment_id: str, tags: dict):
        query = " and ".join(f"tags.\"{k}\" = '{v}'" for k, v in tags.items())
        runs = self.client.search_runs([experiment_id], filter_string=query, max_results=1)
        return runs[0] if runs else None


def _experiment_name(ctx: StepContext, settings: dict) -> str:
    return settings.get("experiment") or ctx.ir.name


def _params(params: dict) -> dict:
    return {str(k)[:250]: json.dumps(v) if not isinstance(v, str) else v for k, v in (params or {}).items()}


def _metrics(metrics: dict) -> dict:
    return {k: float(v) for k, v in (metrics or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _log_run(tracking: Tracking, experiment_id: str, name: str, tags: dict, params: dict, metrics: dict,
             artifacts: list[tuple[Path, str]]) -> str:
    client = tracking.client
    run = client.create_run(experiment_id, run_name=name, tags=tags)
    run_id = run.info.run_id
    for key, value in _params(params).items():
        client.log_param(run_id, key, value)
    for key, value in _metrics(metrics).items():
        client.log_metric(run_id, key, value)
    for path, where in artifacts:
        (client.log_artifacts if path.is_dir() else client.log_artifact)(run_id, str(path), where)
    client.set_terminated(run_id)
    return run_id


def _base_tags(ctx: StepContext) -> dict:
    return {"dagsmith.run_id": ctx.values.run_id, "dagsmith.pipeline": ctx.ir.name,
            "dagsmith.spec_hash": str(ctx.ir.pipeline.get("spec_hash") or "")}


def log_trials(ctx: StepContext, settings: dict, train_id: str, trials: list[dict], model_file: str) -> list[str]:
    """One run per trial (train fan-out item); returns the run ids."""
    tracking = Tracking(settings)
    try:
        experiment_id = tracking.experiment(_experiment_name(ctx, settings))
        run_ids = []
        for trial in trials:
            tags = {**_base_tags(ctx), "dagsmith.item": str(trial["index"])}
            found = tracking.find_run(experiment_id, {"dagsmith.run_id": ctx.values.run_id, "dagsmith.item": str(trial["index"])})
            if found is not None:
                run_ids.append(found.info.run_id)
                continue
            if trial.get("partition") is not None:
                tags["dagsmith.partition"] = str(trial["partition"])
            if trial.get("trial") is not None:
                tags["dagsmith.trial"] = str(trial["trial"])
            model = ctx.input_file(train_id, model_file, item=trial["index"])
            name = f"{ctx.ir.name} trial {trial['index']}"
            run_ids.append(_log_run(tracking, experiment_id, name, tags, trial.get("params") or {},
                                    trial.get("metrics") or {}, [(model, "model")]))
        return run_ids
    except MLflowError:
        raise
    except Exception as exc:
        raise tracking.fail("logging the trials", exc) from None


def _model_version(tracking: Tracking, name: str, version: int):
    for mv in tracking.client.search_model_versions(f"name='{name}'"):
        if (mv.tags or {}).get("dagsmith.version") == str(int(version)):
            return mv
    return None


def register(ctx: StepContext, settings: dict, model_name: str, version: int, aliases: dict) -> dict:
    """Register the deployed version in the Model Registry and move champion / challenger."""
    from . import deploy_bundle, registry

    tracking = Tracking(settings)
    client = tracking.client
    try:
        experiment_id = tracking.experiment(_experiment_name(ctx, settings))
        lineage = registry.read_version_json(ctx.store, model_name, version, "lineage.json")
        mv = _model_version(tracking, model_name, version)
        if mv is None:
            tags = {**_base_tags(ctx), "dagsmith.version": str(int(version)), "dagsmith.model": model_name}
            found = tracking.find_run(experiment_id, {"dagsmith.run_id": ctx.values.run_id, "dagsmith.version": str(int(version))})
            trial_runs = [r.info.run_id for r in client.search_runs(
                [experiment_id], filter_string=f"tags.\"dagsmith.run_id\" = '{ctx.values.run_id}' and tags.\"dagsmith.item\" != ''")]
            if found is not None:
                run_id = found.info.run_id
            else:
                metrics = registry.read_version_json(ctx.store, model_name, version, "metrics.json")
                selection = lineage.get("selection") or []
                params = selection[0]["params"] if len(selection) == 1 and selection[0].get("params") else {}
                deploy_bundle.publish(ctx.store, model_name, version)
                bundle = ctx.store.file(ctx.store.require(deploy_bundle.bundle_key(model_name, version)), deploy_bundle.BUNDLE)
                with tempfile.TemporaryDirectory(prefix="dagsmith-mlflow-") as tmp:
                    with tarfile.open(bundle, "r:gz") as tar:
                        tar.extractall(tmp, filter="data")
                    run_id = _log_run(tracking, experiment_id, f"{model_name} v{version}", tags, params,
                                      metrics if all(not isinstance(v, dict) for v in metrics.values()) else {},
                                      [(Path(tmp), "model")])
            try:
                client.get_registered_model(model_name)
            except Exception:
                client.create_registered_model(model_name, tags={"dagsmith.pipeline": ctx.ir.name})
            source = f"{client.get_run(run_id).info.artifact_uri.rstrip('/')}/model"
            version_tags = {
                **tags, "dagsmith.mlflow_run_id": run_id,
                "dagsmith.model_fingerprint": str(lineage.get("model_fingerprint") or ""),
                "dagsmith.trial_runs": ",".join(trial_runs)[:5000],
                **{f"dagsmith.input.{step}": str(fp) for step, fp in (lineage.get("inputs") or {}).items()},
                **{f"dagsmith.feature.{step}": str(fp) for step, fp in (lineage.get("features") or {}).items()},
            }
            mv = client.create_model_version(model_name, source, run_id=run_id, tags=version_tags)
        moved = move_aliases(tracking, model_name, aliases)
        return {"registered_model": model_name, "version": int(mv.version), "run_id": mv.run_id, "aliases": moved}
    except MLflowError:
        raise
    except Exception as exc:
        raise tracking.fail(f"registering {model_name!r} version {version}", exc) from None


def move_aliases(tracking: Tracking, model_name: str, aliases: dict) -> dict:
    """champion = the local production version's MLflow version; challenger = the canary's."""
    client = tracking.client
    moved = {}
    for alias, local in ((CHAMPION, aliases.get("production")), (CHALLENGER, (aliases.get("canary") or {}).get("version"))):
        mv = _model_version(tracking, model_name, local) if local is not None else None
        if mv is not None:
            client.set_registered_model_alias(model_name, alias, mv.version)
            moved[alias] = int(mv.version)
        else:
            try:
                client.delete_registered_model_alias(model_name, alias)
            except Exception:
                pass  # it was not set
            moved[alias] = None
    return moved


def champion(ctx: StepContext, settings: dict, model_name: str):
    """(local version number, a Store holding it) of the champion, or (None, None) when there is none."""
    from .store import LocalStore

    tracking = Tracking(settings)
    try:
        try:
            mv = tracking.client.get_model_version_by_alias(model_name, CHAMPION)
        except Exception as exc:
            if "RESOURCE_DOES_NOT_EXIST" in str(getattr(exc, "error_code", "")) or "not found" in str(exc).lower():
                return None, None
            raise
        version = (mv.tags or {}).get("dagsmith.version")
        if not version:
            raise MLflowError(f"mlflow: champion of {model_name!r} (version {mv.version}) was not registered by dagsmith "
                              "(no dagsmith.version tag)")
        from mlflow.artifacts import download_artifacts

        folder = Path(tempfile.mkdtemp(prefix="dagsmith-champion-"))
        download_artifacts(artifact_uri=mv.source, dst_path=str(folder), tracking_uri=tracking.uri)
        root = folder / "model" if (folder / "model" / "registry").is_dir() else folder
        return int(version), LocalStore(root)
    except MLflowError:
        raise
    except Exception as exc:
        raise tracking.fail(f"reading the champion of {model_name!r}", exc) from None
