"""Backend conformance suite: ONE table of scenarios (scenarios.py) run on every backend that can
execute here, each run compared with the local run (`dagsmith run`, the reference): same status,
step states, metrics, gate outcome, validation results, table sizes, fan-out items, deployed
model fingerprint, and what custom steps wrote.

A backend joins with one module, backend_<name>.py (interface: adapters.py); the test ids read
test_conformance[<scenario>-<backend>]. Runs are queued per backend lane by conftest.py.

    .venv/bin/python -m pytest -q -p no:cacheprovider tests/conformance
"""
