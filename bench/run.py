"""The benchmark's one command: ``python -m bench [--quick] [--only a,b] [--json PATH]``.

Every item runs in databases it creates (and drops) on the server given by --dsn,
DATABASE_URL, or the local PostgreSQL at 127.0.0.1:5432.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from bench import (
    backlog,
    best,
    burndown,
    commits,
    defaults,
    env,
    insert_cost,
    latency,
    logging_cost,
    peers,
    raw,
    report,
    scale,
    steady,
)
from bench.context import FULL, QUICK, Context, ItemResult

ITEMS: dict[str, Callable[[Context, ItemResult], None]] = {
    "raw": raw.run,
    "burndown": burndown.run,
    "steady": steady.run,
    "latency": latency.run,
    "insert_cost": insert_cost.run,
    "scale": scale.run,
    "peers": peers.run,
    "defaults": defaults.run,
    "best": best.run,
    "backlog": backlog.run,
    "commits": commits.run,
    "logging": logging_cost.run,
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--dsn",
        help="server to create the benchmark databases on "
        f"(default: $DATABASE_URL, else {env.DEFAULT_DSN})",
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes and one run: the CI smoke test (seconds)"
    )
    parser.add_argument(
        "--only",
        type=_item_list,
        default=list(ITEMS),
        help=f"comma-separated items, from: {','.join(ITEMS)}",
    )
    parser.add_argument("--runs", type=_positive, help="runs per figure (default 3; quick 1)")
    parser.add_argument(
        "--parallel",
        action="store_true",
        help="run the items at the same time (smoke tests only: the items "
        "then compete for the machine, so the figures mean nothing)",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=Path("bench-results.json"),
        help="where to write the results (default bench-results.json)",
    )
    return parser.parse_args(argv)


def _item_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in ITEMS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown item(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(ITEMS)}"
        )
    return names


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    ctx = Context(
        admin_dsn=env.admin_dsn(args.dsn),
        sizes=QUICK if args.quick else FULL,
        runs=args.runs or (1 if args.quick else 3),
        quick=args.quick,
    )
    try:
        server = env.server(ctx.admin_dsn)
    except psycopg.OperationalError as exc:
        print(f"bench: error: cannot connect: {str(exc).strip().splitlines()[-1]}", file=sys.stderr)
        return 1
    started, load_before = datetime.now(UTC), os.getloadavg()
    if args.parallel:
        with ThreadPoolExecutor(max_workers=len(args.only)) as pool:
            results = list(pool.map(lambda name: _run_item(ctx, name), args.only))
    else:
        results = [_run_item(ctx, name) for name in args.only]
    targets = report.cross_item_targets(results)
    document = _document(ctx, args.parallel, server, started, load_before, results, targets)
    args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    print(report.table(document, results, targets))
    print(f"\nJSON written to {args.json}")
    return 1 if any(r.status == "failed" for r in results) else 0


def _run_item(ctx: Context, name: str) -> ItemResult:
    t0 = time.monotonic()
    result = ItemResult(name, name)
    try:
        ITEMS[name](ctx, result)
    except Exception as exc:  # keep what was measured, and the other items' figures
        ctx.say(f"{name} FAILED: {exc}")
        traceback.print_exc(file=sys.stderr)
        result.status = "failed"
        result.notes.append(f"FAILED: {type(exc).__name__}: {exc}")
    ctx.say(f"{name} took {time.monotonic() - t0:.1f} s")
    return result


def _document(
    ctx: Context,
    parallel: bool,
    server: dict[str, Any],
    started: datetime,
    load_before: tuple[float, float, float],
    results: list[ItemResult],
    targets: list[Any],
) -> dict[str, Any]:
    return {
        "parallel": parallel,
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": "quick" if ctx.quick else "full",
        "runs": ctx.runs,
        "machine": env.machine(),
        # Other work on the machine skews every figure: say how busy it was.
        "load_average_1_5_15": {"before": list(load_before), "after": list(os.getloadavg())},
        "server": server,
        "items": {r.name: r.to_json() for r in results},
        "targets": [t.to_json() for r in results for t in r.targets]
        + [t.to_json() for t in targets],
    }
