"""RTSP auth (rtsp/auth.py): Digest and Basic through fake ``core.rtsp_realm``
/ ``core.rtsp_auth``, nonces, the delayed 401, on StringTransport and
task.Clock.
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

import pytest
from twisted.internet import defer
from twisted.logger import LogEvent, LogLevel

from mediasrv.hooks.model import AccessRequest, Action
from tests.rtsp.support import URL, Harness, headers, mediasrv_lines, ours


class FakeAuth:
    def __init__(self, realm: str, password: str, encrypted: bool = False) -> None:
        self.realm = realm
        self.password = password
        self.encrypted = encrypted
        self.realm_calls: list[AccessRequest] = []
        self.auth_calls: list[tuple[str, str, bool]] = []

    def rtsp_realm(self, request: AccessRequest) -> defer.Deferred[str]:
        self.realm_calls.append(request)
        return defer.succeed(self.realm)

    def rtsp_auth(self, request: AccessRequest, user: str, realm: str, must_no_encrypt: bool
                  ) -> defer.Deferred[tuple[bool, str]]:
        self.auth_calls.append((user, realm, must_no_encrypt))
        if self.encrypted and not must_no_encrypt:
            return defer.succeed((True, hashlib.md5(f"{user}:{realm}:{self.password}".encode()).hexdigest()))
        return defer.succeed((False, self.password))


def install(h: Harness, auth: FakeAuth) -> None:
    """Answer ``core.rtsp_realm`` / ``core.rtsp_auth`` (on_rtsp_realm / on_rtsp_auth) with ``auth``."""
    setattr(h.core, "rtsp_realm", auth.rtsp_realm)  # noqa: B010  # an instance attribute over the method
    setattr(h.core, "rtsp_auth", auth.rtsp_auth)  # noqa: B010


def md5(s: str) -> str:
    return hashlib.md5(s.encode()).hexdigest()


def digest_header(resp_401: Any, user: str, password: str, method: str = "DESCRIBE", uri: str = URL) -> str:
    challenge = headers(resp_401)["www-authenticate"]
    realm = re.search(r'realm="([^"]*)"', challenge).group(1)  # type: ignore[union-attr]
    nonce = re.search(r'nonce="([^"]*)"', challenge).group(1)  # type: ignore[union-attr]
    response = md5(f"{md5(f'{user}:{realm}:{password}')}:{nonce}:{md5(f'{method}:{uri}')}")
    return f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", response="{response}"'


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_digest_auth(h: Harness, encrypted: bool, log_events: list[LogEvent]) -> None:
    h.publish()
    auth = FakeAuth("mediasrv", "s3cret", encrypted)
    install(h, auth)
    c = h.client()
    first = c.request("DESCRIBE", URL)
    assert first is not None and first.status == 401
    assert re.fullmatch(r'Digest realm="mediasrv", nonce="[0-9a-f]{32}"', headers(first)["www-authenticate"])
    assert not mediasrv_lines(log_events, LogLevel.info)  # the first challenge is routine
    # wrong password: 401 with a fresh nonce, after a delay
    assert c.request("DESCRIBE", URL, [("Authorization", digest_header(first, "alice", "wrong"))]) is None
    h.clock.advance(2)
    second = c.last()
    assert second.status == 401 and headers(second)["www-authenticate"] != headers(first)["www-authenticate"]
    assert auth.auth_calls == [("alice", "mediasrv", False)]
    assert c.proto.auth.failures == 1
    (line,) = mediasrv_lines(log_events, LogLevel.info)
    assert "401" in line and "wrong credentials for user 'alice'" in line
    # the right one
    ok = c.request("DESCRIBE", URL, [("Authorization", digest_header(second, "alice", "s3cret"))])
    assert ok is not None and ok.status == 200
    assert auth.realm_calls[0].action is Action.PLAY and auth.realm_calls[0].schema == "rtsp"


def test_stale_nonce_and_realm_mismatch_fail(h: Harness) -> None:
    h.publish()
    install(h, FakeAuth("mediasrv", "pw"))
    c = h.client()
    first = c.request("DESCRIBE", URL)
    other = h.client()
    foreign = other.request("DESCRIBE", URL)  # a nonce issued on another connection
    assert c.request("DESCRIBE", URL, [("Authorization", digest_header(foreign, "u", "pw"))]) is None
    h.clock.advance(2)
    assert c.last().status == 401
    bad_realm = digest_header(first, "u", "pw").replace('realm="mediasrv"', 'realm="other"')
    c.request("DESCRIBE", URL, [("Authorization", bad_realm)])
    h.clock.advance(2)
    assert c.last().status == 401


def test_basic_auth_only_when_enabled(h: Harness) -> None:

    h.configure("rtsp.authBasic=1")
    h.publish()
    auth = FakeAuth("mediasrv", "pw", encrypted=True)
    install(h, auth)
    c = h.client()
    first = c.request("DESCRIBE", URL)
    assert first is not None and first.headers.get_all("WWW-Authenticate")[1] == 'Basic realm="mediasrv"'
    basic = "Basic " + base64.b64encode(b"bob:pw").decode()
    ok = c.request("DESCRIBE", URL, [("Authorization", basic)])
    assert ok is not None and ok.status == 200
    assert auth.auth_calls == [("bob", "mediasrv", True)]  # must_no_encrypt: Basic needs the plaintext


def test_basic_auth_refused_when_disabled(h: Harness) -> None:

    h.publish()
    install(h, FakeAuth("mediasrv", "pw"))
    c = h.client()
    c.request("DESCRIBE", URL)
    assert c.request("DESCRIBE", URL, [("Authorization", "Basic " + base64.b64encode(b"bob:pw").decode())]) is None
    h.clock.advance(2)
    assert c.last().status == 401


def test_empty_realm_uses_the_play_gate(h: Harness) -> None:
    h.publish()
    auth = FakeAuth("", "pw")
    install(h, auth)
    c = h.client()
    r = c.request("DESCRIBE", URL)
    assert r is not None and r.status == 200 and auth.realm_calls and not auth.auth_calls


def test_leaving_during_the_auth_delay_cancels_it(h: Harness) -> None:
    h.publish()
    install(h, FakeAuth("mediasrv", "pw"))
    c = h.client()
    first = c.request("DESCRIBE", URL)
    c.request("DESCRIBE", URL, [("Authorization", digest_header(first, "u", "bad"))])
    assert ours(h)
    c.drop()
    assert not ours(h)
