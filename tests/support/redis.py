"""A real ``redis-server`` on a free loopback port, for the cluster directory's tests.

``redis-server --port <free> --bind 127.0.0.1 --save "" --appendonly no``; ready when it
answers PING; stopped (SIGTERM, then SIGKILL) at teardown.  ``restart()`` brings it back
on the same port (``SHUTDOWN NOSAVE`` first loses every key, as a crash would).
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.server import free_port

REDIS_SERVER = shutil.which("redis-server")


def require_redis() -> str:
    """The redis-server binary; skips outside CI when it is missing (CI installs it)."""
    if REDIS_SERVER is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed (scripts/test.sh installs it)")
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    return REDIS_SERVER


def _command(*args: str) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        data = a.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class RedisServer:
    def __init__(self, workdir: Path, password: str | None = None, tls: tuple[Path, Path] | None = None) -> None:
        self.binary = require_redis()
        self.workdir = workdir
        self.password = password
        self.tls = tls  # (certificate, key): serve TLS only
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / f"redis-{self.port}.log"

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(self.workdir), "--logfile", str(self.log_path)]
        if self.password:
            args += ["--requirepass", self.password]
        if self.tls:
            args += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(self.tls[0]),
                     "--tls-key-file", str(self.tls[1]), "--tls-auth-clients", "no"]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.command("PING", timeout=0.5) == b"+PONG":
                    return
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited ({self.proc.returncode}); see {self.log_path}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on {self.port} did not answer PING in {timeout} s")
            time.sleep(0.02)

    def _connect(self, timeout: float) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        if self.tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            s = ctx.wrap_socket(s)
        return s

    def command(self, *args: str, timeout: float = 5) -> bytes:
        """One command over a fresh connection; the first line of the reply."""
        with self._connect(timeout) as s:
            if self.password:
                s.sendall(_command("AUTH", self.password))
                s.recv(100)
            s.sendall(_command(*args))
            data = b""
            while b"\r\n" not in data:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            line, _, rest = data.partition(b"\r\n")
            if line.startswith(b"$") and line != b"$-1":
                n = int(line[1:])
                while len(rest) < n:
                    rest += s.recv(65536)
                return rest[:n]
            return line

    def subscribers(self, channel: str) -> int:
        """PUBSUB NUMSUB: how many connections listen on ``channel``."""
        with self._connect(5) as s:
            if self.password:
                s.sendall(_command("AUTH", self.password))
                s.recv(100)
            s.sendall(_command("PUBSUB", "NUMSUB", channel))
            data = b""
            while data.count(b"\r\n") < 4:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        return int(data.split(b"\r\n")[3][1:])

    def get(self, key: str) -> bytes | None:
        value = self.command("GET", key)
        return None if value == b"$-1" else value

    def pttl(self, key: str) -> int:
        return int(self.command("PTTL", key)[1:])

    def shutdown_nosave(self) -> None:
        """Stop as a crash would: every key is lost."""
        try:
            self.command("SHUTDOWN", "NOSAVE")
        except OSError:
            pass
        assert self.proc is not None
        self.proc.wait(10)

    def restart(self) -> None:
        self.shutdown_nosave()
        self.start()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
