"""The master's side of the control channel: the host directory and fan-out for its workers.

Each worker's control connection is a :class:`WorkerLink`.  Claims are made in the master's
:class:`~mediasrv.cluster.node.NodeDirectory` (and so in Redis when a cluster is configured:
the master is the host's only Redis client) with the node, epoch and worker index filled in
by the master -- a worker can only claim as itself.  When a worker's connection drops (it
died), its claims are released at once.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory, connectionDone
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python.failure import Failure

from mediasrv.cluster.directory import DirectoryEvent, DirectoryUnavailable, OwnerInfo
from mediasrv.cluster.node import NodeDirectory
from mediasrv.workers import control

log = Logger()


class MasterControl:
    def __init__(self, directory: NodeDirectory, node: OwnerInfo, clock: IReactorTime,
                 call_timeout: float = 5.0) -> None:
        self.directory = directory
        self.node = node
        self.clock = clock
        self.call_timeout = call_timeout
        self.links: dict[int, WorkerLink] = {}
        directory.add_listener(self._event)

    def factory_for(self, index: int) -> Factory:
        """The protocol factory of worker ``index``'s control connection (one per spawn)."""
        return Factory.forProtocol(lambda: WorkerLink(self, index))

    def owner_for(self, index: int, sent: dict[str, Any]) -> OwnerInfo:
        """A worker's owner record, with the identity set by the master."""
        return OwnerInfo(node=self.node.node, epoch=self.node.epoch, worker=index,
                         flv=str(sent.get("flv", "")), rtmp=str(sent.get("rtmp", "")),
                         origin_type=int(sent.get("origin_type", 1)), since_ms=int(sent.get("since_ms", 0)))

    def fan_out(self, call: str, args: Any) -> Deferred[tuple[Any, list[int]]]:
        """Run ``call`` on every connected worker: (merged result, indexes that did not answer)."""
        command = control.CALLS[call]
        order = sorted(self.links)
        calls = []
        for i in order:
            d = self.links[i].callRemote(command, args=args)
            d.addTimeout(self.call_timeout, self.clock)
            calls.append(d)

        def merged(results: list[tuple[bool, Any]]) -> tuple[Any, list[int]]:
            answers, missing = [], []
            for i, (ok, value) in zip(order, results, strict=True):
                if ok:
                    answers.append(value["result"])
                else:
                    missing.append(i)
                    log.warn("workers: worker {i} did not answer {call}: {why}", i=i, call=call,
                             why=value.getErrorMessage())
            return control.merge(call, answers), missing

        return DeferredList(calls, consumeErrors=True).addCallback(merged)

    def _event(self, event: DirectoryEvent) -> None:
        command: type[amp.Command]
        if event.op == "lost":
            command = control.StreamLost
            targets = [link for link in self.links.values()
                       if event.owner is not None and event.owner.worker == link.index]
        else:
            command = control.StreamUp if event.op == "up" else control.StreamDown
            targets = [link for link in self.links.values() if event.key in link.watched]
        owner = _json(event.owner) if event.owner is not None else None
        for link in targets:
            link.callRemote(command, key=event.key, owner=owner)


def _json(owner: OwnerInfo) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(owner.to_json())
    return parsed


class WorkerLink(amp.AMP):  # type: ignore[misc]
    def __init__(self, master: MasterControl, index: int) -> None:
        super().__init__()
        self.master = master
        self.index = index
        self.watched: set[str] = set()

    def connectionMade(self) -> None:
        super().connectionMade()
        old = self.master.links.get(self.index)
        if old is not None and old is not self and old.transport is not None:
            old.transport.loseConnection()
        self.master.links[self.index] = self

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        if self.master.links.get(self.index) is self:
            del self.master.links[self.index]
        gone = self.master.directory.release_worker(self.master.node, self.index)
        if gone:
            log.info("workers: worker {i} is gone; released {n} streams", i=self.index, n=len(gone))

    @control.Claim.responder
    def claim(self, key: str, owner: Any) -> Deferred[dict[str, Any]]:
        me = self.master.owner_for(self.index, owner)
        d = self.master.directory.claim(key, me)
        return d.addCallbacks(lambda c: {"ours": c.ours, "owner": _json(c.owner)}, _directory_error)

    @control.Release.responder
    def release(self, key: str, owner: Any) -> Deferred[dict[str, Any]]:
        me = self.master.owner_for(self.index, owner)
        return self.master.directory.release(key, me).addCallbacks(lambda ok: {"released": ok}, _directory_error)

    @control.Lookup.responder
    def lookup(self, key: str) -> Deferred[dict[str, Any]]:
        d = self.master.directory.lookup(key)
        return d.addCallbacks(lambda o: {"owner": _json(o) if o is not None else None}, _directory_error)

    @control.Watch.responder
    def watch(self, key: str) -> dict[str, Any]:
        self.watched.add(key)
        return {}

    @control.Unwatch.responder
    def unwatch(self, key: str) -> dict[str, Any]:
        self.watched.discard(key)
        return {}

    @control.FanOut.responder
    def fan_out(self, call: str, args: Any) -> Deferred[dict[str, Any]]:
        if call not in control.CALLS:
            raise amp.RemoteAmpError(b"UNKNOWN", f"no such call {call!r}")
        return self.master.fan_out(call, args).addCallback(lambda r: {"result": r[0], "missing": r[1]})


def _directory_error(f: Failure) -> Failure:
    if f.check(DirectoryUnavailable):
        return Failure(control.DirectoryError(f.getErrorMessage()))
    return f
