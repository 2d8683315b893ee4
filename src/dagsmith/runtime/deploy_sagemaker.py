"""target sagemaker: the deployed version served by a SageMaker endpoint (boto3).

deploy (the deploy step, after the version is in the local registry, before its aliases move):
  1. the version's bundle (deploy_bundle: model.tar.gz) is committed to the store, which must be
     s3:// (SageMaker reads ModelDataUrl from S3);
  2. one SageMaker Model per version served: the step's image, whose entrypoint runs
     `python -m dagsmith.serving.sagemaker` (SageMaker starts it with the argument `serve`):
     dagsmith's own server on port 8080, GET /ping and POST /invocations, with /invocations
     answering exactly what `dagsmith serve`'s POST /predict answers;
  3. the traffic the aliases mean (deploy_bundle.traffic: replace -> the new version 100;
     canary -> the new version at traffic_percent, production the rest) as production
     variants "v<version>": when every version with traffic is a variant of the endpoint's
     current config, UpdateEndpointWeightsAndCapacities; else a new EndpointConfig and
     CreateEndpoint / UpdateEndpoint, then wait for InService.
  Any failure raises before the aliases move, and the endpoint keeps its current config.

sync (promote / rollback --target sagemaker): the same step 3 for the new aliases, with the
settings the last deploy recorded in deployments/<model>/sagemaker.json.

Names: letters, digits and '-', at most 63 characters (deploy_bundle.safe_name: changed or
truncated names get a hash suffix); Model names carry a hash of the bundle's URI, so two stores
never share a name and a retry finds its own Model. Requests carry no credentials: the model's
environment holds only DAGSMITH_MODEL and DAGSMITH_MODEL_VERSION.
"""

from __future__ import annotations

from botocore.exceptions import ClientError

from . import deploy_bundle as B
from .context import StepFailed
from .store import Store

LIMIT = 63
DEFAULT_INSTANCE_TYPE = "ml.m5.large"
WAIT = {"Delay": 15, "MaxAttempts": 240}  # an endpoint update takes minutes: up to an hour


class SageMakerError(StepFailed):
    pass


def client(region: str | None = None):
    import boto3

    return boto3.client("sagemaker", **({"region_name": region} if region else {}))


def endpoint_name(model: str, settings: dict) -> str:
    return settings.get("endpoint_name") or B.safe_name(model, LIMIT)


def model_resource_name(model: str, version: int, bundle_uri: str) -> str:
    suffix = f"-v{int(version)}-{B.short_hash(bundle_uri)}"
    return B.safe_name(model, LIMIT - len(suffix)) + suffix


def variant_name(version: int) -> str:
    return f"v{int(version)}"


def _error(exc) -> str:
    response = getattr(exc, "response", None) or {}
    error = response.get("Error") or {}
    return f"{error.get('Code', type(exc).__name__)}: {error.get('Message', exc)}"


def deploy(store: Store, model: str, version: int, aliases: dict, settings: dict, image: str | None,
           sm=None) -> dict:
    """Serve `aliases`' traffic (after the deploy) on the endpoint. Returns what was done."""
    if not str(store.uri).startswith("s3://"):
        raise SageMakerError(f"target sagemaker needs an s3:// artifact store (SageMaker reads the model from S3); "
                             f"this run's store is {store.uri}")
    if not image:
        raise SageMakerError("target sagemaker needs the deploy step's image (deployment.image or defaults.image): "
                             "a container with dagsmith whose entrypoint is `python -m dagsmith.serving.sagemaker`")
    state = {
        "endpoint_name": endpoint_name(model, settings),
        "region": settings.get("region"),
        "role_arn": settings["role_arn"],
        "instance_type": settings.get("instance_type") or DEFAULT_INSTANCE_TYPE,
        "instance_count": int(settings.get("instance_count") or 1),
        "image": image,
    }
    sm = sm or client(state["region"])
    done = sync(store, model, aliases, state, sm)
    B.write_target_state(store, model, "sagemaker", state)
    return done


def _ensure_model(store: Store, model: str, version: int, state: dict, sm) -> str:
    uri = B.publish(store, model, version)
    name = model_resource_name(model, version, uri)
    try:
        sm.describe_model(ModelName=name)
        return name
    except ClientError:
        pass
    try:
        sm.create_model(
            ModelName=name,
            ExecutionRoleArn=state["role_arn"],
            PrimaryContainer={
                "Image": state["image"],
                "ModelDataUrl": uri,
                "Environment": {"DAGSMITH_MODEL": model, "DAGSMITH_MODEL_VERSION": str(int(version))},
            },
            Tags=[{"Key": "dagsmith:model", "Value": model}, {"Key": "dagsmith:version", "Value": str(int(version))}],
        )
    except ClientError as exc:
        raise SageMakerError(f"SageMaker CreateModel {name} failed: {_error(exc)}") from None
    return name


def _current(sm, endpoint: str) -> dict | None:
    try:
        described = sm.describe_endpoint(EndpointName=endpoint)
    except ClientError:
        return None
    config = sm.describe_endpoint_config(EndpointConfigName=described["EndpointConfigName"])
    return {"status": described.get("EndpointStatus"), "config": described["EndpointConfigName"],
            "variants": {v["VariantName"]: v["ModelName"] for v in config["ProductionVariants"]}}


def sync(store: Store, model: str, aliases: dict, state: dict, sm=None) -> dict:
    """Make the endpoint's traffic what the aliases say. Returns {endpoint, config, weights, action}."""
    sm = sm or client(state.get("region"))
    endpoint = state["endpoint_name"]
    weights = {variant_name(v): w for v, w in B.traffic(aliases).items()}
    if not weights:
        raise SageMakerError(f"model {model!r} has no production version: nothing to serve on {endpoint}")
    models = {variant_name(v): _ensure_model(store, model, v, state, sm) for v in B.traffic(aliases)}
    current = _current(sm, endpoint)
    done = {"endpoint": endpoint, "weights": weights}
    if current and all(current["variants"].get(name) == models[name] for name in models):
        desired = [{"VariantName": name, "DesiredWeight": float(weights.get(name, 0.0))} for name in sorted(current["variants"])]
        try:
            sm.update_endpoint_weights_and_capacities(EndpointName=endpoint, DesiredWeightsAndCapacities=desired)
        except ClientError as exc:
            raise SageMakerError(f"SageMaker UpdateEndpointWeightsAndCapacities {endpoint} failed: {_error(exc)}") from None
        done.update(config=current["config"], action="weights")
    else:
        variants = [{
            "VariantName": name, "ModelName": models[name], "InitialVariantWeight": float(weights[name]),
            "InitialInstanceCount": state["instance_count"], "InstanceType": state["instance_type"],
        } for name in sorted(models)]
        config = B.safe_name(endpoint, LIMIT - 13) + "-" + B.short_hash(variants, size=12)
        try:
            sm.describe_endpoint_config(EndpointConfigName=config)
        except ClientError:
            try:
                sm.create_endpoint_config(EndpointConfigName=config, ProductionVariants=variants,
                                          Tags=[{"Key": "dagsmith:model", "Value": model}])
            except ClientError as exc:
                raise SageMakerError(f"SageMaker CreateEndpointConfig {config} failed: {_error(exc)}; "
                                     f"endpoint {endpoint} is unchanged") from None
        try:
            if current is None:
                sm.create_endpoint(EndpointName=endpoint, EndpointConfigName=config,
                                   Tags=[{"Key": "dagsmith:model", "Value": model}])
                done["action"] = "created"
            else:
                sm.update_endpoint(EndpointName=endpoint, EndpointConfigName=config)
                done["action"] = "updated"
        except ClientError as exc:
            raise SageMakerError(f"SageMaker {'CreateEndpoint' if current is None else 'UpdateEndpoint'} {endpoint} "
                                 f"failed: {_error(exc)}; the endpoint keeps its previous config") from None
        done["config"] = config
    _wait(sm, endpoint)
    return done


def _wait(sm, endpoint: str) -> None:
    try:
        sm.get_waiter("endpoint_in_service").wait(EndpointName=endpoint, WaiterConfig=WAIT)
    except Exception as exc:  # botocore WaiterError: the update failed (SageMaker rolls it back) or timed out
        reason = ""
        try:
            reason = sm.describe_endpoint(EndpointName=endpoint).get("FailureReason") or ""
        except Exception:
            pass
        raise SageMakerError(f"SageMaker endpoint {endpoint} did not reach InService: {reason or exc}") from None


def move_traffic(store: Store, model: str, aliases: dict, sm=None) -> dict:
    """promote / rollback --target sagemaker: the endpoint's traffic for the new aliases."""
    state = B.read_target_state(store, model, "sagemaker")
    if state is None:
        raise SageMakerError(f"model {model!r} was never deployed to SageMaker from {store.uri} "
                             f"(no deployments/{model}/sagemaker.json)")
    return sync(store, model, aliases, state, sm)
