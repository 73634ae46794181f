"""The HTTP client every hook call goes through.

treq over one shared, persistent connection pool (keep-alive to the hook
server), TLS with certificate and host-name checks (Twisted's browser-like
policy, which uses service-identity), a deadline on the injected clock, and a
bounded reply size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from treq.client import HTTPClient
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IResponse

MAX_REPLY_BYTES = 64 * 1024


class HookTransportError(Exception):
    """The hook server could not be reached, timed out or sent an unusable reply."""


@dataclass(frozen=True, slots=True)
class HookResponse:
    status: int
    headers: dict[str, str]
    body: bytes


class _BoundedBody(Protocol):
    def __init__(self, limit: int, done: defer.Deferred[bytes]) -> None:
        self.limit = limit
        self.done = done
        self.parts: list[bytes] = []
        self.size = 0

    def dataReceived(self, data: bytes) -> None:
        if self.done.called:
            return
        self.size += len(data)
        if self.size > self.limit:
            self.done.errback(HookTransportError(f"reply larger than {self.limit} bytes"))
            if self.transport is not None:
                self.transport.stopProducing()  # type: ignore[attr-defined]
            return
        self.parts.append(data)

    def connectionLost(self, reason: Failure = Failure(ResponseDone())) -> None:
        if self.done.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(b"".join(self.parts))
        else:
            self.done.errback(HookTransportError(f"reply cut short: {reason.getErrorMessage()}"))


class HookClient:
    def __init__(self, reactor: Any, clock: IReactorTime | None = None, max_reply: int = MAX_REPLY_BYTES,
                 user_agent: str = "mediasrv") -> None:
        self.clock: IReactorTime = clock if clock is not None else reactor
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = 8
        self.pool.cachedConnectionTimeout = 60
        self.http = HTTPClient(Agent(reactor, pool=self.pool))
        self.max_reply = max_reply
        self.user_agent = user_agent

    def request(self, method: str, url: str, timeout: float, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> defer.Deferred[HookResponse]:
        """One HTTP exchange; fails with HookTransportError on any transport
        problem, including the deadline (``timeout`` seconds on our clock)."""
        hdrs: dict[bytes | str, bytes | str] = {"User-Agent": self.user_agent}
        hdrs.update(headers or {})
        inner: defer.Deferred[Any] = self.http.request(method, url, data=body, headers=hdrs, allow_redirects=False)
        inner.addCallback(self._read)
        # Our own deadline and cancellation flags: cancelling a request in
        # flight makes twisted.web fail it with ResponseNeverReceived (not
        # CancelledError), which must not look like a transport failure to a
        # caller that retries (an @inlineCallbacks caller resumes with that
        # error after being cancelled).  So a cancel from outside fails the
        # returned Deferred with CancelledError, the deadline with
        # HookTransportError, whatever twisted.web reports.
        state: dict[str, bool] = {}

        def cancel(_: defer.Deferred[HookResponse]) -> None:
            state["cancelled"] = True
            inner.cancel()

        outer: defer.Deferred[HookResponse] = defer.Deferred(cancel)

        def deadline() -> None:
            state["timed_out"] = True
            inner.cancel()

        timer = self.clock.callLater(timeout, deadline)

        def settle(result: Any) -> None:
            if timer.active():
                timer.cancel()
            if outer.called or state.get("cancelled"):
                return  # Deferred.cancel fails ``outer`` with CancelledError
            if state.get("timed_out"):
                outer.errback(HookTransportError(f"no reply within {timeout:g} s"))
            elif isinstance(result, Failure):
                outer.errback(self._transport_error(result, timeout))
            else:
                outer.callback(result)

        inner.addBoth(settle)
        return outer

    def _read(self, response: IResponse) -> defer.Deferred[HookResponse]:
        done: defer.Deferred[bytes] = defer.Deferred()
        length = response.length
        if isinstance(length, int) and length > self.max_reply:
            response.deliverBody(_BoundedBody(0, done))
        else:
            response.deliverBody(_BoundedBody(self.max_reply, done))
        headers = {k.decode("latin-1").lower(): v[-1].decode("latin-1")
                   for k, v in response.headers.getAllRawHeaders()}
        return done.addCallback(lambda body: HookResponse(response.code, headers, body))

    @staticmethod
    def _transport_error(failure: Failure, timeout: float) -> Failure:
        if failure.check(HookTransportError, defer.CancelledError):
            return failure
        if failure.check(defer.TimeoutError):
            return Failure(HookTransportError(f"no reply within {timeout:g} s"))
        return Failure(HookTransportError(failure.getErrorMessage() or failure.type.__name__))

    def close(self) -> defer.Deferred[None]:
        return self.pool.closeCachedConnections()


__all__ = ["HookClient", "HookResponse", "HookTransportError"]
