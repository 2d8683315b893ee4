"""The /predict example a user copies (docs/serving.md, `dagsmith serve --help`) is one request
body, kept in dagsmith.serving.example, and a server of the real churn example model answers
it with 200; the HTTP Server header is clean."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from dagsmith import __version__
from dagsmith.cli import main
from dagsmith.serving.example import CHURN_ROW, request_body

from serving_testing import Client, classifier_registry, running  # noqa: E402
from dagsmith_testing import REPO  # noqa: E402

DAGSMITH = str(Path(sys.executable).parent / "dagsmith")


def curl_body(text: str) -> dict:
    """The JSON after `-d '` of the first `curl ... /predict` command in TEXT."""
    match = re.search(r"curl -s \S+/predict -d '(.*?)'", text, flags=re.S)
    assert match, "no curl /predict example"
    return json.loads(match.group(1))


def docs_body() -> dict:
    text = (REPO / "docs" / "serving.md").read_text(encoding="utf-8")
    section = text[text.index("### `POST /predict`"):]
    return curl_body(section)


def test_the_docs_and_the_help_show_the_same_request(capsys):
    assert docs_body() == request_body()
    assert main(["serve", "--help"]) == 0
    help_text = capsys.readouterr().out
    assert "..." not in help_text.split("/predict -d", 1)[1].splitlines()[0]  # a complete body, not a sketch
    assert curl_body(help_text) == request_body()


def test_the_server_header_has_no_trailing_space(tmp_path):
    classifier_registry(tmp_path)
    with running(tmp_path, "clf") as server:
        client = Client(server.url)
        try:
            status, response, _ = client.request("GET", "/health")
        finally:
            client.close()
        assert status == 200 and response.getheader("Server") == f"dagsmith-serve/{__version__}"
        host, port = server.server_address[:2]
        with socket.create_connection((host, port), timeout=10) as sock:  # the raw header line
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            raw = b""
            while chunk := sock.recv(65536):
                raw += chunk
    (line,) = [line for line in raw.split(b"\r\n") if line.lower().startswith(b"server:")]
    name, value = line.split(b":", 1)  # header names are case-insensitive (uvicorn sends them lowercase)
    assert value == f" dagsmith-serve/{__version__}".encode()


@pytest.mark.slow
def test_the_documented_request_gets_200_from_the_real_churn_model(tmp_path):
    example = tmp_path / "churn"
    example.mkdir()
    for name in ("pipeline.yaml", "make_data.py"):
        shutil.copy(REPO / "examples" / "churn" / name, example / name)
    subprocess.run([sys.executable, "make_data.py"], cwd=example, check=True, capture_output=True, timeout=300)
    workdir = tmp_path / "work"
    result = subprocess.run([DAGSMITH, "run", "pipeline.yaml", "--workdir", str(workdir), "--format", "json"],
                            cwd=example, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]

    from dagsmith.runtime import registry
    from dagsmith.runtime.store import LocalStore

    model = registry.load_model(LocalStore(workdir), "churn", 1)
    assert sorted(model["encoding"]["features"]) == sorted(CHURN_ROW)  # exactly the model's columns
    with running(workdir, "churn") as server:
        client = Client(server.url)
        try:
            status, _, payload = client.request("POST", "/predict", json.dumps(docs_body()))
        finally:
            client.close()
    assert status == 200, payload
    assert payload["model"] == "churn" and payload["version"] == 1
    assert len(payload["predictions"]) == 1 and set(payload["probabilities"][0]) == {"0", "1"}
