"""The demo's task mix, statistics and rendering, without a database."""

from __future__ import annotations

import io

import pytest

from listener import cli
from listener.demo import Frame, percentiles_ms, task_types
from listener.demo_view import LiveView, frame_lines, summary_lines


def frame(finished: int, total: int = 100, failed: int = 1) -> Frame:
    counts = {"completed": finished - failed, "failed": failed, "pending": total - finished}
    return Frame(total, counts, 2.5, 40.0, (3.0, 8.0, 12.5), 13)


def test_the_mix_has_exactly_one_poison_task_and_one_flaky_in_eight() -> None:
    kinds = task_types(800)
    assert kinds.count("demo.poison") == 1
    assert kinds.count("demo.webhook") == 100
    assert {"demo.send_email", "demo.thumbnail"} <= set(kinds)


def test_percentiles_need_two_samples_and_are_in_milliseconds() -> None:
    assert percentiles_ms([0.1]) is None
    p50, p95, p99 = percentiles_ms([i / 1000 for i in range(1, 101)]) or (0, 0, 0)
    assert (round(p50, 1), round(p95, 1), round(p99, 1)) == (50.5, 95.1, 99.0)


def test_live_frame_shows_progress_throughput_pickup_queue_and_outcomes() -> None:
    lines = frame_lines(frame(50))
    assert lines[0].startswith("[" + "█" * 16 + "░" * 16 + "]     50/100   50%")
    assert lines[1] == "  throughput        40.0 tasks/s"
    assert lines[2] == "  pickup delay   p50 3.0 ms   p95 8.0 ms   p99 12.5 ms"
    assert lines[3].split() == ["queue", "50", "waiting", "0", "running"]
    assert lines[4] == "  outcomes       ✓ 49 completed   ↻ 13 retries   ✗ 1 failed"


def test_summary_of_a_finished_run_names_the_poison_task() -> None:
    lines = summary_lines(frame(100))
    assert lines[0] == "done: 100 tasks in 2.5 s (40 tasks/s end to end)"
    assert "✗ 1 failed: the poison task, after 3 attempts" in lines[2]


def test_summary_of_an_unfinished_run_says_so() -> None:
    lines = summary_lines(frame(60))
    assert lines == [
        "stopped after 2.5 s with 40 of 100 tasks unfinished: "
        "the worker could not keep up (try a lower --rate)"
    ]


def test_non_interactive_view_prints_plain_lines_without_escape_codes() -> None:
    out = io.StringIO()
    view = LiveView(out, interactive=False)
    view(frame(10))
    view(frame(100))  # the last frame is always shown
    view.finish(frame(100))
    text = out.getvalue()
    assert "\x1b" not in text
    assert text.splitlines()[:2] == ["10/100   10%    2.5 s", "100/100  100%    2.5 s"]


def test_interactive_view_redraws_in_place() -> None:
    out = io.StringIO()
    view = LiveView(out, interactive=True)
    view(frame(10))
    view(frame(20))
    assert out.getvalue().count("\x1b[5F") == 1  # moved up over the 5 lines once


@pytest.mark.parametrize("rate", ["0", "-1", "fast"])
def test_demo_rejects_a_rate_that_is_not_positive(
    capsys: pytest.CaptureFixture[str], rate: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["demo", "--rate", rate])
    assert exited.value.code == cli.EXIT_USAGE
    assert "is not a rate between 0 and 100000 per second" in capsys.readouterr().err
