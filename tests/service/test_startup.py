"""Start-up through the real ``twistd`` (CONTRACT §1)."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

from twisted.application.service import IServiceMaker
from twisted.internet.testing import MemoryReactorClock
from twisted.plugin import getPlugins

from mediasrv import config
from mediasrv.server import MediaServer
from tests.support.server import free_port, run_twistd, running_server


def test_plugin_is_discovered() -> None:
    names = {p.tapname: p for p in getPlugins(IServiceMaker)}
    assert "mediasrv" in names
    assert names["mediasrv"].module == "mediasrv.tap"  # type: ignore[attr-defined]


def test_make_service_structure_on_memory_reactor() -> None:
    cfg = config.load(overrides=["rtmp.port=1999", "http.port=8999", "rtsp.port=8998", "shell.port=0"])
    svc = MediaServer(cfg, MemoryReactorClock())
    assert [s.name for s in svc] == ["rtmp", "rtsp", "http"]
    svc.privilegedStartService()
    svc.startService()
    reactor = svc.reactor
    ports = sorted(p[0] for p in reactor.tcpServers)
    assert ports == [1999, 8998, 8999]
    assert {p[3] for p in reactor.tcpServers} == {"0.0.0.0"}
    svc.stopService()


def test_bad_value_is_one_line_and_nonzero(tmp_path: Path) -> None:
    r = run_twistd(["--set", "rtmp.port=abc"], tmp_path)
    assert r.returncode != 0
    assert r.stderr.strip() == "mediasrv: --set: [rtmp] port: 'abc' is not an integer"
    assert "Traceback" not in r.stdout + r.stderr
    assert "Usage" not in r.stdout + r.stderr


def test_unknown_key_in_file_is_one_line(tmp_path: Path) -> None:
    ini = tmp_path / "m.ini"
    ini.write_text("[rtmp]\nport = 1935\nbogus = 1\n")
    r = run_twistd(["--config", str(ini)], tmp_path)
    assert r.returncode != 0
    assert r.stderr.strip() == f"mediasrv: {ini}: [rtmp] bogus: unknown key"


def test_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = run_twistd(["--set", "general.listen_ip=127.0.0.1", "--set", f"rtmp.port={port}",
                        "--set", f"http.port={free_port()}"], tmp_path)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"mediasrv: (built-in defaults): [rtmp] port: cannot listen on 127.0.0.1:{port}: ")
    assert "Traceback" not in r.stdout + r.stderr


def test_serves_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    with running_server(tmp_path) as server:
        with socket.create_connection(("127.0.0.1", server.http_port)) as c:
            c.sendall(b"GET /nothing HTTP/1.0\r\n\r\n")
            assert c.recv(100).startswith(b"HTTP/1.0 404")
        server.proc.send_signal(signal.SIGTERM)
        # twistd stops the reactor cleanly, then exits by the same signal so
        # that systemd sees a SIGTERM exit (which it counts as success)
        assert server.proc.wait(15) == -signal.SIGTERM
    log = server.log()
    assert "Received SIGTERM, shutting down." in log
    assert "Main loop terminated." in log
    assert "Traceback" not in log


def test_no_config_serves_embedded_defaults_ports(tmp_path: Path) -> None:
    # --config omitted: the embedded defaults (only the ports moved off the well-known ones)
    with running_server(tmp_path) as server:
        assert server.proc.poll() is None
    assert "mediasrv serving: rtmp 127.0.0.1:" in server.log()




def test_port_in_use_in_daemon_mode_fails_fast(tmp_path: Path) -> None:
    import subprocess

    from tests.support.server import server_env, twistd_command

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = subprocess.run(twistd_command() + [f"--pidfile={tmp_path / 'd.pid'}", f"--logfile={tmp_path / 'd.log'}",
                                               "mediasrv", "--set", "general.listen_ip=127.0.0.1",
                                               "--set", f"rtmp.port={port}", "--set", "http.port=0",
                                               "--set", "rtsp.port=0", "--set", "shell.port=0"],
                           cwd=tmp_path, env=server_env(), capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert "[rtmp] port: cannot listen on 127.0.0" in r.stderr
    assert f"mediasrv: (built-in defaults): [rtmp] port: cannot listen on 127.0.0.1:{port}" in \
        (tmp_path / "d.log").read_text()
    assert not (tmp_path / "d.pid").exists()
