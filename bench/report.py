"""The printed table, and the targets that compare one item with another."""

from __future__ import annotations

from typing import Any

from bench.context import ItemResult
from bench.stats import Target

PEER_FACTOR = 2.0
RAW_FRACTION = 0.70


def cross_item_targets(results: list[ItemResult]) -> list[Target]:
    """Burn-down vs the fastest peer (2x) and vs the raw SQL loop (70%)."""
    by_name = {r.name: r for r in results}
    burn = by_name.get("burndown")
    ours = burn.figure("burndown.p1_best") if burn else None
    targets = []
    peer_figs = [f for f in by_name["peers"].figures if f.runs] if "peers" in by_name else []
    if ours and ours.runs and peer_figs:
        fastest = max(peer_figs, key=lambda f: f.median)
        bar = PEER_FACTOR * fastest.median
        targets.append(
            Target(
                "burn-down, 1 process vs fastest peer",
                f">= {PEER_FACTOR:g}x {fastest.label} = {bar:,.0f} tasks/s",
                ours.text(),
                ours.median >= bar,
            )
        )
    else:
        targets.append(
            Target(
                "burn-down, 1 process vs fastest peer",
                ">= 2x fastest peer",
                "needs the burndown and peers items",
                None,
            )
        )
    raw_best = by_name["raw"].figure("raw.best") if "raw" in by_name else None
    if ours and ours.runs and raw_best and raw_best.runs:
        share = ours.median / raw_best.median
        targets.append(
            Target(
                "burn-down vs raw SQL loop",
                f">= {RAW_FRACTION:.0%} of raw",
                f"{share:.0%}",
                share >= RAW_FRACTION,
            )
        )
    else:
        targets.append(
            Target(
                "burn-down vs raw SQL loop",
                ">= 70% of raw",
                "needs the burndown and raw items",
                None,
            )
        )
    return targets


def table(document: dict[str, Any], results: list[ItemResult], extra: list[Target]) -> str:
    m, s = document["machine"], document["server"]
    lines = [
        f"listener benchmark, {document['started_at']} ({document['mode']}, "
        f"{document['runs']} run(s) per figure: median [min-max])",
        f"machine: {m['cores']} cores, {m['memory_gb']} GiB, {m['os']}, Python {m['python']}",
        f"load average (1/5/15 min) before: {_load(document, 'before')}, "
        f"after: {_load(document, 'after')}",
        f"server: PostgreSQL {s['version']}, synchronous_commit={s['synchronous_commit']}, "
        f"fsync={s['fsync']}, shared_buffers={s['shared_buffers']}, "
        f"autovacuum={s.get('autovacuum', '?')}",
    ]
    for result in results:
        lines.append(
            f"\n== {result.title}"
            + ("" if result.status == "ok" else f"  [{result.status.upper()}]")
        )
        width = max((len(f.label) for f in result.figures), default=10)
        lines += [f"  {f.label:<{width}}  {f.text()}" for f in result.figures]
        lines += [f"  note: {n}" for n in result.notes]
        for name, text in result.details.items():
            lines.append(f"  {name}:")
            lines += [f"    {line}" for line in text.rstrip().splitlines()]
    lines.append("\n== Targets")
    for target in [t for r in results for t in r.targets] + extra:
        lines.append(
            f"  [{target.verdict:^12}] {target.name}: wanted {target.wanted}, "
            f"measured {target.measured}"
        )
    return "\n".join(lines)


def _load(document: dict[str, Any], when: str) -> str:
    return "/".join(f"{x:.1f}" for x in document["load_average_1_5_15"][when])
