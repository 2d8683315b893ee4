# Two entry points on a machine with Python 3.11 and pip (make test also needs cmake and a C++17 compiler, for horovod):
#   make demo   the main job: make an example's data, validate it, compile it to every
#               available target, show its graph, and run it locally
#   make test   the whole test suite (what CI runs, via .ci/run)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
EXAMPLE ?= churn
RUN_ARGS ?=

.PHONY: demo test golden schema bench clean chromium

$(BIN)/dagsmith: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The CPU build of torch first (on these machines a local wheel); an unpinned torch would
	# pull a multi-GB CUDA build to satisfy the train extra's range.
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

demo: $(BIN)/dagsmith
	$(BIN)/python examples/$(EXAMPLE)/make_data.py
	$(BIN)/dagsmith validate examples/$(EXAMPLE)/pipeline.yaml
	$(BIN)/dagsmith compile examples/$(EXAMPLE)/pipeline.yaml --target all -o build
	$(BIN)/dagsmith graph examples/$(EXAMPLE)/pipeline.yaml
	$(BIN)/dagsmith run examples/$(EXAMPLE)/pipeline.yaml $(RUN_ARGS)

# horovod 0.28.1 is built from source (patched for C++17) once per machine: scripts/install-horovod.sh
# (later venvs install the wheel it keeps in ~/.cache/dagsmith).
# It needs cmake and a C++17 compiler besides Python (apt-get install cmake g++); the script checks
# for them before anything else and names what is missing.
$(VENV)/.horovod: $(BIN)/dagsmith scripts/install-horovod.sh
	PYTHON=$(abspath $(BIN)/python) bash scripts/install-horovod.sh
	touch $@

# The report tests render in headless Chromium (Debian's package; apt-get, with sudo when not root).
chromium:
	@command -v chromium >/dev/null 2>&1 || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

# asl-validator (npm) for the Step Functions tests, installed into the venv (not committed)
$(VENV)/node/node_modules/.bin/asl-validator: $(BIN)/dagsmith
	npm install --prefix $(VENV)/node --no-audit --no-fund --silent asl-validator@4

test: $(BIN)/dagsmith $(VENV)/.horovod chromium $(VENV)/node/node_modules/.bin/asl-validator
	DAGSMITH_FUZZ_EXAMPLES=2500 $(BIN)/python -m pytest -q -p no:cacheprovider --durations=30

golden: $(BIN)/dagsmith
	$(BIN)/python -m pytest -q tests/test_golden.py --update-golden

schema: $(BIN)/dagsmith
	$(BIN)/python scripts/build_schema.py

bench: $(BIN)/dagsmith
	$(BIN)/python benchmarks/compile.py
	$(BIN)/python benchmarks/runner.py
	$(BIN)/python benchmarks/local_run.py
	$(BIN)/python benchmarks/airflow.py

clean:
	rm -rf $(VENV) build
