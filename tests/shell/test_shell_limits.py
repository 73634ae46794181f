"""Hostile shell clients in memory (security audit findings 11, 15, 23):
parallel guessing, connection floods from one address, the PBKDF2 check
budget, terminal escapes in stream names and forged log lines in user names."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import pytest
from twisted.cred import error
from twisted.internet import defer
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from twisted.python.failure import Failure

from mediasrv.core import limits
from mediasrv.core.context import Core
from mediasrv.shell.auth import CheckLimiter, LoginBusy, make_hash
from mediasrv.shell.realm import ShellFactory
from tests.shell.fakes import make_core, publish, shutdown
from tests.shell.test_shell_memory import PASSWORD, USER, USERS, MemoryTelnet, logged_in

EVIL = "evil\x1b]0;mediasrv: ALL OK\x07\x1b[2K\x1b[1A\x1b[32mlive/decoy"


class HeldRunner:
    """A check runner whose checks stay running until the test ends them."""

    def __init__(self) -> None:
        self.calls: list[tuple[defer.Deferred[Any], Any, tuple[Any, ...]]] = []

    def __call__(self, fn: Any, *args: Any) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = defer.Deferred()
        self.calls.append((d, fn, args))
        return d

    @property
    def running(self) -> int:
        return sum(1 for d, _, _ in self.calls if not d.called)

    def finish_all(self) -> None:
        for d, fn, args in list(self.calls):  # checks started meanwhile keep running
            if not d.called:
                d.callback(fn(*args))


@pytest.fixture
def core() -> Iterator[Core]:
    c = make_core(f"shell.users={USERS}")
    yield c
    shutdown(c)


@pytest.fixture
def log_events() -> Iterator[list[LogEvent]]:
    events: list[LogEvent] = []
    observer = cast(ILogObserver, events.append)
    globalLogPublisher.addObserver(observer)
    try:
        yield events
    finally:
        globalLogPublisher.removeObserver(observer)


def lines(events: list[LogEvent]) -> list[str]:
    return [formatEvent(e) for e in events if str(e.get("log_namespace", "")).startswith("mediasrv")]


def test_parallel_guesses_get_no_more_checks_than_the_lockout_allows() -> None:
    """The audit's 40 parallel connections: before, all 40 were checked."""
    core = make_core(f"shell.users={USERS}", "shell.maxPendingLoginsPerIp=100", "shell.maxConcurrentChecks=100")
    try:
        runner = HeldRunner()
        factory = ShellFactory(core, run=runner)
        before = limits.REFUSALS.get(limits.SHELL_LOCKOUT)
        clients = [MemoryTelnet(factory, core.clock) for _ in range(40)]
        for c in clients:
            c.login(USER, "guess")
        assert len(runner.calls) == factory.limiter.max_failures == 10
        assert limits.REFUSALS.get(limits.SHELL_LOCKOUT) == before + 30
        runner.finish_all()
        core.clock.advance(3)
        assert all("Login incorrect" in c.peek() for c in clients)
        # the address stays locked: even the right password is not checked now
        c = MemoryTelnet(factory, core.clock)
        c.login(USER, PASSWORD)
        core.clock.advance(3)
        assert "Login incorrect" in c.peek() and len(runner.calls) == 10
        # another address is not affected
        other = MemoryTelnet(factory, core.clock, ip="127.0.0.2")
        other.login(USER, PASSWORD)
        runner.finish_all()
        other.expect("mediasrv> ")
    finally:
        shutdown(core)


def test_a_client_leaving_mid_check_still_spends_its_guess() -> None:
    core = make_core(f"shell.users={USERS}", "shell.maxConcurrentChecks=1")
    try:
        runner = HeldRunner()
        factory = ShellFactory(core, run=runner)
        c = MemoryTelnet(factory, core.clock)
        c.login(USER, "guess")
        assert runner.running == 1
        c.transport.loseConnection()
        c.pump(0)
        assert factory.limiter._failures["127.0.0.1"], "the abandoned guess counts as a failure"
        # the check's thread still runs: its slot is not free before it ends
        d = MemoryTelnet(factory, core.clock, ip="127.0.0.2")
        d.login(USER, PASSWORD)
        assert runner.running == 1 and len(runner.calls) == 1
        runner.finish_all()  # the abandoned check ends, the waiting one starts
        assert len(runner.calls) == 2
        runner.finish_all()
        d.expect("mediasrv> ")
    finally:
        shutdown(core)


def test_connections_logging_in_from_one_address_are_capped(log_events: list[LogEvent]) -> None:
    core = make_core(f"shell.users={USERS}")  # default shell.maxPendingLoginsPerIp = 3
    try:
        factory = ShellFactory(core)
        before = limits.REFUSALS.get(limits.SHELL_PENDING_LOGINS_PER_IP)
        first = [MemoryTelnet(factory, core.clock) for _ in range(3)]
        fourth = MemoryTelnet(factory, core.clock)
        assert fourth.closed and "too many logins from your address" in fourth.text()
        assert "Username" not in fourth.text()
        assert limits.REFUSALS.get(limits.SHELL_PENDING_LOGINS_PER_IP) == before + 1
        assert sum("shell.maxPendingLoginsPerIp" in line for line in lines(log_events)) == 1
        other = MemoryTelnet(factory, core.clock, ip="127.0.0.2")
        assert not other.closed
        # a login that succeeds frees its slot; so does a connection that leaves
        first[0].login(USER, PASSWORD)
        first[0].expect("mediasrv> ")
        first[1].transport.loseConnection()
        first[1].pump(0)
        again = [MemoryTelnet(factory, core.clock) for _ in range(2)]
        assert not any(c.closed for c in again)
        assert MemoryTelnet(factory, core.clock).closed
    finally:
        shutdown(core)


def test_check_limiter_runs_a_few_at_once_and_bounds_the_queue() -> None:
    runner = HeldRunner()
    checks = CheckLimiter(runner, size=2, max_waiting=2)
    results: list[list[Any]] = [[] for _ in range(4)]
    ds = [checks(lambda x: x, i) for i in range(4)]
    for d, out in zip(ds, results, strict=True):
        d.addBoth(out.append)
    assert runner.running == 2 and checks.running == 2
    before = limits.REFUSALS.get(limits.SHELL_CONCURRENT_CHECKS)
    busy = checks(lambda x: x, 99)
    failures: list[Failure] = []
    busy.addErrback(failures.append)
    assert failures and failures[0].check(LoginBusy)
    assert limits.REFUSALS.get(limits.SHELL_CONCURRENT_CHECKS) == before + 1
    ds[3].cancel()  # a waiting check that is cancelled leaves the line
    assert len(results[3]) == 1 and results[3][0].check(defer.CancelledError)
    runner.finish_all()  # 0 and 1 end; 2 starts, 3 does not
    assert results[:3] == [[0], [1], []] and runner.running == 1
    runner.finish_all()
    assert results[2] == [2] and checks.running == 0 and len(runner.calls) == 3
    with pytest.raises(ValueError):
        CheckLimiter(runner, size=0)


def test_a_busy_refusal_is_not_a_failure_of_the_address() -> None:
    core = make_core(f"shell.users={USERS}", "shell.maxConcurrentChecks=1", "shell.maxPendingLoginsPerIp=50")
    try:
        runner = HeldRunner()
        factory = ShellFactory(core, run=runner)
        factory.checks.max_waiting = 0
        a = MemoryTelnet(factory, core.clock, ip="10.0.0.1")
        a.login(USER, "guess")  # holds the only slot
        b = MemoryTelnet(factory, core.clock, ip="10.0.0.2")
        b.login(USER, PASSWORD)
        core.clock.advance(3)
        assert "Login incorrect" in b.peek()
        assert "10.0.0.2" not in factory.limiter._failures and "10.0.0.2" not in factory.limiter._in_flight
        runner.finish_all()
    finally:
        shutdown(core)


def test_the_real_pbkdf2_checks_never_exceed_the_limit() -> None:
    """With the thread-pool-like runner, no more than maxConcurrentChecks
    PBKDF2 computations are ever in progress together."""
    core = make_core(f"shell.users=admin:{make_hash('pw', iterations=1000)}", "shell.maxConcurrentChecks=2",
                     "shell.maxPendingLoginsPerIp=50")
    try:
        runner = HeldRunner()
        factory = ShellFactory(core, run=runner)
        peak = 0
        clients = []
        for i in range(8):
            c = MemoryTelnet(factory, core.clock, ip=f"10.0.1.{i}")
            c.login("admin", "nope")
            clients.append(c)
            peak = max(peak, runner.running)
        while runner.running:
            runner.finish_all()
            peak = max(peak, runner.running)
        assert peak == 2 and len(runner.calls) == 8
    finally:
        shutdown(core)


def test_stream_names_cannot_drive_the_admins_terminal(core: Core) -> None:
    shell = logged_in(ShellFactory(core), core.clock)
    publish(core, "live", EVIL, params="k=\x1b[31mred")
    shell.screen_after()
    start = len(shell.raw)
    for command in ("streams", "sessions", f"close live/{EVIL[:4]}"):
        shell.command(command)
    raw = bytes(shell.raw[start:])
    for seq in (b"\x1b]0;", b"\x07", b"\x1b[1A", b"\x1b[32m", b"\x1b[31m"):
        assert seq not in raw, seq
    text = shell.clean(raw)
    assert "evil\\x1b]0;mediasrv: ALL OK\\x07\\x1b[2K\\x1b[1A\\x1b[32mlive/decoy" in text


def test_tab_completion_never_types_control_characters(core: Core) -> None:
    shell = logged_in(ShellFactory(core), core.clock)
    publish(core, "live", "evil\x1b[2J")
    shell.screen_after()
    shell.type("close live/ev")
    shell._send(b"\t")
    shell.pump(0)
    assert b"\x1b[2J" not in bytes(shell.raw)


def test_user_names_cannot_forge_log_lines(core: Core, log_events: list[LogEvent]) -> None:
    t = MemoryTelnet(ShellFactory(core), core.clock)
    forged = "x\r2026-01-01T00:00:00+0000 [mediasrv.shell.auth#info] shell login: root from 10.0.0.5"
    t.login(forged, "pw")
    core.clock.advance(3)
    logged = [line for line in lines(log_events) if "shell login failed" in line]
    assert len(logged) == 1
    assert "\r" not in logged[0] and "\n" not in logged[0] and "x\\x0d2026" in logged[0]


def test_lockout_errors_are_unauthorized_logins() -> None:
    assert issubclass(LoginBusy, error.UnauthorizedLogin)


def test_an_unknown_telnet_command_is_one_log_line(core: Core, log_events: list[LogEvent]) -> None:
    """twisted.conch.telnet raises ValueError("Stumped") for IAC + an unknown
    command byte: bad input, not an unhandled error with a traceback."""
    t = MemoryTelnet(ShellFactory(core), core.clock)
    t.proto.dataReceived(b"\xff\xa2junk")  # must not raise
    assert t.transport.disconnecting
    assert [line for line in lines(log_events) if "unknown telnet command" in line] != []
    assert not [e for e in log_events if e.get("log_failure") is not None]
