"""What an RTSP request handler answers: a :class:`Reply`, or a refusal
(:class:`RtspError`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


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
