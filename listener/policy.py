"""What happens to an attempt: pure functions of (attempt, limits, what the handler did).

The attempt-accounting rules live here and in the SQL that applies them; the table
in docs/attempts.md lists every transition, and tests/unit/test_attempts.py walks it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from listener.errors import ConfigError, PermanentError, RetryLater
from listener.redaction import primary_message, redact_text

MAX_ERROR_CHARS = 2000
# A handler whose settings are missing is retried without counting the attempt,
# waiting longer each time its type fails so: a task is never used up by a
# configuration mistake, and the fix takes effect within CONFIG_BACKOFF_MAX_S.
CONFIG_BACKOFF_BASE_S = 10.0
CONFIG_BACKOFF_MAX_S = 300.0
_rng = random.Random()

# complete: done. retry: pending again after delay_s (counted or not). fail: failed.
# release: pending again at once, attempt given back (it never started).
Action = Literal["complete", "retry", "fail", "release"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Capped exponential backoff with full jitter on the upper half."""

    max_attempts: int = 5
    backoff_base_s: float = 1.0
    backoff_max_s: float = 300.0

    def backoff_s(self, attempt: int, rng: random.Random | None = None) -> float:
        """Delay before attempt ``attempt + 1``: base * 2^(attempt-1), capped, jittered."""
        return _jittered_backoff(self.backoff_base_s, self.backoff_max_s, attempt, rng)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What to write for a task after its attempt ended."""

    action: Action
    delay_s: float = 0.0
    error: str | None = None
    counted: bool = True  # False: the attempt is given back (RetryLater, config, release)

    @property
    def sql_action(self) -> str:
        """The action as the engine's finish statement names it."""
        if self.action == "retry" and not self.counted:
            return "retry_uncounted"
        return self.action


COMPLETE = Outcome("complete")
RELEASE = Outcome("release", counted=False)


class StrayCancellation(Exception):
    """A handler let out a cancellation that the worker did not ask for."""


class PayloadError(Exception):
    """A claimed task's payload cannot be decoded (too large or too deeply nested)."""


def decide(
    attempt: int,
    policy: RetryPolicy,
    exc: BaseException | None,
    rng: random.Random | None = None,
    *,
    config_failures: int = 1,
) -> Outcome:
    """Map a handler's result to complete / retry / fail.

    ``exc`` may be any BaseException the handler let out (SystemExit, a stray
    cancellation, ...): each is a failure of this attempt, nothing more.
    ``config_failures`` counts this type's consecutive ConfigErrors (for the backoff).
    """
    if exc is None:
        return COMPLETE
    error = describe_error(exc)
    if isinstance(exc, PermanentError | PayloadError):
        return Outcome("fail", error=error)
    if isinstance(exc, RetryLater):
        return Outcome("retry", delay_s=exc.delay_s, error=error, counted=False)
    if isinstance(exc, ConfigError):
        delay_s = _jittered_backoff(
            CONFIG_BACKOFF_BASE_S, CONFIG_BACKOFF_MAX_S, config_failures, rng
        )
        return Outcome("retry", delay_s=delay_s, error=error, counted=False)
    if attempt >= policy.max_attempts:
        return Outcome("fail", error=error)
    return Outcome("retry", delay_s=policy.backoff_s(attempt, rng), error=error)


def interrupted(attempt: int, max_attempts: int, *, started: bool) -> Outcome:
    """A claim the worker could not finish because it is stopping.

    Never started: put back, attempt given back. Started and interrupted after the
    grace period: the attempt counts (a task that hangs on every deploy must end).
    """
    if not started:
        return RELEASE
    error = "Interrupted: the worker stopped before the handler finished"
    if attempt >= max_attempts:
        return Outcome("fail", error=f"{error}, and no attempts are left")
    return Outcome("retry", delay_s=0.0, error=error)


def exhausted(attempt: int, max_attempts: int) -> Outcome:
    """Claimed with no attempt left (its limit was lowered after it was queued)."""
    return Outcome("fail", error=f"AttemptsExhausted: attempt {attempt} of {max_attempts}")


def describe_error(exc: BaseException) -> str:
    """``Type: message``, bounded, with e-mail addresses and secrets masked.

    A database error keeps its primary message only: its DETAIL may copy a whole row.
    """
    message = redact_text(primary_message(exc))
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    text = text.replace("\x00", "\\0")  # PostgreSQL text cannot hold NUL
    if len(text) > MAX_ERROR_CHARS:
        text = text[: MAX_ERROR_CHARS - 1] + "…"
    return text


def _jittered_backoff(
    base_s: float, max_s: float, attempt: int, rng: random.Random | None
) -> float:
    ceiling = min(max_s, base_s * 2.0 ** max(attempt - 1, 0))
    # Half fixed, half random: retries spread out but never come back too soon.
    return ceiling / 2 + (rng or _rng).uniform(0, ceiling / 2)
