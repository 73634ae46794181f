"""The web root is sealed: raw-socket requests against the real server
(``twistd -n mediasrv``) trying ``..``, ``%2e%2e``, ``//etc/passwd``, NUL,
absolute URIs and symlinks pointing out all fail, and no byte of a file
outside ``http.rootPath`` comes back."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import Server, running_server

MARKER = b"MEDIASRV-OUTSIDE-THE-ROOT"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    work = tmp_path_factory.mktemp("static")
    www = work / "www"
    (www / "vod").mkdir(parents=True)
    (www / "vod" / "a.txt").write_bytes(b"inside")
    (work / "secret.txt").write_bytes(MARKER)
    os.symlink(work / "secret.txt", www / "leak.txt")
    os.symlink(work, www / "up")
    with running_server(work) as srv:
        yield srv, work


def raw(port: int, request: bytes) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0
    return status, data


def get(port: int, target: bytes) -> tuple[int, bytes]:
    return raw(port, b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")


def test_a_file_inside_is_served(server: tuple[Server, Path]) -> None:
    srv, _ = server
    status, data = get(srv.http_port, b"/vod/a.txt")
    assert status == 200 and data.endswith(b"\r\n\r\ninside")


ATTEMPTS = [
    b"/../secret.txt", b"/vod/../../secret.txt", b"/%2e%2e/secret.txt", b"/%2E%2E/secret.txt",
    b"/%2e./secret.txt", b"/.%2e/secret.txt", b"/vod/%2e%2e/%2e%2e/secret.txt", b"/..%2fsecret.txt",
    b"/%2e%2e%2fsecret.txt", b"/vod/..%2f..%2fsecret.txt", b"/%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    b"//etc/passwd", b"/../../../../../../etc/passwd", b"/..\\secret.txt", b"/vod/..;/../secret.txt",
    b"/leak.txt", b"/up/secret.txt", b"/up/www/../secret.txt", b"/vod/a.txt%00.txt", b"/%00../secret.txt",
    b"http://127.0.0.1/../secret.txt", b"/%252e%252e/secret.txt",
]


@pytest.mark.parametrize("target", ATTEMPTS, ids=[a.decode("latin-1") for a in ATTEMPTS])
def test_traversal_is_refused(server: tuple[Server, Path], target: bytes) -> None:
    srv, _ = server
    status, data = get(srv.http_port, target)
    assert status in (400, 403, 404), data[:200]
    assert MARKER not in data and b"root:" not in data


def test_raw_nul_in_the_request_line(server: tuple[Server, Path]) -> None:
    srv, _ = server
    status, data = get(srv.http_port, b"/vod/a.txt\x00/../../secret.txt")
    assert status in (0, 400, 403, 404) and MARKER not in data


def test_dot_segments_spread_over_requests_on_one_connection(server: tuple[Server, Path]) -> None:
    srv, _ = server
    req = b"".join(b"GET " + t + b" HTTP/1.1\r\nHost: x\r\n\r\n" for t in (b"/vod/a.txt", b"/../secret.txt"))
    status, data = raw(srv.http_port, req + b"GET /vod/a.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert data.count(b"HTTP/1.1 200") == 2 and MARKER not in data
