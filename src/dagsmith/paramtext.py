"""A parameter value given as text (`--param NAME=VALUE`, an Argo workflow parameter, the
DAGSMITH_PARAM_<NAME> variable) converted to its declared type, one rule everywhere: ASCII
digits only for numbers, finite numbers, true/false for booleans, strings as they are."""

from __future__ import annotations


def convert(kind: str, text: str):
    """`text` as a value of the parameter type `kind`; ValueError says why it is not one."""
    if not text.isascii() and kind in ("integer", "number"):  # int() and float() take '１２' and '٣'
        raise ValueError(f"{text!r} is not {'an integer' if kind == 'integer' else 'a number'} (digits 0-9 only)")
    if kind == "integer":
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"{text!r} is not an integer") from None
    if kind == "number":
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a number") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"{text!r} is not a finite number")
        return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value
    if kind == "boolean":
        if text.lower() in ("true", "false"):
            return text.lower() == "true"
        raise ValueError(f"{text!r} is not true or false")
    return text


def to_text(value) -> str:
    """The text form of a parameter value, that `convert` reads back as the same value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
