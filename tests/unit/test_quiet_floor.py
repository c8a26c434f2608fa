"""How long the dispatcher waits after wakes that claimed nothing."""

from __future__ import annotations

import pytest

from listener.dispatcher import QUIET_FLOOR_S, quiet_floor_s


def test_one_empty_wake_does_not_delay_the_next_claim() -> None:
    # Most often a NOTIFY for a task the claim before already took: the next task's
    # NOTIFY, a few ms later at 200 tasks/s, must be answered at once.
    assert quiet_floor_s(1) == 0.0


def test_empty_wakes_in_a_row_wait_longer_each_time_up_to_the_floor() -> None:
    floors = [quiet_floor_s(n) for n in (2, 3, 4, 5, 6, 7, 100, 10**9)]
    assert floors[:4] == pytest.approx([0.001, 0.002, 0.004, 0.008])
    assert floors[4:] == [QUIET_FLOOR_S] * 4
