"""Prometheus metrics of one signaling app, on its own registry (no process-global state)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["SignalingMetrics"]


class SignalingMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.calls = Counter(
            "pulsebeam_signaling_calls",
            "Signaling RPCs by method and final gRPC status",
            ["method", "code"],
            registry=self.registry,
        )
        self.call_seconds = Histogram(
            "pulsebeam_signaling_unary_seconds",
            "Time to answer a unary signaling RPC",
            ["method"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0),
            registry=self.registry,
        )
        self.messages = Counter(
            "pulsebeam_signaling_messages",
            "Messages handled by Send, by outcome",
            ["outcome"],
            registry=self.registry,
        )
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
        # Labelled children are looked up once: ``labels()`` takes a lock on every call, and
        # these run once or twice per signaling message.
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def _child(self, metric: Counter | Histogram, *labels: str) -> Any:
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def message(self, outcome: str) -> None:
        self._child(self.messages, outcome).inc()

    def call(self, method: str, code: str) -> None:
        self._child(self.calls, method, code).inc()

    def call_time(self, method: str, seconds: float) -> None:
        self._child(self.call_seconds, method).observe(seconds)
