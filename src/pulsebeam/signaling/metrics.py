"""Prometheus metrics of one signaling app, on its own registry (no process-global state).

The figures counted on every message (calls, their latency, message outcomes) are plain ints
here, turned into metric families only when ``/metrics`` is scraped: prometheus_client's
``inc()``/``observe()`` take a lock each, three times per relayed message, and the registry is
only ever touched from the event loop's thread. The rest are ordinary prometheus_client
metrics.
"""

from __future__ import annotations

import bisect
import collections
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["SignalingMetrics"]

_CALL_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0)


class _PerMessageFigures(Collector):
    def __init__(self) -> None:
        self.calls: collections.Counter[tuple[str, str]] = collections.Counter()
        self.messages: collections.Counter[str] = collections.Counter()
        # Per method: the count of observations in each bucket (the last one is +Inf), and sum.
        self.call_buckets: dict[str, list[int]] = {}
        self.call_seconds: collections.defaultdict[str, float] = collections.defaultdict(float)

    def observe_call(self, method: str, seconds: float) -> None:
        buckets = self.call_buckets.get(method)
        if buckets is None:
            buckets = self.call_buckets[method] = [0] * (len(_CALL_BUCKETS) + 1)
        buckets[bisect.bisect_left(_CALL_BUCKETS, seconds)] += 1
        self.call_seconds[method] += seconds

    def collect(self) -> Iterator[Metric]:
        calls = CounterMetricFamily(
            "pulsebeam_signaling_calls",
            "Signaling RPCs by method and final gRPC status",
            labels=["method", "code"],
        )
        for (method, code), count in sorted(self.calls.items()):
            calls.add_metric([method, code], count)
        yield calls
        latency = HistogramMetricFamily(
            "pulsebeam_signaling_unary_seconds",
            "Time to answer a unary signaling RPC",
            labels=["method"],
        )
        for method, counts in sorted(self.call_buckets.items()):
            bounds = [*(repr(b) for b in _CALL_BUCKETS), "+Inf"]
            cumulative = [sum(counts[: i + 1]) for i in range(len(counts))]
            latency.add_metric(
                [method], list(zip(bounds, cumulative, strict=True)), self.call_seconds[method]
            )
        yield latency
        messages = CounterMetricFamily(
            "pulsebeam_signaling_messages",
            "Messages handled by Send, by outcome",
            labels=["outcome"],
        )
        for outcome, count in sorted(self.messages.items()):
            messages.add_metric([outcome], count)
        yield messages


class SignalingMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._figures = _PerMessageFigures()
        self.registry.register(self._figures)
        self.streams = Gauge(
            "pulsebeam_signaling_open_streams",
            "Open Recv streams on this node",
            registry=self.registry,
        )
        self.stream_closes = Counter(
            "pulsebeam_signaling_stream_closes",
            "Recv streams ended by the server, by gRPC status",
            ["code"],
            registry=self.registry,
        )
        self.records_dropped = Counter(
            "pulsebeam_records_dropped",
            "Connection-log or analytics records dropped because the write buffer was full",
            ["kind"],
            registry=self.registry,
        )

    def message(self, outcome: str) -> None:
        self._figures.messages[outcome] += 1

    def call(self, method: str, code: str) -> None:
        self._figures.calls[(method, code)] += 1

    def call_time(self, method: str, seconds: float) -> None:
        self._figures.observe_call(method, seconds)
