"""The benchmark's CI smoke run: tiny sizes, one run, no targets asserted.

It proves the harness still runs end to end against a real server (every item, the
worker processes included) and writes JSON that says what it measured.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import markdown

ROOT = Path(__file__).resolve().parents[2]
ITEMS = {
    "raw",
    "burndown",
    "steady",
    "latency",
    "insert_cost",
    "scale",
    "peers",
    "defaults",
    "best",
    "backlog",
    "commits",
    "logging",
}
# A figure of each issue-11 item that needs nothing but listener, so it is always measured.
LISTENER_FIGURES = {
    "defaults": [
        "defaults.listener.fresh",
        "defaults.listener.midburn",
        "defaults.head_share.fresh",
    ],
    "best": ["best.listener"],
    "backlog": [
        "backlog.claim.p100.none",
        "backlog.claim.middrain.stale",
        "backlog.ratio.types.none",
    ],
    "commits": ["commits.listener_c10.commits", "commits.raw_b10.commits"],
    "logging": ["logging.cost_c10", "logging.bytes_c10"],
    "latency": [
        "latency.defaults.p50",
        "latency.bare_async.p50",
        "latency.bare_async_claim.p50",
        "latency.notify_vs_bare.p99",
    ],
}


def _run_quick(admin_dsn: str, out: Path) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "--parallel",
            "--dsn",
            admin_dsn,
            "--json",
            str(out),
        ],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_quick_benchmark_runs_every_item_and_writes_valid_json(
    pg_admin_dsn: str, tmp_path: Path
) -> None:
    out = tmp_path / "bench.json"
    done = _run_quick(pg_admin_dsn, out)
    assert done.returncode == 0, done.stderr[-3000:]
    document = json.loads(out.read_text())
    assert document["mode"] == "quick"
    assert document["machine"]["cores"] >= 1
    assert document["server"]["synchronous_commit"]
    assert document["server"]["fsync"] in {"on", "off"}
    assert set(document["items"]) == ITEMS
    for name, item in document["items"].items():
        assert item["status"] == "ok", (name, item["notes"])
        measured = [f for f in item["figures"].values() if f["runs"]]
        if name != "peers":  # peers are only measured when the bench extra is installed
            assert measured, f"{name} measured nothing"
        for figure in measured:
            assert figure["min"] <= figure["median"] <= figure["max"], (name, figure)
    for name, keys in LISTENER_FIGURES.items():
        figures = document["items"][name]["figures"]
        assert all(figures[key]["runs"] for key in keys), (name, keys)
    assert any("UPDATE" in plan for plan in document["items"]["backlog"]["details"].values())
    _assert_oban_ran_or_says_why(document)
    verdicts = {t["verdict"] for t in document["targets"]}
    assert verdicts <= {"met", "MISSED", "not measured"}
    assert "== Targets" in done.stdout
    assert "#### Targets" in markdown.render(document)


def _assert_oban_ran_or_says_why(document: dict[str, Any]) -> None:
    """Oban needs its own Python >= 3.12 venv, which --quick never downloads: without
    it every item that has Oban as a subject must say so, never drop it silently."""
    for name in ("defaults", "best", "commits", "latency"):
        item = document["items"][name]
        ran = any(
            k.split(".")[1].startswith("oban") and f["runs"] for k, f in item["figures"].items()
        )
        said = any("Oban for Python not run: " in note for note in item["notes"])
        assert ran != said, (name, item["notes"])


def test_unknown_item_is_a_one_line_usage_error(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--only", "raw,nonsense", "--json", str(tmp_path / "x")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "unknown item(s) nonsense" in done.stderr
    assert not (tmp_path / "x").exists()
