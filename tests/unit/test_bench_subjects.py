"""The benchmark's peers: Oban's venv is never downloaded by --quick; the clock's halves."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import oban_venv, peer_subjects


@pytest.fixture
def absent_venv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    venv = tmp_path / "no-oban-here"
    monkeypatch.setenv(oban_venv.VENV_ENV, str(venv))
    monkeypatch.setattr(oban_venv, "_verdicts", {})
    return venv


def test_quick_run_leaves_oban_out_says_how_to_enable_it_and_downloads_nothing(
    absent_venv: Path,
) -> None:
    said: list[str] = []
    reason = oban_venv.unavailable(False, said.append)
    assert reason is not None
    assert "python -m bench.oban_venv" in reason
    assert "Python >= 3.12" in reason
    assert not absent_venv.exists()
    assert said == []


def test_clock_times_the_second_half_from_the_middle_job(monkeypatch: pytest.MonkeyPatch) -> None:
    ticks = iter([10.0, 11.0, 12.0, 16.0])
    monkeypatch.setattr(peer_subjects.time, "perf_counter", lambda: next(ticks))
    clock = peer_subjects.Clock(4)
    for _ in range(4):
        clock.tick()
    assert clock.result(end=99.0) == {"done": 4, "seconds": 6.0, "half_seconds": 5.0}
