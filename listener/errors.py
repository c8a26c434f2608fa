"""Exceptions that cross the package boundary: handler outcomes and bad input."""

from __future__ import annotations


class ListenerError(Exception):
    """Base class for errors raised by listener itself."""


class InvalidTaskError(ListenerError, ValueError):
    """A task cannot be enqueued as given; nothing was written."""


class ConfigError(ListenerError):
    """A setting is missing or invalid."""


class DatabaseUnavailableError(ListenerError):
    """The database could not be reached; the message is one line for humans."""


class PermanentError(Exception):
    """Raised by a handler to fail its task at once, without retrying."""


class RetryLater(Exception):
    """Raised by a handler to run its task again after ``delay_s``, not counted as a failure."""

    def __init__(self, delay_s: float, reason: str = "") -> None:
        if not delay_s >= 0:
            raise ValueError(f"RetryLater delay_s must be >= 0, got {delay_s!r}")
        super().__init__(reason or f"retry in {delay_s:g}s")
        self.delay_s = float(delay_s)
        self.reason = reason
