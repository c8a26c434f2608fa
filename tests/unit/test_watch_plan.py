"""When a worker watches its types: a pure function of its claims' outcomes."""

from __future__ import annotations

import pytest

from listener.watch_plan import WatchPlan


def _plan() -> WatchPlan:
    # 400 tasks/s over 50 ms: 20 tasks found by the claims of the last 50 ms start a watch.
    return WatchPlan(idle_after=3, full_for_s=0.01, watch_rate=400.0, window_s=0.05)


def _watching() -> WatchPlan:
    plan = _plan()
    plan.claimed(20, free_slots=30, now=0.0)
    assert plan.wanted
    return plan


def test_a_claim_that_finds_a_burst_of_tasks_starts_watching() -> None:
    plan = _plan()
    plan.claimed(20, free_slots=30, now=0.0)
    assert plan.wanted


def test_two_tasks_in_one_claim_of_a_trickle_do_not_start_watching() -> None:
    plan = _plan()  # 200 tasks/s: a claim often finds two, a NOTIFY still serves best
    for n in range(40):
        plan.claimed(2 if n % 3 == 0 else 1, free_slots=48, now=n * 0.006)
    assert not plan.wanted


def test_one_task_per_claim_at_a_slow_pace_does_not_start_watching() -> None:
    plan = _plan()
    for n in range(5):
        plan.claimed(1, free_slots=9, now=n * 0.01)
    assert not plan.wanted


def test_one_task_per_claim_at_a_fast_pace_starts_watching() -> None:
    plan = _plan()  # a worker of concurrency 1, say: it never claims two at once
    for n in range(19):
        plan.claimed(1, free_slots=0, now=n * 0.001)
    assert not plan.wanted
    plan.claimed(1, free_slots=0, now=0.019)  # the 20th within 50 ms: 1,000 tasks/s
    assert plan.wanted


def test_tasks_found_longer_ago_than_the_window_do_not_count() -> None:
    plan = _plan()
    plan.claimed(19, free_slots=31, now=0.0)
    plan.claimed(1, free_slots=49, now=0.05)
    assert not plan.wanted


def test_once_watching_a_trickle_below_the_rate_ends_the_watch() -> None:
    plan = _watching()  # then ~200 tasks/s: a NOTIFY picks each up sooner than a poll
    now = 0.0
    while plan.wanted and now < 1.0:
        now += 0.006
        plan.claimed(1, free_slots=49, now=now)
    assert not plan.wanted
    assert now < 0.1  # the burst left the window, then three lean claims


def test_once_watching_tasks_above_the_rate_keep_the_watch() -> None:
    plan = _watching()
    for n in range(1, 100):
        plan.claimed(3, free_slots=47, now=n * 0.006)  # 500 tasks/s
    assert plan.wanted


def test_one_task_per_claim_that_fills_the_last_slot_keeps_the_watch() -> None:
    plan = _watching()  # slots busy: the claim was one task because one slot was free
    for n in range(1, 60):
        plan.claimed(1, free_slots=0, now=n * 0.005)
    assert plan.wanted


def test_an_empty_claim_at_start_up_does_not_start_watching() -> None:
    plan = _plan()
    plan.claimed(0, free_slots=10, now=0.0)
    assert not plan.wanted


def test_only_the_third_lean_claim_in_a_row_ends_the_watch() -> None:
    plan = _watching()
    plan.claimed(0, free_slots=50, now=0.055)  # the burst has left the window
    plan.claimed(0, free_slots=50, now=0.060)
    assert plan.wanted
    plan.claimed(0, free_slots=50, now=0.065)
    assert not plan.wanted


def test_a_claim_that_brings_the_rate_back_up_resets_the_count_of_lean_claims() -> None:
    plan = _watching()
    plan.claimed(0, free_slots=50, now=0.055)
    plan.claimed(1, free_slots=49, now=0.060)
    plan.claimed(20, free_slots=30, now=0.065)
    plan.claimed(0, free_slots=50, now=0.070)
    plan.claimed(0, free_slots=50, now=0.075)
    assert plan.wanted


def test_slots_full_for_a_moment_need_no_hand_off() -> None:
    plan = _plan()
    plan.claimed(20, free_slots=0, now=0.0)
    assert plan.handoff_due_s(now=0.004) == pytest.approx(0.006)
    plan.claimed(3, free_slots=7, now=0.009)  # the handlers returned at once
    assert plan.handoff_due_s(now=0.05) is None


def test_a_claim_that_fills_the_slots_again_keeps_the_first_full_instant() -> None:
    plan = _plan()
    plan.claimed(20, free_slots=0, now=0.0)
    plan.claimed(5, free_slots=0, now=0.008)  # a refill, still full: a backlog
    assert plan.handoff_due_s(now=0.010) == 0.0


def test_slots_that_stay_full_hand_off_once_a_period_and_keep_the_watch() -> None:
    plan = _plan()
    plan.claimed(20, free_slots=0, now=0.0)
    assert plan.handoff_due_s(now=0.011) == 0.0
    plan.handed_off(now=0.011)
    assert plan.wanted
    assert plan.handoff_due_s(now=0.015) == pytest.approx(0.006)


def test_an_empty_claim_disarms_the_hand_off() -> None:
    plan = _plan()
    plan.claimed(20, free_slots=0, now=0.0)
    plan.claimed(0, free_slots=10, now=0.005)
    assert plan.handoff_due_s(now=1.0) is None


def test_after_stop_nothing_starts_a_watch() -> None:
    plan = _watching()
    plan.stop()
    plan.claimed(50, free_slots=5, now=0.01)
    assert not plan.wanted
    assert plan.handoff_due_s(now=1.0) is None


def test_claims_that_follow_a_full_one_start_a_watch_whatever_their_pace() -> None:
    plan = _plan()
    plan.claimed(1, free_slots=0, now=0.0)  # one slot, filled
    assert not plan.wanted
    plan.claimed(1, free_slots=0, now=0.5, backlog=True)  # slow, but straight after
    assert plan.wanted
