"""One session of runs for the conformance suite: each (scenario, backend) is built, prepared
(compiled) and run exactly once, the local reference included, and read by the tests.

Each backend has a lane (one thread, so its runs never overlap); the lanes run side by side. Every
run the selected tests need is queued, in test order, when the session starts: while the local
runner works on one scenario, Airflow already works on another. Runs are independent (own folder,
own store), so this changes nothing but the time the suite takes.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from .adapters import Adapter, Outcome, discover
from .scenarios import MAP_LIMIT, Scenario


class Runs:
    def __init__(self, factory):
        self.factory = factory
        self.adapters = discover()
        self.shared = factory.mktemp("conformance-shared")
        # the spec's `backends:` section giving every backend a map limit (scenario 4)
        self.backends = {a.name: opts for a in self.adapters if (opts := a.map_limit_options(MAP_LIMIT)) is not None}
        self.lanes = {a.name: ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"conformance-{a.name}") for a in self.adapters}
        self.workspaces = {a.name: factory.mktemp(f"{a.name}-session") for a in self.adapters}
        self.started: dict = {}  # adapter name -> None | the exception its start() raised
        self.runs: dict = {}  # (scenario, adapter) -> Future of its Outcome

    def submit(self, scenario: Scenario, adapter: Adapter) -> Future:
        """Queue a run (once): the spec is built here, the rest in the backend's lane."""
        key = (scenario.name, adapter.name)
        if key not in self.runs:
            try:
                workdir = self.factory.mktemp(f"{scenario.name}-{adapter.name}")
                folder = workdir / "spec"
                folder.mkdir()
                spec = scenario.build(folder, self.backends, self.shared)
            except Exception as exc:
                self.runs[key] = failed = Future()
                failed.set_exception(exc)
            else:
                self.runs[key] = self.lanes[adapter.name].submit(self._run, scenario, adapter, spec, workdir)
        return self.runs[key]

    def outcome(self, scenario: Scenario, adapter: Adapter) -> Outcome:
        return self.submit(scenario, adapter).result()

    def _run(self, scenario: Scenario, adapter: Adapter, spec: Path, workdir: Path) -> Outcome:
        if adapter.name not in self.started:
            try:
                adapter.start(self.workspaces[adapter.name])
                self.started[adapter.name] = None
            except Exception as exc:
                self.started[adapter.name] = exc
        if self.started[adapter.name] is not None:
            raise RuntimeError(f"{adapter.name}: start() failed") from self.started[adapter.name]
        handle = adapter.prepare(spec, env=scenario.env, workdir=workdir)
        return adapter.run(handle, params=dict(scenario.params), run_date=scenario.run_date, workdir=workdir)

    def close(self) -> None:
        for lane in self.lanes.values():
            lane.shutdown(wait=True, cancel_futures=True)
        for adapter in self.adapters:
            if adapter.name in self.started:
                adapter.stop()


@pytest.fixture(scope="session")
def conformance_runs(request, tmp_path_factory):
    runs = Runs(tmp_path_factory)
    by_name = {a.name: a for a in runs.adapters}
    for item in request.session.items:  # queue what the selected tests read, in their order
        params = getattr(getattr(item, "callspec", None), "params", {})
        scenario, adapter = params.get("scenario"), params.get("adapter")
        if isinstance(scenario, Scenario) and isinstance(adapter, Adapter) and adapter.unavailable() is None:
            runs.submit(scenario, by_name["local"])  # the reference every backend is compared with
            runs.submit(scenario, adapter)
    yield runs
    runs.close()
