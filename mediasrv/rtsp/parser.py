"""RTSP/1.0 message framing (RFC 2326 4, 6, 7, 10.12), sans-IO.

:class:`RtspParser` turns the bytes of an RTSP connection into events:
:class:`RtspRequest`, :class:`RtspResponse` (a client answering a request of
ours) and :class:`InterleavedFrame` (RFC 2326 10.12: ``$``, channel, 16-bit
length, data — RTP/RTCP over the RTSP connection).  Nothing here does I/O or
imports Twisted (h11-style: ``feed(bytes) -> events``).

Limits: the header block of one message, the number of header lines and the
body size are bounded; exceeding one raises :class:`RtspParseError`, whose
``status`` is the reply the adapter sends before closing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.utils import formatdate

__all__ = [
    "InterleavedFrame",
    "RtspParseError",
    "RtspParser",
    "RtspRequest",
    "RtspResponse",
    "TransportSpec",
    "encode_interleaved",
    "encode_request",
    "encode_response",
    "format_transport",
    "parse_transport",
    "reason_phrase",
]

MAX_HEADER_BYTES = 16 * 1024
MAX_HEADER_LINES = 64
MAX_BODY_BYTES = 256 * 1024

_METHOD = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")

# RFC 2326 7.1.1 (and the HTTP codes RTSP borrows).
_REASONS = {
    100: "Continue",
    200: "OK",
    201: "Created",
    250: "Low on Storage Space",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    304: "Not Modified",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    408: "Request Timeout",
    413: "Request Entity Too Large",
    414: "Request-URI Too Large",
    415: "Unsupported Media Type",
    451: "Parameter Not Understood",
    453: "Not Enough Bandwidth",
    454: "Session Not Found",
    455: "Method Not Valid in This State",
    456: "Header Field Not Valid for Resource",
    457: "Invalid Range",
    459: "Aggregate Operation Not Allowed",
    460: "Only Aggregate Operation Allowed",
    461: "Unsupported Transport",
    462: "Destination Unreachable",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "RTSP Version Not Supported",
    551: "Option not supported",
}


def reason_phrase(status: int) -> str:
    return _REASONS.get(status, "Unknown")


class RtspParseError(ValueError):
    """Input that is not RTSP we can serve.  ``status`` is the reply to send."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class Headers:
    """Case-insensitive, order-keeping header list."""

    __slots__ = ("_items",)

    def __init__(self, items: list[tuple[str, str]] | None = None) -> None:
        self._items: list[tuple[str, str]] = items or []

    def get(self, name: str, default: str | None = None) -> str | None:
        lname = name.lower()
        for key, value in self._items:
            if key.lower() == lname:
                return value
        return default

    def get_all(self, name: str) -> list[str]:
        lname = name.lower()
        return [value for key, value in self._items if key.lower() == lname]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def add(self, name: str, value: str) -> None:
        self._items.append((name, value))


@dataclass(slots=True)
class RtspRequest:
    method: str
    uri: str
    version: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    @property
    def cseq(self) -> str | None:
        value = self.headers.get("CSeq")
        return value.strip() if value is not None else None


@dataclass(slots=True)
class RtspResponse:
    status: int
    reason: str
    version: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""


@dataclass(slots=True)
class InterleavedFrame:
    channel: int
    data: bytes


RtspEvent = RtspRequest | RtspResponse | InterleavedFrame


class RtspParser:
    """Incremental parser: :meth:`feed` returns every complete event so far.

    After an :class:`RtspParseError` the stream is out of sync; the caller
    answers with ``error.status`` and closes the connection.
    """

    def __init__(self, max_header_bytes: int = MAX_HEADER_BYTES, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.max_header_bytes = max_header_bytes
        self.max_body_bytes = max_body_bytes
        self._buf = bytearray()
        self._scan_from = 0  # where to resume looking for the end of a header block
        self._head: RtspRequest | RtspResponse | None = None
        self._body_len = 0

    def feed(self, data: bytes) -> list[RtspEvent]:
        self._buf += data
        events: list[RtspEvent] = []
        buf = self._buf
        while buf:
            if self._head is not None:
                if len(buf) < self._body_len:
                    break
                head = self._head
                head.body = bytes(buf[: self._body_len])
                del buf[: self._body_len]
                self._head = None
                events.append(head)
                continue
            first = buf[0]
            if first == 0x24:  # '$'
                if len(buf) < 4:
                    break
                size = buf[2] << 8 | buf[3]
                if len(buf) < 4 + size:
                    break
                events.append(InterleavedFrame(buf[1], bytes(buf[4 : 4 + size])))
                del buf[: 4 + size]
                continue
            if first in (0x0D, 0x0A):  # stray line ends between messages
                del buf[:1]
                continue
            end, sep_len = self._find_head_end()
            if end < 0:
                if len(buf) > self.max_header_bytes:
                    raise RtspParseError(f"header block exceeds {self.max_header_bytes} bytes", 400)
                break
            if end > self.max_header_bytes:
                raise RtspParseError(f"header block exceeds {self.max_header_bytes} bytes", 400)
            head_bytes = bytes(buf[:end])
            del buf[: end + sep_len]
            self._scan_from = 0
            message = self._parse_head(head_bytes)
            length = self._content_length(message.headers)
            if length:
                self._head = message
                self._body_len = length
                continue
            events.append(message)
        return events

    def _find_head_end(self) -> tuple[int, int]:
        buf = self._buf
        start = max(0, self._scan_from - 3)
        crlf = buf.find(b"\r\n\r\n", start)
        lf = buf.find(b"\n\n", start)
        if crlf < 0 and lf < 0:
            self._scan_from = len(buf)
            return -1, 0
        if crlf >= 0 and (lf < 0 or crlf < lf):
            return crlf, 4
        return lf, 2

    def _content_length(self, headers: Headers) -> int:
        value = headers.get("Content-Length")
        if value is None:
            return 0
        value = value.strip()
        if not value.isdigit():
            raise RtspParseError(f"bad Content-Length {value[:40]!r}", 400)
        length = int(value)
        if length > self.max_body_bytes:
            raise RtspParseError(f"body of {length} bytes exceeds {self.max_body_bytes}", 413)
        return length

    def _parse_head(self, raw: bytes) -> RtspRequest | RtspResponse:
        text = raw.decode("utf-8", "replace")
        lines = text.replace("\r\n", "\n").split("\n")
        start = lines[0].strip()
        items: list[tuple[str, str]] = []
        if len(lines) - 1 > MAX_HEADER_LINES:
            raise RtspParseError(f"more than {MAX_HEADER_LINES} header lines", 400)
        for line in lines[1:]:
            if not line:
                continue
            if line[0] in " \t" and items:  # obsolete line folding
                name, value = items[-1]
                items[-1] = (name, value + " " + line.strip())
                continue
            name, sep, value = line.partition(":")
            if not sep or not name.strip() or " " in name.strip():
                raise RtspParseError(f"malformed header line {line[:60]!r}", 400)
            items.append((name.strip(), value.strip()))
        headers = Headers(items)
        parts = start.split(" ")
        if start.startswith("RTSP/"):
            if len(parts) < 2 or not parts[1].isdigit():
                raise RtspParseError(f"malformed status line {start[:60]!r}", 400)
            return RtspResponse(int(parts[1]), " ".join(parts[2:]), parts[0], headers)
        if len(parts) != 3 or not _METHOD.match(parts[0]):
            raise RtspParseError(f"malformed request line {start[:80]!r}", 400)
        method, uri, version = parts
        if not version.startswith("RTSP/"):
            raise RtspParseError(f"not an RTSP request: {start[:80]!r}", 400)
        if version != "RTSP/1.0":
            raise RtspParseError(f"unsupported version {version[:20]!r}", 505)
        return RtspRequest(method, uri, version, headers)


def encode_response(status: int, headers: list[tuple[str, str]], body: bytes = b"", reason: str | None = None) -> bytes:
    """An RTSP/1.0 response; ``Content-Length`` is added when there is a body."""
    lines = [f"RTSP/1.0 {status} {reason or reason_phrase(status)}"]
    lines += [f"{name}: {value}" for name, value in headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def encode_request(method: str, uri: str, headers: list[tuple[str, str]], body: bytes = b"") -> bytes:
    """An RTSP/1.0 request (the client side); ``Content-Length`` is added when there is a body."""
    if not _METHOD.match(method) or any(c in uri for c in " \r\n"):
        raise ValueError(f"cannot send RTSP request {method[:20]!r} {uri[:80]!r}")
    lines = [f"{method} {uri} RTSP/1.0"]
    lines += [f"{name}: {value}" for name, value in headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def encode_interleaved(channel: int, data: bytes) -> bytes:
    if not 0 <= channel <= 255 or len(data) > 0xFFFF:
        raise ValueError(f"cannot interleave {len(data)} bytes on channel {channel}")
    return bytes((0x24, channel, len(data) >> 8, len(data) & 0xFF)) + data


def http_date(t: float) -> str:
    return formatdate(t, usegmt=True)


# ---------------------------------------------------------------------------
# Transport header (RFC 2326 12.39)
# ---------------------------------------------------------------------------


@dataclass(slots=True)
class TransportSpec:
    """One alternative of a ``Transport`` header."""

    protocol: str = "RTP/AVP"  # RTP/AVP, RTP/AVP/UDP, RTP/AVP/TCP
    multicast: bool = False
    interleaved: tuple[int, int] | None = None
    client_port: tuple[int, int] | None = None
    server_port: tuple[int, int] | None = None
    mode: str = ""
    ssrc: int | None = None
    destination: str = ""
    other: list[str] = field(default_factory=list)

    @property
    def tcp(self) -> bool:
        return self.protocol.upper().endswith("/TCP")


def _port_range(name: str, value: str) -> tuple[int, int]:
    first, sep, second = value.partition("-")
    try:
        a = int(first)
        b = int(second) if sep else a + 1
    except ValueError:
        raise RtspParseError(f"Transport {name}={value[:30]!r} is not a number pair", 461) from None
    limit = 255 if name == "interleaved" else 65535
    if not (0 <= a <= limit and 0 <= b <= limit):
        raise RtspParseError(f"Transport {name}={value[:30]!r} out of range", 461)
    return a, b


def parse_transport(value: str) -> list[TransportSpec]:
    """All alternatives of a ``Transport`` header, in the client's order.

    :raises RtspParseError: (461) an alternative we cannot read at all.
    """
    specs: list[TransportSpec] = []
    for alternative in value.split(","):
        alternative = alternative.strip()
        if not alternative:
            continue
        fields = [f.strip() for f in alternative.split(";") if f.strip()]
        proto = fields[0].upper()
        if not proto.startswith("RTP/AVP"):
            spec = TransportSpec(protocol=fields[0], other=fields[1:])
            specs.append(spec)
            continue
        spec = TransportSpec(protocol=proto)
        for f in fields[1:]:
            key, sep, val = f.partition("=")
            key = key.strip().lower()
            val = val.strip().strip('"')
            if key == "unicast":
                spec.multicast = False
            elif key == "multicast":
                spec.multicast = True
            elif key == "interleaved":
                spec.interleaved = _port_range(key, val)
            elif key == "client_port":
                spec.client_port = _port_range(key, val)
            elif key == "server_port":
                spec.server_port = _port_range(key, val)
            elif key == "mode":
                spec.mode = val.lower()
            elif key == "ssrc":
                try:
                    spec.ssrc = int(val, 16)
                except ValueError:
                    raise RtspParseError(f"Transport ssrc={val[:20]!r} is not hexadecimal", 461) from None
            elif key == "destination":
                spec.destination = val
            else:
                spec.other.append(f)
        specs.append(spec)
    if not specs:
        raise RtspParseError("empty Transport header", 461)
    return specs


def format_transport(spec: TransportSpec) -> str:
    parts = [spec.protocol, "multicast" if spec.multicast else "unicast"]
    if spec.interleaved is not None:
        parts.append(f"interleaved={spec.interleaved[0]}-{spec.interleaved[1]}")
    if spec.client_port is not None:
        parts.append(f"client_port={spec.client_port[0]}-{spec.client_port[1]}")
    if spec.server_port is not None:
        parts.append(f"server_port={spec.server_port[0]}-{spec.server_port[1]}")
    if spec.ssrc is not None:
        parts.append(f"ssrc={spec.ssrc:08X}")
    if spec.mode:
        parts.append(f"mode={spec.mode}")
    return ";".join(parts)
