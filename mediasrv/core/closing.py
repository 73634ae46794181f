"""Closing a client connection the same way in every protocol adapter."""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime

# seconds a closing peer gets to read what we still send (a refusal's reason)
CLOSE_GRACE = 5.0


def _abort_if_open(transport: Any) -> None:
    if getattr(transport, "connected", False):
        transport.abortConnection()


def close_transport(transport: Any, clock: IReactorTime, abort: bool) -> IDelayedCall | None:
    """Abort at once (bad input, kick), or flush and close -- and abort after
    :data:`CLOSE_GRACE` if the peer never reads, so it can't keep the socket.
    Returns that timer; the caller cancels it in ``connectionLost``.  The
    timer is armed before ``loseConnection``, which may call
    ``connectionLost`` at once."""
    if abort:
        transport.abortConnection()
        return None
    timer = clock.callLater(CLOSE_GRACE, _abort_if_open, transport)
    transport.loseConnection()
    return timer
