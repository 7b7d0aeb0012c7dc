"""Every error sddpx-tp raises on purpose, in one place.

The library names what is wrong in its own terms (a setting's field name, a file);
the command line maps them to its flags. :class:`SettingError` carries the names
of the settings it is about as ``{placeholders}`` in its template, so ``str(error)``
says ``max_rate must be in (0, 1)`` and the CLI says ``--max-rate must be in (0, 1)``.
"""

from __future__ import annotations

from collections.abc import Callable


class UserError(Exception):
    """Bad input that the user can fix: a wrong path, an unknown model or class, a bad setting."""


class _Names(dict[str, str]):
    def __init__(self, name_of: Callable[[str], str]) -> None:
        super().__init__()
        self.name_of = name_of

    def __missing__(self, key: str) -> str:
        return self.name_of(key)


class SettingError(UserError, ValueError):
    """A setting out of range or two that contradict each other.

    ``template`` names each setting as ``{field}``; ``str()`` prints the field names
    and :meth:`render` the names a front end gives them (e.g. command-line flags).
    """

    def __init__(self, template: str) -> None:
        self.template = template
        super().__init__(self.render(str))

    def render(self, name_of: Callable[[str], str]) -> str:
        """The message with each ``{field}`` replaced by ``name_of(field)``."""
        try:
            return self.template.format_map(_Names(name_of))
        except (ValueError, IndexError):  # a stray brace in a value the user gave: show it as it is
            return self.template


def literal(text: object) -> str:
    """``text`` (a path, a name the user gave) made safe to embed in a :class:`SettingError` template."""
    return str(text).replace("{", "{{").replace("}", "}}")


class ModelSourceError(UserError):
    """A model, weights file or architecture that cannot be built or loaded."""


class UnsupportedArchitectureError(ModelSourceError, ValueError):
    """Relevance cannot be propagated correctly through this model: it is refused, never guessed at."""


class RunFolderError(UserError):
    """A run folder that cannot be written, resumed, exported or reported as asked."""


class StaleRunError(RunFolderError):
    """A run folder written by another version of the settings schema."""


class Interrupted(Exception):
    """A run stopped by SIGINT after its last accepted step; ``run`` is its folder, which can be resumed."""

    def __init__(self, run: object, hint: str | None = None) -> None:
        self.run = run
        self.hint = hint  # what to do next, where resuming the run folder is not it (the demo)
        super().__init__(f"the run in {run} stopped after its last accepted step and can be resumed")
