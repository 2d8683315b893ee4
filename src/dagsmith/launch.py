"""The `dagsmith` console script.

`dagsmith step IR STEP [--item ..] [--store ..] [--outcome ..] [--status ..] [--skip-exit-code N]`
is what every orchestrator task runs, many times per pipeline run: a command line written by
backends/plan.py (Command.argv), of this one shape. Such a line goes straight to the step runtime
without importing the click CLI (about 20 ms of every task's start-up, a tenth of a small feature
step: benchmarks/out_of_core.py). Anything else (help, `--opt=value`, an unknown or repeated
option, a value click would refuse) goes to the CLI (cli.py), which parses and answers it; so a
line means the same either way (tests/test_launch.py compares both parsers).
"""

from __future__ import annotations

import os
import sys

_STEP_OPTIONS = {"--item": "item", "--store": "store", "--outcome": "outcome", "--status": "status",
                 "--skip-exit-code": "skip_exit_code"}


def step_arguments(argv: list[str]) -> dict | None:
    """The arguments of `cli.step` for a plain `step` command line; None for any other line."""
    if not argv or argv[0] != "step":
        return None
    positional: list[str] = []
    options: dict = {}
    index = 1
    while index < len(argv):
        arg = argv[index]
        if arg in _STEP_OPTIONS:
            name = _STEP_OPTIONS[arg]
            if index + 1 >= len(argv) or name in options:
                return None
            options[name] = argv[index + 1]
            index += 2
        elif arg.startswith("-"):
            return None
        else:
            positional.append(arg)
            index += 1
    if len(positional) != 2 or os.path.isdir(positional[0]):  # click.Path(dir_okay=False) refuses a folder
        return None
    code = options.get("skip_exit_code")
    if code is not None:
        if not (code.isascii() and code.isdigit() and 2 <= int(code) <= 255):  # click.IntRange(2, 255)
            return None
        options["skip_exit_code"] = int(code)
    return {"ir_file": positional[0], "step_id": positional[1], "item": None, "store": None, "outcome": None,
            "status": None, "skip_exit_code": None, **options}


def run_step_command(arguments: dict) -> int:
    """`cli.step` without click: its exit code, errors reported as cli.main reports them."""
    from .errors import exit_code_of

    try:
        from .runtime.commands import main_step

        return main_step(arguments["ir_file"], arguments["step_id"], arguments["item"], arguments["store"],
                         arguments["skip_exit_code"], arguments["outcome"], arguments["status"])
    except BaseException as exc:  # noqa: BLE001 - every exit goes through the one report
        return exit_code_of(exc, lambda line: print(line, file=sys.stderr))


def entry() -> None:
    arguments = step_arguments(sys.argv[1:])
    if arguments is None:
        from .cli import entry as cli_entry

        cli_entry()
        return
    sys.exit(run_step_command(arguments))
