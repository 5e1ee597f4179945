"""One held step's SLO verdict, as both the S1 and the S2/S3 step tables print it (cli.py, multi_report.py)."""

from __future__ import annotations

from typing import Any

__all__ = ["step_subscribers", "step_verdict"]


def step_subscribers(s: dict[str, Any]) -> str:
    """A step's subscriber count and how many of them verified every packet (headers.py; older results: all)."""
    n = s["subscribers"]
    verified = s.get("verified", n)
    return f"{n}" if verified == n else f"{n} ({verified} verified)"


def step_verdict(s: dict[str, Any]) -> str:
    """One held step's SLO verdict as the step tables print it."""
    verdict = "ok" if s["slo_ok"] else "FAIL: " + "; ".join(s["slo_fail"])
    if s.get("retried"):
        verdict += " (held again)"
    if s["generator_saturated"]:
        verdict += " GENERATOR SATURATED"
    return verdict
