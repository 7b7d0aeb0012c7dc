"""Reading a sweep config's values: type checks whose one-line errors name the file and the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sddpx_tp.errors import UserError


class ConfigError(UserError):
    """A sweep config that cannot be used as written: one line naming the file and the key."""


class ConfigReader:
    """Type checks of the values read from the config file at ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key: str, problem: str) -> ConfigError:
        """The error for a bad value at ``key`` (a dotted name such as ``prune.max_rate``; "" for the file)."""
        return ConfigError(
            f"sweep config {self.path}: {key} {problem}" if key else f"sweep config {self.path}: {problem}"
        )

    def table(self, value: Any, key: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a table, not {shown(value)}")
        return value

    def only(self, table: dict[str, Any], allowed: tuple[str, ...], key: str) -> None:
        unknown = [name for name in table if name not in allowed]
        if unknown:
            raise self.fail(
                f"{key}.{unknown[0]}" if key else unknown[0], f"is not a known key; use {', '.join(allowed)}"
            )

    def integer(self, value: Any, key: str, low: int | None = 0) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.fail(key, f"must be an integer, not {shown(value)}")
        if low is not None and value < low:
            raise self.fail(key, f"must be >= {low}, not {value}")
        return value

    def number(self, value: Any, key: str) -> float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise self.fail(key, f"must be a number, not {shown(value)}")
        return float(value)

    def string(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(key, f"must be a non-empty string, not {shown(value)}")
        return value

    def boolean(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, f"must be true or false, not {shown(value)}")
        return value

    def file(self, value: Any, key: str, folder: bool = False) -> str:
        path = Path(self.string(value, key)).expanduser()
        path = path if path.is_absolute() else self.path.parent / path
        if not (path.is_dir() if folder else path.is_file()):
            raise self.fail(key, f"names {path}, which is not an existing {'folder' if folder else 'file'}")
        return str(path.resolve())


def shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
