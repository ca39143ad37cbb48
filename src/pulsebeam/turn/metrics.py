"""TURN metrics (Prometheus) and usage accounting (per project per UTC day, for the console).

The relay path only bumps two plain integers on its allocation; :meth:`TurnMetrics.flush` folds
them into the Prometheus counters and the usage totals once a second (and before every drain), so
that no lock or label lookup sits on the per-packet path.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime

from prometheus_client import CollectorRegistry, Counter, Gauge

from pulsebeam.control.records import UsageDelta

__all__ = ["TurnMetrics"]


def _today() -> date:
    return datetime.now(UTC).date()


class TurnMetrics:
    """Counters of one TURN server, registered in ``registry`` (a fresh one when omitted)."""

    def __init__(
        self, registry: CollectorRegistry | None = None, *, today: Callable[[], date] = _today
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._today = today
        self.allocations = Counter(
            "pulsebeam_turn_allocations",
            "TURN allocations created",
            ["project"],
            registry=self.registry,
        )
        self.active_allocations = Gauge(
            "pulsebeam_turn_active_allocations",
            "TURN allocations alive now",
            registry=self.registry,
        )
        self.relayed_packets = Counter(
            "pulsebeam_turn_relayed_packets",
            "packets relayed (both directions)",
            ["project"],
            registry=self.registry,
        )
        self.relayed_bytes = Counter(
            "pulsebeam_turn_relayed_bytes",
            "application bytes relayed (both directions)",
            ["project"],
            registry=self.registry,
        )
        self.unauthorized = Counter(
            "pulsebeam_turn_unauthorized",
            "401 answers (challenges and failed credentials)",
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "pulsebeam_turn_rate_limited",
            "requests with failed credentials dropped by the per-source 401 limit",
            registry=self.registry,
        )
        self.refused_peers = Counter(
            "pulsebeam_turn_refused_peers",
            "peer addresses refused (403) by the relay policy",
            registry=self.registry,
        )
        self.malformed = Counter(
            "pulsebeam_turn_malformed",
            "datagrams and stream frames dropped as malformed STUN",
            registry=self.registry,
        )
        self.quota_refusals = Counter(
            "pulsebeam_turn_quota_refusals",
            "allocations refused by a quota (486)",
            registry=self.registry,
        )
        self._usage: dict[tuple[str, date], list[int]] = {}

    def _usage_row(self, project_id: str) -> list[int]:
        key = (project_id, self._today())
        row = self._usage.get(key)
        if row is None:
            row = self._usage[key] = [0, 0, 0]  # bytes, packets, allocations
        return row

    def allocation_created(self, project_id: str) -> None:
        self.allocations.labels(project_id).inc()
        self.active_allocations.inc()
        self._usage_row(project_id)[2] += 1

    def allocation_ended(self) -> None:
        self.active_allocations.dec()

    def relayed(self, project_id: str, packets: int, nbytes: int) -> None:
        """Fold an allocation's counters in (called by the sweeper, not per packet)."""
        if not packets:
            return
        self.relayed_packets.labels(project_id).inc(packets)
        self.relayed_bytes.labels(project_id).inc(nbytes)
        row = self._usage_row(project_id)
        row[0] += nbytes
        row[1] += packets

    def drain_usage(self) -> list[UsageDelta]:
        usage, self._usage = self._usage, {}
        return [
            UsageDelta(
                project_id=project,
                day=day,
                turn_bytes=row[0],
                turn_packets=row[1],
                turn_allocations=row[2],
            )
            for (project, day), row in usage.items()
        ]
