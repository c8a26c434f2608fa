"""The tasks page's parameters and what the pages show, without a database."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from listener.ui import params, views

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "cursor",
    [
        (5, NOW, uuid.uuid4()),
        (-32768, NOW - timedelta(microseconds=1), uuid.UUID(int=0)),
    ],
)
def test_a_pending_cursor_survives_the_round_trip(cursor: tuple[object, ...]) -> None:
    assert params.decode_cursor("pending", params.encode_cursor(cursor)) == cursor


def test_a_finished_cursor_survives_the_round_trip() -> None:
    cursor = (NOW, uuid.uuid4())
    assert params.decode_cursor("failed", params.encode_cursor(cursor)) == cursor


@pytest.mark.parametrize(
    ("status", "text"),
    [
        ("failed", "garbage!"),
        ("failed", params.encode_cursor((5, NOW, uuid.uuid4()))),  # a pending cursor
        ("pending", params.encode_cursor((NOW, uuid.uuid4()))),
        ("failed", params.encode_cursor(("2026-12-01T09:00:00", uuid.uuid4()))),  # naive
    ],
)
def test_a_cursor_of_another_listing_is_a_bad_request(status: str, text: str) -> None:
    with pytest.raises(params.BadRequest, match="'after' is not a cursor"):
        params.decode_cursor(status, text)


def test_times_are_iso_with_a_zone_or_a_duration_ago() -> None:
    assert params.parse_time("from", "2h", NOW) == NOW - timedelta(hours=2)
    assert params.parse_time("from", "2026-11-30T08:00:00Z", NOW) == datetime(
        2026, 11, 30, 8, tzinfo=UTC
    )
    assert params.parse_time("from", None, NOW) is None


def test_the_search_defaults_to_failed_tasks_fifty_a_page() -> None:
    search = params.task_search({}, NOW)
    assert (search.query.status, search.query.limit, search.query.type) == ("failed", 50, None)


def test_an_overlong_parameter_is_refused() -> None:
    with pytest.raises(params.BadRequest, match="longer than 256"):
        params.task_search({"type": "x" * 300}, NOW)


def test_health_says_healthy_only_when_nothing_is_wrong() -> None:
    quiet = {"counts": {"completed": {"send_email": 9}}, "workers": [{"id": "w"}],
             "unhandled_pending": {}, "oldest_due_pending": None}  # fmt: skip
    assert [f["level"] for f in views.health(quiet)] == ["ok"]
    # Failures are the counts' (the last hour to the second), not the chart's minutes.
    stuck = {**quiet, "workers": [], "oldest_due_pending": {"age_s": 600.0},
             "counts": {"pending": {"send_email": 3}, "failed": {"send_email": 1, "report": 1}},
             "throughput": [{"failed": 0}]}  # fmt: skip
    assert [f["message"] for f in views.health(stuck)] == [
        "no live worker (3 pending tasks)",
        "the oldest due task has waited 10 min",
        "2 tasks failed in the last hour",
    ]


def test_history_says_what_the_table_knows_in_order() -> None:
    row = {
        "created_at": NOW, "run_at": NOW + timedelta(seconds=30), "attempts": 3,
        "status": "failed", "started_at": NOW + timedelta(seconds=31), "worker_id": "w1",
        "completed_at": NOW + timedelta(seconds=32), "lease_expires_at": None,
    }  # fmt: skip
    assert [e["event"] for e in views.history(row)] == [
        "created", "due", "2 earlier attempt(s)", "attempt 3 claimed by worker w1", "failed",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.0123, "12 ms"), (3.44, "3.4 s"), (300, "5 min"), (7560, "2.1 h")]
)
def test_durations_read_as_people_say_them(seconds: float, text: str) -> None:
    assert views.seconds(seconds) == text
