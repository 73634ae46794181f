"""LocalDirectory: the directory of one process, or the master's map of its workers.

In memory; a claim lasts until its owner releases it, or until the owner's process is known
dead (:meth:`LocalDirectory.release_where`, called by the master when a worker's control
connection drops).  Ownership is per process: the same node run *and* the same worker.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime

from mediasrv.cluster.directory import Claim, DirectoryEvent, Listener, Listeners, OwnerInfo, Waiters


class LocalDirectory:
    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self._owners: dict[str, OwnerInfo] = {}
        self._listeners = Listeners()
        self._waiters = Waiters(clock)

    # -- the Directory protocol (all answers are immediate) --

    def claim(self, key: str, owner: OwnerInfo) -> Deferred[Claim]:
        return succeed(self.claim_now(key, owner))

    renew = claim

    def release(self, key: str, owner: OwnerInfo) -> Deferred[bool]:
        return succeed(self.release_now(key, owner))

    def lookup(self, key: str) -> Deferred[OwnerInfo | None]:
        return succeed(self._owners.get(key))

    def wait_for_owner(self, key: str, timeout: float) -> Deferred[OwnerInfo | None]:
        owner = self._owners.get(key)
        if owner is not None:
            return succeed(owner)
        return self._waiters.wait(key, timeout)

    def add_listener(self, listener: Listener) -> None:
        self._listeners.add(listener)

    def remove_listener(self, listener: Listener) -> None:
        self._listeners.remove(listener)

    def close(self) -> Deferred[None]:
        self._waiters.close()
        return succeed(None)

    # -- synchronous forms, for callers in the same process --

    def claim_now(self, key: str, owner: OwnerInfo) -> Claim:
        current = self._owners.get(key)
        if current is not None and not current.same_process(owner):
            return Claim(False, current)
        self._owners[key] = owner
        if current is None:
            self._listeners.emit(DirectoryEvent("up", key, owner))
            self._waiters.wake(key, owner)
        return Claim(True, owner)

    def release_now(self, key: str, owner: OwnerInfo) -> bool:
        current = self._owners.get(key)
        if current is None or not current.same_process(owner):
            return False
        del self._owners[key]
        self._listeners.emit(DirectoryEvent("down", key, current))
        return True

    def owner_of(self, key: str) -> OwnerInfo | None:
        return self._owners.get(key)

    def owned(self) -> dict[str, OwnerInfo]:
        return dict(self._owners)

    def release_where(self, dead: Callable[[OwnerInfo], bool]) -> list[tuple[str, OwnerInfo]]:
        """Drop every claim whose owner ``dead`` says is gone; returns them (``down`` events fire)."""
        gone = [(k, o) for k, o in self._owners.items() if dead(o)]
        for key, owner in gone:
            self.release_now(key, owner)
        return gone
