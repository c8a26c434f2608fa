"""new_task() validates every field before anything touches the database."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from listener import InvalidTaskError, new_task
from listener.config import MAX_PAYLOAD_BYTES
from listener.producer import create_tasks


def test_valid_task_serialises_its_payload_compactly() -> None:
    task = new_task("send_email", {"to": "a@b.c", "n": [1, 2]}, priority=5, max_attempts=3)
    assert task.payload_json == '{"to":"a@b.c","n":[1,2]}'
    assert (task.type, task.priority, task.max_attempts) == ("send_email", 5, 3)


def test_missing_payload_is_an_empty_object() -> None:
    assert new_task("ping").payload_json == "{}"


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ([1, 2], "payload must be a JSON object \\(a dict\\), got list"),
        ("text", "payload must be a JSON object \\(a dict\\), got str"),
        ({"when": datetime(2030, 1, 1)}, "not JSON-serialisable.*datetime"),
        ({"tags": {"a", "b"}}, "not JSON-serialisable.*set"),
        ({"x": math.nan}, "not JSON-serialisable.*Out of range float"),
        ({"x": math.inf}, "not JSON-serialisable"),
        ({("a", "b"): 1}, "not JSON-serialisable"),
        ({"s": "nul\x00byte"}, "NUL character"),
    ],
)
def test_bad_payload_is_rejected_naming_the_problem(payload: Any, problem: str) -> None:
    with pytest.raises(InvalidTaskError, match=problem):
        new_task("t", payload)


def test_payload_over_one_mebibyte_is_rejected_with_its_size() -> None:
    big = {"blob": "x" * MAX_PAYLOAD_BYTES}
    with pytest.raises(InvalidTaskError, match=r"payload is 1048587 bytes as JSON, over the"):
        new_task("t", big)


def test_payload_just_under_the_limit_is_accepted() -> None:
    overhead = len('{"blob":""}')
    task = new_task("t", {"blob": "x" * (MAX_PAYLOAD_BYTES - overhead)})
    assert len(task.payload_json) == MAX_PAYLOAD_BYTES


@pytest.mark.parametrize("task_type", ["", "has space", "x" * 129, "a\n"])
def test_invalid_type_is_rejected(task_type: str) -> None:
    with pytest.raises(InvalidTaskError, match="task type"):
        new_task(task_type, {})


def test_naive_run_at_is_rejected() -> None:
    with pytest.raises(InvalidTaskError, match="run_at must be timezone-aware"):
        new_task("t", {}, run_at=datetime(2030, 1, 1))


def test_run_at_of_the_wrong_type_is_rejected() -> None:
    with pytest.raises(InvalidTaskError, match="run_at must be a datetime or timedelta, got str"):
        new_task("t", {}, run_at="2030-01-01")  # type: ignore[arg-type]


def test_run_at_as_a_delay_becomes_an_aware_time_that_far_ahead() -> None:
    before = datetime.now(UTC)
    task = new_task("t", {}, run_at=timedelta(minutes=10))
    assert task.run_at is not None
    assert task.run_at.tzinfo is not None
    assert (
        before + timedelta(minutes=10) <= task.run_at <= datetime.now(UTC) + timedelta(minutes=10)
    )


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"priority": True}, "priority must be an integer, got bool"),
        ({"priority": 1.5}, "priority must be an integer, got float"),
        ({"priority": 40_000}, "priority must be between -32768 and 32767"),
        ({"max_attempts": 0}, "max_attempts must be between 1 and 1000"),
        ({"max_attempts": False}, "max_attempts must be an integer, got bool"),
        ({"dedupe_key": ""}, "dedupe_key must be a string of 1 to 256"),
        ({"dedupe_key": "k" * 257}, "dedupe_key must be a string of 1 to 256"),
        ({"dedupe_key": 7}, "dedupe_key must be a string of 1 to 256"),
    ],
)
def test_out_of_range_options_are_rejected(kwargs: dict[str, Any], problem: str) -> None:
    with pytest.raises(InvalidTaskError, match=problem):
        new_task("t", {}, **kwargs)


def test_unknown_keyword_is_a_type_error_naming_it() -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument 'delay'"):
        new_task("t", {}, delay=5)  # type: ignore[call-arg]


def test_invalid_task_error_is_a_value_error_for_callers_that_catch_those() -> None:
    assert issubclass(InvalidTaskError, ValueError)


def test_bulk_enqueue_rejects_items_not_built_with_new_task_before_connecting() -> None:
    with pytest.raises(InvalidTaskError, match="task 1 is a dict: build each task with new_task"):
        create_tasks([new_task("t"), {"type": "t"}])  # type: ignore[list-item]
