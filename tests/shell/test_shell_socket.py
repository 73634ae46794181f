"""The shell of the real server (``twistd -n mediasrv``) over a real socket,
typed into like ``telnet``: login through ``shell.users`` and through a real
on_shell_login hook server, failures refused and slowed, every command."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mediasrv.shell.auth import make_hash
from tests.shell.telnet_client import TelnetClient
from tests.support.clients import FFMPEG, start_publisher, stop
from tests.support.hookserver import HookServer, running_hookserver
from tests.support.server import Server, running_server

pytestmark = pytest.mark.interop

USER, PASSWORD = "operator", "s3cret pass"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    users = f"{USER}:{make_hash(PASSWORD, iterations=50_000)}"
    with running_server(tmp_path_factory.mktemp("shell"), f"shell.users={users}", "shell.python=1",
                        "api.secret=apisecret") as srv:
        yield srv


def connect(server: Server) -> TelnetClient:
    return TelnetClient("127.0.0.1", server.shell_port, timeout=15)


def login(server: Server) -> TelnetClient:
    c = connect(server)
    c.login(USER, PASSWORD)
    c.expect(f"logged in as {USER}")
    c.expect("mediasrv> ")
    return c


def test_wrong_password_is_refused_and_slowed(server: Server) -> None:
    c = connect(server)
    try:
        t0 = time.monotonic()
        c.login(USER, "not it")
        c.expect("Login incorrect")
        assert time.monotonic() - t0 >= 1.0, "a failure is told only after a delay"
        c.expect("Username: ")
        c.line("nobody")
        c.expect("Password: ")
        c.line(PASSWORD)
        c.expect("Login incorrect")
        c.login(USER, "still not")
        c.expect("Too many failures")
        assert c.wait_closed(5), "the third failure ends the connection"
        assert "mediasrv> " not in c.text()
    finally:
        c.close()
    assert "shell login failed" in server.log()


def test_every_command(server: Server) -> None:
    c = login(server)
    pub = start_publisher(f"{server.rtmp}/live/shelltest?k=v", size="320x240", bitrate="300k") if FFMPEG else None
    try:
        assert "close <app>/<stream>" in c.command("help")
        deadline = time.monotonic() + 20
        streams = ""
        while pub is not None and "shelltest" not in streams and time.monotonic() < deadline:
            time.sleep(0.5)
            streams = c.command("streams")
        sessions = c.command("sessions")
        assert "shell" in sessions and "* = this shell" in sessions
        if pub is not None:
            assert "live/shelltest" in streams and "H264 320x240" in streams
            row = next(line for line in c.command("sessions proto=rtmp").splitlines() if "publisher" in line)
            pub_id = row.split()[0]
            assert "live/shelltest" in row
        assert "rtmp.port" in c.command("config get rtmp")
        assert "applied live" in c.command("config set general.maxStreamWaitMS 9000")
        assert c.command("config get general.maxStreamWaitMS").strip() == "general.maxStreamWaitMS = 9000"
        assert "restart" in c.command("config set http.port 1")
        assert "uptime" in c.command("stats")
        assert "outbox depth" in c.command("hooks")
        assert "Python REPL" in c.command("python", prompt=r"py> ")
        assert c.command("6*7", prompt=r"py> ").strip() == "42"
        assert "live/shelltest" in c.command("[str(s.key) for s in registry]", prompt=r"py> ") or pub is None
        c.command("exit()")
        assert "unknown command" in c.command("nonsense")
        if pub is not None:
            assert f"kicked {pub_id}" in c.command(f"kick {pub_id}")
            pub.wait(20)  # the publisher is gone: ffmpeg ends
            assert pub.returncode is not None
            pub = start_publisher(f"{server.rtmp}/live/shelltest2", size="320x240", bitrate="300k")
            deadline = time.monotonic() + 20
            while "shelltest2" not in c.command("streams") and time.monotonic() < deadline:
                time.sleep(0.5)
            assert "closed live/shelltest2" in c.command("close live/shelltest2")
            pub.wait(20)
        c.line("quit")
        c.expect("bye")
        assert c.wait_closed(5)
    finally:
        c.close()
        if pub is not None:
            stop(pub)


def test_line_editing_and_history(server: Server) -> None:
    c = login(server)
    try:
        c.type("stat")
        c.type("\x7f")  # backspace
        c.type("ts")
        assert "uptime" in c.command("")
        c.type("\x1b[A")  # up arrow: the previous line
        assert "uptime" in c.command("")
        c.type("hel\t")  # Tab completes the command
        assert "this list" in c.command("")
    finally:
        c.close()


@pytest.fixture
def hooked(tmp_path: Path) -> Iterator[tuple[Server, HookServer]]:
    rules = [{"match": {"path": "/zlm/on_shell_login", "field": {"user_name": "ops", "passwd": "from-hook"}},
              "body": {"code": 0}},
             {"match": {"path": "/zlm/on_shell_login"}, "body": {"code": -1, "msg": "who are you"}}]
    with running_hookserver(tmp_path / "hooks", rules=rules) as hs:
        with running_server(tmp_path, "hook.enable=1", f"hook.on_shell_login={hs.url('/zlm/on_shell_login')}",
                            f"hook.outbox={tmp_path / 'outbox'}") as srv:
            yield srv, hs


def test_login_through_on_shell_login(hooked: tuple[Server, HookServer]) -> None:
    server, hs = hooked
    c = connect(server)
    try:
        c.login("ops", "wrong")
        c.expect("Login incorrect")
        c.expect("Username: ")
        c.line("ops")
        c.expect("Password: ")
        c.line("from-hook")
        c.expect("logged in as ops")
        c.expect("mediasrv> ")
        sessions = c.command("sessions")
    finally:
        c.close()
    calls = hs.wait("/zlm/on_shell_login", count=2)
    first, second = calls[0]["json"], calls[1]["json"]
    assert (first["user_name"], first["passwd"]) == ("ops", "wrong")
    assert (second["user_name"], second["passwd"]) == ("ops", "from-hook")
    for body in (first, second):
        assert body["ip"] == "127.0.0.1" and isinstance(body["port"], int) and body["port"] > 0
        assert body["mediaServerId"] and isinstance(body["hook_index"], int)
    assert first["id"] == second["id"] and first["id"] in sessions, "the id is the session table's"
