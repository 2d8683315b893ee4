"""The console script's fast path for `dagsmith step` (launch.py): a line it takes means what the
click CLI makes of it; any line it is unsure of goes to the CLI."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dagsmith import cli, launch
from dagsmith.backends.plan import Command


def click_arguments(argv: list[str]):
    """What click's `step` command is called with for `argv`; None when click refuses the line."""
    seen = {}
    command = cli.app.commands["step"]
    try:
        context = command.make_context("step", list(argv[1:]))
    except (click.exceptions.Exit, click.ClickException):
        return None
    seen.update(context.params)
    return seen


lines = st.lists(st.sampled_from(["step", "ir.json", "train", "--item", "--store", "--outcome", "--status",
                                  "--skip-exit-code", "99", "1", "256", "s3://b/p", "--store=s3://x", "-h", "--help",
                                  "{\"start\": 0, \"stop\": 2}", "--", "", " 7", "--nope"]), max_size=9)
values = st.sampled_from(["99", "2", "255", "0", "x", "-1", "--store", "s3://b/p", "", "{}"])
options = st.lists(st.tuples(st.sampled_from(sorted(launch._STEP_OPTIONS)), values), max_size=4)
well_formed = options.map(lambda pairs: ["ir.json", "train", *[part for pair in pairs for part in pair]])


@settings(max_examples=400, deadline=None)
@given(tail=st.one_of(lines, well_formed))
def test_a_line_the_fast_path_takes_means_what_click_makes_of_it(tail):
    argv = ["step", *tail]
    fast = launch.step_arguments(argv)
    if fast is not None:
        assert fast == click_arguments(argv)


@pytest.mark.parametrize("command", [
    Command("step", "train", store="s3://bucket/dagsmith"),
    Command("step", "gate", store="/tmp/store", skip_exit_code=99),
    Command("step", "train", takes_item=True),
])
def test_every_step_line_a_backend_writes_takes_the_fast_path(command):
    item = '{"start": 0, "stop": 20}' if command.takes_item else None
    argv = command.argv("build/ir.json", item=item, outcome="/tmp/outcome.json", status="/tmp/status")[1:]
    assert launch.step_arguments(argv) == click_arguments(argv) is not None


def test_other_commands_and_help_go_to_the_cli(tmp_path):
    assert launch.step_arguments(["validate", "p.yaml"]) is None
    assert launch.step_arguments(["step", "--help"]) is None
    assert launch.step_arguments(["step", str(tmp_path), "train"]) is None  # a folder: click says why
    assert launch.step_arguments(["step", "ir.json", "train", "--skip-exit-code", "1"]) is None


def test_the_fast_path_reports_errors_as_the_cli_does(tmp_path):
    """A missing IR file: the same message and exit code through both, and no traceback."""
    missing = str(tmp_path / "nope.ir.json")
    fast = subprocess.run([sys.executable, "-c", "from dagsmith.launch import entry; entry()", "step", missing, "train"],
                          capture_output=True, text=True)
    full = subprocess.run([sys.executable, "-c", "from dagsmith.cli import entry; entry()", "step", missing, "train"],
                          capture_output=True, text=True)
    assert (fast.returncode, fast.stderr) == (full.returncode, full.stderr)
    assert fast.returncode != 0 and "Traceback" not in fast.stderr and "nope.ir.json" in fast.stderr
    assert "click" not in subprocess.run(
        [sys.executable, "-c", "import sys; sys.argv=['dagsmith','step',%r,'t']\nfrom dagsmith.launch import step_arguments, run_step_command\n"
         "run_step_command(step_arguments(sys.argv[1:])); print(' '.join(m for m in sys.modules if m.startswith('click')))" % missing],
        capture_output=True, text=True).stdout
