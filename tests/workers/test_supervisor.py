"""A real master process supervising 2 real worker processes (tests/workers/echo_worker.py)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.support.server import free_port

MASTER = Path(__file__).with_name("master_prog.py")


@dataclass
class Master:
    proc: subprocess.Popen[bytes]
    port: int
    offset: int
    markers: Path
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def direct(self, worker: int) -> int:
        return self.port + self.offset + worker


def free_block(offset: int, workers: int) -> int:
    """A port P with P and P+offset+i (i < workers) all free right now."""
    for _ in range(50):
        p = free_port()
        try:
            held = []
            for q in [p] + [p + offset + i for i in range(workers)]:
                s = socket.socket()
                s.bind(("127.0.0.1", q))
                held.append(s)
            for s in held:
                s.close()
            return p
        except OSError:
            for s in held:
                s.close()
    raise RuntimeError("no free port block")


def ask(port: int, line: str | None = None, timeout: float = 10) -> tuple[str, Any]:
    """Connect, read the greeting, optionally send one command and read its JSON answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as c:
        f = c.makefile("rwb")
        greeting = f.readline().decode().strip()
        answer = None
        if line is not None:
            f.write(line.encode() + b"\n")
            f.flush()
            answer = json.loads(f.readline())
        return greeting, answer


def worker_of(greeting: str) -> tuple[int, int]:
    fields = dict(p.split("=") for p in greeting.split()[1:])
    return int(fields["worker"]), int(fields["pid"])


def wait_for(predicate: Any, timeout: float = 15, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {timeout} s")
        time.sleep(0.05)


def start_master(tmp_path: Path, workers: int = 2, offset: int = 100, port: int | None = None) -> Master:
    port = port or free_block(offset, workers)
    markers = tmp_path / "markers"
    markers.mkdir(exist_ok=True)
    log_path = tmp_path / "master.log"
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, str(MASTER), str(workers), str(port), str(offset), str(markers)],
                            stdout=log_path.open("wb"), stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    m = Master(proc, port, offset, markers, log_path)
    wait_for(lambda: m.log().count("ready on") >= workers or proc.poll() is not None, what="workers ready")
    assert proc.poll() is None, m.log()
    return m


@pytest.fixture
def master(tmp_path: Path) -> Iterator[Master]:
    m = start_master(tmp_path)
    yield m
    if m.proc.poll() is None:
        m.proc.send_signal(signal.SIGTERM)
        try:
            m.proc.wait(20)
        except subprocess.TimeoutExpired:
            m.proc.kill()
            m.proc.wait(5)


def test_shared_port_reaches_both_workers_and_direct_ports_pin_one(master: Master) -> None:
    seen = [worker_of(ask(master.port)[0])[0] for _ in range(60)]
    assert set(seen) == {0, 1}, seen
    print(f"60 connections on the shared port: worker 0 got {seen.count(0)}, worker 1 got {seen.count(1)}")
    for i in (0, 1):
        for _ in range(5):
            greeting, _ = ask(master.direct(i))
            assert greeting.startswith("echo.direct ") and worker_of(greeting)[0] == i


def test_killed_worker_is_restarted_and_its_port_keeps_accepting(master: Master) -> None:
    _, pid0 = worker_of(ask(master.direct(0))[0])
    os.kill(pid0, signal.SIGKILL)
    killed = time.monotonic()
    wait_for(lambda: f"worker 0 (pid {pid0}) ended (signal 9)" in master.log(), what="death noticed")
    # worker 0 is dead and not yet restarted: a connection now waits in the socket the master
    # holds, and the new worker 0 answers it (not refused, not sent elsewhere)
    assert "worker 0 started" not in master.log().split(f"(pid {pid0}) ended")[1]
    greeting, _ = ask(master.direct(0), timeout=15)
    restarted_after = time.monotonic() - killed
    index, pid = worker_of(greeting)
    assert index == 0 and pid != pid0
    shared = {worker_of(ask(master.port)[0])[0] for _ in range(40)}
    assert shared == {0, 1}
    log = master.log()
    assert f"workers: worker 0 (pid {pid0}) ended (signal 9) after" in log
    assert "restarting in 0.5 s" in log
    print(f"a connection made while worker 0 was dead was answered by its successor {restarted_after:.2f} s "
          "after the SIGKILL")


def test_sigterm_stops_all_workers_cleanly(master: Master) -> None:
    pids = [worker_of(ask(master.direct(i))[0])[1] for i in (0, 1)]
    master.proc.send_signal(signal.SIGTERM)
    assert master.proc.wait(20) == 0
    # each worker ran its own shutdown code (where a server's end hooks fire)
    assert {p.name for p in master.markers.iterdir()} == {f"clean-0-{pids[0]}", f"clean-1-{pids[1]}"}
    log = master.log()
    assert log.count("shutting down cleanly") == 2
    assert "workers: all workers ended" in log and "master: clean exit" in log
    assert "restarting" not in log
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        r = subprocess.run([sys.executable, str(MASTER), "2", str(port), "0", str(tmp_path)], env=env,
                           capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        f"mediasrv: test.ini: [test] port: cannot listen on 127.0.0.1:{port}: Address already in use"]


def test_host_directory_over_amp_between_two_worker_processes(master: Master) -> None:
    _, first = ask(master.direct(0), "claim live/cam")
    assert first == {"ours": True, "worker": 0, "node": "host-1"}  # identity set by the master
    _, second = ask(master.direct(1), "claim live/cam")
    assert second == {"ours": False, "worker": 0, "node": "host-1"}
    assert ask(master.direct(1), "lookup live/cam")[1] == {"worker": 0, "flv": "http://w0"}
    assert ask(master.direct(1), "release live/cam")[1] is False  # not worker 1's to release
    # a waiter on worker 1 gets the owner a claim on worker 0 makes (by StreamUp if its Watch
    # came first, else by its look-up; tests/workers/test_control.py pins the StreamUp path)
    with socket.create_connection(("127.0.0.1", master.direct(1)), timeout=10) as c:
        f = c.makefile("rwb")
        f.readline()
        f.write(b"wait live/later 10\n")
        f.flush()
        started = time.monotonic()
        assert ask(master.direct(0), "claim live/later")[1]["ours"] is True
        assert json.loads(f.readline()) == {"worker": 0}
        assert time.monotonic() - started < 2
    # worker 0 dies: its claims are released by the master
    _, pid0 = worker_of(ask(master.direct(0))[0])
    os.kill(pid0, signal.SIGKILL)
    wait_for(lambda: ask(master.direct(1), "lookup live/cam")[1] is None, what="release on death")
    assert ask(master.direct(1), "claim live/cam")[1] == {"ours": True, "worker": 1, "node": "host-1"}


def test_fan_out_merges_every_workers_answer(master: Master) -> None:
    _, sessions = ask(master.direct(1), "fanout sessions")
    result, missing = sessions
    assert sorted(r["id"] for r in result) == ["0-1", "1-1"] and missing == []
    _, kicked = ask(master.direct(0), 'fanout kick {"id": "1-1"}')
    assert kicked == [{"count_hit": 1}, []]
    _, metrics = ask(master.direct(0), "fanout metrics")
    assert "conns 3.0" in metrics[0]  # 1 + 2, one family
    assert metrics[0].count("# TYPE conns gauge") == 1
