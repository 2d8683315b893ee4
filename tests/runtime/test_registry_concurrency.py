"""Concurrent deploys against one model registry (issue 22, finding 1): every deploy gets a version
of its own, allocated atomically (an exclusive create on a local store, a conditional PUT on S3),
and no run's version is ever replaced by another run's.

Real threads, each with a Store of its own (as separate worker processes have), all released at
once by a barrier; the S3 case runs on moto's server (the session's `s3_server`, a bucket of this
test's own).
"""

from __future__ import annotations

import threading

import pytest

from dagsmith.runtime import make_context, registry, run_step
from dagsmith.runtime.store import Store

from runtime_testing import Pipeline  # noqa: E402
from test_evaluate_deploy import classification_rows, spec  # noqa: E402

RACERS = 6
DEPLOY = "deployment: {model_name: churn, target: local, strategy: replace}"


def _race(p: Pipeline, uri: str, runs: list[str]) -> dict:
    """Deploy every run at once, each on its own Store; run id -> result (or the exception)."""
    barrier = threading.Barrier(len(runs))
    out: dict = {}

    def deploy(run: str) -> None:
        env = {"DAGSMITH_RUN_ID": run, "DAGSMITH_RUN_DATE": "2024-06-03", "DAGSMITH_ROOT": str(p.root)}
        ctx = make_context(p.ir, "deploy", Store.open(uri), environ=env)
        barrier.wait()
        try:
            out[run] = run_step(ctx)
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            out[run] = exc

    threads = [threading.Thread(target=deploy, args=(run,)) for run in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return out


def _check(store: Store, results: dict, runs: list[str]) -> None:
    crashed = {run: repr(r) for run, r in results.items() if isinstance(r, BaseException)}
    assert not crashed and sorted(results) == sorted(runs)
    version_of = {run: r["version"] for run, r in results.items()}
    assert sorted(version_of.values()) == list(range(1, len(runs) + 1)), version_of
    assert registry.versions(store, "churn") == list(range(1, len(runs) + 1))
    for run, version in version_of.items():  # each version holds its own run's model
        lineage = registry.read_version_json(store, "churn", version, "lineage.json")
        assert lineage["run_id"] == run, (run, version, lineage["run_id"])
        assert registry.version_index(store, "churn", version)["version"] == version
    # The aliases are moved by compare-and-swap too: no deploy's move is lost.
    aliases = registry.read_aliases(store, "churn")
    assert sorted([aliases["production"], *aliases["history"]]) == list(range(1, len(runs) + 1)), aliases


def _prepared(tmp_path, store=None, racers: int = RACERS) -> tuple[Pipeline, list[str]]:
    p = Pipeline(tmp_path, spec(deployment=DEPLOY), {"rows": classification_rows()}, store=store)
    runs = [f"r{n}" for n in range(1, racers + 1)]
    for n, run in enumerate(runs):  # each run its own data: an identical model would be "unchanged"
        p.run_through("evaluate", run=run, tables={"rows": classification_rows(seed=n)})
    return p, runs


def test_concurrent_deploys_get_distinct_versions_on_a_local_store(tmp_path):
    p, runs = _prepared(tmp_path)
    results = _race(p, str(p.store.root), runs)
    _check(p.store, results, runs)

    # A retry of one run (its deploy step run again) reuses its own version, even though it is no
    # longer the latest; another run never takes it.
    again = p.run("deploy", run="r1")
    assert again["version"] == results["r1"]["version"]
    assert registry.versions(p.store, "churn") == list(range(1, RACERS + 1))


def test_concurrent_deploys_get_distinct_versions_on_s3(tmp_path, aws_s3):
    aws_s3.create_bucket(Bucket="registry-race")
    uri = "s3://registry-race/ml"
    p, runs = _prepared(tmp_path, store=Store.open(uri), racers=4)  # each run's steps on S3 take a second
    results = _race(p, uri, runs)
    _check(Store.open(uri), results, runs)


def test_a_published_version_is_never_replaced(tmp_path):
    """The store refuses to publish over a committed version, whoever asks (a claim lost or
    missing): the version's files stay those of the run that made it."""
    from dagsmith.runtime.store import LocalStore, StoreError

    store = LocalStore(tmp_path / "store")
    key = registry.version_key("churn", 1)
    first = store.stage(key)
    first.write_json("lineage.json", {"run_id": "a"})
    store.commit(first, exclusive=True)
    second = store.stage(key)
    second.write_json("lineage.json", {"run_id": "b"})
    with pytest.raises(StoreError, match="already published"):
        store.commit(second, exclusive=True)
    assert registry.read_version_json(store, "churn", 1, "lineage.json") == {"run_id": "a"}


class _DeployBetween:
    """A store on which another deploy moves the aliases right after the command under test read
    them for its change (its second read of aliases.json: the first checks the model exists)."""

    def __init__(self, store, move):
        self.store, self.move, self.reads = store, move, 0

    def _after_read(self, key, result):
        if key == registry.aliases_key("churn"):
            self.reads += 1
            if self.reads == 2:
                registry.move_aliases(self.store, "churn", self.move)
        return result

    def read_json(self, key):
        return self._after_read(key, self.store.read_json(key))

    def read_versioned(self, key):
        return self._after_read(key, self.store.read_versioned(key))

    def __getattr__(self, name):
        return getattr(self.store, name)


def _registry_with(store, versions: int, aliases: dict) -> None:
    for version in range(1, versions + 1):
        staging = store.stage(registry.version_key("churn", version))
        staging.write_json("model.json", {"version": version, "models": []})
        store.commit(staging, exclusive=True)
    registry.write_aliases(store, "churn", aliases)


def test_promote_and_rollback_do_not_undo_a_concurrent_deploy(tmp_path):
    """promote / rollback move the aliases by compare-and-swap too: a deploy that replaced
    production while they decided is not lost (before: their write put back what they had read)."""
    from dagsmith.runtime.store import LocalStore
    from dagsmith.serving.aliases import promote, rollback
    from dagsmith.serving.app import ServingError

    def deploy_v3(aliases: dict) -> dict:  # strategy replace: v3 is production, any canary ends
        history = [*aliases["history"], aliases["production"]]
        return {**aliases, "production": 3, "canary": None, "history": history}

    store = LocalStore(tmp_path / "a")
    _registry_with(store, 3, {"production": 1, "canary": {"version": 2, "traffic_percent": 10}, "history": []})
    with pytest.raises(ServingError, match="no canary to promote"):  # decided again: the canary is gone
        promote(_DeployBetween(store, deploy_v3), "churn")
    assert registry.read_aliases(store, "churn") == {"production": 3, "canary": None, "history": [1]}

    store = LocalStore(tmp_path / "b")
    _registry_with(store, 3, {"production": 2, "canary": None, "history": [1]})
    change = rollback(_DeployBetween(store, deploy_v3), "churn")  # rolls back v3, the production it finds
    assert change["after"] == registry.read_aliases(store, "churn") == {"production": 2, "canary": None, "history": [1]}
    assert change["before"]["production"] == 3
