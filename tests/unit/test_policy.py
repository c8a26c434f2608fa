"""The retry decision is a pure function of (attempt, policy, exception)."""

from __future__ import annotations

import random

import pytest

from listener.errors import ConfigError, PermanentError, RetryLater
from listener.policy import (
    MAX_ERROR_CHARS,
    PayloadError,
    RetryPolicy,
    StrayCancellation,
    decide,
    describe_error,
    exhausted,
    interrupted,
)


def test_no_exception_completes_the_task() -> None:
    assert decide(1, RetryPolicy(), None).action == "complete"


def test_ordinary_error_before_the_last_attempt_is_retried_with_its_message() -> None:
    outcome = decide(1, RetryPolicy(max_attempts=3), ValueError("smtp down"), random.Random(1))
    assert outcome.action == "retry"
    assert outcome.error == "ValueError: smtp down"
    assert outcome.counted is True


def test_ordinary_error_on_the_last_attempt_fails_the_task() -> None:
    outcome = decide(3, RetryPolicy(max_attempts=3), RuntimeError("still down"))
    assert outcome.action == "fail"
    assert outcome.error == "RuntimeError: still down"


def test_permanent_error_fails_at_once_even_with_attempts_left() -> None:
    outcome = decide(1, RetryPolicy(max_attempts=10), PermanentError("bad address"))
    assert (outcome.action, outcome.error) == ("fail", "PermanentError: bad address")


def test_retry_later_retries_after_its_own_delay_without_counting_the_attempt() -> None:
    outcome = decide(5, RetryPolicy(max_attempts=5), RetryLater(42.5, "rate limited"))
    assert (outcome.action, outcome.delay_s, outcome.counted) == ("retry", 42.5, False)


def test_retry_later_rejects_a_negative_delay() -> None:
    with pytest.raises(ValueError, match="delay_s must be >= 0"):
        RetryLater(-1)


@pytest.mark.parametrize("attempt", [1, 2, 3, 4, 5, 8, 20])
def test_backoff_stays_between_half_and_all_of_the_capped_exponential(attempt: int) -> None:
    policy = RetryPolicy(backoff_base_s=2.0, backoff_max_s=60.0)
    ceiling = min(60.0, 2.0 * 2 ** (attempt - 1))
    rng = random.Random(attempt)
    delays = [policy.backoff_s(attempt, rng) for _ in range(200)]
    assert all(ceiling / 2 <= d <= ceiling for d in delays)


def test_backoff_grows_exponentially_until_the_cap() -> None:
    policy = RetryPolicy(backoff_base_s=1.0, backoff_max_s=100.0)
    lowest = [policy.backoff_s(a, random.Random(0)) for a in range(1, 12)]
    # The lower bound (ceiling / 2) doubles each attempt until it reaches the cap.
    assert [round(policy.backoff_s(a, _ZeroJitter()), 3) for a in (1, 2, 3, 4)] == [
        0.5,
        1.0,
        2.0,
        4.0,
    ]
    assert max(lowest) <= 100.0


def test_backoff_is_jittered_so_simultaneous_failures_spread_out() -> None:
    policy = RetryPolicy(backoff_base_s=10.0, backoff_max_s=1000.0)
    rng = random.Random(7)
    delays = {round(policy.backoff_s(3, rng), 6) for _ in range(50)}
    assert len(delays) > 40


def test_error_text_is_bounded_so_a_huge_message_cannot_bloat_the_row() -> None:
    text = describe_error(RuntimeError("x" * 10_000))
    assert len(text) == MAX_ERROR_CHARS
    assert text.startswith("RuntimeError: xxx")
    assert text.endswith("…")


def test_error_without_a_message_is_described_by_its_type() -> None:
    assert describe_error(TimeoutError()) == "TimeoutError"


class _ZeroJitter(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return a


def test_error_text_masks_email_addresses_and_secrets() -> None:
    exc = PermanentError("mailbox alice@example.com refused; password=hunter2")
    text = describe_error(exc)
    assert "alice@example.com" not in text
    assert "hunter2" not in text
    assert text.startswith("PermanentError: mailbox [email] refused")


@pytest.mark.parametrize(
    ("exc", "action", "counted"),
    [
        (SystemExit(3), "retry", True),
        (KeyboardInterrupt(), "retry", True),
        (StrayCancellation("not asked for"), "retry", True),
        (PayloadError("too deep"), "fail", True),
        (ConfigError("SMTP_FROM is not set"), "retry", False),
    ],
)
def test_whatever_a_handler_raises_is_an_outcome_of_this_attempt_only(
    exc: BaseException, action: str, counted: bool
) -> None:
    outcome = decide(1, RetryPolicy(max_attempts=3), exc)
    assert (outcome.action, outcome.counted) == (action, counted)
    assert outcome.error is not None
    assert outcome.error.startswith(type(exc).__name__)


def test_a_missing_setting_waits_longer_each_time_its_type_fails_so_up_to_a_cap() -> None:
    delays = [
        decide(1, RetryPolicy(), ConfigError("x"), _ZeroJitter(), config_failures=n).delay_s
        for n in (1, 2, 3, 10)
    ]
    assert delays == [5.0, 10.0, 20.0, 150.0]  # half of 10 s doubling, capped at 300 s


def test_a_stopping_worker_gives_back_only_the_attempts_that_never_started() -> None:
    assert interrupted(1, 5, started=False).sql_action == "release"
    started = interrupted(1, 5, started=True)
    assert (started.sql_action, started.delay_s) == ("retry", 0.0)
    assert interrupted(5, 5, started=True).action == "fail"


def test_outcomes_name_the_finish_statements_actions() -> None:
    assert decide(1, RetryPolicy(), RetryLater(1)).sql_action == "retry_uncounted"
    assert decide(1, RetryPolicy(), ValueError()).sql_action == "retry"
    assert exhausted(6, 5).error == "AttemptsExhausted: attempt 6 of 5"


def test_error_text_never_holds_a_nul_character() -> None:
    assert "\x00" not in describe_error(ValueError("a\x00b"))
