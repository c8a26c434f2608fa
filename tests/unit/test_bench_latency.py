"""The pickup item's run order: its paired ratio compares modes measured back to back."""

from __future__ import annotations

from bench.latency import run_order

MODES = ["notify", "defaults", "bare", "poll", "pgqueuer", "oban"]


def test_notify_and_bare_run_back_to_back_first_one_then_the_other() -> None:
    orders = [run_order(MODES, i) for i in range(4)]
    assert [o[:2] for o in orders] == [["notify", "bare"], ["bare", "notify"]] * 2
    assert all(sorted(o) == sorted(MODES) for o in orders)


def test_the_other_modes_rotate_between_runs() -> None:
    firsts = {run_order(MODES, i)[2] for i in range(4)}
    assert firsts == {"defaults", "poll", "pgqueuer", "oban"}
