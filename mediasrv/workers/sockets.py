"""Listening sockets for worker processes: opened by the master, adopted by the workers.

The master opens every TCP listener as N ``SO_REUSEPORT`` sockets, one per worker, before
any worker runs, and keeps them open for its whole life: the kernel spreads connections
over them evenly, and while a worker is being restarted the connections hashed to its
socket wait in that socket's backlog instead of being refused.  With
``general.worker_port_offset`` each worker also gets a socket of its own on
``port + offset + index`` (named ``<listener>.direct``) so a client can be pinned to one.

A worker finds its sockets in the environment: ``MEDIASRV_FDS=rtmp:3,http:4,...`` (child
fd numbers), ``MEDIASRV_WORKER_INDEX``, ``MEDIASRV_WORKERS`` and ``MEDIASRV_CONTROL_FD`` (its
end of the AMP control connection to the master).  ``LISTEN_FDS`` (systemd) is not used:
``twisted.python.systemd`` trusts it only when ``LISTEN_PID`` is the process's own pid,
which a parent cannot know before spawning.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.internet.endpoints import AdoptedStreamServerEndpoint

if TYPE_CHECKING:
    from mediasrv.config import Config

FDS_ENV = "MEDIASRV_FDS"
INDEX_ENV = "MEDIASRV_WORKER_INDEX"
COUNT_ENV = "MEDIASRV_WORKERS"
CONTROL_ENV = "MEDIASRV_CONTROL_FD"
EPOCH_ENV = "MEDIASRV_EPOCH"
DIRECT = ".direct"
INTERNAL = "internal"


@dataclass(frozen=True)
class ListenSpec:
    """One TCP listener: its name (``rtmp``), the config key for error lines (``[rtmp] port``)."""

    name: str
    key: str
    host: str
    port: int


def listen_specs(config: Config) -> list[ListenSpec]:
    """The TCP listeners of a configuration (0 = off), as the master opens them for its workers.

    TLS listeners are plain sockets here: each worker wraps its adopted endpoint in TLS."""
    ip = config.general.listen_ip
    candidates = [
        ("rtmp", "[rtmp] port", ip, config.rtmp.port),
        ("rtmps", "[rtmp] sslport", ip, config.rtmp.sslport),
        ("rtsp", "[rtsp] port", ip, config.rtsp.port),
        ("rtsps", "[rtsp] sslport", ip, config.rtsp.sslport),
        ("http", "[http] port", ip, config.http.port),
        ("https", "[http] sslport", ip, config.http.sslport),
        ("shell", "[shell] port", config.shell.interface, config.shell.port),
    ]
    return [ListenSpec(name, key, host, port) for name, key, host, port in candidates if port]


class ListenError(Exception):
    """A listener could not be opened; ``str`` is the one line for the operator."""


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def open_listener(host: str, port: int, reuseport: bool, backlog: int = socket.SOMAXCONN) -> socket.socket:
    """A bound, listening, non-blocking TCP socket (OSError when the address is taken)."""
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if sock.family == socket.AF_INET6 and host in ("::", ""):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def internal_socket_path(directory: str, index: int) -> str:
    """Where worker ``index`` serves internal pulls (HTTP-FLV) to the other workers of its host."""
    return os.path.join(directory, f"w{index}.sock")


def open_unix_listener(path: str, backlog: int = socket.SOMAXCONN) -> socket.socket:
    """A listening unix socket at ``path`` (a stale socket file left by a crash is replaced)."""
    try:
        if os.path.exists(path) and not os.path.isdir(path):
            os.unlink(path)
    except OSError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, 0o600)
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def open_worker_sockets(specs: list[ListenSpec], workers: int, port_offset: int = 0,
                        source: str = "", internal_dir: str = "") -> list[dict[str, socket.socket]]:
    """Per worker, its sockets by name; ListenError (one line) if any address is taken.

    A port held by another program is found here, at start-up: Linux refuses to add a
    ``SO_REUSEPORT`` socket to a port bound by a socket without that option, or by another
    user.  (A second mediasrv of the same user would be let in, and share the port.)"""
    opened: list[dict[str, socket.socket]] = [{} for _ in range(workers)]
    try:
        for spec in specs:
            for i in range(workers):
                opened[i][spec.name] = _open(spec, spec.port, True, source)
            if port_offset:
                for i in range(workers):
                    opened[i][spec.name + DIRECT] = _open(spec, spec.port + port_offset + i, False, source)
        if internal_dir:
            for i in range(workers):
                path = internal_socket_path(internal_dir, i)
                try:
                    opened[i][INTERNAL] = open_unix_listener(path)
                except OSError as e:
                    raise ListenError(f"mediasrv: {source + ': ' if source else ''}cannot listen on {path}: "
                                      f"{e.strerror or e}") from None
    except ListenError:
        for socks in opened:
            for s in socks.values():
                s.close()
        raise
    return opened


def _open(spec: ListenSpec, port: int, reuseport: bool, source: str) -> socket.socket:
    try:
        return open_listener(spec.host, port, reuseport)
    except OSError as e:
        where = f"{source}: " if source else ""
        raise ListenError(f"mediasrv: {where}{spec.key}: cannot listen on {spec.host}:{port}: "
                          f"{e.strerror or e}") from None


def encode_fds(fds: Mapping[str, int]) -> str:
    return ",".join(f"{name}:{fd}" for name, fd in fds.items())


def decode_fds(text: str) -> dict[str, int]:
    """ValueError for anything but ``name:fd,...``."""
    out: dict[str, int] = {}
    for item in filter(None, text.split(",")):
        name, sep, fd = item.partition(":")
        if not sep or not name or not fd.isdigit():
            raise ValueError(f"bad {FDS_ENV} entry {item!r}")
        out[name] = int(fd)
    return out


@dataclass(frozen=True)
class WorkerEnv:
    """What the master told this worker process."""

    index: int
    count: int
    fds: dict[str, int]
    control_fd: int | None
    epoch: str


def worker_env(environ: Mapping[str, str] | None = None) -> WorkerEnv | None:
    """This process's worker settings, or None when it is not a worker (no ``MEDIASRV_FDS``)."""
    env = os.environ if environ is None else environ
    if FDS_ENV not in env:
        return None
    control = env.get(CONTROL_ENV, "")
    return WorkerEnv(index=int(env.get(INDEX_ENV, "0")), count=int(env.get(COUNT_ENV, "1")),
                     fds=decode_fds(env[FDS_ENV]), control_fd=int(control) if control else None,
                     epoch=env.get(EPOCH_ENV, ""))


def adopted_endpoints(reactor: Any, env: WorkerEnv) -> dict[str, AdoptedStreamServerEndpoint]:
    """A server endpoint per inherited listening socket, by name (``rtmp``, ``rtmp.direct``...).

    Each endpoint can be listened on once; listening adopts (duplicates) the fd and closes the
    inherited one, so the worker holds exactly one copy and the master keeps its own."""
    out = {}
    for name, fd in env.fds.items():
        probe = socket.socket(fileno=fd)  # learns the family; detached so the fd stays open
        family = probe.family
        probe.detach()
        out[name] = AdoptedStreamServerEndpoint(reactor, fd, family)
    return out
