"""Prometheus text built per scrape from values the node already holds.

Counters live in the nodes as plain integers (no per-packet call into a metrics library); a
scrape turns them into metric families of the right type: a counter is a ``counter`` (named
``..._total``), a level is a ``gauge``, a distribution is a ``histogram``, so that
``promtool check metrics`` has nothing to say (tests/http/test_metrics_lint.py).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

__all__ = ["Exposition"]


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


class Exposition:
    """Metric families by name; adding a sample to a family made earlier reuses it."""

    def __init__(self) -> None:
        self._families: dict[str, Metric] = {}

    def _family(self, cls: Any, name: str, doc: str, labels: Sequence[str]) -> Any:
        found = self._families.get(name)
        if found is None:
            found = self._families[name] = cls(name, doc, labels=list(labels))
        return found

    def counter(self, name: str, doc: str, value: float, labels: dict[str, str] | None = None) -> None:
        """``name`` without ``_total`` (the exposition adds it)."""
        labels = labels or {}
        fam = self._family(CounterMetricFamily, name, doc, list(labels))
        fam.add_metric(list(labels.values()), value)

    def gauge(self, name: str, doc: str, value: float, labels: dict[str, str] | None = None) -> None:
        labels = labels or {}
        fam = self._family(GaugeMetricFamily, name, doc, list(labels))
        fam.add_metric(list(labels.values()), value)

    def declare_counter(self, name: str, doc: str, labels: Sequence[str] = ()) -> None:
        """A family with no sample yet: HELP and TYPE still appear, so a dashboard's query finds it."""
        self._family(CounterMetricFamily, name, doc, labels)

    def declare_gauge(self, name: str, doc: str, labels: Sequence[str] = ()) -> None:
        """A gauge family with no sample yet (see :meth:`declare_counter`)."""
        self._family(GaugeMetricFamily, name, doc, labels)

    def histogram(self, name: str, doc: str, hist: dict[str, Any], labels: dict[str, str] | None = None) -> None:
        """``hist``: ``{"bounds": [...], "counts": [per bucket, +Inf last], "sum": s}``."""
        labels = labels or {}
        fam = self._family(HistogramMetricFamily, name, doc, list(labels))
        buckets: list[tuple[str, float]] = []
        total = 0
        for bound, count in zip([*hist["bounds"], "+Inf"], hist["counts"], strict=True):
            total += int(count)
            buckets.append((bound if isinstance(bound, str) else _le(float(bound)), total))
        fam.add_metric(list(labels.values()), buckets, float(hist["sum"]))

    def render(self) -> tuple[str, str]:
        registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=registry)  # process_cpu_seconds_total, process_resident_memory_bytes...
        registry.register(_Families(list(self._families.values())))
        return generate_latest(registry).decode(), CONTENT_TYPE_LATEST


def _le(bound: float) -> str:
    return repr(bound) if bound != int(bound) else f"{bound:.1f}"
