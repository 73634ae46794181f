"""RTSP Digest / Basic (rtsp/digest.py)."""

from __future__ import annotations

import hashlib

import pytest

from mediasrv.rtsp import digest
from mediasrv.rtsp.digest import AuthError, BasicCredentials, DigestCredentials


def md5(s: str) -> str:
    return hashlib.md5(s.encode()).hexdigest()


def test_rfc2617_example_with_qop() -> None:
    # RFC 2617 3.5: the Mufasa example.
    header = ('Digest username="Mufasa", realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", '
              'uri="/dir/index.html", qop=auth, nc=00000001, cnonce="0a4f113b", '
              'response="6629fae49393a05397450978507c4ef1", opaque="5ccc069c403ebaf9f0171e9517f40e41"')
    creds = digest.parse_authorization(header)
    assert isinstance(creds, DigestCredentials)
    assert creds.username == "Mufasa" and creds.qop == "auth" and creds.nc == "00000001"
    assert digest.verify_digest(creds, "GET", password="Circle Of Life")
    assert not digest.verify_digest(creds, "GET", password="circle of life")
    assert digest.verify_digest(creds, "GET", ha1_hex=digest.ha1("Mufasa", "testrealm@host.com", "Circle Of Life"))


def test_rfc2069_form_as_ffmpeg_and_live555_send_it() -> None:
    nonce = digest.new_nonce()
    assert len(nonce) == 32
    uri = "rtsp://127.0.0.1:8554/live/test"
    response = md5(f"{md5('user:mediasrv:pa,ss')}:{nonce}:{md5('DESCRIBE:' + uri)}")
    header = f'Digest username="user", realm="mediasrv", nonce="{nonce}", uri="{uri}", response="{response}"'
    creds = digest.parse_authorization(header)
    assert isinstance(creds, DigestCredentials)
    assert digest.verify_digest(creds, "DESCRIBE", password="pa,ss")
    assert digest.verify_digest(creds, "DESCRIBE", ha1_hex=md5("user:mediasrv:pa,ss").upper())
    assert not digest.verify_digest(creds, "SETUP", password="pa,ss")
    assert not digest.verify_digest(creds, "DESCRIBE")


def test_quoted_values_with_commas_and_escapes() -> None:
    creds = digest.parse_authorization(
        r'Digest username="a\"b,c", realm="r", nonce="n", uri="rtsp://h/x?a=1,2", response="ABC", algorithm=MD5')
    assert isinstance(creds, DigestCredentials)
    assert creds.username == 'a"b,c' and creds.uri == "rtsp://h/x?a=1,2" and creds.response == "abc"


def test_unsupported_algorithms_fail() -> None:
    creds = DigestCredentials("u", "r", "n", "/", "x", algorithm="SHA-256")
    assert not digest.verify_digest(creds, "DESCRIBE", password="p")
    creds = DigestCredentials("u", "r", "n", "/", "x", qop="auth-int")
    assert not digest.verify_digest(creds, "DESCRIBE", password="p")


def test_basic() -> None:
    creds = digest.parse_authorization("Basic dXNlcjpwYTpzcw==")  # user:pa:ss
    assert creds == BasicCredentials("user", "pa:ss")
    assert isinstance(creds, BasicCredentials)
    assert digest.verify_basic(creds, "pa:ss") and not digest.verify_basic(creds, "pass")


@pytest.mark.parametrize("header, message", [
    ("Bearer xyz", "unsupported Authorization scheme"),
    ("Basic !!!", "not base64"),
    ("Basic dXNlcg==", "no ':'"),
    ('Digest username="u", realm="r"', "lacks nonce, uri, response"),
    ('Digest username="u', "unterminated quoted string"),
    ("Digest username", "without a value"),
])
def test_bad_authorization(header: str, message: str) -> None:
    with pytest.raises(AuthError, match=message):
        digest.parse_authorization(header)


def test_challenge() -> None:
    assert digest.challenge('my "realm"', "abc") == ['Digest realm="my \\"realm\\"", nonce="abc"']
    assert digest.challenge("r", "n", basic=True) == ['Digest realm="r", nonce="n"', 'Basic realm="r"']


# -- the client side (relay pulls from cameras) -----------------------------------------------------------


def test_client_answers_are_what_the_server_side_verifies() -> None:
    for value in ('Digest realm="r", nonce="n1"', 'Digest realm="r", nonce="n1", qop="auth", opaque="o"'):
        ch = digest.parse_challenge(value)
        answer = digest.client_authorization(ch, "DESCRIBE", "rtsp://h/live/cam", "bob", "hunter2", cnonce="c0ffee")
        creds = digest.parse_authorization(answer)
        assert isinstance(creds, digest.DigestCredentials)
        assert digest.verify_digest(creds, "DESCRIBE", password="hunter2")
        assert not digest.verify_digest(creds, "DESCRIBE", password="hunter3")
    basic = digest.client_authorization(digest.parse_challenge('Basic realm="r"'), "DESCRIBE", "u", "bob", "pw")
    assert digest.parse_authorization(basic) == digest.BasicCredentials("bob", "pw")


@pytest.mark.parametrize("value", ['Digest realm="r", nonce="n", algorithm=SHA-256',
                                   'Digest realm="r", nonce="n", qop="auth-int"', 'Bearer realm="r"'])
def test_client_refuses_what_it_cannot_answer(value: str) -> None:
    with pytest.raises(digest.AuthError):
        digest.client_authorization(digest.parse_challenge(value), "DESCRIBE", "u", "bob", "pw")


def test_digest_challenge_needs_a_nonce() -> None:
    with pytest.raises(digest.AuthError, match="nonce"):
        digest.parse_challenge('Digest realm="r"')
