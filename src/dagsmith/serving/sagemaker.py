"""SageMaker's serving contract on dagsmith's own server: `python -m dagsmith.serving.sagemaker serve`.

SageMaker starts a model's container as `<entrypoint> serve`, with the model data (the bundle
runtime/deploy_bundle.py made: a one-version model registry) unpacked in /opt/ml/model, and
talks to it on port 8080:

    GET  /ping          -> 200 when the model is loaded (the body of GET /health)
    POST /invocations   -> exactly what POST /predict answers (same app, same code path)

Everything else (/predict, /health, /metrics) stays as `dagsmith serve` has it. The model is
DAGSMITH_MODEL (else the only model in the bundle); the version is the bundle's production.
"""

from __future__ import annotations

import argparse
import os
import sys

MODEL_DIR = "/opt/ml/model"
PORT = 8080
_PATHS = {("GET", "/ping"): "/health", ("HEAD", "/ping"): "/health", ("POST", "/invocations"): "/predict"}


class SageMakerRoutes:
    """ASGI wrapper: /ping and /invocations are /health and /predict of the wrapped app."""

    def __init__(self, inner):
        self.inner = inner
        self.connections = inner.connections  # server.py's protocol times out idle connections with it

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            path = scope["path"].rstrip("/") or "/"
            target = _PATHS.get((scope["method"], path))
            if target is not None:
                scope = {**scope, "path": target, "raw_path": target.encode()}
        await self.inner(scope, receive, send)


def model_in(store, name: str | None) -> str:
    from ..runtime import registry

    if name:
        return name
    models = sorted({key.split("/")[1] for key in store.list("registry/") if key.endswith("/aliases.json")})
    if len(models) != 1:
        from .app import ServingError

        raise ServingError(f"{store.uri} holds {len(models)} models ({', '.join(models) or 'none'}): set DAGSMITH_MODEL")
    registry.read_aliases(store, models[0])
    return models[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dagsmith.serving.sagemaker",
                                     description="dagsmith's server on SageMaker's contract (/ping, /invocations).")
    parser.add_argument("command", nargs="?", default="serve", choices=["serve"])
    parser.add_argument("--model-dir", default=os.environ.get("DAGSMITH_MODEL_DIR", MODEL_DIR))
    parser.add_argument("--model", default=os.environ.get("DAGSMITH_MODEL"))
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=int(os.environ.get("SAGEMAKER_BIND_TO_PORT", PORT)))
    args = parser.parse_args(argv)

    from ..runtime.store import LocalStore
    from .app import ServingApp
    from .asgi import DagsmithASGI
    from .server import DEFAULT_BACKLOG, READ_TIMEOUT, Settings, bind, uvicorn_server
    from .asgi import MAX_BODY_BYTES

    store = LocalStore(args.model_dir)
    model = model_in(store, args.model)
    app = ServingApp(store, model)
    settings = Settings(workdir="", model=model, max_body=MAX_BODY_BYTES, read_timeout=READ_TIMEOUT,
                        graceful_timeout=30.0, access_log=False, reload_interval=0.5)
    sock = bind(args.host, args.port, DEFAULT_BACKLOG)

    def ready():
        print(f"serving model {model!r} ({app.deployment.describe()}) on SageMaker's contract: "
              f"GET /ping, POST /invocations on port {sock.getsockname()[1]}", flush=True)

    server = uvicorn_server(SageMakerRoutes(DagsmithASGI(app, on_ready=ready)), settings, DEFAULT_BACKLOG)
    server.run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
