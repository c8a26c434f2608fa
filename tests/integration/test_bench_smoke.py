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

import pytest

from bench import markdown

ROOT = Path(__file__).resolve().parents[2]
ITEMS = {"raw", "burndown", "steady", "latency", "insert_cost", "scale", "peers"}


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
    verdicts = {t["verdict"] for t in document["targets"]}
    assert verdicts <= {"met", "MISSED", "not measured"}
    assert "== Targets" in done.stdout
    assert "#### Targets" in markdown.render(document)


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
