"""Error types. Bad user input raises a ``UserLibriError`` (a ``ValueError``) that names the file,
what was expected and what was found; never ``assert`` on input."""

from __future__ import annotations

from pathlib import Path


class UserLibriError(ValueError):
    """Base class for errors caused by bad input (files, configs, arguments)."""


class DataFormatError(UserLibriError):
    """A file does not have the expected format.

    The message names the file (and line, when known), what was expected and what was found.
    """

    def __init__(
        self,
        path: str | Path,
        expected: str,
        found: str,
        line: int | None = None,
    ) -> None:
        self.path = str(path)
        self.line = line
        self.expected = expected
        self.found = found
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: expected {expected}, found {found}")


class ConfigError(UserLibriError):
    """A configuration value is invalid."""


class AudioError(UserLibriError):
    """Audio is missing, unreadable or not in a usable format."""


class ExternalToolError(UserLibriError):
    """An external program (lmplz, sox, flite, npm, apt-get ...) is missing or failed."""


def missing_dependency(module: str, hint: str) -> ImportError:
    """An ``ImportError`` for an optional dependency, with an install hint."""
    return ImportError(f"{module} is required for this feature but is not installed; {hint}")
