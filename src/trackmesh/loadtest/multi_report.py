"""Tables for S2 (meeting) and S3 (audio only) results: one summary table, one row per held step."""

from __future__ import annotations

from typing import Any

from trackmesh.loadtest.verdict import step_subscribers, step_verdict

__all__ = ["join_phases_table", "multi_steps_table", "multi_table"]


def _f(v: Any, nd: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1%}"


def _mb(kb: int | None) -> str:
    return "-" if kb is None else f"{kb / 1024:.1f}"


def _last_passing(r: dict[str, Any]) -> dict[str, Any] | None:
    ok = [s for s in r["steps"] if s["slo_ok"] and not s["generator_saturated"]]
    return ok[-1] if ok else (r["steps"][-1] if r["steps"] else None)


def multi_table(results: dict[str, dict[str, Any]]) -> str:
    """One Markdown table, a column per server."""
    names = list(results)
    rows: list[tuple[str, list[str]]] = []

    def add(label: str, fn: Any) -> None:
        rows.append((label, [fn(results[n]) for n in names]))

    first = next(iter(results.values()), None)
    scen = (first or {}).get("scenario", "s2").upper()
    add(f"{scen} capacity ({(first or {}).get('unit', '')}, all SLOs)",
        lambda r: f"{r['capacity']} ({r['capacity_subscribers']} subscribers, {r['capacity_peers']} peers)")
    add("limited by", lambda r: r.get("limited_by") or "-")

    def at(r: dict[str, Any], p: str) -> str:
        a = r["at_load"].get(p)
        if a is None:
            return "-"
        text = f"{a['us_per_pkt']} (units {a.get('units', '?')}, {a['server_cpu']:.0%} core)"
        if abs(a["server_cpu"] - int(p[:-1]) / 100) > 0.1:
            text = f"not reached; nearest: {text}"
        return text

    for pct in ("25%", "50%", "75%"):
        add(f"server us per forwarded pkt at {pct} core", lambda r, p=pct: at(r, p))

    def lat(r: dict[str, Any]) -> str:
        s = _last_passing(r)
        if s is None:
            return "-"
        lm = s["latency_ms"]
        return f"{_f(lm['p50'], 2)} / {_f(lm['p95'], 2)} / {_f(lm['p99'], 2)} (units {s['units']})"

    add("latency p50/p95/p99 ms (last passing step)", lat)

    def join(r: dict[str, Any], k: str) -> str:
        j = r["join_ms"][k]
        return f"{_f(j['p50'], 0)} / {_f(j['p99'], 0)} (n={j['n']})"

    add("join ms p50/p99, first packet, one at a time", lambda r: join(r, "idle"))
    add("join ms p50/p99, all streams, one at a time", lambda r: join(r, "idle_all_streams"))
    add("join ms p50/p99, first packet, storm", lambda r: join(r, "storm"))
    add("join ms p50/p99, all streams, storm", lambda r: join(r, "storm_all_streams"))
    add("RSS per connected peer KB (active, last passing step)", lambda r: _f(r["rss_per_peer_kb"]))
    add("max generator CPU", lambda r: f"{max((s['generator_cpu'] for s in r['steps']), default=0):.0%}")
    def foreign(r: dict[str, Any]) -> str:
        known = [s["foreign_load_server_cores"] for s in r["steps"] if s["foreign_load_server_cores"] is not None]
        return f"{max(known):.0%}" if known else "-"

    add("max foreign load on the server core", foreign)
    add("dup / reordered / corrupted / misrouted", lambda r: " / ".join(
        str(sum(s[k] for s in r["steps"])) for k in ("duplicated", "reordered", "corrupted", "misrouted")))
    add("datagrams dropped at the generator's sockets", lambda r: str(
        sum(s.get("generator_socket_drops", 0) for s in r["steps"])))
    add("max generator loop lag p99 ms", lambda r: _f(max(
        (s["generator_loop_lag_ms"]["p99"] or 0.0 for s in r["steps"]), default=None)))
    out = ["| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    out += [f"| {label} | " + " | ".join(vals) + " |" for label, vals in rows]
    return "\n".join(out)


def multi_steps_table(results: dict[str, dict[str, Any]]) -> str:
    out = [
        "| server | units | subs | streams | server CPU | us/pkt | out pkt/s | worst stream loss | "
        "p50 / p95 / p99 ms | added p99 ms | max silence s | foreign load srv/gen | gen CPU / lag p99 ms | "
        "RSS MB | SLO |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        for s in r["steps"]:
            lm = s["latency_ms"]
            verdict = step_verdict(s)
            out.append(
                f"| {name} | {s['units']} | {step_subscribers(s)} | {s['streams_expected']} | "
                f"{_pct(s['server_cpu'])} | "
                f"{_f(s['server_us_per_pkt'], 2)} | {s['pkts_out_per_s']:.0f} | {s['loss_worst']:.2%} | "
                f"{_f(lm['p50'], 2)} / {_f(lm['p95'], 2)} / {_f(lm['p99'], 2)} | {_f(s.get('added_p99_ms'))} | "
                f"{s['freeze_max_s']} | {_f(s['foreign_load_server_cores'], 3)} / "
                f"{s['foreign_load_generator_cores']} | "
                f"{s['generator_cpu']:.0%} / {_f(s['generator_loop_lag_ms']['p99'])} | "
                f"{_mb(s['rss_kb'])} | {verdict} |"
            )
    return "\n".join(out)


def join_phases_table(results: dict[str, dict[str, Any]]) -> str:
    """Where the joins' time went (loadtest/join_trace.py): p50 / max ms since the join started, per phase."""
    from trackmesh.loadtest.join_trace import PHASES

    cols = [(name, kind) for name, r in results.items() for kind, ph in r["join_ms"].get("phases", {}).items()
            if ph.get("n")]
    if not cols:
        return ""
    out = ["| phase (ms since the join started, p50 / max) | "
           + " | ".join(f"{n} {'one at a time' if k == 'idle' else k} (n={results[n]['join_ms']['phases'][k]['n']})"
                        for n, k in cols) + " |",
           "|---|" + "---|" * len(cols)]
    for phase in PHASES:
        cells = []
        for n, k in cols:
            v = results[n]["join_ms"]["phases"][k].get(phase)
            cells.append("-" if v is None else f"{_f(v['p50'], 0)} / {_f(v['max'], 0)}")
        out.append(f"| {phase} | " + " | ".join(cells) + " |")
    return "\n".join(out)
