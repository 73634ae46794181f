"""The shell over an in-memory transport on task.Clock: telnet negotiation as a
real client answers it, login rules (slowed failures, attempt limit, lockout,
deadline), and every command against a core with live sessions and streams."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from mediasrv.config import ConfigError
from mediasrv.core.context import Core
from mediasrv.core.sessions import Role
from mediasrv.hooks.client import HookResponse, HookTransportError
from mediasrv.hooks.model import HookCall
from mediasrv.hooks.outbox import Outbox
from mediasrv.shell.auth import make_hash, parse_users, verify_hash
from mediasrv.shell.realm import ShellFactory
from tests.interop.test_hooks_outbox import FakeClient
from tests.shell.fakes import make_core, play, publish, shutdown
from tests.shell.telnet_client import TelnetClient

USER, PASSWORD = "admin", "correct horse"
USERS = f"{USER}:{make_hash(PASSWORD, iterations=1000)}"


class MemoryTelnet(TelnetClient):
    """The socket client's negotiation and screen logic over a StringTransport."""

    def __init__(self, factory: ShellFactory, clock: Clock, ip: str = "127.0.0.1") -> None:
        self.timeout = 1.0
        self.size = (160, 48)
        self.raw = bytearray()
        self.negotiation = []
        self.him, self.us = {}, {}
        self._pending = b""
        self._pos = 0
        self.closed = False
        self.clock = clock
        self.proto = factory.buildProtocol(None)
        self.transport = StringTransport(hostAddress=IPv4Address("TCP", "127.0.0.1", 9000),
                                         peerAddress=IPv4Address("TCP", ip, 40123))
        self.proto.makeConnection(self.transport)
        self.pump(0)

    def _send(self, data: bytes) -> None:
        self.proto.dataReceived(data)

    def line(self, text: str) -> None:
        super().line(text)
        self.pump(0)  # a live client answers the negotiation that follows at once

    def pump(self, seconds: float) -> bool:
        # our negotiation replies make the server write more: read until quiet
        while True:
            data = self.transport.value()
            self.transport.clear()
            if not data:
                break
            self._feed(data)
        if self.transport.disconnecting and not self.closed:
            self.closed = True
            self.proto.connectionLost(None)
        return not self.closed

    def expect(self, pattern: str, timeout: float | None = None) -> str:
        self.pump(0)
        return super().expect(pattern, timeout=0)

    def peek(self) -> str:
        """Output not yet consumed by expect(), left in place."""
        self.pump(0)
        return self.clean(self.raw[self._pos:])

    def screen_after(self) -> str:
        self.pump(0)
        text = self.clean(self.raw[self._pos:])
        self._pos = len(self.raw)
        return text


@pytest.fixture
def core() -> Iterator[Core]:
    c = make_core(f"shell.users={USERS}")
    yield c
    shutdown(c)


def logged_in(factory: ShellFactory, clock: Clock) -> MemoryTelnet:
    t = MemoryTelnet(factory, clock)
    t.login(USER, PASSWORD)
    t.expect("logged in as admin")
    t.expect("mediasrv> ")
    return t


# -- hashes and configuration ----------------------------------------------------------------------------
def test_hash_format_roundtrip() -> None:
    h = make_hash("pw", salt="abc", iterations=1000)
    assert h.startswith("pbkdf2_sha256$1000$abc$")
    assert verify_hash("pw", h) and not verify_hash("pW", h) and not verify_hash("pw", "plain")


def test_parse_users() -> None:
    a, b = make_hash("x", iterations=1000), make_hash("y", iterations=1000)
    assert parse_users(f"alice:{a}, bob:{b}") == {"alice": a, "bob": b}
    assert parse_users(f"alice:{a}\n bob:{b}") == {"alice": a, "bob": b}
    for bad in ("alice", "alice:secret", ":" + a, "alice:pbkdf2_sha256$x$y$z"):
        with pytest.raises(ValueError):
            parse_users(bad)


def test_bad_shell_users_is_a_config_error() -> None:
    core = make_core("shell.users=admin:plaintext")
    with pytest.raises(ConfigError) as e:
        ShellFactory(core)
    assert e.value.key == "[shell] users"


# -- login ---------------------------------------------------------------------------------------------------
def test_login_negotiates_like_telnet_and_opens_a_session_row(core: Core) -> None:
    t = MemoryTelnet(ShellFactory(core), core.clock)
    t.expect("mediasrv admin shell")
    (row,) = list(core.sessions)
    assert row.protocol == "shell" and row.role is Role.NONE and row.peer_ip == "127.0.0.1"
    t.login(USER, PASSWORD)
    t.expect("mediasrv> ")
    assert ("WILL", 1) in t.negotiation and t.char_mode  # server echoes, suppresses go-ahead
    assert row.params == "user=admin"
    t.line("quit")
    t.expect("bye")
    assert t.transport.disconnecting
    t.pump(0)
    assert len(core.sessions) == 0


def test_password_is_not_echoed(core: Core) -> None:
    t = MemoryTelnet(ShellFactory(core), core.clock)
    t.login(USER, PASSWORD)
    t.expect("mediasrv> ")
    assert PASSWORD not in t.text()


def test_wrong_password_is_slowed_then_limited(core: Core) -> None:
    t = MemoryTelnet(ShellFactory(core), core.clock)
    for _ in range(3):
        t.login(USER, "wrong")
        core.clock.advance(0.99)
        assert "Login incorrect" not in t.peek(), "the failure must not be told at once"
        core.clock.advance(1.6)
        t.expect("Login incorrect")
    assert t.transport.disconnecting, "three failures end the connection"
    assert "Too many failures" in t.text()


def test_unknown_user_is_refused_like_a_wrong_password(core: Core) -> None:
    t = MemoryTelnet(ShellFactory(core), core.clock)
    t.login("root", PASSWORD)
    core.clock.advance(2.6)
    assert "Login incorrect" in t.screen_after()


def test_an_address_is_locked_out_after_repeated_failures(core: Core) -> None:
    factory = ShellFactory(core)
    for _ in range(4):
        t = MemoryTelnet(factory, core.clock)
        for _ in range(3):
            t.login(USER, "guess")
            core.clock.advance(2.6)
        t.pump(0)
    # 12 failures from 127.0.0.1: even the right password is refused now
    t = MemoryTelnet(factory, core.clock)
    t.login(USER, PASSWORD)
    core.clock.advance(2.6)
    assert "Login incorrect" in t.screen_after()
    # another address is not affected
    other = MemoryTelnet(factory, core.clock, ip="127.0.0.2")
    other.login(USER, PASSWORD)
    other.expect("mediasrv> ")
    # and the lockout ends
    core.clock.advance(601)
    t = MemoryTelnet(factory, core.clock)
    t.login(USER, PASSWORD)
    t.expect("mediasrv> ")


def test_no_users_and_no_hook_refuses_every_login() -> None:
    core = make_core()
    try:
        t = MemoryTelnet(ShellFactory(core), core.clock)
        t.login("admin", "")
        core.clock.advance(2.6)
        assert "Login incorrect" in t.screen_after()
    finally:
        shutdown(core)


def test_login_deadline(core: Core) -> None:
    t = MemoryTelnet(ShellFactory(core), core.clock)
    core.clock.advance(61)
    assert "Login timed out" in t.screen_after() and t.transport.disconnecting


# -- on_shell_login ------------------------------------------------------------------------------------------------
class ScriptedClient:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.sent: list[tuple[str, dict[str, Any], defer.Deferred[HookResponse]]] = []

    def request(self, method: str, url: str, timeout: float, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> defer.Deferred[HookResponse]:
        d: defer.Deferred[HookResponse] = defer.Deferred()
        self.sent.append((url, json.loads(body or b"{}"), d))
        return d


def hook_core(*sets: str) -> tuple[Core, ScriptedClient]:
    core = make_core("hook.enable=1", "hook.on_shell_login=http://backend/shell", "hook.retry=0", *sets)
    client = ScriptedClient(core.clock)
    core.hooks.client = client  # type: ignore[assignment]
    return core, client


def test_hook_login_fields_and_allow() -> None:
    core, client = hook_core(f"shell.users={USERS}")  # the hook wins over shell.users
    try:
        t = MemoryTelnet(ShellFactory(core), core.clock)
        t.login("ops", "hunter2")
        (url, body, d), = client.sent
        sid = next(iter(core.sessions)).id
        assert url == "http://backend/shell"
        assert {k: body[k] for k in ("ip", "port", "id", "user_name", "passwd")} == {
            "ip": "127.0.0.1", "port": 40123, "id": sid, "user_name": "ops", "passwd": "hunter2"}
        assert "mediaServerId" in body and "hook_index" in body
        d.callback(HookResponse(200, {}, b'{"code":0}'))
        t.expect("logged in as ops")
    finally:
        shutdown(core)


@pytest.mark.parametrize("reply", [HookResponse(200, {}, b'{"code":-1,"msg":"no"}'),
                                   HookResponse(500, {}, b"oops"), None])
def test_hook_denial_or_failure_denies_even_with_on_failure_allow(reply: HookResponse | None) -> None:
    core, client = hook_core("hook.on_failure=allow")
    try:
        t = MemoryTelnet(ShellFactory(core), core.clock)
        t.login("ops", "hunter2")
        (_, _, d), = client.sent
        if reply is None:
            d.errback(HookTransportError("connection refused"))
        else:
            d.callback(reply)
        core.clock.advance(2.6)
        assert "Login incorrect" in t.screen_after()
        assert "mediasrv> " not in t.text()
    finally:
        shutdown(core)


# -- commands ----------------------------------------------------------------------------------------------------
@pytest.fixture
def shell(core: Core) -> MemoryTelnet:
    return logged_in(ShellFactory(core), core.clock)


def run(t: MemoryTelnet, line: str) -> str:
    return t.command(line, prompt=r"(mediasrv|py)> ")


def test_help_lists_every_command(shell: MemoryTelnet) -> None:
    out = run(shell, "help")
    for name in ("help", "streams", "sessions", "kick", "close", "config get", "config set", "stats", "hooks",
                 "python", "quit"):
        assert name in out


def test_streams_table_is_aligned(core: Core, shell: MemoryTelnet) -> None:
    assert "no streams" in run(shell, "streams")
    stream, pub = publish(core, "live", "cam")
    play(core, stream)
    lines = run(shell, "streams").strip().splitlines()
    header, rule, row = lines[0], lines[1], lines[2]
    assert header.split() == ["STREAM", "STATE", "PUBLISHER", "VIDEO", "AUDIO", "READERS", "AGE", "IN", "FRAMES"]
    assert set(rule) <= {"-", " "}
    assert row.startswith("live/cam") and "live" in row and pub.session.id in row and "H264 1280x720@25" in row
    # columns line up: every column starts where its header starts
    assert row.index(pub.session.id) - len("rtmp ") == header.index("PUBLISHER")


def test_sessions_and_filters(core: Core, shell: MemoryTelnet) -> None:
    stream, pub = publish(core, "live", "cam")
    viewer = play(core, stream, "http-flv", ip="10.9.8.7")
    out = run(shell, "sessions")
    assert pub.session.id in out and viewer.session.id in out and "shell" in out and "* = this shell" in out
    out = run(shell, "sessions proto=http-flv")
    assert viewer.session.id in out and pub.session.id not in out
    out = run(shell, "sessions 10.9.8")
    assert viewer.session.id in out and pub.session.id not in out
    assert "no sessions match" in run(shell, "sessions role=publisher app=nope")


def test_kick(core: Core, shell: MemoryTelnet) -> None:
    stream, pub = publish(core)
    viewer = play(core, stream)
    assert f"kicked {viewer.session.id}" in run(shell, f"kick {viewer.session.id}")
    assert viewer.kicked == ["kicked from the shell by admin"]
    assert core.sessions.get(viewer.session.id) is None
    assert "no session nope" in run(shell, "kick nope")
    assert "usage" in run(shell, "kick")


def test_close(core: Core, shell: MemoryTelnet) -> None:
    stream, pub = publish(core, "live", "cam")
    play(core, stream)
    assert "closed live/cam (1 player(s) disconnected)" in run(shell, "close live/cam")
    assert pub.kicked and core.registry.find(stream.key) is None
    assert "no stream live/cam" in run(shell, "close live/cam")
    assert "usage" in run(shell, "close cam")


def test_config_get_and_set(core: Core, shell: MemoryTelnet) -> None:
    assert run(shell, "config get rtmp.port").strip() == "rtmp.port = 1935"
    out = run(shell, "config get shell")
    assert "shell.users" in out and "******** (set)" in out and "pbkdf2" not in out
    assert "api.secret" in run(shell, "config get") and core.config.api.secret not in run(shell, "config get api")
    assert "applied live" in run(shell, "config set general.maxConnections 42")
    assert core.config.general.maxConnections == 42
    out = run(shell, "config set rtmp.port 1936")
    assert "restart" in out and core.config.rtmp.port == 1936
    assert "not changed" in run(shell, "config set rtmp.port many")
    assert "no key" in run(shell, "config set rtmp.nope 1")
    assert "unchanged" in run(shell, "config set general.maxConnections 42")
    # a value with spaces, and an empty value
    run(shell, 'config set hook.on_play http://a/x http://b/y')
    assert core.config.hook.on_play == "http://a/x http://b/y"
    run(shell, 'config set hook.on_play ""')
    assert core.config.hook.on_play == ""
    assert "api.secret changed (applied live)" in run(shell, "config set api.secret other")
    assert core.config.api.secret == "other"


def test_python_cannot_be_switched_on_from_the_shell(core: Core, shell: MemoryTelnet) -> None:
    assert "restart" in run(shell, "config set shell.python 1")
    assert "python is off" in run(shell, "python")


def test_stats_and_hooks(core: Core, shell: MemoryTelnet) -> None:
    stream, _ = publish(core)
    play(core, stream)
    out = run(shell, "stats")
    for word in ("uptime", "sessions", "3 now", "publishers", "players", "streams", "1 live", "hook calls",
                 "memory"):
        assert word in out, word
    out = run(shell, "hooks")
    assert "no hook URLs configured" in out and "latency" in out and "outbox depth" in out
    run(shell, "config set hook.enable 1")
    run(shell, "config set hook.on_publish http://backend/pub")
    out = run(shell, "hooks")
    assert "zlm" in out and "on_publish" in out and "http://backend/pub" in out
    assert "restart the server" in out  # hooks were off at start-up: no HTTP client yet


def test_unknown_command(shell: MemoryTelnet) -> None:
    assert "unknown command 'frobnicate'" in run(shell, "frobnicate")


def test_history_and_tab_completion(core: Core, shell: MemoryTelnet) -> None:
    run(shell, "stats")
    shell.type("\x1b[A")  # up arrow recalls the last line
    assert "uptime" in run(shell, "")
    shell.type("sess\t")
    assert "* = this shell" in run(shell, "")
    shell.type("config get rtmp.po\t")
    assert "rtmp.port = 1935" in run(shell, "")


def test_ctrl_d_logs_out(core: Core, shell: MemoryTelnet) -> None:
    shell.type("\x04")
    shell.pump(0)
    assert shell.transport.disconnecting


def test_kicking_the_shell_session_itself(core: Core, shell: MemoryTelnet) -> None:
    me = next(s for s in core.sessions if s.protocol == "shell")
    shell.line(f"kick {me.id}")
    shell.pump(0)
    assert shell.transport.disconnecting


def test_python_repl_when_enabled() -> None:
    core = make_core(f"shell.users={USERS}", "shell.python=1")
    try:
        t = logged_in(ShellFactory(core, namespace={"server": "the-server"}), core.clock)
        assert "Python REPL" in run(t, "python")
        assert run(t, "len(sessions)").strip() == "1"
        assert run(t, "server").strip() == "'the-server'"
        assert "ZeroDivisionError" in run(t, "1/0")
        run(t, "exit()")
        assert "uptime" in run(t, "stats"), "back in the admin shell"
        run(t, "python")
        t.type("\x04")  # Ctrl-D leaves the REPL, not the connection
        t.expect("mediasrv> ")
        assert "uptime" in run(t, "stats")
        assert not t.transport.disconnecting
    finally:
        shutdown(core)


def test_hooks_lists_dead_letters(core: Core, shell: MemoryTelnet, tmp_path: Path) -> None:
    client = FakeClient()
    outbox = Outbox(tmp_path, client, core.clock)  # type: ignore[arg-type]
    core.hooks.outbox = outbox
    outbox.start()
    outbox.enqueue(HookCall("srs", "on_stop", "http://backend/srs/on_stop?token=s3cret", {"n": 1}, 2.0), "sess-b")
    client.answer(0, status=404)
    out = run(shell, "hooks")
    assert "outbox refused (4xx)" in out and "outbox dead letters" in out
    assert "dead letters (newest first; not resent):" in out
    line = next(x for x in out.splitlines() if "on_stop" in x)
    assert "srs" in line and "sess-b" in line and "HTTP 404" in line and "token=***" in line
    assert "s3cret" not in out
    outbox.stop()
    outbox.close()
