"""The command line's names for the library's settings, and the parsing of option values.

The library's errors name fields (``max_rate``); the CLI shows its flags (``--max-rate``).
"""

from __future__ import annotations

import click

from sddpx_tp.errors import UserError

# Fields whose flag is not simply "--" + the field name with dashes.
_FLAGS = {
    "max_excluded": "--k",
    "compensation": "--compensate",
    "training": "--train DIR",
    "evaluation": "--eval",
    "references": "--refs",
    "class_folders": "--classes",
    "model": "--model",
    "resume": "--resume",
    "out": "--out",
    "batch_sizes": "--batch",
    "baseline": "--no-baseline",
    "providers": "--provider",
}


def flag(field: str) -> str:
    """The flag that sets library field ``field``."""
    return _FLAGS.get(field, "--" + field.replace("_", "-"))


def floats(text: str | None, name: str) -> tuple[float, ...] | None:
    """One number for all three channels, or three comma-separated numbers."""
    if text is None:
        return None
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise UserError(f"{name} must be one number or three comma-separated numbers, not {text!r}") from None
    if len(values) not in (1, 3):
        raise UserError(f"{name} needs one value or one per channel (3), got {len(values)}")
    return values * 3 if len(values) == 1 else values


def echo_warning(message: str) -> None:
    """A warning as the command line prints every warning: one line on stderr."""
    click.echo(f"sddpx-tp: warning: {message}", err=True)
