"""The one exception type the data layer raises for bad or missing data."""

from __future__ import annotations

import os


class DataError(ValueError):
    """A problem in a data file, reported as ``path:line: message`` so users can jump to it.

    It subclasses ValueError so generic callers that catch ValueError still work.
    """

    def __init__(self, message: str, path: str | os.PathLike | None = None, line: int | None = None):
        self.message = message
        self.path = str(path) if path is not None else None
        self.line = line
        super().__init__(str(self))

    def __str__(self) -> str:
        parts = [p for p in (self.path, None if self.line is None else str(self.line)) if p is not None]
        return ":".join(parts + [" " + self.message]) if parts else self.message

    def __reduce__(self):  # keep pickling (e.g. from datasets' worker processes) working
        return (type(self), (self.message, self.path, self.line))
