"""Run the real server (``twistd -n mediasrv``) as a subprocess on free loopback ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def twistd_command() -> list[str]:
    exe = Path(sys.executable).parent / "twistd"
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-c", "import sys; from twisted.scripts.twistd import run; sys.argv[0]='twistd'; run()"]


def server_env() -> dict[str, str]:
    env = dict(os.environ)
    # the repository's own twisted/plugins and mediasrv take precedence
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_twistd(args: list[str], cwd: Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(twistd_command() + ["-n", "--pidfile=", "mediasrv", *args], cwd=cwd,
                          env=server_env(), capture_output=True, text=True, timeout=timeout)


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    rtmp_port: int
    http_port: int
    log_path: Path
    rtsp_port: int = 0
    shell_port: int = 0

    @property
    def rtmp(self) -> str:
        return f"rtmp://127.0.0.1:{self.rtmp_port}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def rtsp(self) -> str:
        return f"rtsp://127.0.0.1:{self.rtsp_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"port {port} not listening after {timeout} s")


@contextmanager
def running_server(workdir: Path, *sets: str) -> Iterator[Server]:
    rtmp_port, http_port, rtsp_port, shell_port = free_port(), free_port(), free_port(), free_port()
    log_path = workdir / "twistd.log"
    args = ["--set", "general.listen_ip=127.0.0.1", "--set", f"rtmp.port={rtmp_port}",
            "--set", f"http.port={http_port}", "--set", f"rtsp.port={rtsp_port}", "--set", f"shell.port={shell_port}"]
    for s in sets:
        args += ["--set", s]
    with open(log_path, "wb") as logf:
        proc = subprocess.Popen(twistd_command() + ["-n", "--pidfile=", f"--logfile={log_path}", "mediasrv", *args],
                                cwd=workdir, env=server_env(), stdout=logf, stderr=subprocess.STDOUT)
    server = Server(proc, rtmp_port, http_port, log_path, rtsp_port, shell_port)
    try:
        wait_port(rtmp_port, proc)
        wait_port(http_port, proc)
        wait_port(rtsp_port, proc)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
