"""Parallel guessing against the real server's shell over real telnet
connections (security audit finding 11): before the fix, 40 parallel
connections from one address had all 40 passwords checked."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator

import pytest

from mediasrv.shell.auth import make_hash
from tests.shell.telnet_client import TelnetClient
from tests.support.server import Server, running_server

pytestmark = pytest.mark.interop

USER, PASSWORD = "operator", "right one"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    users = f"{USER}:{make_hash(PASSWORD, iterations=50_000)}"
    with running_server(tmp_path_factory.mktemp("shell-hostile"), f"shell.users={users}",
                        "shell.maxPendingLoginsPerIp=20") as srv:
        yield srv


def attempt(server: Server, barrier: threading.Barrier, outcomes: list[str]) -> None:
    c = TelnetClient("127.0.0.1", server.shell_port, timeout=50)  # generous: the machine is shared
    try:
        first = c.expect(r"Username: |too many logins")
        barrier.wait(50)
        if "too many logins" in first:
            outcomes.append("refused at connect")
            return
        c.line(USER)
        c.expect("Password: ")
        c.line("guess-" + threading.current_thread().name)
        c.expect("Login incorrect", timeout=50)
        outcomes.append("incorrect")
    except Exception as e:  # noqa: BLE001 - reported through the outcome list
        outcomes.append(f"error: {e}")
    finally:
        c.close()


def test_parallel_connections_do_not_multiply_guesses(server: Server) -> None:
    outcomes: list[str] = []
    barrier = threading.Barrier(40)
    threads = [threading.Thread(target=attempt, args=(server, barrier, outcomes), name=str(i)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(outcomes) == 40 and not [o for o in outcomes if o.startswith("error")], outcomes
    assert outcomes.count("refused at connect") == 20  # shell.maxPendingLoginsPerIp
    assert outcomes.count("incorrect") == 20
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and server.log().count("shell login failed") < 20:
        time.sleep(0.2)
    log = server.log()
    checked = len(re.findall(r"shell login failed: .*bad user name or password", log))
    locked = len(re.findall(r"shell login failed: .*address locked out", log))
    assert checked <= 10, f"{checked} passwords were checked; the lockout allows 10"
    assert checked + locked == 20
    assert log.count("shell.maxPendingLoginsPerIp") == 20
    # the address is locked: even the right password is refused unchecked
    c = TelnetClient("127.0.0.1", server.shell_port, timeout=20)
    try:
        c.login(USER, PASSWORD)
        c.expect("Login incorrect")
    finally:
        c.close()
    # another address logs in
    other = TelnetClient("127.0.0.1", server.shell_port, timeout=20, source="127.0.0.2")
    try:
        other.login(USER, PASSWORD)
        other.expect(f"logged in as {USER}")
    finally:
        other.close()


EVIL = "evil\x1b]0;mediasrv: ALL OK\x07\x1b[2K\x1b[1A\x1b[32mlive/decoy"


def test_terminal_escapes_in_stream_names_reach_the_admin_escaped(server: Server) -> None:
    """Audit finding 15: an unauthenticated publisher names its stream with
    OSC/CSI sequences; the admin's ``streams`` and ``sessions`` show them
    escaped."""
    from tests.support.hostile import RawRtmpClient

    pub = RawRtmpClient("127.0.0.1", server.rtmp_port)
    admin = TelnetClient("127.0.0.1", server.shell_port, timeout=20, source="127.0.0.3")
    try:
        pub.do_handshake()
        pub.connect("live")
        assert pub.publish(EVIL)
        admin.login(USER, PASSWORD)
        admin.expect("mediasrv> ")
        start = len(admin.raw)
        streams = admin.command("streams")
        sessions = admin.command("sessions")
        raw = bytes(admin.raw[start:])
        for seq in (b"\x1b]0;", b"\x07", b"\x1b[1A", b"\x1b[32m"):
            assert seq not in raw, seq
        shown = "evil\\x1b]0;mediasrv: ALL OK\\x07\\x1b[2K\\x1b[1A\\x1b[32mlive/decoy"
        assert shown in streams and shown in sessions
    finally:
        pub.close()
        admin.close()


def test_user_names_cannot_forge_log_lines(server: Server) -> None:
    """Audit finding 23, the shell's part: a user name holding a line break
    and a fake log line stays inside one log line, escaped."""
    forged = "x\r2026-01-01T00:00:00+0000 [mediasrv.shell.auth#info] shell login: root from 10.0.0.5"
    c = TelnetClient("127.0.0.1", server.shell_port, timeout=20, source="127.0.0.4")
    try:
        c.expect("Username: ")
        c.type(forged)
        c.line("")
        c.expect("Password: ")
        c.line("nope")
        c.expect("Login incorrect")
    finally:
        c.close()
    log = server.log()
    assert not any(line.lstrip("\t\r").startswith("2026-01-01T00:00:00") for line in re.split("[\r\n]", log))
    assert "shell login failed: x\\x0d2026-01-01T00:00:00+0000 [mediasrv.shell.auth#info]" in log


def test_telnet_junk_is_bad_input_not_an_unhandled_error(server: Server) -> None:
    import socket

    for junk in (b"\xff\xa2", b"\xff\xff\xff\x00\xff\x01garbage", bytes(range(256))):
        with socket.create_connection(("127.0.0.1", server.shell_port), timeout=10) as s:
            s.sendall(junk)
            s.settimeout(5)
            try:
                while s.recv(4096):
                    pass
            except OSError:
                pass
    log = server.log()
    assert "Unhandled Error" not in log and "Stumped" not in log
    assert log.count("unknown telnet command") >= 2
