"""Internal relays between workers and nodes: the signed token and the loop guard.

A process that pulls a stream from its owner adds two query parameters to the owner's URL:
``ms_relay`` (an HMAC-SHA256 token over the stream key, the pulling node and an expiry, with
``[cluster] secret``) and ``ms_hop`` (how many internal pulls this one is away from the
source).  The owner serves such a pull without asking any hook, and only when the token is
valid for that key; a pull more than :data:`MAX_HOPS` away, or one that would pull from
ourselves, is refused (the loop guard).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass

from mediasrv.cluster.directory import OwnerInfo

TOKEN_PARAM = "ms_relay"
HOP_PARAM = "ms_hop"
MAX_HOPS = 2
TOKEN_LIFETIME = 60  # seconds; a token is checked when the pull starts, not afterwards
_VERSION = "v1"


class InvalidToken(ValueError):
    """``str`` says why, for one log line (never the secret or the expected MAC)."""


class RelayLoop(ValueError):
    """An internal pull that would go in a circle or too far."""


@dataclass(frozen=True)
class RelayGrant:
    node: str
    expiry: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)


def _mac(secret: str, key: str, node: str, expiry: int) -> str:
    msg = f"{_VERSION}|{key}|{node}|{expiry}".encode()
    return _b64(hmac.new(secret.encode(), msg, hashlib.sha256).digest())


def sign(secret: str, key: str, node: str, expiry: int) -> str:
    """A token letting ``node`` pull stream ``key`` until ``expiry`` (unix seconds)."""
    if not secret:
        raise ValueError("no [cluster] secret to sign relay tokens with")
    return f"{_VERSION}.{expiry}.{_b64(node.encode())}.{_mac(secret, key, node, expiry)}"


def verify(secret: str, token: str, key: str, now: float) -> RelayGrant:
    """The grant in ``token`` for ``key`` at time ``now``; InvalidToken otherwise."""
    if not secret:
        raise InvalidToken("relay tokens are not accepted: no [cluster] secret")
    parts = token.split(".")
    if len(parts) != 4 or parts[0] != _VERSION:
        raise InvalidToken("malformed relay token")
    try:
        expiry = int(parts[1])
        node = _unb64(parts[2]).decode()
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidToken("malformed relay token") from None
    if not hmac.compare_digest(parts[3], _mac(secret, key, node, expiry)):
        raise InvalidToken(f"relay token from {node!r} does not match stream {key!r}")
    if expiry < now:
        raise InvalidToken(f"relay token from {node!r} expired {int(now - expiry)} s ago")
    return RelayGrant(node, expiry)


@dataclass(frozen=True)
class RelayRequest:
    """What an incoming pull says about itself: its token and hop count."""

    token: str
    hop: int


def relay_request(params: Mapping[str, str]) -> RelayRequest | None:
    """The relay parameters of a request's query, or None for an ordinary client.

    RelayLoop for a hop count that is not a number or is past :data:`MAX_HOPS`."""
    token = params.get(TOKEN_PARAM)
    if token is None:
        return None
    raw = params.get(HOP_PARAM, "1")
    if not raw.isdigit():
        raise RelayLoop(f"bad {HOP_PARAM} {raw!r}")
    hop = int(raw)
    if hop > MAX_HOPS:
        raise RelayLoop(f"relay is {hop} hops from its source (at most {MAX_HOPS})")
    return RelayRequest(token, hop)


def check_pull(owner: OwnerInfo, me: OwnerInfo, hop: int) -> int:
    """Guard an internal pull ``me`` is about to start from ``owner``; returns its hop count.

    ``hop`` is our own distance from the source (0 when we serve no relay ourselves)."""
    if owner.same_process(me):
        raise RelayLoop(f"the directory names this process ({me.node}/{me.worker}) as the owner")
    if hop + 1 > MAX_HOPS:
        raise RelayLoop(f"a pull from {owner.node}/{owner.worker} would be {hop + 1} hops from the source")
    return hop + 1


def relay_url(base: str, path: str, token: str, hop: int, player_params: str = "") -> str:
    """``base`` + ``path`` with the relay parameters; the player's own query travels in ``ms_args``
    so it cannot be confused with ours."""
    query = {TOKEN_PARAM: token, HOP_PARAM: str(hop)}
    if player_params:
        query["ms_args"] = player_params
    return f"{base.rstrip('/')}/{path.lstrip('/')}?{urllib.parse.urlencode(query)}"
