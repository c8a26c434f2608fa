"""Backlog: one claim of 10 with 1,000 / 20,000 / 100,000 / 1,000,000 pending, mid-drain,
and restricted to one type behind another type's backlog.

Each state in a fresh database, filled in one INSERT. Probed first as filled (never
analyzed: what a worker meets when nothing has run ANALYZE, as with autovacuum off
here or within autovacuum's naptime in production), then after ANALYZE. Mid-drain:
half of a backlog claimed and completed by a plain-SQL loop (dead tuples, never
vacuumed), never analyzed, or analyzed when it was full ("stale"). Many types: a
claim with ``--types send_email`` when the send_email tasks were queued behind a
backlog of another type. Every other probe claims as ``listener run --handlers
bench.noop_handlers`` does: with its registered types, never NULL. Ratios are to the
smallest backlog in the same statistics state, paired within each run. See
bench/plans.py for how a probe is made.
"""

from __future__ import annotations

from bench import env, plans, raw
from bench.context import Context, ItemResult
from bench.plans import ClaimProbe
from bench.stats import Figure, Target

CLAIM = 10
RATIO_LIMIT = 2.0
LIMITS_RATIO = 1.2  # issue 14: the claim with limits costs at most 20% more
DRAIN_BATCH = 500
OTHER_TYPE = "send_email"
STATES = {"none": "never analyzed", "analyzed": "ANALYZE after the fill"}


class Backlog:
    """The figures of one item run, filled in case by case."""

    def __init__(self, ctx: Context, result: ItemResult) -> None:
        self.ctx, self.result = ctx, result
        self.latency: dict[str, Figure] = {}
        self.ratio: dict[str, Figure] = {}
        self.this_run: dict[str, float] = {}
        self.limits: dict[str, float] = {}  # target ratio per pair

    def probe(
        self,
        dsn: str,
        key: str,
        label: str,
        *,
        types: list[str] | None = None,
        limits: tuple[int, int, int] | None = None,
    ) -> None:
        """Time the claim in this state (as the benchmark's worker claims, unless
        ``types`` or ``limits`` say otherwise); keep its plan in the details."""
        types = types or plans.worker_types()
        if key not in self.latency:
            self.latency[key] = Figure(f"backlog.claim.{key}", f"claim of {CLAIM}, {label}", "ms")
        self.ctx.say(f"backlog: {label}")
        with ClaimProbe(dsn, CLAIM, types, limits=limits) as probe:
            value = probe.median_ms(self.ctx.sizes.backlog_probes)
            plan = probe.plan()
        self.latency[key].runs.append(value)
        self.this_run[key] = value
        state = plans.counts(dsn)
        table = ", ".join(f"{k}={v}" for k, v in state.items())
        self.result.details[f"plan: claim of {CLAIM}, {label}"] = f"-- {table}\n{plan}"

    def pair(self, key: str, reference: str, label: str, *, limit: float = RATIO_LIMIT) -> None:
        if key not in self.this_run or reference not in self.this_run:
            return
        if key not in self.ratio:
            self.ratio[key] = Figure(f"backlog.ratio.{key}", label, "x")
            self.limits[key] = limit
        self.ratio[key].runs.append(self.this_run[key] / self.this_run[reference])


def run(ctx: Context, result: ItemResult) -> None:
    sizes = ctx.sizes
    pending = sizes.backlog_pending
    result.title = (
        f"Backlog: one claim of {CLAIM} with {', '.join(f'{n:,}' for n in pending)} pending, "
        "mid-drain, and behind another type"
    )
    b = Backlog(ctx, result)
    for i in range(ctx.runs):
        ctx.say(f"backlog: run {i + 1}/{ctx.runs}")
        b.this_run = {}
        for n in pending:
            _pending_case(ctx, b, n)
        _middrain_case(ctx, b, analyze_at_fill=False)
        _middrain_case(ctx, b, analyze_at_fill=True)
        _types_case(ctx, b)
        _limits_case(ctx, b)
        _pair_run(ctx, b)
    result.figures = [*b.latency.values(), *b.ratio.values()]
    for key, fig in b.ratio.items():
        limit = b.limits[key]
        result.targets.append(
            Target(f"backlog: {fig.label}", f"<= {limit:g}x", fig.text(), fig.median <= limit)
        )
    result.notes.append(
        "claim: the worker's claim statement (listener.claim_batch, limit 10, lease 30 s, "
        f"types {plans.worker_types()}: a worker always passes its registered types) in "
        "a transaction rolled back, median of up to "
        f"{sizes.backlog_probes} probes after {plans.WARMUP} warm-up calls, one session per "
        "state; plans: the function's inner statement as executed (auto_explain, nested "
        "statements, ANALYZE + BUFFERS), from the last run"
    )


def _pending_case(ctx: Context, b: Backlog, n: int) -> None:
    with env.scratch_database(ctx.admin_dsn, "backlog") as dsn:
        ctx.say(f"backlog: filling {n:,} pending tasks")
        env.run_sql(dsn, "bench_add_pending", {"type": env.NOOP_TYPE, "n": n})
        b.probe(dsn, f"p{n}.none", f"{n:,} pending, {STATES['none']}")
        env.run_sql(dsn, "bench_analyze_tasks")
        b.probe(dsn, f"p{n}.analyzed", f"{n:,} pending, {STATES['analyzed']}")


def _middrain_case(ctx: Context, b: Backlog, *, analyze_at_fill: bool) -> None:
    total = ctx.sizes.backlog_middrain
    with env.scratch_database(ctx.admin_dsn, "middrain") as dsn:
        ctx.say(f"backlog: filling {total:,} and draining half")
        env.run_sql(dsn, "bench_add_pending", {"type": env.NOOP_TYPE, "n": total})
        if analyze_at_fill:
            env.run_sql(dsn, "bench_analyze_tasks")
        raw.claim_complete_loop(dsn, DRAIN_BATCH, "bench-middrain", "bench_claim_ids", total // 2)
        state = "analyzed when full (stale)" if analyze_at_fill else STATES["none"]
        key = "middrain.stale" if analyze_at_fill else "middrain.none"
        b.probe(dsn, key, f"mid-drain ({total // 2:,} of {total:,} done), {state}")


def _types_case(ctx: Context, b: Backlog) -> None:
    others, own = ctx.sizes.backlog_other_type, ctx.sizes.backlog_pending[0]
    with env.scratch_database(ctx.admin_dsn, "types") as dsn:
        ctx.say(f"backlog: filling {others:,} of one type, then {own:,} {OTHER_TYPE}")
        env.run_sql(dsn, "bench_add_pending", {"type": env.NOOP_TYPE, "n": others})
        env.run_sql(dsn, "bench_add_pending", {"type": OTHER_TYPE, "n": own})
        label = f"--types {OTHER_TYPE} ({own:,}) behind {others:,} of another type"
        b.probe(dsn, "types.none", f"{label}, {STATES['none']}", types=[OTHER_TYPE])
        env.run_sql(dsn, "bench_analyze_tasks")
        b.probe(dsn, "types.analyzed", f"{label}, {STATES['analyzed']}", types=[OTHER_TYPE])


# Limits that never bind (so both claims take the same tasks): what enforcing them
# costs -- the per-type lock, the counts, recording the starts -- with a busy window.
LIMITS = (100_000, 1_000_000, 3600)
BUSY_WINDOW_STARTS = 1000


def _limits_case(ctx: Context, b: Backlog) -> None:
    n = ctx.sizes.backlog_pending[0]
    with env.scratch_database(ctx.admin_dsn, "limits") as dsn:
        env.run_sql(dsn, "bench_add_pending", {"type": env.NOOP_TYPE, "n": n})
        env.run_sql(dsn, "bench_add_rate_starts", {"n": BUSY_WINDOW_STARTS})
        env.run_sql(dsn, "bench_analyze_tasks")
        b.probe(dsn, "limits.plain", f"{n:,} pending, no limits")
        b.probe(
            dsn, "limits.enforced",
            f"{n:,} pending, global_concurrency and rate_limit on every type "
            f"({BUSY_WINDOW_STARTS:,} starts in the window)",
            limits=LIMITS,
        )  # fmt: skip


def _pair_run(ctx: Context, b: Backlog) -> None:
    sizes = ctx.sizes
    first = sizes.backlog_pending[0]
    for state, text in STATES.items():
        ref = f"p{first}.{state}"
        for n in sizes.backlog_pending[1:]:
            b.pair(f"p{n}.{state}", ref, f"{n:,} vs {first:,} pending, {text}")
        drained = "middrain.none" if state == "none" else "middrain.stale"
        how = text if state == "none" else "analyzed when full (stale)"
        b.pair(drained, ref, f"mid-drain vs {first:,} pending, {how}")
        b.pair(f"types.{state}", ref, f"--types {OTHER_TYPE} behind another type vs plain, {text}")
    b.pair("limits.enforced", "limits.plain", "claim with limits vs without", limit=LIMITS_RATIO)
