"""Refusal counters: how often each resource limit turned input away.

Every limit that refuses hostile or oversized input (a configuration key
such as ``rtmp.maxBufferedBytes``, or a fixed format bound such as the AMF0
reference expansion budget) counts one refusal here under its name, right
where it logs its one line.  ``/metrics`` exposes the counts later as
``mediasrv_limit_refusals_total{limit="<name>"}``, read at scrape time like
the other collectors (nothing on the media path talks to Prometheus).

The table is process-wide on purpose: the sans-IO codecs and the protocol
adapters that enforce limits have no server object to hang it on, and one
process serves one configuration.  Tests read deltas (:meth:`Refusals.get`
before and after), so several servers in one test process do not matter.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

__all__ = [
    "AMF_EXPANSION",
    "REFUSALS",
    "RTMP_BUFFERED_BYTES",
    "RTMP_CHUNK_STREAMS",
    "RTMP_MESSAGE_SIZE",
    "RTMP_MESSAGE_SIZE_BEFORE_PUBLISH",
    "SHELL_CONCURRENT_CHECKS",
    "SHELL_LOCKOUT",
    "SHELL_PENDING_LOGINS_PER_IP",
    "Refusals",
]

# Limit names: the configuration key that sets the limit, or (for fixed
# format bounds) a dotted name in the same style.
AMF_EXPANSION: Final = "amf0.maxExpansion"
RTMP_BUFFERED_BYTES: Final = "rtmp.maxBufferedBytes"
RTMP_CHUNK_STREAMS: Final = "rtmp.chunkStreams"
RTMP_MESSAGE_SIZE: Final = "rtmp.maxMessageSize"
RTMP_MESSAGE_SIZE_BEFORE_PUBLISH: Final = "rtmp.maxMessageSizeBeforePublish"
SHELL_LOCKOUT: Final = "shell.lockout"
SHELL_PENDING_LOGINS_PER_IP: Final = "shell.maxPendingLoginsPerIp"
SHELL_CONCURRENT_CHECKS: Final = "shell.maxConcurrentChecks"


class Refusals:
    """Monotonic counts of refusals, by limit name."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def count(self, limit: str, n: int = 1) -> None:
        self._counts[limit] = self._counts.get(limit, 0) + n

    def get(self, limit: str) -> int:
        return self._counts.get(limit, 0)

    def snapshot(self) -> dict[str, int]:
        return dict(self._counts)

    def __iter__(self) -> Iterator[tuple[str, int]]:
        return iter(sorted(self._counts.items()))


REFUSALS: Final = Refusals()
"""The process-wide table every limit counts into."""
