"""Relay tokens and the loop guard of internal pulls."""

from __future__ import annotations

import urllib.parse

import pytest

from mediasrv.cluster import token
from mediasrv.cluster.directory import OwnerInfo

KEY = "__defaultVhost__/live/cam"


def test_sign_and_verify() -> None:
    t = token.sign("s3cret", KEY, "node.b:1", 1000)
    grant = token.verify("s3cret", t, KEY, now=999.5)
    assert grant == token.RelayGrant("node.b:1", 1000)
    assert "s3cret" not in t


@pytest.mark.parametrize(("secret", "tok_key", "now", "why"), [
    ("other", KEY, 900, "does not match"),
    ("s3cret", "__defaultVhost__/live/other", 900, "does not match"),
    ("s3cret", KEY, 1001, "expired 1 s ago"),
])
def test_verify_refuses(secret: str, tok_key: str, now: float, why: str) -> None:
    t = token.sign("s3cret", KEY, "node-b", 1000)
    with pytest.raises(token.InvalidToken, match=why):
        token.verify(secret, t, tok_key, now)


@pytest.mark.parametrize("bad", ["", "x", "v1.1.2", "v2.1000.bm9kZQ.mac", "v1.soon.bm9kZQ.mac", "v1.1000.%%%.mac"])
def test_malformed_tokens(bad: str) -> None:
    with pytest.raises(token.InvalidToken, match="malformed"):
        token.verify("s3cret", bad, KEY, 0)


def test_tampered_node_or_expiry() -> None:
    t = token.sign("s3cret", KEY, "node-b", 1000).split(".")
    forged_expiry = ".".join([t[0], "99999", t[2], t[3]])
    forged_node = ".".join([t[0], t[1], token._b64(b"node-c"), t[3]])
    for forged in (forged_expiry, forged_node):
        with pytest.raises(token.InvalidToken):
            token.verify("s3cret", forged, KEY, 0)


def test_no_secret_no_tokens() -> None:
    with pytest.raises(ValueError):
        token.sign("", KEY, "n", 1)
    with pytest.raises(token.InvalidToken, match="no \\[cluster\\] secret"):
        token.verify("", "v1.1.bg.x", KEY, 0)


def test_relay_request_from_query() -> None:
    assert token.relay_request({"token": "abc"}) is None  # an ordinary player
    assert token.relay_request({"ms_relay": "t", "ms_hop": "2"}) == token.RelayRequest("t", 2)
    assert token.relay_request({"ms_relay": "t"}) == token.RelayRequest("t", 1)
    with pytest.raises(token.RelayLoop, match="3 hops"):
        token.relay_request({"ms_relay": "t", "ms_hop": "3"})
    with pytest.raises(token.RelayLoop, match="bad ms_hop"):
        token.relay_request({"ms_relay": "t", "ms_hop": "-1"})


def test_check_pull_refuses_ourselves_and_long_chains() -> None:
    me = OwnerInfo("node-a", "e1", 1)
    owner = OwnerInfo("node-b", "e2", 0)
    assert token.check_pull(owner, me, 0) == 1
    assert token.check_pull(OwnerInfo("node-a", "e1", 0), me, 0) == 1  # another worker of ours
    assert token.check_pull(owner, me, 1) == 2  # an edge relaying what it relays
    with pytest.raises(token.RelayLoop, match="names this process"):
        token.check_pull(OwnerInfo("node-a", "e1", 1), me, 0)
    with pytest.raises(token.RelayLoop, match="3 hops"):
        token.check_pull(owner, me, 2)


def test_relay_url_carries_token_hop_and_player_args_apart() -> None:
    url = token.relay_url("http://10.0.0.5:8080/", "/live/cam.live.flv", "v1.1.bg.mac", 1, "token=abc&x=1")
    base, _, query = url.partition("?")
    assert base == "http://10.0.0.5:8080/live/cam.live.flv"
    q = dict(urllib.parse.parse_qsl(query))
    assert q == {"ms_relay": "v1.1.bg.mac", "ms_hop": "1", "ms_args": "token=abc&x=1"}
    assert token.relay_request(q) == token.RelayRequest("v1.1.bg.mac", 1)
