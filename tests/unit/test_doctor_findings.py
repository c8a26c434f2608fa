"""Doctor's lines, exit status and advice, without a database."""

from __future__ import annotations

from listener import doctor, doctor_checks
from listener.doctor import Finding, Level


def test_each_level_prints_its_mark_and_the_fix() -> None:
    assert Finding(Level.OK, "claim index exists").line() == "✓ claim index exists"
    assert Finding(Level.WARN, "slow", "add workers").line() == "⚠ slow — add workers"
    assert Finding(Level.FAIL, "broken", "fix it").line() == "✗ broken — fix it"


def test_exit_code_is_nonzero_only_when_a_check_failed() -> None:
    ok, warn, fail = Finding(Level.OK, "a"), Finding(Level.WARN, "b"), Finding(Level.FAIL, "c")
    assert doctor.exit_code([ok, warn]) == 0
    assert doctor.exit_code([ok, warn, fail]) == 1


def test_pooler_advice_names_supabase_port_6543_as_a_hint() -> None:
    advice = doctor._pooler_advice("postgresql://u@db.example.com:6543/postgres", 1.5)
    assert "port 6543 is Supabase's transaction-mode pooler" in advice
    assert "session-mode pooler (port 5432 on Supabase)" in advice


def test_pooler_advice_without_port_6543_has_no_supabase_hint() -> None:
    advice = doctor._pooler_advice("postgresql://u@127.0.0.1:6432/app", 1.5)
    assert "6543" not in advice
    assert "did not arrive within 1.5s" in advice


def test_spans_read_in_the_largest_sensible_unit() -> None:
    assert doctor_checks._span(42) == "42s"
    assert doctor_checks._span(300) == "5min"
    assert doctor_checks._span(5400) == "1.5h"
    assert doctor_checks._span(None) == "0s"
