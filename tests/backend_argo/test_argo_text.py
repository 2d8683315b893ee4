"""A spec's own text in Argo resources (descriptions) never holds a variable for Argo.

The model of Argo's templating below follows the real one: the controller marshals the workflow's
spec to JSON and substitutes it (argo-workflows f016ad89 workflow/controller/operator.go:4694-4706,
util/template/replace.go:41-50); util/template/template.go:15-31 parses with fasttemplate and the
tags "{{" / "}}": each tag starts at the first "{{" (bytes.Index) and ends at the next "}}", and a
"{{" without a "}}" fails the whole text (valyala/fasttemplate v1.2.2 template.go:250-262); every
tag is then replaced or written back (util/template/simple_template.go:17-54).
"""

from __future__ import annotations

import json
import re

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from dagsmith.backends.argo.workflow import INERT_MARK, inert
from dagsmith.cli import main

from backend_argo.test_argo_backend import spec_text


class NoEndTag(ValueError):
    pass


def argo_tags(text: str) -> list[str]:
    """The tags fasttemplate finds in `text` (template.go:250-262), or NoEndTag."""
    tags = []
    while True:
        start = text.find("{{")
        if start < 0:
            return tags
        text = text[start + 2:]
        end = text.find("}}")
        if end < 0:
            raise NoEndTag(text)
        tags.append(text[:end])
        text = text[end + 2:]


def argo_render(text: str) -> str:
    """`text` as the controller leaves it when every variable is known (each tag replaced)."""
    argo_tags(text)  # fails as fasttemplate.NewTemplate does
    return re.sub(r"\{\{(.*?)\}\}", lambda m: f"<value of {m.group(1).strip()}>", text, flags=re.S)


def read_back(text: str) -> str:
    """The inverse of `inert`: the zero width space it put after a "{" (one followed by "{" or by
    another zero width space) taken out."""
    return re.sub("\\{" + INERT_MARK + "(?=[{" + INERT_MARK + "])", "{", text)


braces = st.text(alphabet=st.sampled_from(["{", "}", INERT_MARK, "=", "x", " ", "$", "\\", '"']), max_size=40)


@settings(max_examples=400, deadline=None)
@given(st.one_of(braces, st.text(max_size=40)))
def test_no_text_keeps_a_variable_for_argo(text):
    escaped = inert(text)
    assert "{{" not in escaped
    as_json = json.dumps({"description": escaped}, ensure_ascii=False)  # what the controller substitutes
    assert argo_tags(as_json) == [] and argo_render(as_json) == as_json
    assert read_back(escaped) == text  # nothing lost; it looks the same (the mark is invisible)


@pytest.mark.parametrize("text", ["{{{x}}", "{{x}}", "a {{ b", "{{=sprig.now()}}", "{{{{workflow.name}}}}", "{\u200b{x}}"])
def test_the_examples_of_issue_22(text):
    escaped = inert(text)
    assert "{{" not in escaped and read_back(escaped) == text
    assert escaped.replace(INERT_MARK, "") == text.replace(INERT_MARK, "")


DESCRIPTIONS = ["{{{x}}", "a {{ b", "{{=sprig.now()}}", "end {", "{{workflow.name}}"]


def test_descriptions_in_the_workflow_template_hold_no_variable(capsys, write_spec):
    """Every description of the spec (the pipeline's, each parameter's) reaches the
    WorkflowTemplate with no variable in it: the tags Argo finds in the whole resource, as JSON,
    are those of the same pipeline without descriptions."""
    params = "\n".join(f"  p{i}: {{type: string, default: v, description: {json.dumps(text)}}}" for i, text in enumerate(DESCRIPTIONS))
    documents = []
    for described in (True, False):
        body = f"params:\n{params}" if described else "params:\n" + "\n".join(f"  p{i}: {{type: string, default: v}}" for i in range(len(DESCRIPTIONS)))
        text = spec_text(body).replace("pipeline: {name: p}", "pipeline: {name: p, description: '{{{x}} and {{'}" if described else "pipeline: {name: p}")
        path = write_spec(text)
        assert main(["compile", path, "--target", "argo", "-o", "out"]) == 0, capsys.readouterr().err
        with open("out/p.workflow-template.yaml", encoding="utf-8") as handle:
            documents.append(yaml.safe_load(handle))
    described, plain = documents
    assert sorted(argo_tags(json.dumps(described))) == sorted(argo_tags(json.dumps(plain)))
    by_name = {p["name"]: p for p in described["spec"]["arguments"]["parameters"]}
    assert [read_back(by_name[f"p{i}"]["description"]) for i in range(len(DESCRIPTIONS))] == DESCRIPTIONS
    assert read_back(described["metadata"]["annotations"]["workflows.argoproj.io/description"]) == "{{{x}} and {{"


@pytest.mark.parametrize(("schedule", "written"), [("0 3 * * 5-7", "0 3 * * 0,5,6"), ("0 3 * * 7", "0 3 * * 0"),
                                                   ("0 3 1 * 0-7", "0 3 * * *"), ("0 3 * * *,7", "0 3 * * *"), ("0 3 * * 1-5", "0 3 * * 1-5")])
def test_a_sunday_written_7_reaches_argo_as_0(capsys, write_spec, schedule, written):
    """The spec takes 7 for Sunday; Argo's cron parser (robfig/cron) refuses it: the CronWorkflow
    gets the same days with 0 (cron.written: `1 * 0-7` is every day), accepted by the interpreter's rule for it."""
    from backend_argo.interpreter import Interpreter

    import datetime as dt
    import os

    path = write_spec(spec_text(f'triggers: {{schedule: "{schedule}"}}'))
    assert main(["compile", path, "--target", "argo", "-o", "out"]) == 0, capsys.readouterr().err
    with open("out/p.cron-workflow.yaml", encoding="utf-8") as handle:
        cron = yaml.safe_load(handle)
    assert cron["spec"]["schedules"] == [written]
    Interpreter(base_env={"PATH": os.environ["PATH"]}, cwd=".", scratch=".").cron_workflow(cron, dt.datetime(2024, 3, 4, tzinfo=dt.timezone.utc))
