"""The test-only Argo interpreter itself, on small hand-written workflows (fast: each container is
a short Python process): depends, when, withParam with object items, retries, parallelism,
output parameter defaults, fail fast, private /tmp, secrets, deadlines, workflowTemplateRef,
CronWorkflow, Sensor triggers, and what it refuses."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import time

import pytest
import yaml

from backend_argo.interpreter import (
    Interpreter, Invalid, Unsupported, eval_depends, eval_when, item_scope, sensor_workflows,
)

PY = sys.executable


def py(code: str) -> str:
    """A flow-style YAML list: a container's command running CODE with this Python."""
    return json.dumps([PY, "-c", code])


def run(tmp_path, text: str, **kwargs):
    doc = yaml.safe_load(text)
    options = {k: kwargs.pop(k) for k in ("secrets", "workflow_templates", "max_pods") if k in kwargs}
    interp = Interpreter(base_env={"PATH": os.environ["PATH"]}, cwd=tmp_path, scratch=tmp_path, **options)
    return interp.submit(doc, **kwargs)


def phases(result) -> dict:
    return {n.name.split(".", 1)[1] if "." in n.name else n.name: n.phase for n in result.nodes if n.type != "DAG"}


def workflow(templates: str, *, tasks: str, extra: str = "") -> str:
    return f"""
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata: {{name: t}}
spec:
  entrypoint: main
{extra}
  templates:
  - name: main
    dag:
      tasks:
{tasks}
{templates}
"""


OK = f"""
  - name: ok
    container: {{image: x, command: {py("print('ok')")}}}
  - name: fail
    container: {{image: x, command: {py("import sys; sys.exit(3)")}}}
"""


def test_depends_semantics_and_omitted_after_failure(tmp_path):
    tasks = """
      - {name: a, template: fail}
      - {name: b, template: ok, depends: a}
      - {name: c, template: ok, depends: a.Failed}
      - {name: d, template: ok, depends: "b || c"}
      - {name: e, template: ok, depends: "(a.Succeeded || a.Skipped) && !c.Failed"}
      - {name: f, template: ok, depends: b.Omitted}
      - {name: g, template: ok, depends: a.Errored}
      - {name: end, template: ok, depends: "d && e.Omitted && f && g.Omitted"}
"""
    result = run(tmp_path, workflow(OK, tasks=tasks))
    assert phases(result) == {"a": "Failed", "b": "Omitted", "c": "Succeeded", "d": "Succeeded", "e": "Omitted",
                              "f": "Succeeded", "g": "Omitted", "end": "Succeeded"}
    (a,) = result.of_task("a")
    assert a.exit_code == 3 and a.message == "Error (exit code 3)"
    assert result.phase == "Succeeded"  # the only leaf, `end`, succeeded: the failure was handled


def test_an_omitted_leaf_after_a_failure_fails_the_workflow(tmp_path):
    tasks = """
      - {name: a, template: fail}
      - {name: b, template: ok, depends: a}
      - {name: c, template: ok, depends: b}
"""
    result = run(tmp_path, workflow(OK, tasks=tasks))
    assert phases(result) == {"a": "Failed", "b": "Omitted", "c": "Omitted"}
    assert result.phase == "Failed"  # the leaf's branch takes a's phase


def test_a_failure_handled_by_depends_leaves_the_workflow_succeeded(tmp_path):
    tasks = """
      - {name: a, template: fail}
      - {name: c, template: ok, depends: a.Failed}
"""
    result = run(tmp_path, workflow(OK, tasks=tasks))
    assert phases(result) == {"a": "Failed", "c": "Succeeded"} and result.phase == "Succeeded"


def failing_and_slow_branches() -> str:
    """a fails (b after it); x is slow, y after it: what failFast decides about y."""
    templates = OK + f"""
  - name: slow
    container: {{image: x, command: {py("import time; time.sleep(1.5); open('slow.done', 'w')")}}}
"""
    tasks = """
      - {name: a, template: fail}
      - {name: b, template: ok, depends: a}
      - {name: x, template: slow}
      - {name: y, template: ok, depends: x}
"""
    return workflow(templates, tasks=tasks)


def test_fail_fast_starts_nothing_new_but_lets_running_tasks_finish(tmp_path):
    result = run(tmp_path, failing_and_slow_branches())
    assert phases(result) == {"a": "Failed", "b": "Omitted", "x": "Succeeded"}  # y never started: no node
    assert (tmp_path / "slow.done").exists() and result.phase == "Failed"


def test_fail_fast_false_runs_independent_branches_to_their_end(tmp_path):
    """`failFast: false` (dag.go:199-229): y starts after a's failure; the dag still fails."""
    text = failing_and_slow_branches().replace("    dag:\n      tasks:", "    dag:\n      failFast: false\n      tasks:", 1)
    result = run(tmp_path, text)
    assert phases(result) == {"a": "Failed", "b": "Omitted", "x": "Succeeded", "y": "Succeeded"}
    assert result.phase == "Failed"


def test_only_the_paths_the_template_declares_are_private(tmp_path):
    """A checkout, a venv or a workdir under /tmp is this machine's: the interpreter maps only an
    output parameter's file (and an argument equal to it) into the pod's folder."""
    import shutil
    import tempfile
    from pathlib import Path

    checkout = Path(tempfile.mkdtemp(prefix="checkout-", dir="/tmp"))  # as a clone under /tmp would be
    try:
        (checkout / "python").symlink_to(PY)  # the venv's interpreter under /tmp
        here = checkout / "shared.txt"
        code = ("import sys, os, pathlib; pathlib.Path(sys.argv[1]).write_text(os.environ['WHERE']); "
                "pathlib.Path(sys.argv[2]).parent.mkdir(parents=True, exist_ok=True); pathlib.Path(sys.argv[2]).write_text('yes')")
        command = [str(checkout / "python"), "-c", code, str(here), "/tmp/dagsmith-test/out"]
        templates = f"""
  - name: write
    container: {{image: x, command: {json.dumps(command)}, env: [{{name: WHERE, value: "{here}"}}]}}
    outputs: {{parameters: [{{name: out, valueFrom: {{path: /tmp/dagsmith-test/out}}}}]}}
"""
        result = run(checkout, workflow(templates, tasks="      - {name: a, template: write}"))
        assert result.phase == "Succeeded", result.summary()
        assert here.read_text() == str(here)  # neither the argument nor the env value was rewritten
        (node,) = result.of_task("a")
        assert node.outputs == {"out": "yes"} and not os.path.exists("/tmp/dagsmith-test/out")  # the declared file is the pod's
    finally:
        shutil.rmtree(checkout, ignore_errors=True)


def test_the_run_date_is_utc_whatever_the_controllers_time_zone(tmp_path):
    """`workflow.creationTimestamp.<c>` is formatted in the controller's time zone (operator.go:
    640-642); the emitted expression over `.s` (Unix seconds) is UTC."""
    from dagsmith.backends.argo.workflow import RUN_DATE

    local = "{{workflow.creationTimestamp.Y}}-{{workflow.creationTimestamp.m}}-{{workflow.creationTimestamp.d}}"
    code = "import sys, json; json.dump(sys.argv[1:], open('dates.json', 'w'))"
    templates = f"""
  - name: dates
    container: {{image: x, command: {json.dumps([PY, "-c", code, local, RUN_DATE])}}}
"""
    doc = yaml.safe_load(workflow(templates, tasks="      - {name: a, template: dates}"))
    interp = Interpreter(base_env={"PATH": os.environ["PATH"]}, cwd=tmp_path, scratch=tmp_path, controller_tz="America/Los_Angeles")
    result = interp.submit(doc, created=dt.datetime(2024, 6, 3, 2, 30, tzinfo=dt.timezone.utc))
    assert result.phase == "Succeeded", result.summary()
    assert json.loads((tmp_path / "dates.json").read_text()) == ["2024-06-02", "2024-06-03"]


def test_reading_a_skipped_tasks_output_hangs_before_v4_0_4(tmp_path):
    """A `when` reading the output of a Skipped task: '' from v4.0.4 (dag.go:706-722 at v4.0.5),
    requeued for ever in v4.0.2-4.0.3 (skipped_outputs="requeue"); `depends: X.Succeeded` leaves
    the task Omitted before its `when` is read, on every version."""
    templates = OK + """
  - name: say
    inputs: {parameters: [{name: word}]}
    container: {image: x, command: ["sh", "-c", "mkdir -p /tmp/o && echo {{inputs.parameters.word}} > /tmp/o/s"]}
    outputs: {parameters: [{name: status, valueFrom: {path: /tmp/o/s, default: not-run}}]}
"""
    def tasks(depends: str) -> str:
        return f"""
      - {{name: outer, template: say, arguments: {{parameters: [{{name: word, value: "no"}}]}}}}
      - {{name: inner, template: say, depends: outer, when: "'{{{{tasks.outer.outputs.parameters.status}}}}' == 'yes'", arguments: {{parameters: [{{name: word, value: "yes"}}]}}}}
      - {{name: last, template: ok, depends: "{depends}", when: "'{{{{tasks.outer.outputs.parameters.status}}}}' == 'yes' && '{{{{tasks.inner.outputs.parameters.status}}}}' == 'yes'"}}
"""
    for mode, depends, last in (("empty", "inner", "Skipped"), ("empty", "inner.Succeeded && outer.Succeeded", "Omitted"),
                                ("requeue", "inner.Succeeded && outer.Succeeded", "Omitted")):
        doc = yaml.safe_load(workflow(templates, tasks=tasks(depends)))
        interp = Interpreter(base_env={"PATH": os.environ["PATH"]}, cwd=tmp_path, scratch=tmp_path, skipped_outputs=mode)
        result = interp.submit(doc)
        assert phases(result) == {"outer": "Succeeded", "inner": "Skipped", "last": last} and result.phase == "Succeeded"
    doc = yaml.safe_load(workflow(templates, tasks=tasks("inner")))
    with pytest.raises(Invalid, match="requeues such a task for ever"):
        Interpreter(base_env={"PATH": os.environ["PATH"]}, cwd=tmp_path, scratch=tmp_path, skipped_outputs="requeue").submit(doc)


WHEN = f"""
  - name: say
    inputs: {{parameters: [{{name: word}}]}}
    outputs: {{parameters: [{{name: out, valueFrom: {{path: /tmp/out, default: none}}}}]}}
    container:
      image: x
      command: {py("import sys; open(sys.argv[2], 'w').write(sys.argv[1] + chr(10))")}
      args: ['{{{{inputs.parameters.word}}}}', /tmp/out]
  - name: echo
    inputs: {{parameters: [{{name: text}}]}}
    container:
      image: x
      command: {py("import sys; open('echo-' + sys.argv[1] + '.txt', 'w').write(sys.argv[2])")}
      args: ['{{{{inputs.parameters.text}}}}', 'got {{{{inputs.parameters.text}}}}']
"""


def test_when_skips_and_a_skipped_tasks_outputs_are_empty(tmp_path):
    tasks = """
      - {name: a, template: say, arguments: {parameters: [{name: word, value: stop}]}}
      - name: b
        template: say
        depends: a
        when: "'{{tasks.a.outputs.parameters.out}}' == 'go'"
        arguments: {parameters: [{name: word, value: never}]}
      - name: c
        template: echo
        depends: b
        arguments: {parameters: [{name: text, value: "[{{tasks.b.outputs.parameters.out}}]{{tasks.a.outputs.parameters.out}}"}]}
      - name: d
        template: echo
        depends: a
        when: "{{tasks.a.outputs.parameters.out}} == stop && 2 > 1"
        arguments: {parameters: [{name: text, value: d}]}
"""
    result = run(tmp_path, workflow(WHEN, tasks=tasks))
    assert phases(result) == {"a": "Succeeded", "b": "Skipped", "c": "Succeeded", "d": "Succeeded"}
    assert result.of_task("a")[0].outputs == {"out": "stop"}  # one trailing newline trimmed
    assert result.of_task("b")[0].message == "when ''stop' == 'go'' evaluated false"
    assert (tmp_path / "echo-[]stop.txt").read_text() == "got []stop"  # a Skipped task's output is ""
    assert result.phase == "Succeeded"


def test_a_reference_to_a_task_that_is_not_an_ancestor_is_an_error(tmp_path):
    tasks = """
      - {name: a, template: say, arguments: {parameters: [{name: word, value: w}]}}
      - {name: c, template: echo, arguments: {parameters: [{name: text, value: "{{tasks.a.outputs.parameters.out}}"}]}}
"""
    with pytest.raises(Invalid, match=r"failed to resolve \{\{tasks.a.outputs.parameters.out\}\}.*would hang"):
        run(tmp_path, workflow(WHEN, tasks=tasks))


def test_with_param_over_object_items(tmp_path):
    items = [{"stop": 2, "start": 0}, {"start": 2, "stop": 3, "tag": "<&>"}]
    templates = f"""
  - name: ranges
    outputs: {{parameters: [{{name: ranges, valueFrom: {{path: /tmp/r.json}}}}]}}
    container: {{image: x, command: {py(f"import sys; open(sys.argv[1], 'w').write({json.dumps(json.dumps(items))})")}, args: [/tmp/r.json]}}
  - name: each
    inputs: {{parameters: [{{name: item}}, {{name: start}}]}}
    container:
      image: x
      command: {py("import sys; open('item-' + sys.argv[2] + '.txt', 'w').write(sys.argv[1])")}
      args: ['{{{{inputs.parameters.item}}}}', '{{{{inputs.parameters.start}}}}']
  - name: empty
    outputs: {{parameters: [{{name: ranges, valueFrom: {{path: /tmp/r.json}}}}]}}
    container: {{image: x, command: {py("import sys; open(sys.argv[1], 'w').write('[]')")}, args: [/tmp/r.json]}}
"""
    tasks = """
      - {name: r, template: ranges}
      - name: each
        template: each
        depends: r
        withParam: "{{tasks.r.outputs.parameters.ranges}}"
        arguments: {parameters: [{name: item, value: "{{item}}"}, {name: start, value: "{{item.start}}"}]}
      - {name: e, template: empty}
      - name: none
        template: each
        depends: e
        withParam: "{{tasks.e.outputs.parameters.ranges}}"
        arguments: {parameters: [{name: item, value: "{{item}}"}, {name: start, value: "{{item.start}}"}]}
      - {name: after, template: ok, depends: each && none}
"""
    result = run(tmp_path, workflow(templates + OK, tasks=tasks))
    # {{item}} of an object: its JSON as Go writes it (compact, keys sorted, <>& escaped)
    assert (tmp_path / "item-0.txt").read_text() == '{"start":0,"stop":2}'
    assert (tmp_path / "item-2.txt").read_text() == '{"start":2,"stop":3,"tag":"\\u003c\\u0026\\u003e"}'
    children = result.of_task("each")
    assert sorted(n.name for n in children) == ["t.each(0:start:0,stop:2)", "t.each(1:start:2,stop:3,tag:<&>)"]
    assert [n.item for n in sorted(children, key=lambda n: n.name)] == items
    assert phases(result)["none"] == "Skipped" and phases(result)["after"] == "Succeeded"  # empty list: Skipped
    assert result.phase == "Succeeded"


def test_with_param_that_is_not_a_json_list_errors(tmp_path):
    tasks = """
      - {name: a, template: say, arguments: {parameters: [{name: word, value: "{not json"}]}}
      - {name: b, template: echo, depends: a, withParam: "{{tasks.a.outputs.parameters.out}}", arguments: {parameters: [{name: text, value: "{{item}}"}]}}
"""
    result = run(tmp_path, workflow(WHEN, tasks=tasks))
    assert phases(result)["b"] == "Error" and "could not be parsed as a JSON list" in result.of_task("b")[0].message
    assert result.phase == "Error"


def test_parallelism_of_a_dag_template_limits_its_running_children(tmp_path):
    code = "import sys, time; a = time.time(); time.sleep(0.6); open('span-' + sys.argv[1], 'w').write(f'{a} {time.time()}')"
    text = f"""
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata: {{name: p}}
spec:
  entrypoint: main
  templates:
  - name: main
    dag:
      tasks:
      - {{name: fan, template: items, arguments: {{parameters: [{{name: list, value: '[1, 2, 3, 4, 5]'}}]}}}}
  - name: items
    parallelism: 2
    inputs: {{parameters: [{{name: list}}]}}
    dag:
      tasks:
      - {{name: one, template: sleep, withParam: '{{{{inputs.parameters.list}}}}', arguments: {{parameters: [{{name: n, value: '{{{{item}}}}'}}]}}}}
  - name: sleep
    inputs: {{parameters: [{{name: n}}]}}
    container: {{image: x, command: {py(code)}, args: ['{{{{inputs.parameters.n}}}}']}}
"""
    result = run(tmp_path, text, max_pods=4)
    assert result.phase == "Succeeded" and len(result.of_task("one")) == 5
    spans = [tuple(map(float, (tmp_path / f"span-{n}").read_text().split())) for n in range(1, 6)]
    most = max(sum(1 for a, b in spans if a <= t < b) for t, _ in spans)
    assert most == 2, spans  # two at a time: never more, and it did run two at once


def test_retries_limit_policy_and_backoff(tmp_path):
    flaky = "import os, sys; n = len(os.listdir('.')); open(f'try-{n}', 'w'); sys.exit(0 if n >= 1 else 1)"
    templates = f"""
  - name: flaky
    retryStrategy: {{limit: '2', retryPolicy: Always, backoff: {{duration: 1s, factor: '2'}}}}
    container: {{image: x, command: {py(flaky)}}}
  - name: always-fails
    retryStrategy: {{limit: 1}}
    container: {{image: x, command: {py("import sys; sys.exit(1)")}}}
  - name: only-on-error
    retryStrategy: {{limit: 3, retryPolicy: OnError}}
    container: {{image: x, command: {py("import sys; sys.exit(1)")}}}
"""
    tasks = """
      - {name: a, template: flaky}
      - {name: b, template: always-fails}
      - {name: c, template: only-on-error}
"""
    (tmp_path / "work").mkdir()
    doc = yaml.safe_load(workflow(templates, tasks=tasks))
    interp = Interpreter(base_env={"PATH": os.environ["PATH"]}, cwd=tmp_path / "work", scratch=tmp_path)
    begun = time.time()
    result = interp.submit(doc)
    (a,), (b,), (c,) = result.of_task("a"), result.of_task("b"), result.of_task("c")
    assert (a.phase, a.attempts) == ("Succeeded", 2) and a.finished - begun >= 1.0  # waited the backoff
    assert (b.phase, b.attempts) == ("Failed", 2) and "No more retries left" in b.message
    assert (c.phase, c.attempts) == ("Failed", 1)  # OnError does not retry a Failed pod
    assert result.phase == "Failed"


def test_a_retry_expression_on_the_exit_code_and_a_capped_backoff(tmp_path):
    """`dagsmith admit`'s hold: exit 75 is retried (after a backoff that doubles up to its cap),
    another failure is not (the expression is ANDed with the policy: operator.go:1141-1150)."""
    held = "import os, sys; n = len(os.listdir('.')); open(f'try-{n}', 'w'); sys.exit(0 if n >= 3 else 75)"
    retry = "{limit: '5', retryPolicy: Always, expression: 'asInt(lastRetry.exitCode) == 75 || lastRetry.status == \"Error\"', backoff: {duration: 200ms, factor: '4', cap: 300ms}}"
    templates = f"""
  - name: held
    retryStrategy: {retry}
    container: {{image: x, command: {py(held)}}}
  - name: broken
    retryStrategy: {retry}
    container: {{image: x, command: {py("import sys; sys.exit(3)")}}}
"""
    (tmp_path / "work").mkdir()
    interp = Interpreter(base_env={"PATH": os.environ["PATH"]}, cwd=tmp_path / "work", scratch=tmp_path)
    begun = time.time()
    result = interp.submit(yaml.safe_load(workflow(templates, tasks="      - {name: a, template: held}\n      - {name: b, template: broken}")))
    (a,), (b,) = result.of_task("a"), result.of_task("b")
    assert (a.phase, a.attempts) == ("Succeeded", 4), a.message
    assert 0.2 + 0.3 + 0.3 <= a.finished - begun < 0.2 + 0.8 + 3.2  # 200 ms, then capped at 300 ms (uncapped: 800, 3200)
    assert (b.phase, b.attempts) == ("Failed", 1) and "expression evaluated to false" in b.message
    with pytest.raises(Unsupported, match="retry expression"):
        run(tmp_path, workflow(templates.replace("== 75", "> 1"), tasks="      - {name: a, template: held}"))


def test_submit_all_runs_workflows_at_the_same_time(tmp_path):
    sleepy = workflow(f"""
  - name: nap
    container: {{image: x, command: {py("import time; time.sleep(1)")}}}
""", tasks="      - {name: a, template: nap}")
    interp = Interpreter(base_env={"PATH": os.environ["PATH"]}, cwd=tmp_path, scratch=tmp_path)
    docs = [yaml.safe_load(sleepy.replace("name: t}", f"name: t{i}}}")) for i in range(3)]
    runs = interp.submit_all(docs)
    assert [r.phase for r in runs] == ["Succeeded"] * 3
    starts, ends = [r.pods()[0].started for r in runs], [r.pods()[0].finished for r in runs]
    assert max(starts) < min(ends)  # all three pods were running at once


def test_output_parameter_default_and_a_missing_file_without_one(tmp_path):
    templates = f"""
  - name: writes-nothing
    outputs: {{parameters: [{{name: status, valueFrom: {{path: /tmp/s, default: not-run}}}}]}}
    container: {{image: x, command: {py("pass")}}}
  - name: writes-nothing-no-default
    outputs: {{parameters: [{{name: status, valueFrom: {{path: /tmp/s}}}}]}}
    container: {{image: x, command: {py("pass")}}}
"""
    tasks = """
      - {name: a, template: writes-nothing}
      - {name: b, template: writes-nothing-no-default}
"""
    result = run(tmp_path, workflow(templates, tasks=tasks))
    (a,), (b,) = result.of_task("a"), result.of_task("b")
    assert (a.phase, a.outputs) == ("Succeeded", {"status": "not-run"})
    assert b.phase == "Error" and b.message == "open /tmp/s: no such file or directory"


def test_each_pod_has_its_own_tmp(tmp_path):
    code = "import os, sys; p = '/tmp/dagsmith/x'; os.makedirs(os.path.dirname(p), exist_ok=True); print(os.path.exists(p)); open(p, 'w').write(sys.argv[1])"
    templates = f"""
  - name: w
    inputs: {{parameters: [{{name: v}}]}}
    outputs: {{parameters: [{{name: x, valueFrom: {{path: /tmp/dagsmith/x}}}}]}}
    container: {{image: x, command: {py(code.replace("'/tmp/dagsmith/x'", "os.environ['P']"))}, args: ['{{{{inputs.parameters.v}}}}'],
                env: [{{name: P, value: /tmp/dagsmith/x}}]}}
"""
    tasks = """
      - {name: a, template: w, arguments: {parameters: [{name: v, value: A}]}}
      - {name: b, template: w, depends: a, arguments: {parameters: [{name: v, value: B}]}}
"""
    result = run(tmp_path, workflow(templates, tasks=tasks))
    (a,), (b,) = result.of_task("a"), result.of_task("b")
    assert (a.outputs, b.outputs) == ({"x": "A"}, {"x": "B"})
    assert a.stdout == b.stdout == "False\n"  # b did not see a's file
    assert not os.path.exists("/tmp/dagsmith/x") or open("/tmp/dagsmith/x").read() not in ("A", "B")


def test_secrets_and_a_missing_secret(tmp_path):
    templates = f"""
  - name: s
    container:
      image: x
      command: {py("import os; open('secret.txt', 'w').write(os.environ['TOKEN'])")}
      env: [{{name: TOKEN, valueFrom: {{secretKeyRef: {{name: creds, key: token}}}}}}]
  - name: missing
    container:
      image: x
      command: {py("pass")}
      env: [{{name: TOKEN, valueFrom: {{secretKeyRef: {{name: nope, key: token}}}}}}]
"""
    tasks = """
      - {name: a, template: s}
      - {name: b, template: missing}
"""
    result = run(tmp_path, workflow(templates, tasks=tasks), secrets={"creds": {"token": "s3cr3t"}})
    assert (tmp_path / "secret.txt").read_text() == "s3cr3t"
    (b,) = result.of_task("b")
    assert b.phase == "Error" and b.message == 'CreateContainerConfigError: secret "nope" not found' and b.exit_code is None


def test_active_deadline_fails_the_pod(tmp_path):
    templates = f"""
  - name: slow
    activeDeadlineSeconds: '1'
    container: {{image: x, command: {py("import time; time.sleep(30)")}}}
"""
    begun = time.time()
    result = run(tmp_path, workflow(templates, tasks="      - {name: a, template: slow}"))
    (a,) = result.of_task("a")
    assert a.phase == "Failed" and "longer than the specified deadline" in a.message and time.time() - begun < 10


WORKFLOW_TEMPLATE = f"""
apiVersion: argoproj.io/v1alpha1
kind: WorkflowTemplate
metadata: {{name: wt, namespace: ml}}
spec:
  entrypoint: main
  serviceAccountName: runner
  podGC: {{strategy: OnPodSuccess}}
  ttlStrategy: {{secondsAfterSuccess: 60}}
  arguments:
    parameters:
    - {{name: color, value: red, enum: [red, blue], description: a color}}
    - {{name: size, value: '1'}}
  templates:
  - name: main
    metadata: {{annotations: {{dagsmith.dev/task: main}}}}
    container:
      image: x
      command: {py("import json, os, sys; open('vars.json', 'w').write(json.dumps(sys.argv[1:]))")}
      args: ['{{{{workflow.name}}}}', '{{{{ workflow.namespace }}}}', '{{{{workflow.parameters.color}}}}', '{{{{workflow.parameters.size}}}}',
             '{{{{workflow.creationTimestamp.Y}}}}-{{{{workflow.creationTimestamp.m}}}}-{{{{workflow.creationTimestamp.d}}}}', '{{{{workflow.uid}}}}']
"""


def test_a_workflow_from_a_workflow_template_with_its_variables(tmp_path):
    wt = yaml.safe_load(WORKFLOW_TEMPLATE)
    wf = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "metadata": {"generateName": "wt-", "namespace": "ml"},
          "spec": {"workflowTemplateRef": {"name": "wt"}, "arguments": {"parameters": [{"name": "size", "value": "3"}]}}}
    interp = Interpreter(base_env={"PATH": os.environ["PATH"]}, cwd=tmp_path, scratch=tmp_path, workflow_templates={"wt": wt})
    created = dt.datetime(2024, 2, 29, 23, 59, tzinfo=dt.timezone.utc)
    result = interp.submit(wf, parameters={"color": "blue"}, created=created)
    got = json.loads((tmp_path / "vars.json").read_text())
    assert got[:5] == [result.name, "ml", "blue", "3", "2024-02-29"] and got[5] == result.uid
    assert result.name.startswith("wt-") and len(result.name) == 8 and result.parameters == {"color": "blue", "size": "3"}
    (node,) = result.nodes
    assert node.annotations == {"dagsmith.dev/task": "main"} and node.task == result.name
    with pytest.raises(Invalid, match="not one of its enum"):
        interp.submit(wt, parameters={"color": "green"})
    with pytest.raises(Invalid, match="not arguments of the workflow"):
        interp.submit(wt, parameters={"colour": "red"})
    with pytest.raises(Unsupported, match="Argo rewrites the variables in it") as caught:
        interp.submit(wt, parameters={"size": "{{workflow.name}}"})
    assert caught.value.path == ".spec.arguments.parameters[1].value"


def test_cron_workflow_creates_its_workflow_spec(tmp_path):
    wt = yaml.safe_load(WORKFLOW_TEMPLATE)
    cron = {"apiVersion": "argoproj.io/v1alpha1", "kind": "CronWorkflow", "metadata": {"name": "wt", "namespace": "ml"},
            "spec": {"schedules": ["0 3 * * 1"], "timezone": "UTC", "concurrencyPolicy": "Forbid", "startingDeadlineSeconds": 0,
                     "workflowSpec": {"workflowTemplateRef": {"name": "wt"}}}}
    interp = Interpreter(base_env={"PATH": os.environ["PATH"]}, cwd=tmp_path, scratch=tmp_path, workflow_templates={"wt": wt})
    at = dt.datetime(2024, 3, 4, 3, 0, tzinfo=dt.timezone.utc)
    wf = interp.cron_workflow(cron, at)
    assert wf["metadata"] == {"name": f"wt-{int(at.timestamp())}", "namespace": "ml"}
    result = interp.submit(wf, created=at)
    assert result.phase == "Succeeded" and json.loads((tmp_path / "vars.json").read_text())[:5] == [wf["metadata"]["name"], "ml", "red", "1", "2024-03-04"]
    cron["spec"]["schedules"] = ["0 3 * *"]
    with pytest.raises(Invalid, match="not a cron schedule"):
        interp.cron_workflow(cron, at)
    for schedule in ("0 3 * * 7", "0 3 * * 5-7", "0 3 * * 1,7/2"):  # robfig/cron's day of week is 0-6
        cron["spec"]["schedules"] = [schedule]
        with pytest.raises(Invalid, match="above maximum"):
            interp.cron_workflow(cron, at)


# (what to change in a valid workflow, the path Unsupported must name)
REFUSED = [
    (lambda d: d["spec"]["templates"][1]["container"].__setitem__("workingDir", "/app"), ".spec.templates[1].container.workingDir"),
    (lambda d: d["spec"]["templates"][0]["dag"]["tasks"][0].__setitem__("continueOn", {"failed": True}), ".spec.templates[0].dag.tasks[0].continueOn"),
    (lambda d: d["spec"].__setitem__("onExit", "x"), ".spec.onExit"),
    (lambda d: d["spec"]["templates"][1].__setitem__("script", {}), ".spec.templates[1].script"),
    (lambda d: d["spec"]["templates"][1]["container"].__setitem__("args", ["{{=sprig.upper('x')}}"]), ".spec.templates[1].container.args[0]"),
    (lambda d: d["spec"]["templates"][1]["container"].__setitem__("args", ["{{workflow.serviceAccountName}}"]), ".spec.templates[1].container.args[0]"),
    (lambda d: d["spec"]["templates"][1]["container"].__setitem__("args", ["{{ x }}"]), ".spec.templates[1].container.args[0]"),
    (lambda d: d["spec"]["templates"][0]["dag"]["tasks"][0].__setitem__("when", "'a' =~ 'b'"), ".spec.templates[0].dag.tasks[0].when"),
    (lambda d: d["spec"]["templates"][0]["dag"]["tasks"][0].__setitem__("withItems", [1]), ".spec.templates[0].dag.tasks[0].withItems"),
    (lambda d: d["spec"]["templates"][1].__setitem__("retryStrategy", {"limit": 1, "retryPolicy": "OnTransientError"}), ".spec.templates[1].retryStrategy.retryPolicy"),
    (lambda d: d["spec"]["templates"][1]["container"].pop("command"), ".spec.templates[1].container"),
    (lambda d: d["spec"]["templates"][1]["container"].__setitem__("env", [{"name": "A", "valueFrom": {"configMapKeyRef": {}}}]),
     ".spec.templates[1].container.env[0].valueFrom.configMapKeyRef"),
    (lambda d: d["spec"]["templates"][1].__setitem__("outputs", {"parameters": [{"name": "o", "valueFrom": {"path": "/out"}}]}),
     ".spec.templates[1].outputs.parameters[0].valueFrom.path"),
    (lambda d: d["spec"]["templates"].__setitem__(1, {"name": "ok", "resource": {"action": "create", "manifest": "kind: ConfigMap\napiVersion: v1\n"}}),
     ".spec.templates[1].resource.manifest"),
]


@pytest.mark.parametrize("mutate, path", REFUSED, ids=[p for _, p in REFUSED])
def test_what_it_does_not_implement_is_refused_naming_the_field(tmp_path, mutate, path):
    doc = yaml.safe_load(workflow(OK, tasks="      - {name: a, template: ok}"))
    assert Interpreter(base_env={"PATH": os.environ["PATH"]}, cwd=tmp_path, scratch=tmp_path).submit(doc).phase == "Succeeded"
    mutate(doc)
    with pytest.raises(Unsupported) as caught:
        Interpreter(base_env={"PATH": os.environ["PATH"]}, cwd=tmp_path, scratch=tmp_path).submit(doc)
    assert caught.value.path == path, str(caught.value)


def test_depends_and_when_expressions():
    phase = {"a": "Succeeded", "b": "Skipped", "c": "Failed", "d-e": "Error", "f": "Omitted"}
    children = {"g": ["Succeeded", "Failed"], "h": ["Failed", "Failed"]}
    of = lambda name: (phase.get(name, "Succeeded"), children.get(name, []))  # noqa: E731
    cases = {"a": True, "b": True, "c": False, "d-e": False, "f": False, "a && b": True, "a && c": False, "c || b": True,
             "!c": True, "!(a && c.Failed)": False, "d-e.Errored && f.Omitted": True, "(c.Failed || a.Failed) && !b.Skipped": False,
             "g.AnySucceeded && h.AllFailed && !g.AllFailed": True, "a.Daemoned": False}
    assert {expr: eval_depends(expr, of, "x") for expr in cases} == cases
    with pytest.raises(Invalid, match="unknown task result"):
        eval_depends("a.Success", of, "x")
    whens = {"'admit' == 'admit'": True, "'' == 'admit'": False, "'a' == 'a' && 'b' != 'b'": False, "a == a": True,
             "2 > 10": False, "'2' > '10'": True, "1.5 >= 1.5": True, "!(1 < 2) || true": True, "'1' == 1": False}
    assert {text: eval_when(text, "w") for text in whens} == whens
    with pytest.raises(Invalid):
        eval_when("'a' && true", "w")
    with pytest.raises(Unsupported):
        eval_when("1 + 1 == 2", "w")
    assert item_scope([1, "a"], "p") == {"item": '[1,"a"]'} and item_scope("x y", "p") == {"item": "x y"}
    assert item_scope({"k": "v", "n": 1.5}, "p") == {"item": '{"k":"v","n":1.5}', "item.k": "v", "item.n": "1.5"}


SENSOR = {
    "apiVersion": "argoproj.io/v1alpha1", "kind": "Sensor", "metadata": {"name": "s"},
    "spec": {
        "template": {"serviceAccountName": "runner"},
        "dependencies": [{"name": "events", "eventSourceName": "es", "eventName": "events"},
                         {"name": "other", "eventSourceName": "es", "eventName": "other"}],
        "triggers": [{
            "template": {"name": "t", "conditions": "events", "argoWorkflow": {"operation": "submit", "source": {"resource": {
                "apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "metadata": {"generateName": "p-"},
                "spec": {"workflowTemplateRef": {"name": "p"}, "arguments": {"parameters": [
                    {"name": "source", "value": "events"}, {"name": "at", "value": ""}, {"name": "key", "value": ""}]}}}}}},
            "parameters": [
                {"src": {"dependencyName": "events", "contextKey": "time"}, "dest": "spec.arguments.parameters.1.value"},
                {"src": {"dependencyName": "events", "dataKey": "body.Records.0.s3.object.key", "value": "none"}, "dest": "spec.arguments.parameters.2.value"},
            ]}],
    },
}


def test_sensor_triggers_submit_the_workflow_with_event_values():
    event = {"context": {"id": "1", "source": "es", "type": "sqs", "specversion": "1.0", "time": "2024-02-29T10:00:00Z"},
             "data": json.dumps({"body": {"Records": [{"s3": {"object": {"key": "landed/2024-02-29.csv"}}}]}})}
    (wf,) = sensor_workflows(SENSOR, {"events": event})
    assert [p["value"] for p in wf["spec"]["arguments"]["parameters"]] == ["events", "2024-02-29T10:00:00Z", "landed/2024-02-29.csv"]
    assert SENSOR["spec"]["triggers"][0]["template"]["argoWorkflow"]["source"]["resource"]["spec"]["arguments"]["parameters"][2]["value"] == ""
    (wf,) = sensor_workflows(SENSOR, {"events": {**event, "data": {"body": {}}}})
    assert wf["spec"]["arguments"]["parameters"][2]["value"] == "none"  # the default `value`
    assert sensor_workflows(SENSOR, {"other": event}) == []  # its conditions do not hold
    with pytest.raises(Invalid, match="no default"):
        sensor_workflows(SENSOR, {"events": {**event, "context": {}}})
    filtered = json.loads(json.dumps(SENSOR))
    filtered["spec"]["dependencies"][0]["filters"] = {"exprs": []}
    with pytest.raises(Unsupported, match="filters.exprs"):
        sensor_workflows(filtered, {"events": event})
    filtered["spec"]["dependencies"][0]["filters"] = {"data": [{"path": "body.Records.0.s3.object.key", "type": "string", "value": ["^landed/"]}]}
    assert len(sensor_workflows(filtered, {"events": event})) == 1
    filtered["spec"]["dependencies"][0]["filters"]["data"][0]["value"] = ["^other/"]
    assert sensor_workflows(filtered, {"events": event}) == []
    filtered["spec"]["dependencies"][0]["filters"]["data"][0]["value"] = ["2024"]  # unanchored: matches anywhere
    assert len(sensor_workflows(filtered, {"events": event})) == 1
    # `^...$`: the whole key (argo-events v1.9.11 filter.go:363-374 regexp.Compile, exp.Match; RE2's
    # `$` is the end of the text, https://pkg.go.dev/regexp/syntax), so `x.csv.bak` is not `x.csv`
    filtered["spec"]["dependencies"][0]["filters"]["data"][0]["value"] = [r"^landed/2024-02-29\.csv$"]
    assert len(sensor_workflows(filtered, {"events": event})) == 1
    for key in ("landed/2024-02-29.csv.bak", "landed/2024-02-29.csv\n", "landed/2024-02-29xcsv"):
        other = {**event, "data": json.dumps({"body": {"Records": [{"s3": {"object": {"key": key}}}]}})}
        assert sensor_workflows(filtered, {"events": other}) == [], key
    filtered["spec"]["dependencies"][0]["filters"]["data"][0]["value"] = [r"^landed/[$]"]  # `$` in a class is a dollar
    assert sensor_workflows(filtered, {"events": event}) == []
    filtered["spec"]["dependencies"][0]["filters"]["data"][0]["path"] = "body.missing"  # a missing path fails
    assert sensor_workflows(filtered, {"events": event}) == []
    filtered["spec"]["dependencies"][0]["filters"]["data"][0]["type"] = "number"
    with pytest.raises(Unsupported, match="type"):
        sensor_workflows(filtered, {"events": event})


def test_a_sensor_event_submits_a_workflow_that_runs(tmp_path):
    wt = yaml.safe_load(WORKFLOW_TEMPLATE)
    wt["metadata"]["name"] = "p"
    wt["spec"]["arguments"]["parameters"] = [{"name": n, "value": ""} for n in ("source", "at", "key")]
    wt["spec"]["templates"][0]["container"]["args"] = ["{{workflow.parameters.source}}", "{{workflow.parameters.at}}", "{{workflow.parameters.key}}"]
    event = {"context": {"time": "2024-02-29T10:00:00Z"}, "data": {"body": {"Records": [{"s3": {"object": {"key": "k.csv"}}}]}}}
    (wf,) = sensor_workflows(SENSOR, {"events": event})
    interp = Interpreter(base_env={"PATH": os.environ["PATH"]}, cwd=tmp_path, scratch=tmp_path, workflow_templates={"p": wt})
    result = interp.submit(wf)
    assert result.phase == "Succeeded" and result.name.startswith("p-")
    assert json.loads((tmp_path / "vars.json").read_text()) == ["events", "2024-02-29T10:00:00Z", "k.csv"]


PYTORCHJOB = """
apiVersion: kubeflow.org/v1
kind: PyTorchJob
metadata: {name: '{{workflow.name}}-train'}
spec:
  runPolicy: {backoffLimit: 0, cleanPodPolicy: Running}
  pytorchReplicaSpecs:
    Master:
      replicas: 1
      restartPolicy: Never
      template: {spec: {containers: [{name: pytorch, image: x, command: CMD}]}}
    Worker:
      replicas: 1
      restartPolicy: Never
      template: {spec: {containers: [{name: pytorch, image: x, command: CMD}]}}
"""


OLD_FAILURE = "status.replicaStatuses.Master.failed > 0"  # what the backend wrote before: never holds (frozen counts)


@pytest.mark.parametrize("exit_code, failure, phase", [(0, None, "Succeeded"), (4, None, "Failed"), (4, OLD_FAILURE, "Error")])
def test_a_resource_template_runs_a_pytorchjob_through_the_training_operator_stand_in(tmp_path, exit_code, failure, phase):
    pytest.importorskip("backend_argo.training_operator")
    from dagsmith.backends.kubernetes import training_job_conditions

    success, emitted = training_job_conditions("PyTorchJob")
    code = f"import os, sys; open('rank-' + os.environ['RANK'], 'w').write(os.environ['WORLD_SIZE']); sys.exit({exit_code})"
    manifest = PYTORCHJOB.replace("CMD", py(code))
    templates = f"""
  - name: job
    resource:
      action: create
      setOwnerReference: true
      manifest: {json.dumps(manifest)}
      successCondition: {success}
      failureCondition: {failure or emitted}
"""
    result = run(tmp_path, workflow(templates, tasks="      - {name: train, template: job}"))
    (node,) = result.of_task("train")
    assert (node.type, node.phase) == ("Resource", phase), node.message
    if phase == "Error":  # the job is Failed, but nothing the old condition reads says so
        assert "Argo would wait for it forever" in node.message
    if exit_code == 0:  # after a failure the other pods are deleted at once (they may not have started yet)
        assert sorted(p.name for p in tmp_path.glob("rank-*")) == ["rank-0", "rank-1"]
        assert (tmp_path / "rank-1").read_text() == "2"


LANDED = """
dagsmith: 1
pipeline: {name: landed}
defaults: {image: "ghcr.io/acme/landed:1"}
sources: {people: {type: csv, uri: people.csv}}
steps:
  mark: {after: [people], run: {command: [PY, -c, "import os; open('mark-' + os.environ['DAGSMITH_RUN_ID'], 'w')"]}}
triggers:
  schedule: "0 3 * * *"
  on_new_data:
    - {source: people, min_interval: 1h, queue: "https://sqs.eu-west-1.amazonaws.com/123456789012/landed"}
backends:
  argo: {store: "s3://landed/dagsmith"}
"""


@pytest.mark.slow
def test_sensor_and_cron_runs_of_a_compiled_pipeline_with_min_interval(tmp_path, aws_s3, compile_argo, argo_pod_env):
    """The backend's own output end to end: the Sensor's trigger (an SQS event of a new object)
    submits a run that is admitted; an event of data that landed before that run started gives a
    run whose tasks are all Skipped (covered: the workflow Succeeded); the CronWorkflow's run is
    not held."""
    (tmp_path / "people.csv").write_text("id,x\n1,2\n", encoding="utf-8")
    (tmp_path / "pipeline.yaml").write_text(LANDED.replace("PY", PY), encoding="utf-8")
    out = tmp_path / "argo"
    docs = compile_argo(tmp_path / "pipeline.yaml", out)
    assert set(docs) == {"workflow-template.yaml", "cron-workflow.yaml", "event-source.yaml", "sensor.yaml", "prerequisites.yaml"}
    aws_s3.create_bucket(Bucket="landed")
    (ir_file,) = out.glob("*.ir.json")
    ir_uri = next(t["container"]["args"][1] for t in docs["workflow-template.yaml"]["spec"]["templates"] if "container" in t)
    store = next(p["value"] for p in docs["workflow-template.yaml"]["spec"]["arguments"]["parameters"] if p["name"] == "dagsmith-store")
    ir_uri = ir_uri.replace("{{workflow.parameters.dagsmith-store}}", store)  # the pods read it under the run's store
    aws_s3.upload_file(str(ir_file), "landed", ir_uri[len("s3://landed/"):])
    interp = Interpreter(base_env=argo_pod_env, cwd=tmp_path, scratch=tmp_path, workflow_templates={"landed": docs["workflow-template.yaml"]})

    def event(at: str) -> dict:
        body = {"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "in"}, "object": {"key": f"people/{at}.csv"}}}]}
        return {"context": {"id": at, "source": "landed", "type": "sqs", "specversion": "1.0", "time": at}, "data": {"body": body}}

    (dep,) = [d["name"] for d in docs["sensor.yaml"]["spec"]["dependencies"]]
    now = dt.datetime.now(dt.timezone.utc)
    landed = now - dt.timedelta(minutes=10)
    (first,) = sensor_workflows(docs["sensor.yaml"], {dep: event(landed.strftime("%Y-%m-%dT%H:%M:%SZ"))})
    run1 = interp.submit(first)
    assert run1.phase == "Succeeded", run1.summary()
    assert {n.task: n.phase for n in run1.pods()} == {"dagsmith-admit": "Succeeded", "people": "Succeeded", "mark": "Succeeded"}
    assert run1.of_task("dagsmith-admit")[0].outputs == {"status": "admit"}
    assert (tmp_path / f"mark-{run1.name}").exists()

    # data that landed before the first run started: that run read it (a later landing would be
    # held by exit code 75 and retried until min_interval passes)
    before = now - dt.timedelta(minutes=5)
    (second,) = sensor_workflows(docs["sensor.yaml"], {dep: event(before.strftime("%Y-%m-%dT%H:%M:%SZ"))})
    run2 = interp.submit(second)
    assert run2.phase == "Succeeded", run2.summary()
    assert run2.of_task("dagsmith-admit")[0].outputs == {"status": "covered"}, run2.summary()
    assert {n.task: n.phase for n in run2.nodes if n.type != "DAG" and n.task != "dagsmith-admit"} == {"people": "Skipped", "mark": "Skipped"}
    assert not (tmp_path / f"mark-{run2.name}").exists()

    later = now + dt.timedelta(minutes=5)
    cron = interp.cron_workflow(docs["cron-workflow.yaml"], later)
    run3 = interp.submit(cron, created=later)
    assert run3.phase == "Succeeded" and (tmp_path / f"mark-{run3.name}").exists(), run3.summary()


@pytest.mark.slow
def test_concurrent_sensor_started_workflows_admit_one_and_held_data_runs_once(tmp_path, aws_s3, compile_argo, argo_pod_env):
    """The race of issue 21 on the backend's own output: events arriving together make the
    Sensor submit three Workflows, which run at once; exactly one is admitted (the others are
    covered: the store's conditional write). Two more landings within min_interval are held
    (their admit pods exit 75 and are retried after the backoff, nothing held in a pod) and,
    when the interval has passed, exactly one of them runs."""
    (tmp_path / "people.csv").write_text("id,x\n1,2\n", encoding="utf-8")
    # a bucket of its own: the moto server lives for the session, and another test's state in
    # "landed" (its last run) would decide these runs
    spec = LANDED.replace("PY", PY).replace("min_interval: 1h", "min_interval: 6s").replace('schedule: "0 3 * * *"\n  ', "")
    spec = spec.replace("s3://landed/", "s3://landed-race/")
    (tmp_path / "pipeline.yaml").write_text(spec, encoding="utf-8")
    out = tmp_path / "argo"
    docs = compile_argo(tmp_path / "pipeline.yaml", out)
    admit = next(t for t in docs["workflow-template.yaml"]["spec"]["templates"] if t["name"] == "dagsmith-admit")
    assert "--wait" not in admit["container"]["args"] and admit["retryStrategy"]["expression"].startswith("asInt(lastRetry.exitCode) == 75")
    aws_s3.create_bucket(Bucket="landed-race")
    (ir_file,) = out.glob("*.ir.json")
    store = next(p["value"] for p in docs["workflow-template.yaml"]["spec"]["arguments"]["parameters"] if p["name"] == "dagsmith-store")
    ir_uri = admit["container"]["args"][1].replace("{{workflow.parameters.dagsmith-store}}", store)  # read under the run's store
    aws_s3.upload_file(str(ir_file), "landed-race", ir_uri[len("s3://landed-race/"):])
    interp = Interpreter(base_env=argo_pod_env, cwd=tmp_path, scratch=tmp_path, max_pods=6,
                         workflow_templates={"landed": docs["workflow-template.yaml"]})
    (dep,) = [d["name"] for d in docs["sensor.yaml"]["spec"]["dependencies"]]

    def landed_now(n: int, ago: float = 0.0) -> list[dict]:
        at = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=ago)).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "in"}, "object": {"key": f"people/{at}.csv"}}}]}
        event = {"context": {"id": at, "source": "landed", "type": "sqs", "specversion": "1.0", "time": at}, "data": {"body": body}}
        return [wf for _ in range(n) for wf in sensor_workflows(docs["sensor.yaml"], {dep: event})]

    def outcomes(runs) -> list[str]:
        assert all(r.phase == "Succeeded" for r in runs), [r.summary() for r in runs]
        return sorted(r.of_task("dagsmith-admit")[0].outputs.get("status") for r in runs)

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as background:
        # landed a second before: times are whole seconds, and data of the very second a run
        # started counts as new (held, never lost), which would make a second run of this burst
        racing = background.submit(interp.submit_all, landed_now(3, ago=1.0))
        deadline = time.monotonic() + 120
        while "Contents" not in aws_s3.list_objects_v2(Bucket="landed-race", Prefix="dagsmith/triggers/"):  # one was admitted
            assert time.monotonic() < deadline and not racing.done(), racing.result() if racing.done() else "no run admitted in 120 s"
            time.sleep(0.1)
        time.sleep(1.1)  # data landing after the admitted run started: held until 6 s after that start
        state = json.loads(aws_s3.get_object(Bucket="landed-race", Key="dagsmith/triggers/landed/last_run.json")["Body"].read())
        due = dt.datetime.fromisoformat(state["started"]).timestamp() + 6
        held = interp.submit_all(landed_now(2))
        first = racing.result()
    assert outcomes(first) == ["admit", "covered", "covered"]
    assert outcomes(held) == ["admit", "covered"]
    (admitted,) = [r.of_task("dagsmith-admit")[0] for r in held if r.of_task("dagsmith-admit")[0].outputs["status"] == "admit"]
    # held by exit code 75 + retry until the interval passed (unless a loaded machine started its pod after that)
    assert admitted.attempts > 1 or admitted.started >= due, (admitted.attempts, admitted.started, due)
    assert admitted.exit_code == 0 and admitted.finished >= due
    assert len(list(tmp_path.glob("mark-*"))) == 2  # the held data ran once
