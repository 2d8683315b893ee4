"""Building blocks of the expand pass (compiler/steps.py, compiler/fanout.py): an IR step from a
section's options, and artifact names."""

from __future__ import annotations

from ..ir import Step
from ..spec.model import StepOptions


def make_step(step_id: str, kind: str, options: StepOptions, **fields) -> Step:
    return Step(
        id=step_id,
        kind=kind,
        image=options.image,
        resources=dict(options.resources),
        retries=options.retries,
        retry_delay=options.retry_delay,
        timeout=options.timeout,
        secrets=options.secrets,
        env=dict(options.env),
        **fields,
    )


def table(name: str) -> str:
    """The artifact a source or feature step writes, as IR inputs/outputs name it."""
    return f"table:{name}"
