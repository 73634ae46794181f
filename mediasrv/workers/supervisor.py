"""WorkerSupervisor: the master's service that runs N worker processes on shared sockets.

* ``privilegedStartService`` opens every listener as one ``SO_REUSEPORT`` socket per worker
  (:mod:`mediasrv.workers.sockets`); a taken port is one :class:`ListenError` line.
* With ``internal_dir``, each worker also gets a unix socket ``<dir>/w<i>.sock`` of its own
  (named ``internal``), where it serves internal pulls to the other workers; held by the
  master like the others, so a pull started during a restart waits instead of failing.
* ``startService`` spawns the workers with ``reactor.spawnProcess(..., childFDs=...)``: the
  child gets its sockets as fds 4, 5, ... (``MEDIASRV_FDS``), its end of a fresh unix socket
  pair as fd 3 (``MEDIASRV_CONTROL_FD``) and ``MEDIASRV_WORKER_INDEX``; its stdout/stderr
  lines are logged by the master with a ``worker <i>:`` prefix.
* A worker that ends while the service runs is restarted on the same sockets (the master
  never closes them, so connections queue meanwhile) after a delay that doubles while it
  keeps dying young (``min_restart_delay`` .. ``max_restart_delay``), one log line each.
* ``stopService`` forwards SIGTERM to every worker and waits for their exits (so their own
  clean shutdown -- end hooks -- runs), SIGKILLing after ``stop_timeout``; then closes the
  sockets.  twistd waits for that Deferred before the master exits.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IDelayedCall, IProtocolFactory
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from mediasrv.workers.sockets import (
    CONTROL_ENV,
    COUNT_ENV,
    EPOCH_ENV,
    FDS_ENV,
    INDEX_ENV,
    ListenSpec,
    encode_fds,
    open_worker_sockets,
)

log = Logger()

CONTROL_FD = 3


def resolve_workers(value: str, cpus: int | None = None) -> int:
    """``general.workers``: a number, or ``auto`` = the cores this process may use."""
    if value == "auto":
        if cpus is None:
            cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return max(1, cpus)
    return int(value)


class _WorkerProtocol(ProcessProtocol):
    def __init__(self, slot: _Slot) -> None:
        self.slot = slot
        self._partial = {1: b"", 2: b""}

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        buf = self._partial.get(childFD, b"") + data
        *lines, self._partial[childFD] = buf.split(b"\n")
        for line in lines:
            self._say(line)

    def _say(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace").rstrip()
        if text:
            log.info("worker {i}: {line}", i=self.slot.index, line=text)

    def processEnded(self, reason: Failure) -> None:
        for rest in self._partial.values():
            self._say(rest)
        self.slot.supervisor._ended(self.slot, reason)


@dataclass
class _Slot:
    supervisor: WorkerSupervisor
    index: int
    sockets: dict[str, socket.socket]
    process: Any = None
    pid: int = 0
    started: float = 0.0
    delay: float = 0.0
    restart: IDelayedCall | None = None
    exited: list[Deferred[None]] = field(default_factory=list)
    starts: int = 0


class WorkerSupervisor(Service):
    def __init__(self, reactor: Any, count: int, listeners: list[ListenSpec], argv: list[str],
                 env: dict[str, str] | None = None, port_offset: int = 0,
                 control: Callable[[int], IProtocolFactory] | None = None, epoch: str = "", source: str = "",
                 internal_dir: str = "",
                 min_restart_delay: float = 0.2, max_restart_delay: float = 30.0, stable_after: float = 10.0,
                 stop_timeout: float = 30.0) -> None:
        self.reactor = reactor
        self.count = count
        self.listeners = listeners
        self.argv = argv
        self.env = dict(os.environ if env is None else env)
        self.port_offset = port_offset
        self.control = control
        self.epoch = epoch
        self.source = source
        self.internal_dir = internal_dir
        self.min_restart_delay = min_restart_delay
        self.max_restart_delay = max_restart_delay
        self.stable_after = stable_after
        self.stop_timeout = stop_timeout
        self.slots: list[_Slot] = []
        self.stopping = False

    def privilegedStartService(self) -> None:
        """Open the sockets (as root, before twistd drops privileges); ListenError when one is taken."""
        if not self.slots:
            per_worker = open_worker_sockets(self.listeners, self.count, self.port_offset, self.source,
                                             self.internal_dir)
            self.slots = [_Slot(self, i, socks) for i, socks in enumerate(per_worker)]
        super().privilegedStartService()

    def startService(self) -> None:
        if not self.slots:
            self.privilegedStartService()
        super().startService()
        self.stopping = False
        for slot in self.slots:
            self._spawn(slot)
        names = ", ".join(f"{s.name} {s.host}:{s.port}" for s in self.listeners)
        log.info("workers: {n} workers on {names}", n=self.count, names=names)

    def pids(self) -> list[int]:
        return [slot.pid for slot in self.slots]

    def _spawn(self, slot: _Slot) -> None:
        slot.restart = None
        fds: dict[str, int] = {}
        child_fds: dict[int, Any] = {0: "w", 1: "r", 2: "r"}
        parent_end: socket.socket | None = None
        child_end: socket.socket | None = None
        env = dict(self.env)
        if self.control is not None:
            parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            child_fds[CONTROL_FD] = child_end.fileno()
            env[CONTROL_ENV] = str(CONTROL_FD)
        next_fd = CONTROL_FD + 1
        for name, sock in slot.sockets.items():
            child_fds[next_fd] = sock.fileno()
            fds[name] = next_fd
            next_fd += 1
        env.update({FDS_ENV: encode_fds(fds), INDEX_ENV: str(slot.index), COUNT_ENV: str(self.count),
                    EPOCH_ENV: self.epoch})
        try:
            slot.process = self.reactor.spawnProcess(_WorkerProtocol(slot), self.argv[0], self.argv, env=env,
                                                     childFDs=child_fds)
        finally:
            if child_end is not None:
                child_end.close()
        slot.pid = slot.process.pid
        slot.started = self.reactor.seconds()
        slot.starts += 1
        if parent_end is not None and self.control is not None:
            parent_end.setblocking(False)
            self.reactor.adoptStreamConnection(parent_end.fileno(), socket.AF_UNIX, self.control(slot.index))
            parent_end.close()
        log.info("workers: worker {i} started (pid {pid})", i=slot.index, pid=slot.pid)

    def _ended(self, slot: _Slot, reason: Failure) -> None:
        status = reason.value
        how = (f"signal {status.signal}" if getattr(status, "signal", None)
               else f"exit code {getattr(status, 'exitCode', '?')}")
        slot.process = None
        waiting, slot.exited = slot.exited, []
        for d in waiting:
            d.callback(None)
        if self.stopping or not self.running:
            log.info("workers: worker {i} (pid {pid}) ended ({how})", i=slot.index, pid=slot.pid, how=how)
            return
        lived = self.reactor.seconds() - slot.started
        if lived >= self.stable_after or slot.delay == 0:
            slot.delay = self.min_restart_delay
        else:
            slot.delay = min(self.max_restart_delay, slot.delay * 2)
        log.warn("workers: worker {i} (pid {pid}) ended ({how}) after {lived:.1f} s; restarting in {delay:.1f} s",
                 i=slot.index, pid=slot.pid, how=how, lived=lived, delay=slot.delay)
        slot.restart = self.reactor.callLater(slot.delay, self._spawn, slot)

    def stopService(self) -> Deferred[None]:
        self.stopping = True
        super().stopService()
        waits = []
        for slot in self.slots:
            if slot.restart is not None and slot.restart.active():
                slot.restart.cancel()
                slot.restart = None
            if slot.process is not None:
                done: Deferred[None] = Deferred()
                slot.exited.append(done)
                waits.append(done)
                self._signal(slot, "TERM")
        if not waits:
            self._close_sockets()
            return succeed(None)
        killer = self.reactor.callLater(self.stop_timeout, self._kill_all)

        def all_ended(_: Any) -> None:
            if killer.active():
                killer.cancel()
            self._close_sockets()
            log.info("workers: all workers ended")

        return DeferredList(waits).addCallback(all_ended)

    def _kill_all(self) -> None:
        for slot in self.slots:
            if slot.process is not None:
                log.warn("workers: worker {i} (pid {pid}) still running after {t} s; killing it", i=slot.index,
                         pid=slot.pid, t=self.stop_timeout)
                self._signal(slot, "KILL")

    def _signal(self, slot: _Slot, name: str) -> None:
        try:
            slot.process.signalProcess(name)
        except (ProcessExitedAlready, OSError):
            pass

    def _close_sockets(self) -> None:
        for slot in self.slots:
            for sock in slot.sockets.values():
                if sock.family == socket.AF_UNIX:
                    with contextlib.suppress(OSError):
                        os.unlink(sock.getsockname())
                sock.close()
        self.slots = []

