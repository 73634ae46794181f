"""Who may log in to the telnet shell, and how hard guessing is made.

* :class:`HookShellChecker` asks ZLMediaKit's ``on_shell_login`` hook
  (shared/spec/hooks.md §1.4: ``ip, port, id, user_name, passwd`` → ``code``
  0 allows).  A hook that fails or times out denies, whatever
  ``hook.on_failure`` says: a login is never let in by a broken backend.
* :class:`StaticUsersChecker` checks ``shell.users``: ``user:hash`` pairs
  separated by commas or spaces, each hash in the PBKDF2 format
  ``pbkdf2_sha256$<iterations>$<salt>$<base64 sha256 key>`` (Django's
  layout).  Make one with ``python -m mediasrv.shell.auth <user>``.
* :class:`ShellChecker` picks per login: the hook when an ``on_shell_login``
  URL is set, else ``shell.users``, else every login is refused.
* :class:`ShellLoginProtocol` is Twisted's ``AuthenticatingTelnetProtocol``
  with what it lacks (DESIGN §5: it re-prompts forever): a randomized delay
  before every failure reply, at most ``MAX_ATTEMPTS`` tries per connection,
  a per-address lockout after repeated failures, and a login deadline.

Guessing in parallel does not help (security audit finding 11): a check
counts against its address's lockout from the moment it *starts* (a
reservation, settled when it ends), so 40 parallel connections get no more
guesses than one; at most ``shell.maxPendingLoginsPerIp`` connections from
one address may be logging in at once; and :class:`CheckLimiter` runs at
most ``shell.maxConcurrentChecks`` PBKDF2 checks at a time, server-wide,
with a bounded queue, so the threadpool (shared with DNS and MP4 finishing)
is never saturated by password guesses.  Every refusal is counted in
:data:`mediasrv.core.limits.REFUSALS`.  User names are logged through
:func:`mediasrv.core.names.safe_text` (no forged log lines).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
import re
import secrets
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.conch import telnet
from twisted.cred import credentials, error
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.portal import Portal
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from mediasrv.core.limits import (
    REFUSALS,
    SHELL_CONCURRENT_CHECKS,
    SHELL_LOCKOUT,
    SHELL_PENDING_LOGINS_PER_IP,
)
from mediasrv.core.names import safe_text
from mediasrv.hooks.zlm import decode_reply

if TYPE_CHECKING:
    from mediasrv.core.context import Core
    from mediasrv.core.sessions import SessionInfo

log = Logger()

ALGORITHM = "pbkdf2_sha256"
DEFAULT_ITERATIONS = 600_000
_HASH_RE = re.compile(r"^pbkdf2_sha256\$(\d+)\$([A-Za-z0-9./+_-]+)\$([A-Za-z0-9+/=]+)$")

# ``run`` puts a blocking call (PBKDF2 takes a good fraction of a second) off
# the reactor thread; tests pass a synchronous one.
Runner = Callable[..., "defer.Deferred[Any]"]


def _sync_runner(fn: Callable[..., Any], *args: Any) -> defer.Deferred[Any]:
    return defer.maybeDeferred(fn, *args)


class LoginBusy(error.UnauthorizedLogin):
    """Too many password checks are waiting: the login is refused without
    being checked (and without counting as the address's failure)."""


class CheckLimiter:
    """A :data:`Runner` that runs at most ``size`` blocking checks at once.

    Further checks wait in line, at most ``max_waiting`` of them; beyond
    that a check fails at once with :class:`LoginBusy`.  A slot is freed
    only when its check has really finished: a client that disconnects
    mid-check does not free the CPU its thread is still using.
    """

    def __init__(self, run: Runner, size: int, max_waiting: int | None = None) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, not {size}")
        self.run = run
        self.size = size
        self.max_waiting = 8 * size if max_waiting is None else max_waiting
        self.running = 0
        self._waiting: deque[tuple[defer.Deferred[Any], Callable[..., Any], tuple[Any, ...]]] = deque()

    def __call__(self, fn: Callable[..., Any], *args: Any) -> defer.Deferred[Any]:
        if self.running < self.size:
            result: defer.Deferred[Any] = defer.Deferred()
            self._start(result, fn, args)
            return result
        if len(self._waiting) >= self.max_waiting:
            REFUSALS.count(SHELL_CONCURRENT_CHECKS)
            log.warn("shell: {n} password checks running and {w} waiting; login refused unchecked",
                     n=self.running, w=len(self._waiting))
            return defer.fail(LoginBusy("server busy checking passwords; try again later"))

        def forget(d: defer.Deferred[Any]) -> None:  # cancelled while waiting: leave the line
            for item in self._waiting:
                if item[0] is d:
                    self._waiting.remove(item)
                    break

        waiting: defer.Deferred[Any] = defer.Deferred(forget)
        self._waiting.append((waiting, fn, args))
        return waiting

    def _start(self, result: defer.Deferred[Any], fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.running += 1
        work = self.run(fn, *args)

        def done(outcome: Any) -> None:
            self.running -= 1
            if result.called:  # a cancelled login ignores the outcome
                pass
            elif isinstance(outcome, Failure):
                result.errback(outcome)
            else:
                result.callback(outcome)
            while self._waiting and self.running < self.size:
                nxt, nfn, nargs = self._waiting.popleft()
                if not nxt.called:
                    self._start(nxt, nfn, nargs)

        work.addBoth(done)


# -- password hashes ---------------------------------------------------------------------------
def make_hash(password: str, salt: str | None = None, iterations: int = DEFAULT_ITERATIONS) -> str:
    salt = salt or secrets.token_urlsafe(12)
    key = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt.encode("utf-8"), iterations)
    return f"{ALGORITHM}${iterations}${salt}${base64.b64encode(key).decode('ascii')}"


def check_hash(encoded: str) -> None:
    """Raise ValueError when ``encoded`` is not a hash this module can verify."""
    m = _HASH_RE.match(encoded)
    if m is None:
        raise ValueError("expected pbkdf2_sha256$<iterations>$<salt>$<base64 hash>")
    if not 1 <= int(m.group(1)) <= 10_000_000:
        raise ValueError("iterations out of range")


def verify_hash(password: str, encoded: str) -> bool:
    m = _HASH_RE.match(encoded)
    if m is None:
        return False
    iterations, salt, expected = int(m.group(1)), m.group(2), m.group(3)
    key = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt.encode("utf-8"), iterations)
    return hmac.compare_digest(base64.b64encode(key).decode("ascii"), expected)


def parse_users(text: str) -> dict[str, str]:
    """``"alice:pbkdf2_sha256$…, bob:pbkdf2_sha256$…"`` → ``{user: hash}``."""
    users: dict[str, str] = {}
    for item in re.split(r"[\s,]+", text.strip()):
        if not item:
            continue
        user, sep, encoded = item.partition(":")
        if not sep or not user:
            raise ValueError(f"{item[:20]!r}…: expected user:pbkdf2_sha256$…")
        try:
            check_hash(encoded)
        except ValueError as e:
            raise ValueError(f"user {user!r}: {e}") from None
        users[user] = encoded
    return users


# -- credentials and checkers --------------------------------------------------------------------
class ShellCredentials(credentials.UsernamePassword):
    """User name and password, and where the login comes from (the hook wants it)."""

    def __init__(self, username: bytes, password: bytes, ip: str, port: int, session_id: str) -> None:
        super().__init__(username, password)
        self.ip = ip
        self.port = port
        self.session_id = session_id


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


@implementer(ICredentialsChecker)
class StaticUsersChecker:
    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, users: dict[str, str], run: Runner = _sync_runner) -> None:
        self.users = users
        self.run = run
        self._dummy_hash = ""

    def _dummy(self) -> str:
        """A hash as costly as the configured ones, checked for unknown users
        so that timing does not tell which user names exist."""
        if not self._dummy_hash:
            m = _HASH_RE.match(next(iter(self.users.values()), ""))
            self._dummy_hash = make_hash("", "unknown-user", int(m.group(1)) if m else DEFAULT_ITERATIONS)
        return self._dummy_hash

    def check(self, user: str, password: str) -> bool:
        """Blocking (PBKDF2): run through ``self.run``."""
        encoded = self.users.get(user)
        if encoded is None:
            verify_hash(password, self._dummy())
            return False
        return verify_hash(password, encoded)

    def requestAvatarId(self, creds: Any) -> defer.Deferred[Any]:
        user = _text(creds.username)

        def decided(ok: bool) -> bytes:
            if ok:
                return user.encode("utf-8")
            raise error.UnauthorizedLogin("bad user name or password")

        return self.run(self.check, user, _text(creds.password)).addCallback(decided)


@implementer(ICredentialsChecker)
class HookShellChecker:
    """``on_shell_login`` through the HookService (deadline, transport retries)."""

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, core: Core) -> None:
        self.core = core

    def requestAvatarId(self, creds: Any) -> defer.Deferred[Any]:
        hooks = self.core.hooks
        user = _text(creds.username)
        payload = {"ip": getattr(creds, "ip", ""), "port": getattr(creds, "port", 0),
                   "id": getattr(creds, "session_id", ""), "user_name": user, "passwd": _text(creds.password)}
        call = hooks.zlm.call("on_shell_login", payload, decode_reply)
        if call is None or hooks.client is None:
            return defer.fail(error.UnauthorizedLogin("on_shell_login is not available"))
        call.on_failure = "deny"

        def decided(decision: Any) -> bytes:
            if decision.allowed:
                return user.encode("utf-8")
            raise error.UnauthorizedLogin(decision.reason or "refused by on_shell_login")

        return hooks.call(call).addCallback(decided)


@implementer(ICredentialsChecker)
class ShellChecker:
    """Chooses the checker from the live configuration at each login."""

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, core: Core, run: Runner = _sync_runner) -> None:
        self.core = core
        self.run = run
        self.hook = HookShellChecker(core)
        self._static: tuple[str, StaticUsersChecker] | None = None

    def mode(self) -> str:
        cfg = self.core.config
        if cfg.hook.enable and cfg.hook.on_shell_login.strip():
            return "hook"
        if cfg.shell.users.strip():
            return "users"
        return "closed"

    def requestAvatarId(self, creds: Any) -> defer.Deferred[Any]:
        mode = self.mode()
        if mode == "hook":
            return self.hook.requestAvatarId(creds)
        if mode == "users":
            text = self.core.config.shell.users
            if self._static is None or self._static[0] != text:
                try:
                    users = parse_users(text)
                except ValueError:
                    users = {}
                self._static = (text, StaticUsersChecker(users, self.run))
            return self._static[1].requestAvatarId(creds)
        return defer.fail(error.UnauthorizedLogin("no on_shell_login hook and no shell.users: shell closed"))


# -- attempt limits ---------------------------------------------------------------------------------
class LoginLimiter:
    """Failures per address in a sliding window; past ``max_failures`` the
    address is refused without its credentials being checked.

    A check in progress counts as a failure until it ends (:meth:`begin` /
    :meth:`end`), so parallel connections cannot start more checks than the
    lockout allows.  :meth:`open_login`/:meth:`close_login` count the
    connections of each address that are logging in.
    """

    def __init__(self, clock: IReactorTime, max_failures: int = 10, window: float = 600.0) -> None:
        self.clock = clock
        self.max_failures = max_failures
        self.window = window
        self._failures: dict[str, deque[float]] = {}
        self._in_flight: dict[str, int] = {}
        self._logging_in: dict[str, int] = {}

    def _recent(self, ip: str) -> deque[float]:
        q = self._failures.setdefault(ip, deque())
        cutoff = self.clock.seconds() - self.window
        while q and q[0] < cutoff:
            q.popleft()
        return q

    def blocked(self, ip: str) -> bool:
        q = self._recent(ip)
        if not q:
            self._failures.pop(ip, None)
        return len(q) + self._in_flight.get(ip, 0) >= self.max_failures

    def begin(self, ip: str) -> bool:
        """Reserve a check for ``ip``; False (and counted) when it is locked out."""
        if self.blocked(ip):
            REFUSALS.count(SHELL_LOCKOUT)
            return False
        self._in_flight[ip] = self._in_flight.get(ip, 0) + 1
        return True

    def end(self, ip: str, ok: bool | None) -> None:
        """Settle a reservation: True succeeded, False failed, None neither
        (the check never ran: the server was busy)."""
        n = self._in_flight.get(ip, 0) - 1
        if n > 0:
            self._in_flight[ip] = n
        else:
            self._in_flight.pop(ip, None)
        if ok is True:
            self.succeeded(ip)
        elif ok is False:
            self.failed(ip)

    def failed(self, ip: str) -> None:
        self._recent(ip).append(self.clock.seconds())

    def succeeded(self, ip: str) -> None:
        self._failures.pop(ip, None)

    def open_login(self, ip: str, limit: int) -> bool:
        """One more connection of ``ip`` is logging in; False (and counted)
        when ``limit`` are already."""
        n = self._logging_in.get(ip, 0)
        if n >= limit:
            REFUSALS.count(SHELL_PENDING_LOGINS_PER_IP)
            return False
        self._logging_in[ip] = n + 1
        return True

    def close_login(self, ip: str) -> None:
        n = self._logging_in.get(ip, 0) - 1
        if n > 0:
            self._logging_in[ip] = n
        else:
            self._logging_in.pop(ip, None)


class ShellLoginProtocol(telnet.AuthenticatingTelnetProtocol):
    """User name and password prompts, then the avatar (the admin shell).

    The login's mind is this protocol: the realm reads ``session`` from it.
    """

    transport: Any  # the TelnetTransport
    MAX_ATTEMPTS = 3
    FAIL_DELAY = (1.0, 2.5)  # seconds before a failure is told, uniformly random
    LOGIN_SECONDS = 60.0  # the whole login must finish within this
    ECHO_WAIT = 2.0  # a client that does not answer the echo negotiation is not waited for longer

    def __init__(self, portal: Portal, core: Core, limiter: LoginLimiter,
                 rng: Callable[[float, float], float] = random.uniform) -> None:
        super().__init__(portal)
        self.core = core
        self.limiter = limiter
        self.rng = rng
        self.attempts = 0
        self.session: SessionInfo | None = None
        self._timers: list[IDelayedCall] = []
        self._pending: defer.Deferred[Any] | None = None
        self._logging_in = False  # counted in limiter.open_login
        self._checking = False  # a check reserved with limiter.begin is running

    # -- connection --------------------------------------------------------------------
    def connectionMade(self) -> None:
        peer = self.transport.getPeer()
        host = self.transport.getHost()
        self.session = s = self.core.sessions.open("shell", getattr(peer, "host", ""), getattr(peer, "port", 0),
                                                   getattr(host, "port", 0), self.core.clock.seconds())
        s.closer = self.kick
        limit = self.core.config.shell.maxPendingLoginsPerIp
        if not self.limiter.open_login(s.peer_ip, limit):
            log.warn("shell connection from {ip} refused: {n} logins from that address already"
                     " (shell.maxPendingLoginsPerIp)", ip=s.peer_ip, n=limit)
            self.transport.write(b"too many logins from your address; try again later\n")
            self.transport.loseConnection()
            return
        self._logging_in = True
        self.transport.write(b"mediasrv admin shell\n")
        self._later(self.LOGIN_SECONDS, self._login_timeout)
        super().connectionMade()

    def _done_logging_in(self) -> None:
        if self._logging_in and self.session is not None:
            self._logging_in = False
            self.limiter.close_login(self.session.peer_ip)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancel_timers()
        self._done_logging_in()
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.cancel()
        if self._checking and self.session is not None:
            # the client left mid-check: the guess was made, it counts
            self._checking = False
            self.limiter.end(self.session.peer_ip, False)
        try:
            super().connectionLost(reason)
        finally:
            if self.session is not None:
                self.core.sessions.close(self.session)

    def kick(self, reason: str) -> None:
        log.info("shell session {sid} kicked: {reason}", sid=self.session.id if self.session else "?",
                 reason=reason)
        if self.transport is not None:
            try:
                self.transport.write(f"\n*** {reason}\n".encode("utf-8", "replace"))
            except Exception:  # noqa: BLE001 - the socket may already be gone
                pass
            self.transport.loseConnection()

    def _later(self, delay: float, fn: Callable[..., Any], *args: Any) -> IDelayedCall:
        call = self.core.clock.callLater(delay, fn, *args)
        self._timers = [c for c in self._timers if c.active()] + [call]
        return call

    def _cancel_timers(self) -> None:
        for call in self._timers:
            if call.active():
                call.cancel()
        self._timers = []

    def _login_timeout(self) -> None:
        if self.state != "Command":
            log.info("shell login from {ip} timed out", ip=self.session.peer_ip if self.session else "?")
            self.transport.write(b"\nLogin timed out\n")
            self.transport.loseConnection()

    # -- prompts ---------------------------------------------------------------------
    def telnet_User(self, line: bytes) -> str:
        self.username = line.strip()
        # ask the client to stop echoing while the password is typed
        self.transport.will(telnet.ECHO).addErrback(lambda f: None)
        self.transport.write(b"Password: ")
        return "Password"

    def telnet_Password(self, line: bytes) -> str:
        username, password = self.username, line.rstrip(b"\r\n")
        del self.username
        started = [False]

        def login(_: object = None) -> None:
            if started[0] or self.transport is None:
                return
            started[0] = True
            self._login(username, password)

        # Twisted waits for the client to agree to stop our echo; a client
        # that never answers would hang the login, so do not wait long.
        d = self.transport.wont(telnet.ECHO)
        d.addBoth(login)
        self._later(self.ECHO_WAIT, login)
        return "Discard"

    def _login(self, username: bytes, password: bytes) -> None:
        s = self.session
        assert s is not None
        self.attempts += 1
        if not self.limiter.begin(s.peer_ip):
            log.warn("shell login from {ip} refused: too many failures from that address", ip=s.peer_ip)
            self._failed(Failure(error.UnauthorizedLogin("address locked out")), username)
            return
        self._checking = True
        creds = ShellCredentials(username, password, s.peer_ip, s.peer_port, s.id)
        self._pending = d = self.portal.login(creds, self, telnet.ITelnetProtocol)
        d.addCallback(self._ok, username)
        d.addErrback(self._failed, username)

    def _settle(self, ok: bool | None) -> None:
        if self._checking and self.session is not None:
            self._checking = False
            self.limiter.end(self.session.peer_ip, ok)

    def _ok(self, ial: Any, username: bytes) -> None:
        self._pending = None
        assert self.session is not None
        self._settle(True)
        self._done_logging_in()
        self._cancel_timers()
        self.session.params = "user=" + _text(username)
        log.info("shell login: {user} from {ip}:{port} (session {sid})", user=safe_text(_text(username), 64),
                 ip=self.session.peer_ip, port=self.session.peer_port, sid=self.session.id)
        self._cbLogin(ial)

    def _failed(self, failure: Failure, username: bytes) -> None:
        self._pending = None
        if failure.check(defer.CancelledError):
            return
        assert self.session is not None
        if not failure.check(error.UnauthorizedLogin, error.UnhandledCredentials):
            log.failure("shell login check failed", failure)
        if self._checking:
            self._settle(None if failure.check(LoginBusy) else False)
        else:
            self.limiter.failed(self.session.peer_ip)  # locked out: another failure extends the lockout
        log.warn("shell login failed: {user} from {ip}:{port} (attempt {n}): {why}",
                 user=safe_text(_text(username), 64),
                 ip=self.session.peer_ip, port=self.session.peer_port, n=self.attempts,
                 why=failure.getErrorMessage())
        self._later(self.rng(*self.FAIL_DELAY), self._tell_failure)

    def _tell_failure(self) -> None:
        if self.transport is None:
            return
        self.transport.write(b"\nLogin incorrect\n")
        if self.attempts >= self.MAX_ATTEMPTS:
            self.transport.write(b"Too many failures; bye\n")
            self.transport.loseConnection()
            return
        self.transport.write(b"Username: ")
        self.state = "User"


def main(argv: list[str] | None = None) -> None:
    """``python -m mediasrv.shell.auth USER``: prompt for a password, print a ``shell.users`` entry."""
    import argparse
    import getpass

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("user")
    p.add_argument("--iterations", type=int, default=DEFAULT_ITERATIONS)
    a = p.parse_args(argv)
    password = getpass.getpass(f"password for {a.user}: ")
    if getpass.getpass("again: ") != password:
        raise SystemExit("passwords differ")
    print(f"{a.user}:{make_hash(password, iterations=a.iterations)}")


if __name__ == "__main__":
    main()
