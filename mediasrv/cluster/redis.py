"""RedisDirectory: the nodes of a cluster share who owns which stream, in Redis.

Loaded only when ``[cluster] redis`` is set (the factory in :mod:`mediasrv.cluster.settings`
imports this module); nothing else imports txredisapi.

Keys (``P`` = ``mediasrv:``):

* ``P stream:{vhost}/{app}/{stream}`` -> the owner's JSON record, ``PX ttl_ms``;
* ``P node:{node_id}`` -> the node's record, ``PX ttl_ms``;
* channel ``P {db}:events`` -> ``{"op": "up"|"down", "key": ..., "owner": {...}}``
  (pub/sub is global across databases, hence the db in its name).

Two Lua scripts do every write, atomically: *claim* (absent: SET NX PX and announce ``up``;
ours -- same node and epoch -- SET PX with the new record; else answer the owner, never
take it) and *release* (DEL and announce ``down`` only if ours).  The renew loop runs claim
for everything this node owns every ``ttl_ms / 3``: it keeps the keys alive and recreates
the ones Redis lost (a restart) without overwriting another node's.

Pub/sub only wakes waiting players sooner: every wait ends with a fresh GET, and a
(re)connected subscriber re-GETs every key someone waits for, so a message lost while
disconnected costs a delay, never a miss.

Every call has a deadline (``redis_timeout_ms``) on the injected clock; past it the call
fails with :class:`DirectoryUnavailable` and one log line -- local streams are unaffected.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import txredisapi
from twisted.internet import defer
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IProtocolFactory, IReactorTime, IStreamClientEndpoint
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from mediasrv.cluster.directory import (
    Claim,
    DirectoryEvent,
    DirectoryUnavailable,
    Listener,
    Listeners,
    OwnerInfo,
    Waiters,
)
from mediasrv.config import RedisUrl

log = Logger()

PREFIX = "mediasrv:"

CLAIM = """
local cur = redis.call('GET', KEYS[1])
if not cur then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  redis.call('PUBLISH', ARGV[5], cjson.encode({op='up', key=ARGV[6], owner=cjson.decode(ARGV[1])}))
  return {1, ARGV[1]}
end
local ok, o = pcall(cjson.decode, cur)
if ok and type(o) == 'table' and o.node == ARGV[3] and o.epoch == ARGV[4] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {1, ARGV[1]}
end
return {0, cur}
"""

RELEASE = """
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
local ok, o = pcall(cjson.decode, cur)
if ok and type(o) == 'table' and o.node == ARGV[1] and o.epoch == ARGV[2] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[3], cjson.encode({op='down', key=ARGV[4], owner=o}))
  return 1
end
return 0
"""


class _Script:
    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode()).hexdigest()


_CLAIM = _Script(CLAIM)
_RELEASE = _Script(RELEASE)


@implementer(IStreamClientEndpoint)
class _TLSEndpoint:
    """TLS over another endpoint that hands back the *inner* protocol (txredisapi's pool
    expects its own protocol), verifying the server's certificate for ``hostname``."""

    def __init__(self, wrapped: IStreamClientEndpoint, hostname: str, ca_file: str = "") -> None:
        self.wrapped = wrapped
        trust = Certificate.loadPEM(Path(ca_file).read_bytes()) if ca_file else None
        self.creator = optionsForClientTLS(hostname, trustRoot=trust)

    def connect(self, factory: IProtocolFactory) -> Deferred[Any]:
        d: Deferred[Any] = self.wrapped.connect(TLSMemoryBIOFactory(self.creator, True, factory))
        return d.addCallback(lambda p: p.wrappedProtocol)


def _endpoint(reactor: Any, url: RedisUrl, timeout: float, ca_file: str = "") -> IStreamClientEndpoint:
    ep: IStreamClientEndpoint = HostnameEndpoint(reactor, url.host, url.port, timeout=max(1, int(timeout)))
    return _TLSEndpoint(ep, url.host, ca_file) if url.tls else ep


class _Subscriber(txredisapi.SubscriberProtocol):  # type: ignore[misc]
    directory: RedisDirectory

    def connectionMade(self) -> Any:
        d = super().connectionMade()
        self.whenConnected().addCallback(lambda _: self.directory._subscriber_ready(self))
        return d

    def messageReceived(self, pattern: Any, channel: Any, message: Any) -> None:
        self.directory._message(message)


class RedisDirectory:
    def __init__(self, reactor: Any, clock: IReactorTime, url: RedisUrl, node: OwnerInfo, ttl_ms: int,
                 timeout_ms: int, ca_file: str = "") -> None:
        self.clock = clock
        self.url = url
        self.node = node
        self.ttl_ms = ttl_ms
        self.timeout = timeout_ms / 1000
        self.events_channel = f"{PREFIX}{url.db}:events"
        self._owned: dict[str, OwnerInfo] = {}
        self._listeners = Listeners()
        self._waiters = Waiters(clock, self.lookup)
        self._gave_up_said = False
        self._down = False  # the last renewal failed: say so once, and say when it recovers
        self._closed = False
        self._renewing = False
        self._renew_loop = LoopingCall(self._renew)
        self._renew_loop.clock = clock
        endpoint = _endpoint(reactor, url, self.timeout * 4, ca_file)
        # commands: one lazy connection that reconnects by itself
        self._factory = txredisapi.RedisFactory(url.redacted(), url.db, 1, True, txredisapi.ConnectionHandler,
                                                "utf-8", url.password, max(5.0, self.timeout * 10), False,
                                                url.username)
        self._tune(self._factory)
        self._redis: Any = self._factory.handler
        # events: a second connection in SUBSCRIBE mode
        self._sub_factory = txredisapi.SubscriberFactory(isLazy=True)
        self._sub_factory.protocol = type("Subscriber", (_Subscriber,), {"directory": self})
        self._sub_factory.password = url.password
        self._sub_factory.username = url.username
        self._tune(self._sub_factory)
        for factory in (self._factory, self._sub_factory):
            # fails only when txredisapi gives up (a wrong password): it does not retry then
            factory.deferred.addErrback(self._gave_up)
            factory.startConnecting(endpoint)

    @staticmethod
    def _tune(factory: Any) -> None:
        # Redis is a local service: retry soon (txredisapi's default backs off to 10 s)
        factory.initialDelay = 0.2
        factory.maxDelay = 2.0
        factory.noisy = False

    def _gave_up(self, f: Failure) -> None:
        if self._gave_up_said:
            return
        self._gave_up_said = True
        log.error("cluster: Redis {url}: {why}; the cluster directory stays unavailable (check [cluster] redis "
                  "and redis_password)", url=self.url.redacted(), why=f.getErrorMessage())

    def start(self) -> None:
        """Start the renew loop (its first round registers the node at once)."""
        self._renew_loop.start(self.ttl_ms / 3000, now=True)

    # -- Directory --

    def claim(self, key: str, owner: OwnerInfo) -> Deferred[Claim]:
        self._owned[key] = owner
        d = self._eval(_CLAIM, [self._stream_key(key)],
                       [owner.to_json(), self.ttl_ms, owner.node, owner.epoch, self.events_channel, key])

        def answered(reply: Any) -> Claim:
            ours, value = int(reply[0]), reply[1]
            current = self._parse(value, key) or owner
            if not ours:
                if self._owned.get(key) is owner:
                    del self._owned[key]
                return Claim(False, current)
            return Claim(True, current)

        return d.addCallback(answered)

    renew = claim

    def release(self, key: str, owner: OwnerInfo) -> Deferred[bool]:
        if self._owned.get(key) is not None and self._owned[key].same_node(owner):
            del self._owned[key]
        d = self._eval(_RELEASE, [self._stream_key(key)], [owner.node, owner.epoch, self.events_channel, key])
        return d.addCallback(lambda n: bool(int(n)))

    def lookup(self, key: str) -> Deferred[OwnerInfo | None]:
        d = self._call("GET", self._redis.get(self._stream_key(key)))
        return d.addCallback(self._parse, key)

    def wait_for_owner(self, key: str, timeout: float) -> Deferred[OwnerInfo | None]:
        result: Deferred[OwnerInfo | None] = Deferred(lambda _: wait.cancel())
        wait = self._waiters.wait(key, timeout)
        wait.addBoth(lambda v: None if result.called else result.callback(v))

        def looked(owner: OwnerInfo | None | Failure) -> None:
            if isinstance(owner, OwnerInfo):
                self._waiters.wake(key, owner)
            # a failure or None: the wait goes on (pub/sub, reconnect re-GET, deadline re-GET)

        self.lookup(key).addBoth(looked)
        return result

    def add_listener(self, listener: Listener) -> None:
        self._listeners.add(listener)

    def remove_listener(self, listener: Listener) -> None:
        self._listeners.remove(listener)

    def owned(self) -> dict[str, OwnerInfo]:
        return dict(self._owned)

    def nodes(self) -> Deferred[list[dict[str, Any]]]:
        """The live nodes' records (SCAN over the node keys)."""

        @defer.inlineCallbacks
        def scan() -> Any:
            cursor, found = 0, []
            while True:
                cursor, keys = yield self._call("SCAN", self._redis.scan(cursor, f"{PREFIX}node:*", 100))
                for k in keys:
                    raw = yield self._call("GET", self._redis.get(k))
                    if raw:
                        try:
                            found.append(json.loads(raw))
                        except ValueError:
                            pass
                if int(cursor) == 0:
                    return found

        return scan()

    def close(self) -> Deferred[None]:
        """Stop renewing, drop this node's claims and record (best effort), disconnect."""
        if self._closed:
            return succeed(None)
        self._closed = True
        if self._renew_loop.running:
            self._renew_loop.stop()
        self._waiters.close()
        owned, self._owned = self._owned, {}
        drops = [self.release(k, o) for k, o in owned.items()]
        drops.append(self._call("DEL", self._redis.delete(self._node_key())))
        d = defer.DeferredList(drops, consumeErrors=True)
        d.addBoth(lambda _: defer.DeferredList([self._factory.disconnect(), self._sub_factory.disconnect()],
                                               consumeErrors=True))
        return d.addBoth(lambda _: None)

    # -- the renew loop --

    def _renew(self) -> Deferred[Any] | None:
        if self._renewing:
            return None  # the previous round is still waiting for Redis
        self._renewing = True
        record = {"node": self.node.node, "epoch": self.node.epoch, "flv": self.node.flv, "rtmp": self.node.rtmp,
                  "since_ms": self.node.since_ms, "streams": len(self._owned)}
        rounds = [self._call("SET", self._redis.set(self._node_key(), json.dumps(record), pexpire=self.ttl_ms))]
        for key, owner in list(self._owned.items()):
            rounds.append(self.claim(key, owner).addCallback(self._renewed, key, owner))
        d = defer.DeferredList(rounds, consumeErrors=True)
        d.addCallback(self._round_done, len(self._owned))
        return d

    def _renewed(self, claim: Claim, key: str, owner: OwnerInfo) -> None:
        if not claim.ours:
            log.warn("cluster: {key} is now owned by node {node}; it stops here", key=key, node=claim.owner.node)
            self._listeners.emit(DirectoryEvent("lost", key, claim.owner))

    def _round_done(self, results: list[tuple[bool, Any]], count: int) -> None:
        self._renewing = False
        failures = [r for ok, r in results if not ok]
        if failures and not self._down:
            self._down = True
            log.error("cluster: Redis {url} unavailable ({why}); local streams go on, {n} claims are renewed "
                      "when it is back", url=self.url.redacted(), why=failures[0].getErrorMessage(), n=count)
        elif not failures and self._down:
            self._down = False
            log.info("cluster: Redis {url} reachable again; {n} claims renewed", url=self.url.redacted(), n=count)

    # -- events --

    def _subscriber_ready(self, protocol: Any) -> None:
        protocol.subscribe(self.events_channel).addErrback(
            lambda f: log.warn("cluster: cannot subscribe to {ch}: {why}", ch=self.events_channel,
                               why=f.getErrorMessage()))
        for key in self._waiters.keys():  # whatever happened while we were not listening
            self.lookup(key).addCallbacks(self._found, lambda f: None, callbackArgs=(key,))

    def _found(self, owner: OwnerInfo | None, key: str) -> None:
        if owner is not None:
            self._waiters.wake(key, owner)

    def _message(self, message: Any) -> None:
        try:
            raw = json.loads(message)
            op, key = raw["op"], raw["key"]
            owner = OwnerInfo.from_json(json.dumps(raw["owner"])) if raw.get("owner") else None
        except (ValueError, KeyError, TypeError) as e:
            log.warn("cluster: ignored a malformed event on {ch}: {why}", ch=self.events_channel, why=e)
            return
        if op not in ("up", "down"):
            return
        if op == "up" and owner is not None:
            self._waiters.wake(key, owner)
        if owner is not None and owner.same_node(self.node):
            return  # our own news
        self._listeners.emit(DirectoryEvent(op, key, owner))

    # -- plumbing --

    def _stream_key(self, key: str) -> str:
        return f"{PREFIX}stream:{key}"

    def _node_key(self) -> str:
        return f"{PREFIX}node:{self.node.node}"

    def _parse(self, value: Any, key: str) -> OwnerInfo | None:
        if value is None:
            return None
        try:
            return OwnerInfo.from_json(value)
        except ValueError as e:
            log.warn("cluster: the record of {key} in Redis is not ours to read ({why}); treated as absent",
                     key=key, why=e)
            return None

    def _eval(self, script: _Script, keys: list[str], args: list[Any]) -> Deferred[Any]:
        """EVALSHA, and SCRIPT LOAD + EVALSHA when Redis does not know the script (a restart)."""

        def missing(f: Failure) -> Any:
            if not f.check(txredisapi.ScriptDoesNotExist):
                return f
            loaded = self._call("SCRIPT LOAD", self._redis.script_load(script.text))
            return loaded.addCallback(lambda _: self._call("EVALSHA", self._redis.evalsha(script.sha, keys, args)))

        return self._call("EVALSHA", self._redis.evalsha(script.sha, keys, args), raw=True).addErrback(missing)

    def _call(self, what: str, d: Deferred[Any], raw: bool = False) -> Deferred[Any]:
        d.addTimeout(self.timeout, self.clock)

        def failed(f: Failure) -> Failure:
            if raw and f.check(txredisapi.ScriptDoesNotExist):
                return f
            if f.check(defer.TimeoutError, defer.CancelledError):
                why = f"no reply to {what} within {int(self.timeout * 1000)} ms"
            elif f.check(txredisapi.ConnectionError, ConnectionError):
                why = f"{what}: {f.getErrorMessage() or 'not connected'}"
            elif f.check(txredisapi.ResponseError):
                why = f"{what}: {f.getErrorMessage()}"
            else:
                return f
            return Failure(DirectoryUnavailable(f"Redis {self.url.redacted()}: {why}"))

        return d.addErrback(failed)
