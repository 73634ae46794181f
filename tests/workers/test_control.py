"""The control channel in one process: MasterControl and HostDirectories over real unix socket pairs."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.protocols import amp

from mediasrv.cluster.directory import DirectoryEvent, DirectoryUnavailable, OwnerInfo
from mediasrv.cluster.local import LocalDirectory
from mediasrv.cluster.node import NodeDirectory
from mediasrv.cluster.redis import PREFIX, RedisDirectory
from mediasrv.config import parse_redis_url
from mediasrv.workers import control
from mediasrv.workers.hostdir import HostDirectory, WorkerControl, connect_control
from mediasrv.workers.master import MasterControl
from tests.support.redis import RedisServer

R: Any = reactor
NODE = OwnerInfo("host-1", "ep1")
KEY = "__defaultVhost__/live/cam"


async def until(predicate: Callable[[], Any], timeout: float = 10, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {timeout} s")
        await deferLater(R, 0.01, lambda: None)
    return value


async def link(master: MasterControl, index: int) -> tuple[WorkerControl, HostDirectory]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    R.adoptStreamConnection(ours.fileno(), socket.AF_UNIX, master.factory_for(index))
    ours.close()
    proto = connect_control(R, os.dup(theirs.fileno()))
    theirs.close()
    me = OwnerInfo(node="forged", epoch="forged", worker=99, flv=f"http://w{index}")
    hostdir = HostDirectory(proto, me, R, timeout=2)
    await until(lambda: proto.alive and index in master.links, what=f"worker {index} linked")
    return proto, hostdir


class Host:
    def __init__(self, directory: NodeDirectory) -> None:
        self.master = MasterControl(directory, NODE, R, call_timeout=1)
        self.links: list[WorkerControl] = []

    async def worker(self, index: int) -> HostDirectory:
        proto, hostdir = await link(self.master, index)
        self.links.append(proto)
        return hostdir

    async def close(self) -> None:
        for proto in self.links:
            if proto.transport is not None:
                proto.transport.loseConnection()
        await until(lambda: not self.master.links, what="links closed")


@pytest_twisted.async_yield_fixture
async def host() -> AsyncIterator[Host]:
    h = Host(NodeDirectory(LocalDirectory(R)))
    yield h
    await h.close()


@pytest_twisted.ensureDeferred
async def test_claims_between_workers_with_identity_set_by_the_master(host: Host) -> None:
    w0, w1 = await host.worker(0), await host.worker(1)
    first = await w0.claim(KEY, w0.me)
    assert first.ours
    assert (first.owner.node, first.owner.epoch, first.owner.worker, first.owner.flv) == ("host-1", "ep1", 0,
                                                                                         "http://w0")
    second = await w1.claim(KEY, w1.me)
    assert not second.ours and second.owner == first.owner
    assert await w1.lookup(KEY) == first.owner
    assert await w1.release(KEY, w1.me) is False
    assert await w0.release(KEY, w0.me) is True
    assert await w1.lookup(KEY) is None


@pytest_twisted.ensureDeferred
async def test_watch_wakes_a_waiting_worker_and_reports_down(host: Host) -> None:
    w0, w1 = await host.worker(0), await host.worker(1)
    events: list[DirectoryEvent] = []
    w1.add_listener(events.append)
    waiting = w1.wait_for_owner(KEY, 10)
    await until(lambda: KEY in host.master.links[1].watched, what="watch")
    started = time.monotonic()
    claim = await w0.claim(KEY, w0.me)
    assert await waiting == claim.owner
    assert time.monotonic() - started < 1
    await until(lambda: KEY not in host.master.links[1].watched, what="unwatch after the wait")
    w1.watch(KEY)  # an edge watching its source
    await until(lambda: KEY in host.master.links[1].watched, what="watch")
    await w0.release(KEY, w0.me)
    await until(lambda: any(e.op == "down" for e in events), what="down event")
    assert [e.op for e in events] == ["up", "down"]


@pytest_twisted.ensureDeferred
async def test_wait_times_out_with_none(host: Host) -> None:
    w0 = await host.worker(0)
    assert await w0.wait_for_owner("v/live/never", 0.2) is None


@pytest_twisted.ensureDeferred
async def test_a_dead_workers_claims_are_released_and_it_fails_fast(host: Host) -> None:
    w0, w1 = await host.worker(0), await host.worker(1)
    await w0.claim(KEY, w0.me)
    link0 = host.links[0]
    assert link0.transport is not None
    link0.transport.loseConnection()  # the worker process is gone
    await until(lambda: 0 not in host.master.links, what="link dropped")
    assert await w1.lookup(KEY) is None
    assert (await w1.claim(KEY, w1.me)).ours
    with pytest.raises(DirectoryUnavailable, match="the master is not connected"):
        await w0.lookup(KEY)


@pytest_twisted.ensureDeferred
async def test_fan_out_merges_big_answers_and_names_the_silent_worker(host: Host) -> None:
    w0 = await host.worker(0)
    await host.worker(1)
    await host.worker(2)
    rows = [{"id": f"0-{i}", "app": "live", "stream": "x" * 200} for i in range(400)]  # ~90 KB: several AMP values
    host.links[0].handle("sessions", lambda args: rows)
    host.links[1].handle("sessions", lambda args: [{"id": "1-0"}])
    # worker 2 has no handler: an error answer, listed as missing
    result, missing = await w0.fan_out("sessions", {"filter": "all"})
    assert len(result) == 401 and result[:400] == rows and missing == [2]
    host.links[0].handle("close_streams", lambda args: {"count_hit": 2, "count_closed": 1, "code": 0})
    host.links[1].handle("close_streams", lambda args: {"count_hit": 1, "count_closed": 1, "code": 0})
    host.links[2].handle("close_streams", lambda args: {"count_hit": 0, "count_closed": 0, "code": 0})
    assert await w0.fan_out("close_streams", {"app": "live"}) == ({"count_hit": 3, "count_closed": 2, "code": 0}, [])
    with pytest.raises(amp.RemoteAmpError):
        await w0.fan_out("nonsense", {})


@pytest_twisted.ensureDeferred
async def test_lost_claim_reaches_the_owning_worker(host: Host) -> None:
    w0, w1 = await host.worker(0), await host.worker(1)
    lost0: list[DirectoryEvent] = []
    lost1: list[DirectoryEvent] = []
    w0.add_listener(lambda e: lost0.append(e) if e.op == "lost" else None)
    w1.add_listener(lambda e: lost1.append(e) if e.op == "lost" else None)
    owner = (await w0.claim(KEY, w0.me)).owner
    directory = host.master.directory
    assert directory.cluster is None
    # what the Redis layer reports when another node holds our name after a Redis restart
    directory._cluster_event(DirectoryEvent("lost", KEY, OwnerInfo("node-b", "e9")))
    await until(lambda: lost0, what="StreamLost")
    assert lost0[0].key == KEY and lost0[0].owner == owner and lost1 == []


def test_merge_metrics_adds_samples_of_the_same_labels() -> None:
    a = '# HELP ms_bytes bytes\n# TYPE ms_bytes counter\nms_bytes_total{dir="in"} 10.0\nms_bytes_total{dir="out"} 1.0\n'
    b = '# HELP ms_bytes bytes\n# TYPE ms_bytes counter\nms_bytes_total{dir="in"} 5.0\n# TYPE up gauge\nup 1\n'
    merged = control.merge_metrics([a, b])
    assert 'ms_bytes_total{dir="in"} 15.0' in merged and 'ms_bytes_total{dir="out"} 1.0' in merged
    assert merged.count("# TYPE ms_bytes counter") == 1 and "up 1.0" in merged
    assert control.merge_metrics([]) == ""


def test_merge_counts_and_lists() -> None:
    assert control.merge_counts([{"count_hit": 1, "code": 0, "msg": "a"}, {"count_hit": 2, "code": 0, "msg": "b"},
                                 None]) == {"count_hit": 3, "code": 0, "msg": "a"}
    assert control.merge_lists([[1], [2, 3], "x"]) == [1, 2, 3]


@pytest_twisted.ensureDeferred
async def test_master_forwards_worker_claims_to_redis(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    server.start()
    url = parse_redis_url(server.url)
    here = RedisDirectory(R, R, url, NODE, 5000, 500)
    other = RedisDirectory(R, R, url, OwnerInfo("node-b", "e2"), 5000, 500)
    h = Host(NodeDirectory(LocalDirectory(R), here))
    try:
        w0, w1 = await h.worker(0), await h.worker(1)
        claim = await w1.claim(KEY, w1.me)
        assert claim.ours
        stored = OwnerInfo.from_json(server.get(PREFIX + "stream:" + KEY) or b"")
        assert (stored.node, stored.epoch, stored.worker) == ("host-1", "ep1", 1)
        assert not (await other.claim(KEY, OwnerInfo("node-b", "e2"))).ours
        # a name another node holds: refused to the worker, with that node as the owner
        assert (await other.claim("v/live/b", OwnerInfo("node-b", "e2", flv="http://b:8080"))).ours
        refused = await w0.claim("v/live/b", w0.me)
        assert not refused.ours and refused.owner.flv == "http://b:8080"
        assert await w0.lookup("v/live/b") == refused.owner
        # a worker waiting for a stream another node starts is woken through pub/sub
        await until(lambda: server.subscribers(here.events_channel) == 2, what="subscribers")
        waiting = w0.wait_for_owner("v/live/later", 10)
        await deferLater(R, 0.05, lambda: None)
        await other.claim("v/live/later", OwnerInfo("node-b", "e2"))
        assert (await waiting).node == "node-b"
        await w1.release(KEY, w1.me)
        assert server.get(PREFIX + "stream:" + KEY) is None
    finally:
        await h.close()
        await here.close()
        await other.close()
        server.stop()
