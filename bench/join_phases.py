"""Pool the join phases of several S2/S3 result files (loadtest/join_trace.py) and print one table.

    python bench/join_phases.py before=bench/results/s2-join-before-*.json after=bench/results/s2-join-after-*.json

Each argument is ``label=FILE...`` (a shell glob expands to several arguments: a bare FILE joins the
label before it). Per label: the p50 / p99 of every phase over every join of every file ("idle": S2's
participant 6 and S3's one-at-a-time listeners; ``--kind storm`` for storm joins), the number of joins,
and the server's share of the all-streams time: from the last receiver attached to the last stream.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from trackmesh.loadtest.join_trace import PHASES


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="+", help="label=FILE, then more FILEs of that label")
    p.add_argument("--kind", default="idle", choices=["idle", "storm"])
    args = p.parse_args(argv)
    groups: dict[str, list[dict[str, Any]]] = {}
    label = "all"
    for arg in args.files:
        if "=" in arg:
            label, arg = arg.split("=", 1)
        doc = json.loads(Path(arg).read_text())
        for result in doc["results"].values():
            groups.setdefault(label, []).extend(result["join_ms"].get("phases_all", {}).get(args.kind, []))
    labels = list(groups)
    print("| phase, ms since the join started (p50 / p99) | " + " | ".join(
        f"{lb} (n={len(groups[lb])})" for lb in labels) + " |")
    print("|---|" + "---|" * len(labels))
    for phase in (*PHASES, "attached -> all"):
        cells = []
        for lb in labels:
            if phase == "attached -> all":
                vals = [s["all"] - s["attached"] for s in groups[lb]
                        if s.get("all") is not None and s.get("attached") is not None]
            else:
                vals = [v for s in groups[lb] if (v := s.get(phase)) is not None]
            lo, hi = pct(vals, 50), pct(vals, 99)
            cells.append("-" if lo is None or hi is None else f"{lo:.0f} / {hi:.0f}")
        print(f"| {phase} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
