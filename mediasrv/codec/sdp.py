"""SDP (RFC 8866 / 4566) as RTSP uses it: parse what publishers ANNOUNCE and
write what DESCRIBE answers (sans-IO).

Only the lines RTSP needs are interpreted (``v o s c t b m a``); everything
else is kept verbatim so nothing a client sent is lost.  ``rtpmap`` and
``fmtp`` (RFC 8866 6.6 / 6.15) get helpers because every codec mapping needs
them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mediasrv.codec.bits import CodecError

__all__ = ["MediaDescription", "SdpError", "SessionDescription", "parse_fmtp", "parse_sdp"]

MAX_SDP_BYTES = 64 * 1024


class SdpError(CodecError):
    """An SDP body we cannot use."""


@dataclass(slots=True)
class MediaDescription:
    """One ``m=`` section."""

    media: str  # video, audio, application...
    port: int
    proto: str
    formats: list[str]
    attributes: list[tuple[str, str]] = field(default_factory=list)
    other: list[tuple[str, str]] = field(default_factory=list)  # other lines (c=, b=, i=...) in order

    def attribute(self, name: str) -> str | None:
        for key, value in self.attributes:
            if key == name:
                return value
        return None

    def attributes_named(self, name: str) -> list[str]:
        return [value for key, value in self.attributes if key == name]

    @property
    def control(self) -> str | None:
        return self.attribute("control")

    def rtpmap(self, payload_type: int | str) -> tuple[str, int, int] | None:
        """``(encoding, clock rate, channels)`` of ``a=rtpmap:<pt> ...`` (channels 0 when absent)."""
        pt = str(payload_type)
        for value in self.attributes_named("rtpmap"):
            key, _, rest = value.partition(" ")
            if key.strip() != pt:
                continue
            parts = rest.strip().split("/")
            try:
                rate = int(parts[1]) if len(parts) > 1 else 0
                channels = int(parts[2]) if len(parts) > 2 and parts[2] else 0
            except ValueError:
                raise SdpError(f"bad rtpmap {value!r}") from None
            return parts[0], rate, channels
        return None

    def fmtp(self, payload_type: int | str) -> dict[str, str]:
        pt = str(payload_type)
        for value in self.attributes_named("fmtp"):
            key, _, rest = value.partition(" ")
            if key.strip() == pt:
                return parse_fmtp(rest)
        return {}

    def lines(self) -> list[str]:
        out = [f"m={self.media} {self.port} {self.proto} {' '.join(self.formats)}"]
        out += [f"{k}={v}" for k, v in self.other]
        out += [f"a={k}:{v}" if v != "" else f"a={k}" for k, v in self.attributes]
        return out


@dataclass(slots=True)
class SessionDescription:
    origin: str = "- 0 0 IN IP4 127.0.0.1"
    name: str = "-"
    connection: str = "IN IP4 0.0.0.0"
    timing: str = "0 0"
    attributes: list[tuple[str, str]] = field(default_factory=list)
    other: list[tuple[str, str]] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)

    def attribute(self, name: str) -> str | None:
        for key, value in self.attributes:
            if key == name:
                return value
        return None

    @property
    def control(self) -> str | None:
        return self.attribute("control")

    def serialize(self) -> str:
        out = ["v=0", f"o={self.origin}", f"s={self.name}"]
        if self.connection:
            out.append(f"c={self.connection}")
        out.append(f"t={self.timing}")
        out += [f"{k}={v}" for k, v in self.other]
        out += [f"a={k}:{v}" if v != "" else f"a={k}" for k, v in self.attributes]
        for m in self.media:
            out += m.lines()
        return "\r\n".join(out) + "\r\n"


def parse_fmtp(params: str) -> dict[str, str]:
    """``"packetization-mode=1; sprop-parameter-sets=Z0..,aM.."`` → dict (keys lower-cased)."""
    out: dict[str, str] = {}
    for item in params.split(";"):
        item = item.strip()
        if not item:
            continue
        key, _, value = item.partition("=")
        out[key.strip().lower()] = value.strip()
    return out


def _attribute(value: str) -> tuple[str, str]:
    name, sep, rest = value.partition(":")
    return name.strip(), rest.strip() if sep else ""


def parse_sdp(text: str | bytes) -> SessionDescription:
    """Parse an SDP body.  Lenient about line endings and unknown lines, strict
    about what a media section needs (``m=<media> <port> <proto> <fmt...>``).

    :raises SdpError: too large, not an SDP, or a malformed ``m=`` line.
    """
    if isinstance(text, bytes):
        if len(text) > MAX_SDP_BYTES:
            raise SdpError(f"SDP of {len(text)} bytes exceeds {MAX_SDP_BYTES}")
        text = text.decode("utf-8", "replace")
    sd = SessionDescription(origin="", name="", connection="", timing="")
    current: MediaDescription | None = None
    seen_version = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if len(line) < 2 or line[1] != "=":
            raise SdpError(f"not an SDP line: {line[:60]!r}")
        kind, value = line[0], line[2:]
        if kind == "v":
            seen_version = True
            continue
        if kind == "m":
            parts = value.split()
            if len(parts) < 4:
                raise SdpError(f"malformed media line: {line[:80]!r}")
            port_text = parts[1].split("/")[0]
            if not port_text.isdigit():
                raise SdpError(f"malformed port in media line: {line[:80]!r}")
            current = MediaDescription(parts[0], int(port_text), parts[2], parts[3:])
            sd.media.append(current)
        elif kind == "a":
            (current.attributes if current is not None else sd.attributes).append(_attribute(value))
        elif current is not None:
            current.other.append((kind, value))
        elif kind == "o":
            sd.origin = value
        elif kind == "s":
            sd.name = value
        elif kind == "c":
            sd.connection = value
        elif kind == "t":
            sd.timing = value
        else:
            sd.other.append((kind, value))
    if not seen_version:
        raise SdpError("SDP has no v= line")
    return sd
