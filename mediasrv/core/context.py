"""The collaborators every protocol factory receives (no module-level singletons)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from mediasrv.config import Config
from mediasrv.core.registry import StreamNotFound, StreamRegistry
from mediasrv.core.sessions import SessionInfo, SessionTable
from mediasrv.core.stream import Stream
from mediasrv.hooks.client import HookClient
from mediasrv.hooks.model import AccessRequest, AllowAll, Decision, Gate
from mediasrv.hooks.outbox import Outbox
from mediasrv.hooks.service import AccessDenied, HookService

log = Logger()


@dataclass
class Core:
    """The collaborators of every protocol.  ``hooks`` is the HookService: the
    gate (``authorize``) and the listener that turns session and stream life
    cycles into hook events; built by :meth:`build` without an HTTP client
    (every gate allows) unless the server gives it one."""

    config: Config
    clock: IReactorTime
    registry: StreamRegistry
    sessions: SessionTable
    gate: Gate = field(default_factory=AllowAll)
    hooks: HookService = field(init=False)
    # output schemas the server offers, for on_stream_changed (rtmp, rtsp, hls)
    schemas: list[str] = field(default_factory=lambda: ["rtmp"])

    @classmethod
    def build(cls, config: Config, clock: IReactorTime, client: HookClient | None = None,
              outbox: Outbox | None = None) -> Core:
        registry = StreamRegistry(
            clock,
            continue_push_ms=config.protocol.continue_push_ms,
            max_gop_bytes=config.general.maxGopCacheBytes,
            enable_vhost=config.general.enableVhost,
        )
        core = cls(config, clock, registry, SessionTable())
        core.hooks = HookService(core, client, outbox)
        core.gate = core.hooks
        return core

    def rtsp_realm(self, request: AccessRequest) -> defer.Deferred[str]:
        return self.hooks.rtsp_realm(request)

    def rtsp_auth(self, request: AccessRequest, user: str, realm: str,
                  must_no_encrypt: bool) -> defer.Deferred[tuple[bool, str]]:
        return self.hooks.rtsp_auth(request, user, realm, must_no_encrypt)

    def open_session(self, protocol: str, transport: Any, closer: Callable[[str], None]) -> SessionInfo:
        """The session row of a new connection (peer and local address from
        its transport; ``closer`` is how a kick reaches it)."""
        peer, host = transport.getPeer(), transport.getHost()
        session = self.sessions.open(protocol, getattr(peer, "host", ""), getattr(peer, "port", 0),
                                     getattr(host, "port", 0), self.clock.seconds())
        session.closer = closer
        return session

    def over_capacity(self) -> bool:
        """More sessions than general.maxConnections (checked after opening one)."""
        return len(self.sessions) > self.config.general.maxConnections

    def at_capacity(self) -> bool:
        return len(self.sessions) >= self.config.general.maxConnections




def _play_allowed(decision: Decision, core: Core, request: AccessRequest) -> Stream | defer.Deferred[Stream]:
    if not decision.allowed:
        raise AccessDenied(decision.reason or "play denied")
    key = core.registry.key(request.vhost, request.app, request.stream)
    found = core.registry.find(key)
    if found is not None:
        return _schema_enabled(found, core, request)
    # Missing: wait for it, and ask on_stream_not_found meanwhile; its
    # close:true fails the waiting player at once (ZLMediaKit semantics).
    wait = core.registry.wait_for(key, core.config.general.maxStreamWaitMS / 1000.0)
    closed_by_hook = []

    def not_found_reply(close: bool) -> None:
        if close and not wait.called:
            closed_by_hook.append(True)
            wait.cancel()

    asked = core.hooks.stream_not_found(request)
    asked.addCallback(not_found_reply)
    asked.addErrback(lambda f: None if f.check(defer.CancelledError) else log.failure("on_stream_not_found", f))

    def finished(result: Any) -> Any:
        if not asked.called:
            asked.cancel()
        if closed_by_hook and isinstance(result, Failure) and result.check(defer.CancelledError):
            return Failure(StreamNotFound(f"{key}: on_stream_not_found said close"))
        return result

    return wait.addBoth(finished).addCallback(_schema_enabled, core, request)


_SCHEMA_FLAGS = {"rtmp": "enable_rtmp", "rtsp": "enable_rtsp", "hls": "enable_hls"}


def _schema_enabled(stream: Stream, core: Core, request: AccessRequest) -> Stream:
    """A stream whose on_publish reply (or [protocol]) turned this output off
    is not offered on it (ZLMediaKit's enable_rtmp / enable_rtsp / enable_hls)."""
    flag = _SCHEMA_FLAGS.get(request.schema)
    if flag is not None:
        value = stream.options.get(flag)
        enabled = getattr(core.config.protocol, flag) if value is None else str(value) not in ("0", "false")
        if not enabled:
            raise StreamNotFound(f"{stream.key} is not offered over {request.schema} ({flag}=0)")
    return stream


def _publish_allowed(decision: Decision, core: Core, request: AccessRequest, publisher: SessionInfo) -> Stream:
    if not decision.allowed:
        raise AccessDenied(decision.reason or "publish denied")
    options: dict[str, Any] = dict(decision.options)
    # on_publish replies carry text; the registry reads continue_push_ms as ms (an int)
    if "continue_push_ms" in options:
        try:
            options["continue_push_ms"] = max(0, int(float(options["continue_push_ms"])))
        except ValueError:
            log.warn("on_publish reply: continue_push_ms={v!r} is not a number; ignored", v=options["continue_push_ms"])
            del options["continue_push_ms"]
    # stream_replace: the stream is registered (and played) under this name instead
    name = str(options.get("stream_replace") or "").strip() or request.stream
    stream = core.registry.publish(core.registry.key(request.vhost, request.app, name), publisher)
    stream.options.update(options)
    return stream


def start_play(core: Core, request: AccessRequest) -> defer.Deferred[Stream]:
    """Gate, then wait for the stream: fires with the Stream, or fails with
    AccessDenied / StreamNotFound.  Cancelling it (the client left) cancels
    whichever step is pending."""
    return core.gate.authorize(request).addCallback(_play_allowed, core, request)


def start_publish(core: Core, request: AccessRequest, publisher: SessionInfo) -> defer.Deferred[Stream]:
    """Gate, then take the stream: fires with the Stream, or fails with
    AccessDenied / StreamBusy."""
    return core.gate.authorize(request).addCallback(_publish_allowed, core, request, publisher)
