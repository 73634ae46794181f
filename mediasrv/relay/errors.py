"""Why a relay client stopped: one typed error per cause, each with a message fit for one log line.

Every failure of a pull or push ends as exactly one of these, passed to the
sink's ``closed(reason)`` (pull), to the source's ``stop()`` callers through
:meth:`~mediasrv.relay.client.RelayClient.when_closed` (push), and as the
errback of :meth:`~mediasrv.relay.client.RelayClient.start` when it happens
before the stream started.  Messages never contain a password: URLs in them
are masked (:func:`mediasrv.relay.url.masked_url`).

:attr:`RelayError.retry` tells a reconnecting owner (the proxy objects of
the integration) whether trying again can help: a wrong password or a
refused URL stays wrong, a dropped connection or a timeout may not.
"""

from __future__ import annotations

__all__ = [
    "AuthFailed",
    "ConnectFailed",
    "PeerClosed",
    "ProtocolViolation",
    "Refused",
    "RelayError",
    "RelayTimeout",
    "SourceEnded",
    "Stopped",
    "StreamNotFound",
    "UnsupportedUrl",
    "UnsupportedMedia",
]


class RelayError(Exception):
    """Base of every relay failure."""

    retry = True

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else type(self).__name__


class UnsupportedUrl(RelayError, ValueError):
    """The URL is not one a relay may use (scheme, host, port or shape)."""

    retry = False


class ConnectFailed(RelayError):
    """TCP, DNS or TLS failed before the protocol started."""


class RelayTimeout(RelayError):
    """The peer did not start within ``timeout_sec``, or went silent for that long."""


class AuthFailed(RelayError):
    """The peer wants credentials the URL does not carry, or refused those it carries."""

    retry = False


class StreamNotFound(RelayError):
    """The source has no such stream (RTMP ``NetStream.Play.StreamNotFound``, RTSP/HTTP 404)."""


class Refused(RelayError):
    """The peer refused the request (publish ``BadName``, connect rejected, an RTSP/HTTP error status)."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class UnsupportedMedia(RelayError):
    """The source offers nothing we can carry (no H.264/H.265/AAC track)."""

    retry = False


class ProtocolViolation(RelayError):
    """The peer sent bytes that break the protocol or a parser limit (garbage, huge messages, endless headers)."""


class PeerClosed(RelayError):
    """The connection dropped without the protocol saying the stream ended."""


class SourceEnded(RelayError):
    """The peer ended the stream cleanly (unpublished, end of file, RTSP BYE); a pull may retry later."""


class Stopped(RelayError):
    """We stopped the relay (``stop()``, or the push source ended)."""

    retry = False
