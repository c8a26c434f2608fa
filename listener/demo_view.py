"""The demo's live view: redrawn in place on a terminal, a line a second otherwise."""

from __future__ import annotations

import time
from typing import TextIO

from listener.demo import POISON_ATTEMPTS, Frame

BAR_WIDTH = 32


def frame_lines(frame: Frame) -> list[str]:
    """The live block: progress bar, then a small table."""
    done = frame.finished
    filled = BAR_WIDTH * done // frame.total if frame.total else BAR_WIDTH
    bar = "█" * filled + "░" * (BAR_WIDTH - filled)
    c = frame.counts
    return [
        f"[{bar}] {done:>6}/{frame.total}  {100 * done / frame.total:3.0f}%  "
        f"{frame.elapsed_s:5.1f} s",
        f"  throughput     {frame.throughput_per_s:7.1f} tasks/s",
        f"  pickup delay   {_pickup(frame.pickup_ms)}",
        f"  queue          {c.get('pending', 0):>6} waiting {c.get('processing', 0):>6} running",
        f"  outcomes       ✓ {c.get('completed', 0)} completed   ↻ {frame.retries} retries"
        f"   ✗ {c.get('failed', 0)} failed",
    ]


def summary_lines(frame: Frame) -> list[str]:
    """What happened, in words, once the demo ends."""
    c = frame.counts
    if frame.finished < frame.total:
        return [
            f"stopped after {frame.elapsed_s:.1f} s with {frame.total - frame.finished} of "
            f"{frame.total} tasks unfinished: the worker could not keep up (try a lower --rate)"
        ]
    rate = frame.total / frame.elapsed_s if frame.elapsed_s else 0.0
    return [
        f"done: {frame.total} tasks in {frame.elapsed_s:.1f} s ({rate:.0f} tasks/s end to end)",
        f"  ✓ {c.get('completed', 0)} completed; ↻ {frame.retries} retries: each flaky task "
        "failed once and succeeded after a backoff",
        f"  ✗ {c.get('failed', 0)} failed: the poison task, after {POISON_ATTEMPTS} attempts; "
        "its error is kept on the row",
        f"  pickup delay (INSERT to handler start): {_pickup(frame.pickup_ms)}",
    ]


def _pickup(ms: tuple[float, float, float] | None) -> str:
    if ms is None:
        return "measuring…"
    return f"p50 {ms[0]:.1f} ms   p95 {ms[1]:.1f} ms   p99 {ms[2]:.1f} ms"


class LiveView:
    """Draws frames to ``out``: in place on a TTY, at most one line a second elsewhere."""

    def __init__(self, out: TextIO, interactive: bool) -> None:
        self.out = out
        self.interactive = interactive
        self._drawn = 0
        self._last_line = 0.0

    def __call__(self, frame: Frame) -> None:
        if self.interactive:
            lines = frame_lines(frame)
            up = f"\x1b[{self._drawn}F" if self._drawn else ""
            self.out.write(up + "".join(f"\x1b[2K{line}\n" for line in lines))
            self._drawn = len(lines)
        elif time.monotonic() - self._last_line >= 1.0 or frame.finished >= frame.total:
            self._last_line = time.monotonic()
            self.out.write(frame_lines(frame)[0].split("] ", 1)[1].strip() + "\n")
        self.out.flush()

    def finish(self, frame: Frame) -> None:
        if not self.interactive:
            self.out.write("\n".join(frame_lines(frame)[1:]) + "\n")
        self.out.write("\n" + "\n".join(summary_lines(frame)) + "\n")
        self.out.flush()
