"""What clients report through ``AnalyticsReport``: checked whole, then kept as analytics rows and,
where a report names the session's connection type, as a connection-log row (direct or relayed).

Payloads come from any token holder, so a call is bounded (reports and metrics) and every report
is checked before anything is recorded.
"""

from __future__ import annotations

from collections.abc import Sequence

from pulsebeam import proto
from pulsebeam.auth import VerifiedToken, validate_id
from pulsebeam.control.records import AnalyticsEntry, ConnectionLogEntry
from pulsebeam.errors import PermissionDeniedError, ResourceExhaustedError
from pulsebeam.signaling.records import Recorder

__all__ = ["MAX_ANALYTICS_ENTRIES", "PATH_BY_CONNECTION_TYPE", "check_reports", "record_reports"]

MAX_ANALYTICS_ENTRIES = 1000
"""Most reports, and most metrics in all, one ``AnalyticsReport`` call may carry."""
PATH_BY_CONNECTION_TYPE = {1: "direct", 2: "direct", 3: "relay", 4: "relay", 5: "relay"}
"""``ice_connection_type`` codes (docs/browser-sdk.md: direct UDP/TCP, relay UDP/TCP/TLS) -> the
connection log's path; the protocol leaves the numbers open, so unknown codes log no path."""


def check_reports(token: VerifiedToken, reports: Sequence[proto.AnalyticsReport]) -> None:
    """Refuse the whole call if it is too big or any report is not the caller's own or names a
    malformed destination."""
    metrics = sum(len(report.metrics) for report in reports)
    if max(len(reports), metrics) > MAX_ANALYTICS_ENTRIES:
        raise ResourceExhaustedError(
            f"an AnalyticsReport carries at most {MAX_ANALYTICS_ENTRIES} reports and"
            f" {MAX_ANALYTICS_ENTRIES} metrics in all (got {len(reports)} reports,"
            f" {metrics} metrics): split it"
        )
    for i, report in enumerate(reports):
        src = report.tags.src
        if report.tags.HasField("src") and (src.group_id, src.peer_id) != (
            token.group_id,
            token.peer_id,
        ):
            raise PermissionDeniedError(
                "an analytics report's tags.src must be the token's own group and peer"
            )
        dst = report.tags.dst
        if dst.group_id or dst.peer_id:
            what = f"reports[{i}].tags.dst"
            validate_id(dst.group_id, f"{what}.group_id")
            validate_id(dst.peer_id, f"{what}.peer_id")


def record_reports(
    recorder: Recorder,
    project_id: str,
    token: VerifiedToken,
    reports: Sequence[proto.AnalyticsReport],
) -> None:
    """Queue checked reports for the store (the recorder batches and bounds them)."""
    now = recorder.now()
    for report in reports:
        dst = report.tags.dst
        types = [m.ice_connection_type for m in report.metrics if m.HasField("ice_connection_type")]
        path = PATH_BY_CONNECTION_TYPE.get(types[-1]) if types else None
        if path is not None and dst.peer_id:
            recorder.connection(
                ConnectionLogEntry(
                    project_id=project_id,
                    at=now,
                    src_group=token.group_id,
                    src_peer=token.peer_id,
                    src_conn=report.tags.src.conn_id,
                    dst_group=dst.group_id,
                    dst_peer=dst.peer_id,
                    dst_conn=dst.conn_id,
                    event="report",
                    path=path,
                )
            )
        for metric in report.metrics:
            values = {"timestamp_us": metric.timestamp_us}
            for field, value in metric.ListFields():
                if isinstance(value, int):
                    values[field.name] = value
            recorder.analytics(
                AnalyticsEntry(
                    project_id=project_id,
                    at=now,
                    src_group=token.group_id,
                    src_peer=token.peer_id,
                    dst_group=dst.group_id,
                    dst_peer=dst.peer_id,
                    metrics=values,
                )
            )
