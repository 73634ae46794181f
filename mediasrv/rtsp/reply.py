"""What an RTSP request handler answers: a :class:`Reply`, or a refusal
(:class:`RtspError`), and the one mapping from the core's refusals to RTSP
status codes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from twisted.python.failure import Failure

from mediasrv.core.context import AccessDenied
from mediasrv.core.registry import StreamBusy, StreamNotFound
from mediasrv.hooks.model import Action


@dataclass
class Reply:
    """A response to send; ``after`` runs once it is written (PLAY starts the
    media then), ``close`` closes the connection after it."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    after: Callable[[], None] | None = None
    close: bool = False


class RtspError(Exception):
    """A refusal: the reply to send, and why (for the log line)."""

    def __init__(self, status: int, why: str, headers: list[tuple[str, str]] | None = None, close: bool = False,
                 quiet: bool = False) -> None:
        super().__init__(why)
        self.status = status
        self.why = why
        self.headers = headers or []
        self.close = close
        self.quiet = quiet  # an expected step (the first 401 challenge): logged at debug level

    def reply(self) -> Reply:
        body = (self.why + "\n").encode("utf-8", "replace") if self.status >= 400 else b""
        headers = list(self.headers)
        if body:
            headers.append(("Content-Type", "text/plain; charset=utf-8"))
        return Reply(self.status, headers, body, close=self.close)


# the core's refusals of a play or publish → the status that tells the client why
_REFUSALS: tuple[tuple[type[Exception], int, str], ...] = (
    (AccessDenied, 403, "{action} denied"),  # the gate (on_play / on_publish) said no
    (StreamNotFound, 404, "no such stream"),  # not published within maxStreamWaitMS, or not offered over RTSP
    (StreamBusy, 406, "already publishing"),  # someone else publishes that stream
)


def refused(failure: Failure, action: Action) -> Failure:
    """Errback for ``start_play`` / ``start_publish``: raise the core's
    refusals as :class:`RtspError`; anything else passes through (a bug: 500)."""
    for error, status, what in _REFUSALS:
        if failure.check(error):
            raise RtspError(status, f"{what.format(action=action.value)}: {failure.getErrorMessage()}")
    return failure
