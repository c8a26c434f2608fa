"""Render a results JSON as the Markdown tables of docs/benchmarks.md.

``python -m bench.markdown bench-results.json``
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bench.stats import Figure


def render(document: dict[str, Any]) -> str:
    m, s, load = document["machine"], document["server"], document["load_average_1_5_15"]
    lines = [
        f"Run of {document['started_at']} to {document['finished_at']} "
        f"({document['mode']}, {document['runs']} runs per figure).",
        f"Machine: {m['cores']} cores, {m['memory_gb']} GiB RAM, {m['os']}, "
        f"Python {m['python']}, psycopg {m['psycopg']}. "
        f"Load average (1/5/15 min) before {_load(load['before'])}, after {_load(load['after'])}.",
        f"Server: PostgreSQL {s['version']}, synchronous_commit={s['synchronous_commit']}, "
        f"fsync={s['fsync']}, shared_buffers={s['shared_buffers']}"
        + (f", autovacuum={s['autovacuum']}." if "autovacuum" in s else "."),
    ]
    for item in document["items"].values():
        lines += ["", f"#### {item['title']}", "", "| figure | median | min-max |", "|---|---|---|"]
        for fig in item["figures"].values():
            lines.append(f"| {fig['label']} | {_median(fig)} | {_range(fig)} |")
        lines += [f"\n{note}" for note in item["notes"]]
        for name, text in item.get("details", {}).items():
            lines += ["", f"{name}:", "", "```", text.rstrip("\n"), "```"]
    lines += [
        "",
        "#### Targets",
        "",
        "| target | wanted | measured | verdict |",
        "|---|---|---|---|",
    ]
    for t in document["targets"]:
        verdict = f"**{t['verdict']}**" if t["verdict"] == "MISSED" else t["verdict"]
        lines.append(f"| {t['name']} | {t['wanted']} | {t['measured']} | {verdict} |")
    return "\n".join(lines) + "\n"


def _figure(fig: dict[str, Any]) -> Figure:
    return Figure("", fig["label"], fig["unit"], list(fig["runs"]))


def _median(fig: dict[str, Any]) -> str:
    return _figure(fig).text().split(" [")[0] if fig["runs"] else "not measured"


def _range(fig: dict[str, Any]) -> str:
    text = _figure(fig).text()
    return text.split(" [")[1].rstrip("]") if " [" in text else "-"


def _load(values: list[float]) -> str:
    return "/".join(f"{v:.1f}" for v in values)


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 1:
        print("usage: python -m bench.markdown RESULTS.json", file=sys.stderr)
        return 2
    document = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    sys.stdout.write(render(document))
    return 0


if __name__ == "__main__":
    sys.exit(main())
