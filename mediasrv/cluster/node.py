"""NodeDirectory: one host's view -- its processes' claims, plus the cluster's when configured.

The host map (a :class:`LocalDirectory`) decides between the workers of this host; the
cluster directory (Redis) between nodes.  A claim is taken on the host first, then in the
cluster; refused by the cluster, it is undone on the host and the other node is answered.

Redis down: the claim is kept on the host (local publishing and playing go on) and the
cluster directory remembers it, so its renew loop claims it once Redis is back -- unless
another node took the name meanwhile, which is reported as a ``lost`` event.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from mediasrv.cluster.directory import (
    Claim,
    Directory,
    DirectoryEvent,
    DirectoryUnavailable,
    Listener,
    Listeners,
    OwnerInfo,
    first_owner,
)
from mediasrv.cluster.local import LocalDirectory

log = Logger()


class NodeDirectory:
    def __init__(self, host: LocalDirectory, cluster: Directory | None = None) -> None:
        self.host = host
        self.cluster = cluster
        self._listeners = Listeners()
        host.add_listener(self._listeners.emit)
        if cluster is not None:
            cluster.add_listener(self._cluster_event)

    def claim(self, key: str, owner: OwnerInfo) -> Deferred[Claim]:
        on_host = self.host.claim_now(key, owner)
        if not on_host.ours or self.cluster is None:
            return succeed(on_host)
        cluster = self.cluster

        def answered(result: Claim | Failure) -> Claim:
            if isinstance(result, Failure):
                if not result.check(DirectoryUnavailable):
                    log.failure("cluster: claim of {key} failed", result, key=key)
                else:
                    log.warn("cluster: {key} is claimed on this node only for now: {why}", key=key,
                             why=result.getErrorMessage())
                return on_host
            if not result.ours:
                self.host.release_now(key, owner)
            return result

        return cluster.claim(key, owner).addBoth(answered)

    renew = claim

    def release(self, key: str, owner: OwnerInfo) -> Deferred[bool]:
        released = self.host.release_now(key, owner)
        if not released or self.cluster is None:
            return succeed(released)

        def answered(result: bool | Failure) -> bool:
            if isinstance(result, Failure):
                log.warn("cluster: release of {key} not confirmed ({why}); it expires by itself", key=key,
                         why=result.getErrorMessage())
            return True

        return self.cluster.release(key, owner).addBoth(answered)

    def lookup(self, key: str) -> Deferred[OwnerInfo | None]:
        """The host's owner, else the cluster's; fails with DirectoryUnavailable when only the
        cluster could tell and it cannot answer."""
        owner = self.host.owner_of(key)
        if owner is not None or self.cluster is None:
            return succeed(owner)

        def failed(f: Failure) -> Failure:
            if f.check(DirectoryUnavailable):
                log.warn("cluster: look-up of {key} failed: {why}", key=key, why=f.getErrorMessage())
            return f

        return self.cluster.lookup(key).addErrback(failed)

    def wait_for_owner(self, key: str, timeout: float) -> Deferred[OwnerInfo | None]:
        owner = self.host.owner_of(key)
        if owner is not None:
            return succeed(owner)
        waits = [self.host.wait_for_owner(key, timeout)]
        if self.cluster is not None:
            waits.append(self.cluster.wait_for_owner(key, timeout))
        return first_owner(waits)

    def add_listener(self, listener: Listener) -> None:
        self._listeners.add(listener)

    def remove_listener(self, listener: Listener) -> None:
        self._listeners.remove(listener)

    def close(self) -> Deferred[None]:
        self.host.close()
        if self.cluster is None:
            return succeed(None)
        return self.cluster.close()

    # -- the master's part --

    def release_worker(self, node: OwnerInfo, worker: int) -> list[str]:
        """A worker of this node died: drop its claims here and in the cluster."""
        gone = self.host.release_where(lambda o: o.same_node(node) and o.worker == worker)
        if self.cluster is not None:
            for key, owner in gone:
                self.cluster.release(key, owner).addErrback(self._unconfirmed, key)
        return [k for k, _ in gone]

    @staticmethod
    def _unconfirmed(f: Failure, key: str) -> None:
        log.warn("cluster: release of {key} not confirmed ({why}); it expires by itself", key=key,
                 why=f.getErrorMessage())

    def _cluster_event(self, event: DirectoryEvent) -> None:
        local = self.host.owner_of(event.key)
        if event.op == "lost":
            # another node holds what we thought ours: the stream must stop here
            if local is not None:
                self.host.release_now(event.key, local)
            self._listeners.emit(DirectoryEvent("lost", event.key, local))
            return
        if local is not None and event.owner is not None and event.owner.same_node(local):
            return  # our own claim, already told by the host map
        self._listeners.emit(event)
