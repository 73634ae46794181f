"""The collaborators every protocol factory receives (no module-level singletons)."""

from __future__ import annotations

from dataclasses import dataclass, field

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime

from mediasrv.config import Config
from mediasrv.core.registry import StreamRegistry
from mediasrv.core.sessions import SessionInfo, SessionTable
from mediasrv.core.stream import Stream
from mediasrv.hooks.model import AccessRequest, AllowAll, Decision, Gate


@dataclass
class Core:
    config: Config
    clock: IReactorTime
    registry: StreamRegistry
    sessions: SessionTable
    gate: Gate = field(default_factory=AllowAll)

    @classmethod
    def build(cls, config: Config, clock: IReactorTime) -> Core:
        registry = StreamRegistry(
            clock,
            continue_push_ms=config.protocol.continue_push_ms,
            max_gop_bytes=config.general.maxGopCacheBytes,
            enable_vhost=config.general.enableVhost,
        )
        return cls(config, clock, registry, SessionTable())

    def at_capacity(self) -> bool:
        return len(self.sessions) >= self.config.general.maxConnections


class AccessDenied(Exception):
    """The gate said no; ``str`` is the backend's reason."""


def _play_allowed(decision: Decision, core: Core, request: AccessRequest) -> defer.Deferred[Stream]:
    if not decision.allowed:
        raise AccessDenied(decision.reason or "play denied")
    key = core.registry.key(request.vhost, request.app, request.stream)
    return core.registry.wait_for(key, core.config.general.maxStreamWaitMS / 1000.0)


def _publish_allowed(decision: Decision, core: Core, request: AccessRequest, publisher: SessionInfo) -> Stream:
    if not decision.allowed:
        raise AccessDenied(decision.reason or "publish denied")
    stream = core.registry.publish(core.registry.key(request.vhost, request.app, request.stream), publisher)
    stream.options.update(decision.options)
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
