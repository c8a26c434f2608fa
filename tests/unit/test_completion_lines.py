"""The per-task completion line, rendered by hand on the hot path, is the logger's line."""

from __future__ import annotations

import io
import json
import uuid

import pytest
import structlog

from listener import logs


@pytest.fixture
def reset_logging() -> object:
    yield
    logs.reset()


def _lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


@pytest.mark.usefixtures("reset_logging")
def test_the_hand_rendered_line_has_the_fields_and_order_of_the_loggers_line() -> None:
    out = io.StringIO()
    logs.configure("info", "json", stream=out)
    task_id = uuid.uuid4()
    structlog.get_logger("listener.acks").info(
        "task.completed", task_id=str(task_id), type="send_email", attempt=2, duration_s=0.012345
    )
    logs.completed([(task_id, "send_email", 2, 0.0123454321)])
    by_logger, by_hand = _lines(out)
    assert list(by_hand) == list(by_logger)  # same keys, same order
    assert {k: v for k, v in by_hand.items() if k != "timestamp"} == {
        k: v for k, v in by_logger.items() if k != "timestamp"
    }
    assert str(by_hand["timestamp"]).endswith("Z")


@pytest.mark.usefixtures("reset_logging")
def test_many_completions_are_one_write_and_nothing_above_info() -> None:
    out = io.StringIO()
    logs.configure("info", "json", stream=out)
    logs.completed([(uuid.uuid4(), "t", 1, 0.001) for _ in range(50)])
    assert len(_lines(out)) == 50
    quiet = io.StringIO()
    logs.configure("warning", "json", stream=quiet)
    logs.completed([(uuid.uuid4(), "t", 1, 0.001)])
    assert quiet.getvalue() == ""


@pytest.mark.usefixtures("reset_logging")
def test_on_a_console_the_ordinary_logger_writes_it() -> None:
    out = io.StringIO()
    logs.configure("info", "console", stream=out)
    logs.completed([(uuid.uuid4(), "t", 1, 0.001)])
    assert "task.completed" in out.getvalue()
    assert not out.getvalue().lstrip().startswith("{")
