"""When a worker watches its types: a pure function of its claims' outcomes."""

from __future__ import annotations

import pytest

from listener.watch_plan import WatchPlan


def _plan() -> WatchPlan:
    return WatchPlan(idle_after=3, full_for_s=0.01)


def test_a_claim_that_finds_tasks_starts_watching() -> None:
    plan = _plan()
    plan.claimed(2, free_slots=8, now=0.0)
    assert plan.wanted


def test_one_task_per_claim_at_a_slow_pace_does_not_start_watching() -> None:
    plan = _plan()
    for n in range(5):
        plan.claimed(1, free_slots=9, now=n * 0.01)
    assert not plan.wanted


def test_one_task_per_claim_at_a_fast_pace_starts_watching() -> None:
    plan = _plan()  # a worker of concurrency 1, say: it never claims two at once
    plan.claimed(1, free_slots=0, now=0.0)
    plan.claimed(1, free_slots=0, now=0.001)
    assert plan.wanted


def test_once_watching_a_trickle_of_one_task_per_claim_ends_the_watch() -> None:
    plan = _plan()  # ~200 tasks/s: a NOTIFY picks each up sooner than a 5 ms poll
    plan.claimed(2, free_slots=8, now=0.0)
    plan.claimed(1, free_slots=9, now=0.005)
    plan.claimed(1, free_slots=9, now=0.010)
    assert plan.wanted
    plan.claimed(1, free_slots=9, now=0.015)
    assert not plan.wanted


def test_once_watching_two_tasks_per_claim_keep_the_watch() -> None:
    plan = _plan()
    for n in range(10):
        plan.claimed(2, free_slots=8, now=n * 0.005)
    assert plan.wanted


def test_one_task_per_claim_that_fills_the_last_slot_keeps_the_watch() -> None:
    plan = _plan()  # slots busy: the claim was one task because one slot was free
    plan.claimed(2, free_slots=8, now=0.0)
    for n in range(1, 6):
        plan.claimed(1, free_slots=0, now=n * 0.005)
    assert plan.wanted


def test_an_empty_claim_at_start_up_does_not_start_watching() -> None:
    plan = _plan()
    plan.claimed(0, free_slots=10, now=0.0)
    assert not plan.wanted


def test_only_the_third_empty_claim_in_a_row_ends_the_watch() -> None:
    plan = _plan()
    plan.claimed(2, free_slots=8, now=0.0)
    plan.claimed(0, free_slots=10, now=0.005)
    plan.claimed(0, free_slots=10, now=0.010)
    assert plan.wanted
    plan.claimed(0, free_slots=10, now=0.015)
    assert not plan.wanted


def test_a_claim_that_finds_several_tasks_resets_the_count_of_lean_claims() -> None:
    plan = _plan()
    plan.claimed(2, free_slots=8, now=0.0)
    plan.claimed(0, free_slots=10, now=0.005)
    plan.claimed(1, free_slots=9, now=0.010)
    plan.claimed(2, free_slots=8, now=0.015)
    plan.claimed(0, free_slots=10, now=0.020)
    plan.claimed(0, free_slots=10, now=0.025)
    assert plan.wanted


def test_slots_full_for_a_moment_need_no_hand_off() -> None:
    plan = _plan()
    plan.claimed(10, free_slots=0, now=0.0)
    assert plan.handoff_due_s(now=0.004) == pytest.approx(0.006)
    plan.claimed(3, free_slots=7, now=0.009)  # the handlers returned at once
    assert plan.handoff_due_s(now=0.05) is None


def test_a_claim_that_fills_the_slots_again_keeps_the_first_full_instant() -> None:
    plan = _plan()
    plan.claimed(10, free_slots=0, now=0.0)
    plan.claimed(5, free_slots=0, now=0.008)  # a refill, still full: a backlog
    assert plan.handoff_due_s(now=0.010) == 0.0


def test_slots_that_stay_full_hand_off_once_a_period_and_keep_the_watch() -> None:
    plan = _plan()
    plan.claimed(10, free_slots=0, now=0.0)
    assert plan.handoff_due_s(now=0.011) == 0.0
    plan.handed_off(now=0.011)
    assert plan.wanted
    assert plan.handoff_due_s(now=0.015) == pytest.approx(0.006)


def test_an_empty_claim_disarms_the_hand_off() -> None:
    plan = _plan()
    plan.claimed(10, free_slots=0, now=0.0)
    plan.claimed(0, free_slots=10, now=0.005)
    assert plan.handoff_due_s(now=1.0) is None


def test_after_stop_nothing_starts_a_watch() -> None:
    plan = _plan()
    plan.claimed(2, free_slots=8, now=0.0)
    plan.stop()
    plan.claimed(5, free_slots=5, now=0.01)
    assert not plan.wanted
    assert plan.handoff_due_s(now=1.0) is None


def test_claims_that_follow_a_full_one_start_a_watch_whatever_their_pace() -> None:
    plan = WatchPlan(idle_after=3, full_for_s=0.01)
    plan.claimed(1, free_slots=0, now=0.0)  # one slot, filled
    assert not plan.wanted
    plan.claimed(1, free_slots=0, now=0.5, backlog=True)  # slow, but straight after
    assert plan.wanted
