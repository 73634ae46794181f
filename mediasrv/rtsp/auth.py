"""RTSP authentication of one connection: realm → challenge → verify.

ZLMediaKit's model: ``on_rtsp_realm`` says whether a stream needs RTSP auth
(an empty realm: no, the play gate decides); ``on_rtsp_auth`` returns the
user's password or its HA1 (``encrypted``), and the server checks the Digest
(RFC 2617, as RTSP 1.0 clients send it) or, with ``rtsp.authBasic=1``, Basic
credentials itself.  Both hooks are reached through ``core.rtsp_realm`` /
``core.rtsp_auth``.

The first request without credentials gets a 401 challenge at once (a routine
step, logged at debug level).  A wrong or unusable credential gets its 401 --
with a fresh nonce -- only after a uniform random delay of up to
:data:`MAX_AUTH_DELAY` (MediaMTX's answer to password guessing).  Nonces are
this connection's own: one issued to another connection is refused.
"""

from __future__ import annotations

import random
from collections import deque

from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure

from mediasrv.core.context import Core
from mediasrv.hooks.model import AccessRequest
from mediasrv.rtsp import digest
from mediasrv.rtsp.parser import RtspRequest
from mediasrv.rtsp.reply import RtspError

log = Logger()

MAX_AUTH_DELAY = 2.0  # seconds; a failed login waits uniformly 0..this before its 401 (MediaMTX's LogAndDelayError)
KEPT_NONCES = 4


class RtspAuthenticator:
    """The RTSP auth state of one connection: the nonces it issued, the user
    it verified (per realm) and how many attempts failed."""

    def __init__(self, core: Core, rng: random.Random | None = None) -> None:
        self.core = core
        self.failures = 0
        self._random = rng or random.SystemRandom()
        self._nonces: deque[str] = deque(maxlen=KEPT_NONCES)
        self._authed: tuple[str, str] | None = None  # (realm, user) once verified

    def authenticate(self, req: RtspRequest, request: AccessRequest) -> defer.Deferred[str]:
        """Fires with the verified user name, or "" when the stream's realm is
        empty (no RTSP auth: the caller asks the play gate).  Fails with
        :class:`RtspError` (401 with a challenge, 403 when the realm hook
        failed)."""
        d = self._realm(request)
        d.addCallback(lambda realm: self._verify(req, request, realm))
        return d

    def _realm(self, request: AccessRequest) -> defer.Deferred[str]:
        realm_of = getattr(self.core, "rtsp_realm", None)
        if realm_of is None:
            return defer.succeed("")
        d: defer.Deferred[str] = defer.maybeDeferred(realm_of, request)

        def failed(f: Failure) -> Failure:
            if f.check(defer.CancelledError):
                return f
            raise RtspError(403, f"on_rtsp_realm failed: {f.getErrorMessage()}")

        d.addErrback(failed)
        return d

    def _challenge(self, realm: str, why: str, quiet: bool = False) -> RtspError:
        nonce = digest.new_nonce()
        self._nonces.append(nonce)
        values = digest.challenge(realm, nonce, basic=self.core.config.rtsp.authBasic)
        return RtspError(401, why, headers=[("WWW-Authenticate", v) for v in values], quiet=quiet)

    def _failed(self, realm: str, why: str) -> defer.Deferred[str]:
        """A wrong or unusable credential: 401 with a fresh nonce after a random delay."""
        self.failures += 1
        delay = self._random.uniform(0, MAX_AUTH_DELAY)
        d: defer.Deferred[None] = task.deferLater(self.core.clock, delay, lambda: None)

        def challenge(_: None) -> str:
            raise self._challenge(realm, why)

        return d.addCallback(challenge)

    def _verify(self, req: RtspRequest, request: AccessRequest, realm: str) -> str | defer.Deferred[str]:
        if not realm:
            return ""
        if self._authed is not None and self._authed[0] == realm:
            return self._authed[1]
        header = req.header("Authorization")
        if header is None:
            raise self._challenge(realm, "authentication required", quiet=True)
        try:
            creds = digest.parse_authorization(header)
        except digest.AuthError as e:
            return self._failed(realm, f"unreadable Authorization: {e}")
        basic = isinstance(creds, digest.BasicCredentials)
        if basic and not self.core.config.rtsp.authBasic:
            return self._failed(realm, "Basic auth offered but rtsp.authBasic=0")
        if isinstance(creds, digest.DigestCredentials):
            if creds.realm != realm:
                return self._failed(realm, f"Digest for realm {creds.realm!r}, expected {realm!r}")
            if creds.nonce not in self._nonces:
                return self._failed(realm, "stale or foreign nonce")
        check = getattr(self.core, "rtsp_auth", None)
        if check is None:
            return self._failed(realm, "a realm is set but nothing can check passwords (no rtsp_auth)")
        d: defer.Deferred[tuple[bool, str]] = defer.maybeDeferred(check, request, creds.username, realm, basic)

        def verify(answer: tuple[bool, str]) -> str | defer.Deferred[str]:
            encrypted, passwd = answer
            if isinstance(creds, digest.BasicCredentials):
                ok = digest.verify_basic(creds, passwd)
            elif encrypted:
                ok = digest.verify_digest(creds, req.method, ha1_hex=passwd)
            else:
                ok = digest.verify_digest(creds, req.method, password=passwd)
            if not ok:
                return self._failed(realm, f"wrong credentials for user {creds.username!r}")
            self._authed = (realm, creds.username)
            log.info("rtsp session {sid}: user {user!r} authenticated in realm {realm!r}", sid=request.session_id,
                     user=creds.username, realm=realm)
            return creds.username

        def hook_failed(f: Failure) -> Failure | defer.Deferred[str]:
            if f.check(defer.CancelledError):
                return f
            return self._failed(realm, f"on_rtsp_auth failed: {f.getErrorMessage()}")

        d.addCallbacks(verify, hook_failed)
        return d  # type: ignore[return-value]
