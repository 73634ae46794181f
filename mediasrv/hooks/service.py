"""HookService: the one place protocols' life-cycle events meet the dialects.

* :meth:`authorize` is the gate (publish, play, RTMP connect): every enabled
  dialect is asked in parallel, each with a deadline on the injected clock,
  transport retries (``hook.retry`` after ``hook.retry_delay``) and its own
  failure policy; all must allow.  Cancelling the returned Deferred (the
  client left) cancels every call in flight.
* It listens to the :class:`SessionTable` and :class:`StreamRegistry`: when a
  session closes -- however it closes: client gone, kicked, server stopping --
  the end events paired with the starts it passed fire exactly once
  (SessionTable.close is idempotent).  Stream registration drives
  on_stream_changed / oclp meta and the no-reader timer.
* Notifications go through the durable :class:`Outbox`; calls whose reply
  matters (gates, on_stream_not_found, on_stream_none_reader, oclp update) are
  made directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twisted.internet import defer, task
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from mediasrv.config import Config
from mediasrv.core.sessions import SessionInfo
from mediasrv.hooks.client import HookClient, HookTransportError
from mediasrv.hooks.model import ALLOW, AccessRequest, Action, Decision, HookCall, HookReplyError
from mediasrv.hooks.nms import NmsDialect
from mediasrv.hooks.oclp import OclpDialect
from mediasrv.hooks.outbox import Outbox
from mediasrv.hooks.srs import SrsDialect
from mediasrv.hooks.zlm import UNAUTHED_REALM, ZlmDialect

if TYPE_CHECKING:
    from mediasrv.core.context import Core
    from mediasrv.core.stream import Stream, StreamKey

log = Logger()


class AccessDenied(Exception):
    """A hook refused (re-exported by mediasrv.core.context)."""


def _not_delivered(failure: Failure, hook: str) -> None:
    log.warn("hook {hook} not delivered: {why}", hook=hook, why=failure.getErrorMessage())


def _first_error(failure: Failure) -> Failure:
    """gatherResults wraps the first failure (a cancel, for one) in FirstError."""
    if failure.check(defer.FirstError):
        sub: Failure = failure.value.subFailure
        return sub
    return failure


def hooks_configured(cfg: Config) -> bool:
    """Whether any dialect has any URL configured (else no HTTP at all)."""
    def urls(section: Any) -> bool:
        return any(str(getattr(section, k)).strip() for k in dir(section) if k.startswith(("on_", "oclp_")))

    zlm = cfg.hook.enable and urls(cfg.hook)
    srs = cfg.http_hooks.enabled and urls(cfg.http_hooks)
    return bool(zlm or srs or cfg.notify.notify_url.strip() or urls(cfg.oclp))


@dataclass
class _SessionHooks:
    """What a session started, per dialect, so its end events pair exactly."""

    started: dict[str, set[Action]] = field(default_factory=dict)
    tc_url: str = ""
    domain: str = ""
    stream_key: StreamKey | None = None
    update: task.LoopingCall | None = None


@dataclass
class HookStats:
    calls: int = 0
    failures: int = 0
    denials: int = 0
    latencies: list[float] = field(default_factory=list)


class HookService:
    DIALECTS = ("zlm", "srs", "nms", "oclp")

    def __init__(self, core: Core, client: HookClient | None = None, outbox: Outbox | None = None) -> None:
        self.core = core
        cfg = core.config
        self.clock = core.clock
        self.client = client
        self.zlm = ZlmDialect(cfg, start_index=int(self.clock.seconds() * 1000) * 1000)
        self.srs = SrsDialect(cfg)
        self.nms = NmsDialect(cfg)
        self.oclp = OclpDialect(cfg)
        self.outbox = outbox
        self.stats = HookStats()
        self._sessions: dict[str, _SessionHooks] = {}
        self._stream_clients: dict[StreamKey, set[str]] = {}
        self._none_reader: dict[StreamKey, IDelayedCall] = {}
        self._keepalive: task.LoopingCall | None = None
        core.sessions.add_listener(self)
        core.registry.add_listener(self)

    @property
    def active(self) -> bool:
        return hooks_configured(self.core.config)

    # -- server life ------------------------------------------------------------
    def start(self) -> None:
        if self.outbox is not None:
            self.outbox.start()
        self._notify_all([self.zlm.server_started(), self.oclp.proc_call()], "server")
        if self.zlm.url("on_server_keepalive"):
            self._keepalive = task.LoopingCall(self._send_keepalive)
            self._keepalive.clock = self.clock
            self._keepalive.start(self.core.config.hook.alive_interval, now=False)

    def stop(self) -> defer.Deferred[None]:
        if self._keepalive is not None and self._keepalive.running:
            self._keepalive.stop()
        for timer in self._none_reader.values():
            if timer.active():
                timer.cancel()
        self._none_reader.clear()
        self._notify_all([self.zlm.server_exited()], "server")
        outbox = self.outbox
        if outbox is None:
            return defer.succeed(None)
        # give deliveries in flight (and the exit notice) a moment, then stop
        d = task.deferLater(self.clock, 2.0, lambda: None)
        d.addCallback(lambda _: outbox.stop())
        return d

    def _send_keepalive(self) -> None:
        counts = {"MediaSource": len(self.core.registry), "TcpSession": len(self.core.sessions),
                  "Session": len(self.core.sessions)}
        self._notify_all([self.zlm.server_keepalive(counts)], "server")

    # -- gate -----------------------------------------------------------------------
    def authorize(self, request: AccessRequest) -> defer.Deferred[Decision]:
        state = self._sessions.setdefault(request.session_id, _SessionHooks())
        if request.tc_url:
            state.tc_url = request.tc_url
        state.domain = self.oclp.domain(request)
        chains: list[tuple[str, list[HookCall]]] = []
        chains += [("zlm", c) for c in self.zlm.gate(request)]
        chains += [("srs", c) for c in self.srs.gate(request)]
        session = self.core.sessions.get(request.session_id)
        created_ms = int((session.started if session else self.clock.seconds()) * 1000)
        chains += [("nms", c) for c in self.nms.gate(request, created_ms)]
        chains += [("oclp", c) for c in self.oclp.gate(request)]
        key = self.core.registry.key(request.vhost, request.app, request.stream)
        first_client = request.action is not Action.CONNECT and not self._stream_clients.get(key)
        if first_client:
            call = self.oclp.stream_call("start", state.domain, request.app, request.stream, request.session_id)
            if call is not None:
                chains.append(("oclp_stream", [call]))  # tagged: a refused gate must close what it opened
        if not chains:
            self._gate_passed(request, state, key, set(self.DIALECTS))
            return defer.succeed(ALLOW)
        answered: list[tuple[str, Decision]] = []

        def note(result: tuple[str, Decision]) -> tuple[str, Decision]:
            answered.append(result)
            return result

        pending = [self._run_chain(dialect, chain).addCallback(note) for dialect, chain in chains]
        gathered: defer.Deferred[list[tuple[str, Decision]]] = defer.gatherResults(pending, consumeErrors=True)
        gathered.addErrback(_first_error)

        def left(failure: Failure) -> Failure:
            # The client left while some dialects were still asked: those that
            # already allowed saw a start, so they get their end event too.
            if failure.check(defer.CancelledError):
                for name, decision in answered:
                    if decision.allowed:
                        state.started.setdefault(name, set()).add(request.action)
            return failure

        gathered.addErrback(left)
        return gathered.addCallback(self._combine, request, state, key)

    def _combine(self, results: list[tuple[str, Decision]], request: AccessRequest, state: _SessionHooks,
                 key: StreamKey) -> Decision:
        denied = [d for _, d in results if not d.allowed]
        if denied:
            self.stats.denials += 1
            # a dialect whose own start call allowed still gets its end event
            allowed_by = {name for name, d in results if d.allowed}
            for name in allowed_by - {name for name, d in results if not d.allowed}:
                state.started.setdefault(name, set()).add(request.action)
            # an oclp "stream start" this client caused is paired with its "stream done"
            if "oclp_stream" in allowed_by and not self._stream_clients.get(key):
                self._notify_all([self.oclp.stream_call("done", state.domain, request.app, request.stream,
                                                        request.session_id)], str(key))
            return Decision(False, denied[0].reason)
        options: dict[str, str] = {}
        for _, d in results:
            options.update(d.options)
        self._gate_passed(request, state, key, set(self.DIALECTS))
        return Decision(True, options=options)

    def _gate_passed(self, request: AccessRequest, state: _SessionHooks, key: StreamKey, dialects: set[str]) -> None:
        for name in dialects:
            state.started.setdefault(name, set()).add(request.action)
        if request.action is Action.CONNECT:
            return
        state.stream_key = key
        self._stream_clients.setdefault(key, set()).add(request.session_id)
        interval = None
        if self.oclp.has("publish" if request.action is Action.PUBLISH else "play", "update"):
            interval = self.oclp.hooks["publish" if request.action is Action.PUBLISH else "play"].update
        if interval and state.update is None:
            loop = task.LoopingCall(self._oclp_update, request.session_id)
            loop.clock = self.clock
            state.update = loop
            loop.start(interval, now=False).addErrback(lambda f: None)

    def _run_chain(self, dialect: str, chain: list[HookCall]) -> defer.Deferred[tuple[str, Decision]]:
        """Calls of one dialect for one event, in order; the first refusal ends it."""

        @defer.inlineCallbacks
        def run() -> Any:
            decision = ALLOW
            for call in chain:
                decision = yield self.call(call)
                if not decision.allowed:
                    break
            return (dialect, decision)

        return run()

    def call(self, call: HookCall) -> defer.Deferred[Decision]:
        """One hook call whose reply matters: deadline, transport retries, then
        the dialect's failure policy.  An explicit refusal is never retried."""
        retries = self.core.config.hook.retry
        delay = self.core.config.hook.retry_delay
        client = self.client
        if client is None:
            return defer.succeed(ALLOW)

        @defer.inlineCallbacks
        def attempt() -> Any:
            last = ""
            for n in range(retries + 1):
                if n:
                    yield task.deferLater(self.clock, delay, lambda: None)
                url, body, headers = call.encode()
                start = self.clock.seconds()
                self.stats.calls += 1
                try:
                    response = yield client.request(call.method, url, call.timeout, body, headers)
                    decision = call.decode(response)
                except (HookTransportError, HookReplyError) as e:
                    self.stats.failures += 1
                    last = str(e)
                    log.warn("hook {dialect} {hook} {url}: {why} (attempt {n} of {total})", dialect=call.dialect,
                             hook=call.hook, url=call.url, why=last, n=n + 1, total=retries + 1)
                    continue
                self._latency(self.clock.seconds() - start)
                if not decision.allowed:
                    log.info("hook {dialect} {hook} refused: {why}", dialect=call.dialect, hook=call.hook,
                             why=decision.reason)
                return decision
            allowed = call.on_failure == "allow"
            log.warn("hook {dialect} {hook} failed ({why}); on_failure={policy}", dialect=call.dialect,
                     hook=call.hook, why=last, policy=call.on_failure)
            return Decision(allowed, f"{call.hook} failed: {last}")

        return attempt()

    def _latency(self, seconds: float) -> None:
        lat = self.stats.latencies
        lat.append(seconds)
        if len(lat) > 1000:
            del lat[:500]

    # -- RTSP native auth (ZLMediaKit on_rtsp_realm / on_rtsp_auth) -----------------------
    def rtsp_realm(self, request: AccessRequest) -> defer.Deferred[str]:
        """The realm to challenge with; "" = no RTSP auth (the play gate decides).
        A failed call yields ZLMediaKit's ``unAuthedRealm``, whose auth always fails."""
        call = self.zlm.rtsp_realm(request)
        if call is None:
            return defer.succeed("")

        def realm_of(decision: Decision) -> str:
            if not decision.allowed:
                return UNAUTHED_REALM
            return decision.options.get("realm", "")

        return self.call(call).addCallback(realm_of)

    def rtsp_auth(self, request: AccessRequest, user: str, realm: str,
                  must_no_encrypt: bool) -> defer.Deferred[tuple[bool, str]]:
        """``(encrypted, passwd)`` for ``user``: the plain password, or
        md5(user:realm:password) when encrypted.  Fails when it can't be had."""
        call = self.zlm.rtsp_auth(request, user, realm, must_no_encrypt)
        if call is None or realm == UNAUTHED_REALM:
            return defer.fail(AccessDenied(f"no password for {user!r} (on_rtsp_auth unavailable)"))

        def answer(decision: Decision) -> tuple[bool, str]:
            if not decision.allowed or "passwd" not in decision.options:
                raise AccessDenied(decision.reason or "on_rtsp_auth refused")
            return decision.options.get("encrypted") == "1", decision.options["passwd"]

        return self.call(call).addCallback(answer)

    # -- on_stream_not_found ---------------------------------------------------------
    def stream_not_found(self, request: AccessRequest) -> defer.Deferred[bool]:
        """True when the backend says the waiting player should fail at once."""
        call = self.zlm.stream_not_found(request)
        if call is None:
            return defer.succeed(False)
        return self.call(call).addCallback(lambda d: d.allowed)

    # -- notifications -----------------------------------------------------------------
    def notify(self, calls: list[HookCall | None], key: str) -> None:
        """Send notifications (replies ignored) through the durable outbox, in
        order per ``key`` (a stream key for stream events); None entries (a
        dialect without that hook) are skipped."""
        self._notify_all(calls, key)

    def tc_url(self, session_id: str) -> str:
        """The tcUrl a live session presented at its gate ("" if none)."""
        state = self._sessions.get(session_id)
        return state.tc_url if state is not None else ""

    def oclp_domain(self, session_id: str) -> str:
        """The PingOS ``domain`` of a live session (its tcUrl host, else its vhost)."""
        state = self._sessions.get(session_id)
        return state.domain if state is not None else ""

    def _notify_all(self, calls: list[HookCall | None], key: str) -> None:
        for call in calls:
            if call is None:
                continue
            if self.outbox is not None:
                self.outbox.enqueue(call, key)
            elif self.client is not None:
                url, body, headers = call.encode()
                self.client.request(call.method, url, call.timeout, body, headers).addErrback(
                    _not_delivered, call.hook)

    # SessionListener
    def session_opened(self, session: SessionInfo) -> None:
        pass

    def session_closed(self, session: SessionInfo) -> None:
        state = self._sessions.pop(session.id, None)
        if state is None:
            return
        if state.update is not None and state.update.running:
            state.update.stop()
        now = self.clock.seconds()
        key = str(state.stream_key) if state.stream_key else session.id
        calls: list[HookCall | None] = []
        started = state.started
        calls += self.zlm.session_ended(session, started.get("zlm", set()), now)
        calls += self.srs.session_ended(session, started.get("srs", set()), state.tc_url)
        calls += self.nms.session_ended(session, started.get("nms", set()), now)
        if started.get("oclp", set()) & {Action.PUBLISH, Action.PLAY}:
            calls.append(self.oclp.session_call(session, "done", state.domain))
        if state.stream_key is not None:
            clients = self._stream_clients.get(state.stream_key)
            if clients is not None:
                clients.discard(session.id)
                if not clients:
                    del self._stream_clients[state.stream_key]
                    sk = state.stream_key
                    calls.append(self.oclp.stream_call("done", state.domain, sk.app, sk.stream, session.id))
        self._notify_all(calls, key)

    def _oclp_update(self, session_id: str) -> None:
        session = self.core.sessions.get(session_id)
        state = self._sessions.get(session_id)
        if session is None or state is None:
            return
        call = self.oclp.session_call(session, "update", state.domain)
        if call is None:
            return

        def decided(decision: Decision) -> None:
            if not decision.allowed:
                log.info("oclp update refused session {sid}: {why}; closing", sid=session_id, why=decision.reason)
                self.core.sessions.kick(session_id, f"oclp update refused: {decision.reason}")

        self.call(call).addCallback(decided).addErrback(lambda f: log.failure("oclp update", f))

    # StreamListener
    def schemas_for(self, stream: Stream) -> list[str]:
        out = []
        for schema in self.core.schemas:
            flag = {"rtmp": "enable_rtmp", "rtsp": "enable_rtsp", "hls": "enable_hls"}.get(schema)
            if flag is None:
                out.append(schema)
                continue
            value = stream.options.get(flag)
            enabled = getattr(self.core.config.protocol, flag) if value is None else value not in ("0", "false")
            if enabled:
                out.append(schema)
        return out

    def stream_registered(self, stream: Stream) -> None:
        now = self.clock.seconds()
        calls: list[HookCall | None] = list(self.zlm.stream_changed(stream, True, self.schemas_for(stream), now))
        pub = stream.publisher
        state = self._sessions.get(pub.id) if pub else None
        calls.append(self.oclp.call("meta", "start", state.domain if state else stream.key.vhost, stream.key.app,
                                    stream.key.stream, pub.id if pub else "", pub.params if pub else ""))
        self._notify_all(calls, str(stream.key))
        self.stream_readers_changed(stream)

    def stream_unregistered(self, stream: Stream) -> None:
        timer = self._none_reader.pop(stream.key, None)
        if timer is not None and timer.active():
            timer.cancel()
        calls = self.zlm.stream_changed(stream, False, self.schemas_for(stream), self.clock.seconds())
        self._notify_all(list(calls), str(stream.key))

    def stream_readers_changed(self, stream: Stream) -> None:
        key = stream.key
        timer = self._none_reader.pop(key, None)
        if timer is not None and timer.active():
            timer.cancel()
        if stream.viewer_count or stream.closed:
            return
        delay = self.core.config.general.streamNoneReaderDelayMS / 1000.0
        self._none_reader[key] = self.clock.callLater(delay, self._no_reader, stream)

    def _no_reader(self, stream: Stream) -> None:
        self._none_reader.pop(stream.key, None)
        if stream.viewer_count or stream.closed:
            return
        auto = stream.options.get("auto_close")
        auto_close = self.core.config.protocol.auto_close if auto is None else auto not in ("0", "false")
        if auto_close:
            log.info("stream {key} has no reader; auto_close", key=str(stream.key))
            self.core.registry.close_stream(stream.key, "no reader (auto_close)")
            return
        schemas = self.schemas_for(stream)
        call = self.zlm.stream_none_reader(stream, schemas[0] if schemas else "rtmp")
        if call is None:
            return

        def decided(decision: Decision) -> None:
            if decision.allowed and not stream.viewer_count and not stream.closed:
                log.info("stream {key} closed by on_stream_none_reader", key=str(stream.key))
                self.core.registry.close_stream(stream.key, "no reader (on_stream_none_reader)")

        self.call(call).addCallback(decided).addErrback(lambda f: log.failure("on_stream_none_reader", f))

    def describe(self) -> dict[str, Any]:
        lat = sorted(self.stats.latencies)
        return {"calls": self.stats.calls, "failures": self.stats.failures, "denials": self.stats.denials,
                "latency_p50_ms": round(lat[len(lat) // 2] * 1000, 1) if lat else None,
                "outbox_depth": self.outbox.depth if self.outbox else 0,
                "outbox_dropped": self.outbox.dropped if self.outbox else 0}


__all__ = ["HookService"]
