"""The retry decision: a pure function of (attempt, limits, exception)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from listener.errors import PermanentError, RetryLater
from listener.redaction import primary_message, redact_text

MAX_ERROR_CHARS = 2000
_rng = random.Random()

Action = Literal["complete", "retry", "fail"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Capped exponential backoff with full jitter on the upper half."""

    max_attempts: int = 5
    backoff_base_s: float = 1.0
    backoff_max_s: float = 300.0

    def backoff_s(self, attempt: int, rng: random.Random | None = None) -> float:
        """Delay before attempt ``attempt + 1``: base * 2^(attempt-1), capped, jittered."""
        ceiling = min(self.backoff_max_s, self.backoff_base_s * 2.0 ** max(attempt - 1, 0))
        # Half fixed, half random: retries spread out but never come back too soon.
        jitter = (rng or _rng).uniform(0, ceiling / 2)
        return ceiling / 2 + jitter


@dataclass(frozen=True, slots=True)
class Outcome:
    """What to do with a task after its handler ran."""

    action: Action
    delay_s: float = 0.0
    error: str | None = None
    counted: bool = True  # False: RetryLater gives the attempt back


def decide(
    attempt: int,
    policy: RetryPolicy,
    exc: BaseException | None,
    rng: random.Random | None = None,
) -> Outcome:
    """Map a handler's result to complete / retry / fail."""
    if exc is None:
        return Outcome("complete")
    error = describe_error(exc)
    if isinstance(exc, PermanentError):
        return Outcome("fail", error=error)
    if isinstance(exc, RetryLater):
        return Outcome("retry", delay_s=exc.delay_s, error=error, counted=False)
    if attempt >= policy.max_attempts:
        return Outcome("fail", error=error)
    return Outcome("retry", delay_s=policy.backoff_s(attempt, rng), error=error)


def describe_error(exc: BaseException) -> str:
    """``Type: message``, bounded, with e-mail addresses and secrets masked.

    A database error keeps its primary message only: its DETAIL may copy a whole row.
    """
    message = redact_text(primary_message(exc))
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    if len(text) > MAX_ERROR_CHARS:
        text = text[: MAX_ERROR_CHARS - 1] + "…"
    return text
