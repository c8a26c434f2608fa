"""`listener doctor`: print one ✓/⚠/✗ line per check; exit 1 on any ✗."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from listener import db, doctor
from listener.cli import parse_duration


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register `listener doctor`."""
    defaults = doctor.Thresholds()
    p = sub.add_parser(
        "doctor",
        parents=[common],
        help="diagnose the connection, schema, queue and server settings",
        description="Run with the same DSN as the worker. Exit status 1 when any check fails.",
    )
    p.add_argument(
        "--pending-age",
        type=parse_duration,
        help=f"warn about due tasks waiting longer (default {defaults.pending_age_s:g}s)",
    )
    p.add_argument(
        "--long-transaction",
        type=parse_duration,
        help=f"warn about transactions open longer (default {defaults.long_transaction_s:g}s)",
    )
    p.add_argument(
        "--running-age",
        type=parse_duration,
        help=f"warn about handlers running longer (default {defaults.running_age_s:g}s)",
    )
    p.set_defaults(handler=cmd_doctor)


def cmd_doctor(args: argparse.Namespace) -> int:
    limits = doctor.Thresholds()
    if args.pending_age is not None:
        limits = dataclasses.replace(limits, pending_age_s=args.pending_age.total_seconds())
    if args.long_transaction is not None:
        limits = dataclasses.replace(
            limits, long_transaction_s=args.long_transaction.total_seconds()
        )
    if args.running_age is not None:
        limits = dataclasses.replace(limits, running_age_s=args.running_age.total_seconds())
    findings = doctor.diagnose(db.resolve_dsn(args.dsn).dsn, limits)
    for finding in findings:
        print(finding.line())
    failed = sum(f.level is doctor.Level.FAIL for f in findings)
    warned = sum(f.level is doctor.Level.WARN for f in findings)
    print(f"{len(findings)} checks: {failed} failed, {warned} warnings")
    return doctor.exit_code(findings)
