"""Directory logic with task.Clock: LocalDirectory, NodeDirectory over a cluster double, waiters."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure

from mediasrv.cluster.directory import (
    Claim,
    DirectoryEvent,
    DirectoryUnavailable,
    Listener,
    Listeners,
    OwnerInfo,
    Waiters,
    first_owner,
    stream_key,
)
from mediasrv.cluster.local import LocalDirectory
from mediasrv.cluster.node import NodeDirectory

A0 = OwnerInfo("node-a", "e1", 0, "http://a:8080", "rtmp://a:1935")
A1 = OwnerInfo("node-a", "e1", 1, "http://a:8080", "rtmp://a:1935")
B0 = OwnerInfo("node-b", "e7", 0, "http://b:8080", "rtmp://b:1935")
KEY = stream_key("__defaultVhost__", "live", "cam")


def result(d: Deferred[Any]) -> Any:
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "the Deferred has not fired"
    if isinstance(out[0], Failure):
        out[0].raiseException()
    return out[0]


def test_owner_info_round_trip_and_identity() -> None:
    assert OwnerInfo.from_json(A1.to_json()) == A1
    assert OwnerInfo.from_json('{"node":"n","epoch":"e","future_field":1}') == OwnerInfo("n", "e")
    assert A0.same_node(A1) and not A0.same_process(A1)
    assert not A0.same_node(OwnerInfo("node-a", "e2"))
    for bad in ["", "[]", '{"node": 1, "epoch": "e"}', '{"node":"n","epoch":"e","worker":"x"}', b"\xff"]:
        with pytest.raises(ValueError):
            OwnerInfo.from_json(bad)


def test_local_claim_never_steals_and_release_only_by_owner(clock: Clock) -> None:
    d = LocalDirectory(clock)
    events: list[DirectoryEvent] = []
    d.add_listener(events.append)
    assert result(d.claim(KEY, A0)) == Claim(True, A0)
    assert result(d.claim(KEY, A1)) == Claim(False, A0)  # another worker: answered, not taken
    moved = OwnerInfo("node-a", "e1", 0, "http://a2:8080")
    assert result(d.renew(KEY, moved)) == Claim(True, moved)  # ours: renewed, record updated
    assert result(d.release(KEY, A1)) is False
    assert result(d.lookup(KEY)) == moved
    assert result(d.release(KEY, A0)) is True
    assert result(d.lookup(KEY)) is None
    assert [(e.op, e.owner) for e in events] == [("up", A0), ("down", moved)]


def test_local_wait_for_owner_wakes_or_times_out(clock: Clock) -> None:
    d = LocalDirectory(clock)
    w1, w2 = d.wait_for_owner(KEY, 5), d.wait_for_owner("v/a/other", 5)
    clock.advance(1)
    d.claim_now(KEY, A0)
    assert result(w1) == A0
    assert not w2.called
    clock.advance(4)
    assert result(w2) is None
    assert result(d.wait_for_owner(KEY, 5)) == A0  # present: at once


def test_local_wait_cancel_leaves_no_timer(clock: Clock) -> None:
    d = LocalDirectory(clock)
    w = d.wait_for_owner(KEY, 5)
    w.addErrback(lambda f: None)
    w.cancel()
    assert not clock.getDelayedCalls()
    d.claim_now(KEY, A0)  # nobody to wake


def test_release_where_drops_a_dead_workers_claims(clock: Clock) -> None:
    d = LocalDirectory(clock)
    d.claim_now(KEY, A0)
    d.claim_now("v/live/two", A1)
    gone = d.release_where(lambda o: o.worker == 1)
    assert gone == [("v/live/two", A1)]
    assert d.owned() == {KEY: A0}


def test_waiters_recheck_at_the_deadline_finds_a_missed_owner(clock: Clock) -> None:
    asked: list[str] = []

    def recheck(key: str) -> Deferred[OwnerInfo | None]:
        asked.append(key)
        return succeed(B0)

    w = Waiters(clock, recheck)
    d = w.wait(KEY, 2)
    clock.advance(2)
    assert asked == [KEY] and result(d) == B0
    assert w.keys() == []


def test_waiters_recheck_failure_is_none(clock: Clock) -> None:
    w = Waiters(clock, lambda key: fail(DirectoryUnavailable("Redis x: down")))
    d = w.wait(KEY, 2)
    with capturedLogs() as events:
        clock.advance(2)
    assert result(d) is None
    assert any("final look-up of" in formatEvent(e) for e in events)


def test_first_owner_takes_the_first_and_cancels_the_rest() -> None:
    a: Deferred[OwnerInfo | None] = Deferred()
    cancelled: list[bool] = []
    b: Deferred[OwnerInfo | None] = Deferred(lambda _: cancelled.append(True))
    d = first_owner([a, b])
    a.callback(B0)
    assert result(d) == B0 and cancelled == [True]
    c: Deferred[OwnerInfo | None] = Deferred()
    e: Deferred[OwnerInfo | None] = Deferred()
    d2 = first_owner([c, e])
    c.callback(None)
    assert not d2.called
    e.errback(DirectoryUnavailable("x"))
    assert result(d2) is None


def test_a_failing_listener_does_not_stop_the_others() -> None:
    seen: list[DirectoryEvent] = []

    def bad(event: DirectoryEvent) -> None:
        raise RuntimeError("boom")

    listeners = Listeners()
    listeners.add(bad)
    listeners.add(seen.append)
    with capturedLogs():
        listeners.emit(DirectoryEvent("up", KEY, A0))
    assert len(seen) == 1


class FakeCluster:
    """A cluster directory double: node-level identity, can be 'down'."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.owners: dict[str, OwnerInfo] = {}
        self.down = False
        self.listeners = Listeners()
        self.waiters = Waiters(clock)
        self.released: list[str] = []

    def _unavailable(self) -> Deferred[Any]:
        return fail(DirectoryUnavailable("Redis redis://r:6379/0: no reply to EVALSHA within 500 ms"))

    def claim(self, key: str, owner: OwnerInfo) -> Deferred[Claim]:
        if self.down:
            return self._unavailable()
        cur = self.owners.get(key)
        if cur is not None and not cur.same_node(owner):
            return succeed(Claim(False, cur))
        self.owners[key] = owner
        return succeed(Claim(True, owner))

    renew = claim

    def release(self, key: str, owner: OwnerInfo) -> Deferred[bool]:
        if self.down:
            return self._unavailable()
        self.released.append(key)
        if key in self.owners and self.owners[key].same_node(owner):
            del self.owners[key]
            return succeed(True)
        return succeed(False)

    def lookup(self, key: str) -> Deferred[OwnerInfo | None]:
        return self._unavailable() if self.down else succeed(self.owners.get(key))

    def wait_for_owner(self, key: str, timeout: float) -> Deferred[OwnerInfo | None]:
        return self.waiters.wait(key, timeout)

    def add_listener(self, listener: Listener) -> None:
        self.listeners.add(listener)

    def remove_listener(self, listener: Listener) -> None:
        self.listeners.remove(listener)

    def close(self) -> Deferred[None]:
        self.waiters.close()
        return succeed(None)

    def elsewhere(self, key: str, owner: OwnerInfo) -> None:
        """Another node claims ``key`` (its 'up' event arrives)."""
        self.owners[key] = owner
        self.waiters.wake(key, owner)
        self.listeners.emit(DirectoryEvent("up", key, owner))


def test_node_claims_on_the_host_then_in_the_cluster(clock: Clock) -> None:
    cluster = FakeCluster(clock)
    node = NodeDirectory(LocalDirectory(clock), cluster)
    assert result(node.claim(KEY, A0)).ours
    assert cluster.owners[KEY] == A0
    # another worker of this node: answered by the host map, the cluster not asked
    assert result(node.claim(KEY, A1)) == Claim(False, A0)
    # another node holds a name: refused, and not left claimed on the host
    cluster.owners["v/live/b"] = B0
    assert result(node.claim("v/live/b", A1)) == Claim(False, B0)
    assert node.host.owner_of("v/live/b") is None
    assert result(node.lookup("v/live/b")) == B0
    assert result(node.lookup(KEY)) == A0
    assert result(node.release(KEY, A0)) is True
    assert KEY not in cluster.owners


def test_node_keeps_a_claim_locally_while_redis_is_down(clock: Clock) -> None:
    cluster = FakeCluster(clock)
    cluster.down = True
    node = NodeDirectory(LocalDirectory(clock), cluster)
    with capturedLogs() as events:
        claim = result(node.claim(KEY, A0))
        with pytest.raises(DirectoryUnavailable):
            result(node.lookup("v/live/missing"))
        assert result(node.release(KEY, A0)) is True  # not confirmed: the key expires by itself
    assert claim.ours
    text = [formatEvent(e) for e in events]
    assert text[0] == (f"cluster: {KEY} is claimed on this node only for now: Redis redis://r:6379/0: "
                       "no reply to EVALSHA within 500 ms")
    assert text[1].startswith("cluster: look-up of v/live/missing failed: Redis redis://r:6379/0")
    assert "expires by itself" in text[2]


def test_node_wait_woken_by_another_node_and_by_a_local_worker(clock: Clock) -> None:
    cluster = FakeCluster(clock)
    node = NodeDirectory(LocalDirectory(clock), cluster)
    events: list[DirectoryEvent] = []
    node.add_listener(events.append)
    w = node.wait_for_owner(KEY, 10)
    cluster.elsewhere(KEY, B0)
    assert result(w) == B0
    assert events == [DirectoryEvent("up", KEY, B0)]
    w2 = node.wait_for_owner("v/live/local", 10)
    node.claim(("v/live/local"), A1)
    assert result(w2) == A1
    clock.advance(10)  # the cancelled cluster waits leave nothing behind
    assert not clock.getDelayedCalls()


def test_node_lost_claim_is_dropped_on_the_host_and_reported(clock: Clock) -> None:
    cluster = FakeCluster(clock)
    node = NodeDirectory(LocalDirectory(clock), cluster)
    events: list[DirectoryEvent] = []
    node.add_listener(events.append)
    node.claim(KEY, A0)
    cluster.listeners.emit(DirectoryEvent("lost", KEY, B0))
    assert node.host.owner_of(KEY) is None
    assert [e.op for e in events] == ["up", "down", "lost"]


def test_node_release_worker_frees_a_dead_workers_streams(clock: Clock) -> None:
    cluster = FakeCluster(clock)
    node = NodeDirectory(LocalDirectory(clock), cluster)
    node.claim(KEY, A0)
    node.claim("v/live/one", A1)
    assert node.release_worker(A0, 1) == ["v/live/one"]
    assert cluster.released == ["v/live/one"]
    assert result(node.claim("v/live/one", A0)).ours


def test_node_without_cluster_is_the_host_map(clock: Clock) -> None:
    node = NodeDirectory(LocalDirectory(clock))
    assert result(node.claim(KEY, A0)).ours
    assert result(node.lookup("v/live/none")) is None
    w = node.wait_for_owner("v/live/none", 1)
    clock.advance(1)
    assert result(w) is None
    assert result(node.close()) is None
