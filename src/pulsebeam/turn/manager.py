"""The allocations of one TURN server, keyed by 5-tuple, with quotas, expiry and revocation.

Quotas: at most ``user_quota`` live allocations per TURN username (one credential) and
``project_quota`` per project; over either the Allocate gets 486 (Allocation Quota Reached).
Relay sockets are bound on ``relay_ip`` at a random port of the configured range.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import random
import socket
import time
from collections import Counter

from pulsebeam.config import PortRange
from pulsebeam.turn.allocation import Allocation, ClientLink, FiveTuple
from pulsebeam.turn.auth import Identity
from pulsebeam.turn.metrics import TurnMetrics

__all__ = ["AllocateError", "AllocationManager"]

logger = logging.getLogger(__name__)

_BIND_ATTEMPTS = 64
# DONT-FRAGMENT is honoured by setting the relay socket's path-MTU mode to "do" (Linux names);
# where the platform lacks them, Allocates asking for it get 420.
_MTU_DISCOVER: int | None = getattr(socket, "IP_MTU_DISCOVER", None)
_PMTUDISC_DO: int | None = getattr(socket, "IP_PMTUDISC_DO", None)


class AllocateError(Exception):
    """An Allocate that cannot be granted: answer with ``code`` and ``reason``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason


class AllocationManager:
    def __init__(
        self,
        *,
        relay_ip: str,
        relay_ports: PortRange,
        user_quota: int,
        project_quota: int,
        bandwidth_bps: int,
        metrics: TurnMetrics,
    ) -> None:
        self._relay_ip = relay_ip
        self._ports = relay_ports
        self._user_quota = user_quota
        self._project_quota = project_quota
        self._bandwidth = bandwidth_bps
        self._metrics = metrics
        self.allocations: dict[FiveTuple, Allocation] = {}
        self._per_user: Counter[str] = Counter()
        self._per_project: Counter[str] = Counter()
        self._pending: set[FiveTuple] = set()

    can_dont_fragment = _MTU_DISCOVER is not None and _PMTUDISC_DO is not None

    def get(self, five_tuple: FiveTuple) -> Allocation | None:
        return self.allocations.get(five_tuple)

    def is_pending(self, five_tuple: FiveTuple) -> bool:
        return five_tuple in self._pending

    def _check_quota(self, identity: Identity) -> None:
        if self._per_user[identity.username] >= self._user_quota:
            self._metrics.quota_refusals.inc()
            raise AllocateError(486, f"Allocation Quota Reached: {self._user_quota} per credential")
        if self._per_project[identity.project_id] >= self._project_quota:
            self._metrics.quota_refusals.inc()
            raise AllocateError(486, f"Allocation Quota Reached: {self._project_quota} per project")

    def _bind_socket(self, even_port: bool, dont_fragment: bool) -> socket.socket:
        low, high = self._ports.low, self._ports.high
        for _ in range(_BIND_ATTEMPTS):
            port = random.randint(low, high)
            if even_port:
                port &= ~1
                if port < low:
                    continue
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                sock.setblocking(False)
                if dont_fragment and _MTU_DISCOVER is not None and _PMTUDISC_DO is not None:
                    sock.setsockopt(socket.IPPROTO_IP, _MTU_DISCOVER, _PMTUDISC_DO)
                sock.bind((self._relay_ip, port))
            except OSError as exc:
                sock.close()
                if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                    continue
                raise AllocateError(508, f"cannot open a relay socket: {exc.strerror}") from None
            return sock
        raise AllocateError(508, "Insufficient Capacity: no free relay port")

    async def create(
        self,
        link: ClientLink,
        identity: Identity,
        *,
        lifetime: float,
        even_port: bool,
        dont_fragment: bool,
    ) -> Allocation:
        five_tuple = link.five_tuple
        self._check_quota(identity)
        self._pending.add(five_tuple)
        try:
            sock = self._bind_socket(even_port, dont_fragment)
            allocation = Allocation(
                link,
                username=identity.username,
                key_id=identity.key_id,
                project_id=identity.project_id,
                expires_at=time.monotonic() + lifetime,
                bandwidth_bps=self._bandwidth,
            )
            loop = asyncio.get_running_loop()
            try:
                await loop.create_datagram_endpoint(lambda: allocation, sock=sock)
            except OSError as exc:
                sock.close()
                raise AllocateError(508, f"cannot open a relay socket: {exc.strerror}") from None
            except BaseException:  # cancelled by stop(): do not leak the socket
                sock.close()
                raise
            # The quota is checked again: other Allocates may have finished while we awaited.
            try:
                self._check_quota(identity)
            except AllocateError:
                allocation.close()
                raise
        finally:
            self._pending.discard(five_tuple)
        self.allocations[five_tuple] = allocation
        self._per_user[identity.username] += 1
        self._per_project[identity.project_id] += 1
        link.attach(allocation)
        self._metrics.allocation_created(identity.project_id)
        logger.debug(
            "allocation %s for %s relays on %s",
            five_tuple,
            identity.username,
            allocation.relayed_address,
        )
        return allocation

    def remove(self, allocation: Allocation) -> None:
        if self.allocations.get(allocation.five_tuple) is not allocation:
            return
        del self.allocations[allocation.five_tuple]
        for counter, key in (
            (self._per_user, allocation.username),
            (self._per_project, allocation.project_id),
        ):
            counter[key] -= 1
            if counter[key] <= 0:
                del counter[key]
        self._flush(allocation)
        allocation.close()
        self._metrics.allocation_ended()

    def _flush(self, allocation: Allocation) -> None:
        self._metrics.relayed(allocation.project_id, allocation.packets, allocation.bytes)
        allocation.packets = 0
        allocation.bytes = 0

    def revoke_key(self, key_id: str) -> int:
        """Tear down every allocation made with a credential naming ``key_id``."""
        doomed = [a for a in self.allocations.values() if a.key_id == key_id]
        for allocation in doomed:
            self.remove(allocation)
        if doomed:
            logger.info("revoked key %s: %d TURN allocation(s) torn down", key_id, len(doomed))
        return len(doomed)

    def sweep(self, now: float | None = None) -> None:
        """Expire lifetimes and fold relay counters into the metrics."""
        now = time.monotonic() if now is None else now
        for allocation in list(self.allocations.values()):
            if allocation.expires_at <= now:
                logger.debug("allocation %s expired", allocation.five_tuple)
                self.remove(allocation)
                continue
            allocation.expire(now)
            self._flush(allocation)

    def close_all(self) -> None:
        for allocation in list(self.allocations.values()):
            self.remove(allocation)
