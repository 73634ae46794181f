"""WorkerSupervisor's restart back-off and stop sequence, on a fake reactor with task.Clock."""

from __future__ import annotations

from typing import Any

from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure

from mediasrv.workers.sockets import ListenSpec, decode_fds
from mediasrv.workers.supervisor import WorkerSupervisor
from tests.support.server import free_port


class FakeProcess:
    def __init__(self, reactor: SpawningReactor, proto: Any, pid: int, env: dict[str, str],
                 child_fds: dict[int, Any]) -> None:
        self.reactor = reactor
        self.proto = proto
        self.pid = pid
        self.env = env
        self.child_fds = child_fds
        self.signals: list[str] = []

    def signalProcess(self, name: str) -> None:
        self.signals.append(name)

    def end(self, signal: int | None = None) -> None:
        reason = ProcessTerminated(signal=signal) if signal else ProcessDone(0)
        self.proto.processEnded(Failure(reason))


class SpawningReactor(MemoryReactorClock):
    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[FakeProcess] = []

    def spawnProcess(self, proto: Any, exe: str, args: list[str], env: dict[str, str],
                     childFDs: dict[int, Any]) -> FakeProcess:
        p = FakeProcess(self, proto, 1000 + len(self.spawned), env, childFDs)
        self.spawned.append(p)
        return p


def supervisor(reactor: SpawningReactor, workers: int = 2, offset: int = 0) -> WorkerSupervisor:
    spec = ListenSpec("rtmp", "[rtmp] port", "127.0.0.1", free_port())
    return WorkerSupervisor(reactor, workers, [spec], ["/bin/worker"], env={"A": "1"}, port_offset=offset,
                            min_restart_delay=0.5, max_restart_delay=4, stable_after=10, stop_timeout=5)


def test_spawn_passes_sockets_index_and_environment() -> None:
    r = SpawningReactor()
    sup = supervisor(r, offset=0)
    sup.privilegedStartService()
    sup.startService()
    try:
        assert len(r.spawned) == 2
        for i, p in enumerate(r.spawned):
            fds = decode_fds(p.env["MEDIASRV_FDS"])
            assert list(fds) == ["rtmp"] and p.env["MEDIASRV_WORKER_INDEX"] == str(i)
            assert p.env["MEDIASRV_WORKERS"] == "2" and p.env["A"] == "1"
            assert p.child_fds[fds["rtmp"]] == sup.slots[i].sockets["rtmp"].fileno()
            assert p.child_fds[0] == "w" and p.child_fds[1] == "r" and p.child_fds[2] == "r"
    finally:
        for p in r.spawned:
            p.end()
        sup.stopService()


def test_restart_backs_off_while_a_worker_dies_young_and_resets_when_it_lived() -> None:
    r = SpawningReactor()
    sup = supervisor(r, workers=1)
    sup.startService()
    delays = []
    with capturedLogs() as events:
        for _ in range(5):
            r.spawned[-1].end(signal=9)
            delay = r.getDelayedCalls()[0].getTime() - r.seconds()
            delays.append(delay)
            r.advance(delay)
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert len(r.spawned) == 6
    assert "workers: worker 0 (pid 1000) ended (signal 9) after 0.0 s; restarting in 0.5 s" in [
        formatEvent(e) for e in events]
    r.advance(30)  # a long life resets the back-off
    r.spawned[-1].end(signal=11)
    assert r.getDelayedCalls()[0].getTime() - r.seconds() == 0.5
    r.advance(0.5)
    sup.stopService()
    r.spawned[-1].end()


def test_stop_forwards_sigterm_waits_then_kills_the_stragglers() -> None:
    r = SpawningReactor()
    sup = supervisor(r)
    sup.startService()
    a, b = r.spawned
    done = sup.stopService()
    assert a.signals == ["TERM"] and b.signals == ["TERM"]
    a.end()
    assert not done.called
    r.advance(5)
    assert b.signals == ["TERM", "KILL"]
    b.end(signal=9)
    assert done.called
    assert len(r.spawned) == 2  # nothing restarted while stopping
    assert sup.slots == []  # sockets closed


def test_a_restart_pending_at_stop_is_cancelled() -> None:
    r = SpawningReactor()
    sup = supervisor(r, workers=1)
    sup.startService()
    r.spawned[0].end(signal=9)
    assert r.getDelayedCalls()
    done = sup.stopService()
    assert done.called and not [c for c in r.getDelayedCalls() if c.active()]


def test_each_worker_gets_its_own_internal_socket(tmp_path: Any) -> None:
    r = SpawningReactor()
    spec = ListenSpec("rtmp", "[rtmp] port", "127.0.0.1", free_port())
    sup = WorkerSupervisor(r, 2, [spec], ["/bin/worker"], env={}, internal_dir=str(tmp_path))
    sup.startService()
    paths = []
    for i, p in enumerate(r.spawned):
        fds = decode_fds(p.env["MEDIASRV_FDS"])
        assert sorted(fds) == ["internal", "rtmp"]
        paths.append(sup.slots[i].sockets["internal"].getsockname())
        assert p.child_fds[fds["internal"]] == sup.slots[i].sockets["internal"].fileno()
    assert paths == [f"{tmp_path}/w0.sock", f"{tmp_path}/w1.sock"]
    sup.stopService()
    for p in r.spawned:
        p.end()
    assert not (tmp_path / "w0.sock").exists()  # removed with the sockets
