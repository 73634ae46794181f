"""The telnet listener: login protocol → cred portal → realm → admin shell.

Per connection: ``TelnetTransport`` runs :class:`~mediasrv.shell.auth.ShellLoginProtocol`
until the portal accepts the credentials; the realm then hands back a
``TelnetBootstrapProtocol(insults.ServerProtocol, AdminShell, …)`` (the
avatar, as in Twisted's ``manhole_tap``), which takes over the transport.
Every shell connection is a row of the session table (protocol ``shell``),
so it shows in ``sessions``/``getAllSession`` and can be kicked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.conch import telnet
from twisted.conch.insults import insults
from twisted.cred.portal import IRealm, Portal
from twisted.internet import threads
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from mediasrv.config import ConfigError
from mediasrv.shell.auth import (
    CheckLimiter,
    LoginLimiter,
    Runner,
    ShellChecker,
    ShellLoginProtocol,
    _sync_runner,
    parse_users,
)
from mediasrv.shell.commands import AdminShell

if TYPE_CHECKING:
    from mediasrv.core.context import Core

log = Logger()


class ShellBootstrap(telnet.TelnetBootstrapProtocol):
    """The avatar.  Once it has the transport the login protocol hears
    nothing more, so the session row is closed from here."""

    transport: Any
    protocol: Any

    def __init__(self, login: ShellLoginProtocol, *args: Any) -> None:
        super().__init__(*args)
        self.login = login

    def connectionMade(self) -> None:
        # TelnetBootstrapProtocol.connectionMade, but offering SGA as well as
        # ECHO: with both on the server side telnet clients switch to
        # character-at-a-time mode, so arrows, history and Tab reach the
        # shell.  A client refusing an option is normal, not an error to log.
        t = self.transport
        t.negotiationMap[telnet.NAWS] = self.telnet_NAWS
        t.negotiationMap[telnet.LINEMODE] = self.telnet_LINEMODE
        for opt in (telnet.LINEMODE, telnet.NAWS):
            t.do(opt).addErrback(lambda f: None)
        for opt in (telnet.ECHO, telnet.SGA):
            t.will(opt).addErrback(lambda f: None)
        self.protocol = self.protocolFactory(*self.protocolArgs, **self.protocolKwArgs)
        self.protocol.makeConnection(self)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        try:
            super().connectionLost(reason)
        finally:
            if self.login.session is not None:
                self.login.core.sessions.close(self.login.session)


@implementer(IRealm)
class ShellRealm:
    def __init__(self, core: Core, python_enabled: bool, started: float,
                 namespace: dict[str, Any] | None = None) -> None:
        self.core = core
        self.python_enabled = python_enabled
        self.started = started
        self.namespace = namespace or {}

    def requestAvatar(self, avatar_id: bytes | tuple[()], mind: Any, *interfaces: Any) -> tuple[Any, Any, Any]:
        if telnet.ITelnetProtocol not in interfaces:
            raise NotImplementedError("the shell offers telnet only")
        login: ShellLoginProtocol = mind
        user = avatar_id.decode("utf-8", "replace") if isinstance(avatar_id, bytes) else "?"
        avatar = ShellBootstrap(login, insults.ServerProtocol, AdminShell, self.core, user, login.session,
                                self.python_enabled, self.started, self.namespace)
        return telnet.ITelnetProtocol, avatar, lambda: None


class ShellTelnetTransport(telnet.TelnetTransport):
    """Twisted's telnet transport, with bad telnet commands treated as bad
    input: ``TelnetTransport`` raises ``ValueError("Stumped", byte)`` for an
    unknown command after IAC, which the reactor would log as an unhandled
    error with a traceback (one per hostile connection); here it is one log
    line and the connection is dropped."""

    def dataReceived(self, data: bytes) -> None:
        try:
            super().dataReceived(data)
        except ValueError as e:
            if e.args[:1] != ("Stumped",):
                raise
            peer = self.transport.getPeer() if self.transport is not None else None
            log.warn("shell connection from {ip}: unknown telnet command {cmd!r} after IAC; closing",
                     ip=getattr(peer, "host", "?"), cmd=e.args[1] if len(e.args) > 1 else b"")
            if self.transport is not None:
                self.transport.abortConnection()  # type: ignore[attr-defined]  # a TCP transport


class ShellFactory(Factory):
    """Builds one telnet connection per client.  ``python_enabled`` is read
    from the configuration once, at start-up: the manhole cannot be switched
    on from inside a shell or the API."""

    def __init__(self, core: Core, reactor: Any = None, namespace: dict[str, Any] | None = None,
                 run: Runner | None = None) -> None:
        self.core = core
        try:
            parse_users(core.config.shell.users)
        except ValueError as e:
            raise ConfigError(core.config.source, "[shell] users", str(e)) from None
        if run is None:
            if reactor is not None and hasattr(reactor, "getThreadPool"):
                def run(fn: Any, *args: Any) -> Any:
                    return threads.deferToThreadPool(reactor, reactor.getThreadPool(), fn, *args)
            else:
                run = _sync_runner
        self.checks = CheckLimiter(run, core.config.shell.maxConcurrentChecks)
        self.checker = ShellChecker(core, self.checks)
        self.limiter = LoginLimiter(core.clock)
        self.realm = ShellRealm(core, core.config.shell.python, core.clock.seconds(), namespace)
        self.portal = Portal(self.realm, [self.checker])

    def buildProtocol(self, addr: Any) -> Protocol:
        proto = ShellTelnetTransport(ShellLoginProtocol, self.portal, self.core, self.limiter)
        proto.factory = self
        return proto
