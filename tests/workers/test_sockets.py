"""Worker sockets: SO_REUSEPORT groups, one-line errors, the environment a worker reads."""

from __future__ import annotations

import os
import socket
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.threads import deferToThread

from mediasrv import config
from mediasrv.workers.sockets import (
    ListenError,
    ListenSpec,
    WorkerEnv,
    adopted_endpoints,
    decode_fds,
    encode_fds,
    internal_socket_path,
    listen_specs,
    open_worker_sockets,
    worker_env,
)
from mediasrv.workers.supervisor import resolve_workers
from tests.support.server import free_port

R: Any = reactor


def test_fds_round_trip_and_errors() -> None:
    fds = {"rtmp": 4, "http": 5, "rtmp.direct": 6}
    assert decode_fds(encode_fds(fds)) == fds
    assert decode_fds("") == {}
    for bad in ["rtmp", "rtmp:x", ":4", "rtmp:-1"]:
        with pytest.raises(ValueError, match="bad MEDIASRV_FDS entry"):
            decode_fds(bad)


def test_worker_env() -> None:
    assert worker_env({}) is None
    env = worker_env({"MEDIASRV_FDS": "rtmp:4", "MEDIASRV_WORKER_INDEX": "1", "MEDIASRV_WORKERS": "2",
                      "MEDIASRV_CONTROL_FD": "3", "MEDIASRV_EPOCH": "ep"})
    assert env == WorkerEnv(1, 2, {"rtmp": 4}, 3, "ep")


def test_resolve_workers() -> None:
    assert resolve_workers("3") == 3
    assert resolve_workers("auto", cpus=8) == 8
    assert resolve_workers("auto") >= 1


def test_listen_specs_follow_the_config() -> None:
    c = config.load(None, ["general.listen_ip=127.0.0.1", "rtmp.port=1940", "rtsp.port=0", "http.port=8090",
                           "shell.port=9001"])
    assert listen_specs(c) == [ListenSpec("rtmp", "[rtmp] port", "127.0.0.1", 1940),
                               ListenSpec("http", "[http] port", "127.0.0.1", 8090),
                               ListenSpec("shell", "[shell] port", "127.0.0.1", 9001)]


def test_one_reuseport_socket_per_worker_and_direct_sockets() -> None:
    port = free_port()
    opened = open_worker_sockets([ListenSpec("echo", "[t] port", "127.0.0.1", port)], 3, port_offset=0)
    try:
        assert [sorted(s) for s in opened] == [["echo"]] * 3
        assert {s["echo"].getsockname()[1] for s in opened} == {port}
        assert all(s["echo"].getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) for s in opened)
    finally:
        for socks in opened:
            for s in socks.values():
                s.close()


def test_a_port_held_by_another_program_is_one_line_and_nothing_stays_open() -> None:
    free = free_port()
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        taken = other.getsockname()[1]
        specs = [ListenSpec("rtmp", "[rtmp] port", "127.0.0.1", free), ListenSpec("http", "[http] port", "127.0.0.1",
                                                                                   taken)]
        with pytest.raises(ListenError) as exc:
            open_worker_sockets(specs, 2, source="m.ini")
    assert str(exc.value) == f"mediasrv: m.ini: [http] port: cannot listen on 127.0.0.1:{taken}: Address already in use"
    with socket.socket() as again:  # the sockets opened before the failure were closed
        again.bind(("127.0.0.1", free))


@pytest_twisted.ensureDeferred
async def test_adopted_endpoint_serves_on_the_inherited_socket() -> None:
    port = free_port()
    opened = open_worker_sockets([ListenSpec("echo", "[t] port", "127.0.0.1", port)], 1)
    sock = opened[0]["echo"]
    fd = socket.dup(sock.fileno())  # what a worker inherits
    endpoints = adopted_endpoints(R, WorkerEnv(0, 1, {"echo": fd}, None, ""))

    class Hello(Protocol):
        def connectionMade(self) -> None:
            assert self.transport is not None
            self.transport.write(b"hi\n")
            self.transport.loseConnection()

    listening = await endpoints["echo"].listen(Factory.forProtocol(Hello))
    try:
        def fetch() -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
                return c.recv(10)

        assert await deferToThread(fetch) == b"hi\n"
    finally:
        await listening.stopListening()
        sock.close()


def test_internal_unix_socket_per_worker(tmp_path: Any) -> None:
    opened = open_worker_sockets([], 2, internal_dir=str(tmp_path))
    try:
        for i in (0, 1):
            path = internal_socket_path(str(tmp_path), i)
            assert opened[i]["internal"].getsockname() == path
            assert (os.stat(path).st_mode & 0o777) == 0o600
            with socket.socket(socket.AF_UNIX) as c:
                c.connect(path)  # queued in the backlog until a worker accepts
    finally:
        for socks in opened:
            for s in socks.values():
                s.close()
    # a stale socket file (a crash) is replaced
    again = open_worker_sockets([], 1, internal_dir=str(tmp_path))
    again[0]["internal"].close()
