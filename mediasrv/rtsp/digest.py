"""RTSP authentication: Digest (RFC 2617, and RFC 2069 without ``qop``) and Basic.

The hook layer never sees the client's password (``hooks.md`` §1.4
``on_rtsp_auth``): it returns either the plaintext password
(``encrypted: false``) or ``H(A1) = md5(user:realm:password)``
(``encrypted: true``), and we check the client's response here — like
``twisted.cred.credentials.DigestedCredentials.checkPassword`` /
``checkHash``, without the Twisted import (this module is pure).

Clients seen in the wild: ffmpeg, live555 (VLC) and GStreamer answer a
challenge without ``qop`` with the RFC 2069 form
``md5(HA1:nonce:md5(method:uri))``; some cameras' clients send ``qop=auth``.
Both are verified.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass

__all__ = [
    "AuthError",
    "BasicCredentials",
    "Challenge",
    "DigestCredentials",
    "challenge",
    "client_authorization",
    "ha1",
    "new_nonce",
    "parse_authorization",
    "parse_challenge",
    "verify_basic",
    "verify_digest",
]


class AuthError(ValueError):
    """An Authorization header we cannot read."""


@dataclass(frozen=True, slots=True)
class DigestCredentials:
    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    qop: str = ""
    nc: str = ""
    cnonce: str = ""
    opaque: str = ""


@dataclass(frozen=True, slots=True)
class BasicCredentials:
    username: str
    password: str


def new_nonce() -> str:
    """A fresh 32-character nonce (the length ZLMediaKit issues)."""
    return secrets.token_hex(16)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def challenge(realm: str, nonce: str, basic: bool = False) -> list[str]:
    """``WWW-Authenticate`` values: Digest always, Basic too when allowed.

    Clients pick the strongest scheme offered (ffmpeg, live555, GStreamer).
    """
    values = [f"Digest realm={_quote(realm)}, nonce={_quote(nonce)}"]
    if basic:
        values.append(f"Basic realm={_quote(realm)}")
    return values


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def ha1(username: str, realm: str, password: str) -> str:
    """``md5(username:realm:password)``: what ``on_rtsp_auth`` returns with ``encrypted: true``."""
    return _md5(f"{username}:{realm}:{password}")


def _parse_params(text: str) -> dict[str, str]:
    """``k="v", k2=token`` → dict, honouring quoted strings with commas and escapes."""
    params: dict[str, str] = {}
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in " ,\t":
            i += 1
        if i >= n:
            break
        eq = text.find("=", i)
        if eq < 0:
            raise AuthError(f"Authorization parameter without a value near {text[i:i + 20]!r}")
        key = text[i:eq].strip().lower()
        i = eq + 1
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] == '"':
            i += 1
            out = []
            while i < n and text[i] != '"':
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                out.append(text[i])
                i += 1
            if i >= n:
                raise AuthError("unterminated quoted string in Authorization")
            i += 1
            value = "".join(out)
        else:
            end = text.find(",", i)
            end = n if end < 0 else end
            value = text[i:end].strip()
            i = end
        if not key:
            raise AuthError("empty Authorization parameter name")
        params[key] = value
    return params


def parse_authorization(value: str) -> DigestCredentials | BasicCredentials:
    """Parse an ``Authorization`` header value.

    :raises AuthError: an unknown scheme, bad base64, or missing Digest fields.
    """
    scheme, _, rest = value.strip().partition(" ")
    scheme = scheme.lower()
    if scheme == "basic":
        try:
            decoded = base64.b64decode(rest.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise AuthError("Basic credentials are not base64 of UTF-8") from None
        user, sep, password = decoded.partition(":")
        if not sep:
            raise AuthError("Basic credentials have no ':'")
        return BasicCredentials(user, password)
    if scheme != "digest":
        raise AuthError(f"unsupported Authorization scheme {scheme[:20]!r}")
    params = _parse_params(rest)
    missing = [k for k in ("username", "realm", "nonce", "uri", "response") if k not in params]
    if missing:
        raise AuthError(f"Digest Authorization lacks {', '.join(missing)}")
    return DigestCredentials(
        username=params["username"],
        realm=params["realm"],
        nonce=params["nonce"],
        uri=params["uri"],
        response=params["response"].lower(),
        algorithm=params.get("algorithm", "MD5"),
        qop=params.get("qop", ""),
        nc=params.get("nc", ""),
        cnonce=params.get("cnonce", ""),
        opaque=params.get("opaque", ""),
    )


def expected_response(creds: DigestCredentials, method: str, ha1_hex: str) -> str:
    ha2 = _md5(f"{method}:{creds.uri}")
    if creds.qop:
        return _md5(f"{ha1_hex}:{creds.nonce}:{creds.nc}:{creds.cnonce}:{creds.qop}:{ha2}")
    return _md5(f"{ha1_hex}:{creds.nonce}:{ha2}")


def verify_digest(creds: DigestCredentials, method: str, *, password: str | None = None,
                  ha1_hex: str | None = None) -> bool:
    """Check a Digest response against the plaintext ``password`` or a precomputed ``ha1_hex``.

    Only MD5 is supported (``algorithm=MD5-sess`` and SHA-256 fail).
    """
    if creds.algorithm.upper() != "MD5":
        return False
    if creds.qop and creds.qop.lower() != "auth":
        return False
    if ha1_hex is None:
        if password is None:
            return False
        ha1_hex = ha1(creds.username, creds.realm, password)
    expected = expected_response(creds, method, ha1_hex.lower())
    return hmac.compare_digest(expected, creds.response)


def verify_basic(creds: BasicCredentials, password: str) -> bool:
    return hmac.compare_digest(creds.password.encode("utf-8"), password.encode("utf-8"))


# ---------------------------------------------------------------------------
# The client side: answering a server's challenge (RTSP pulls from cameras)
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Challenge:
    """One ``WWW-Authenticate`` challenge; ``scheme`` is lower-case, parameter names too."""

    scheme: str
    params: dict[str, str]

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")

    @property
    def stale(self) -> bool:
        return self.params.get("stale", "").lower() == "true"


def parse_challenge(value: str) -> Challenge:
    """Parse one ``WWW-Authenticate`` value (``Digest realm="x", nonce="y"`` or ``Basic realm="x"``).

    :raises AuthError: an unreadable parameter list, or a Digest challenge without a nonce.
    """
    scheme, _, rest = value.strip().partition(" ")
    ch = Challenge(scheme.lower(), _parse_params(rest))
    if ch.scheme == "digest" and "nonce" not in ch.params:
        raise AuthError("Digest challenge without a nonce")
    return ch


def client_authorization(ch: Challenge, method: str, uri: str, username: str, password: str, *,
                         nc: int = 1, cnonce: str | None = None) -> str:
    """The ``Authorization`` value answering ``ch`` for one request.

    Digest is MD5 (RFC 2617 ``qop=auth`` when the server offers it, the RFC
    2069 form otherwise, as ffmpeg and live555 answer); Basic is RFC 7617.

    :raises AuthError: a scheme or algorithm we cannot answer.
    """
    if ch.scheme == "basic":
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        return f"Basic {token}"
    if ch.scheme != "digest":
        raise AuthError(f"unsupported authentication scheme {ch.scheme[:20]!r}")
    algorithm = ch.params.get("algorithm", "MD5")
    if algorithm.upper() != "MD5":
        raise AuthError(f"unsupported Digest algorithm {algorithm[:20]!r}")
    offered = [q.strip().lower() for q in ch.params.get("qop", "").split(",") if q.strip()]
    qop = "auth" if "auth" in offered else ""
    if offered and not qop:
        raise AuthError(f"unsupported Digest qop {ch.params['qop'][:30]!r}")
    creds = DigestCredentials(username=username, realm=ch.realm, nonce=ch.params["nonce"], uri=uri, response="",
                              algorithm=algorithm, qop=qop, nc=f"{nc:08x}" if qop else "",
                              cnonce=(cnonce or new_nonce()[:16]) if qop else "", opaque=ch.params.get("opaque", ""))
    response = expected_response(creds, method, ha1(username, ch.realm, password))
    parts = [f"username={_quote(username)}", f"realm={_quote(ch.realm)}", f"nonce={_quote(creds.nonce)}",
             f"uri={_quote(uri)}", f"response={_quote(response)}"]
    if "algorithm" in ch.params:
        parts.append(f"algorithm={algorithm}")
    if creds.opaque:
        parts.append(f"opaque={_quote(creds.opaque)}")
    if qop:
        parts += [f"qop={qop}", f"nc={creds.nc}", f"cnonce={_quote(creds.cnonce)}"]
    return "Digest " + ", ".join(parts)
