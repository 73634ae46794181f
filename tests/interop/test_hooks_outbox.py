"""The durable hook outbox.

Unit level (a fake HTTP client and ``task.Clock``): overflow policy (rows and
bytes), order per key (session), back-off, final 4xx, dead letters after
``max_age``, the in-flight cap, periodic "now or never" delivery, restart.
Interop level: notifications pending while the backend is down survive a
``kill -9`` of mediasrv and reach the backend exactly once, in order, after a
restart; and a backend failing one session's notifications does not hold back
another's (tests/interop/test_hooks_delivery.py).
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from mediasrv.hooks.client import HookResponse, HookTransportError
from mediasrv.hooks.model import HookCall
from mediasrv.hooks.outbox import EVENT_ID_HEADER, Outbox
from tests.support.clients import needs_ffmpeg
from tests.support.hookserver import HookServer, _free_port, publisher, run_probe, wait_exit
from tests.support.server import running_server


# -- unit level --------------------------------------------------------------------------------------------------
class FakeClient:
    """Records every request; the test fires the Deferreds."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any], dict[str, str], defer.Deferred[HookResponse]]] = []

    def request(self, method: str, url: str, timeout: float, body: bytes | None = None,
                headers: dict[str, str] | None = None, dialect: str = "") -> defer.Deferred[HookResponse]:
        d: defer.Deferred[HookResponse] = defer.Deferred()
        self.sent.append((url, json.loads(body or b"{}"), dict(headers or {}), d))
        return d

    def pending(self) -> list[int]:
        return [i for i, s in enumerate(self.sent) if not s[3].called]

    def answer(self, i: int, status: int = 200) -> None:
        self.sent[i][3].callback(HookResponse(status, {}, b'{"code":0}'))

    def fail(self, i: int) -> None:
        self.sent[i][3].errback(Failure(HookTransportError("connection refused")))

    def payloads(self, url: str | None = None) -> list[Any]:
        return [p.get("n") for u, p, _, _ in self.sent if url is None or u == url]


def call(n: int, url: str = "http://backend/on_flow_report") -> HookCall:
    return HookCall("zlm", "on_flow_report", url, {"n": n}, 2.0)


def rows(path: Path) -> int:
    db = sqlite3.connect(str(path / "outbox.sqlite3"))
    try:
        return int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
    finally:
        db.close()


@pytest.fixture
def fake() -> FakeClient:
    return FakeClient()


def make(tmp_path: Path, fake: FakeClient, clock: Clock, **kw: Any) -> Outbox:
    return Outbox(tmp_path, fake, clock, **kw)  # type: ignore[arg-type]


def deliver_all(fake: FakeClient, clock: Clock) -> None:
    i = 0
    while i < len(fake.sent):
        if not fake.sent[i][3].called:
            fake.answer(i)
        i += 1
        clock.advance(0)


def test_overflow_drop_oldest(tmp_path: Path, fake: FakeClient) -> None:
    clock = Clock()
    box = make(tmp_path, fake, clock, max_rows=3, overflow="drop_oldest")
    for n in range(5):
        box.enqueue(call(n), "live/a")
    assert (box.depth, box.dropped) == (3, 2)
    box.start()
    deliver_all(fake, clock)
    assert fake.payloads() == [2, 3, 4]
    assert (box.delivered, box.depth, rows(tmp_path)) == (3, 0, 0)
    box.stop()
    box.close()


def test_overflow_drop_newest(tmp_path: Path, fake: FakeClient) -> None:
    clock = Clock()
    box = make(tmp_path, fake, clock, max_rows=3, overflow="drop_newest")
    for n in range(5):
        box.enqueue(call(n), "live/a")
    assert (box.depth, box.dropped) == (3, 2)
    box.start()
    deliver_all(fake, clock)
    assert fake.payloads() == [0, 1, 2]
    box.stop()
    box.close()


def test_drop_oldest_spares_the_notification_in_flight(tmp_path: Path, fake: FakeClient) -> None:
    """Full while the head of the only queue is being sent: the oldest *waiting* one goes."""
    clock = Clock()
    box = make(tmp_path, fake, clock, max_rows=3, overflow="drop_oldest")
    box.start()
    for n in range(4):
        box.enqueue(call(n), "live/a")
    assert fake.payloads() == [0]  # in flight
    assert box.dropped == 1
    deliver_all(fake, clock)
    assert fake.payloads() == [0, 2, 3]
    box.stop()
    box.close()


def test_order_per_key_and_back_off(tmp_path: Path, fake: FakeClient) -> None:
    clock = Clock()
    box = make(tmp_path, fake, clock)
    box.start()
    box.enqueue(call(0), "live/a")
    box.enqueue(call(1), "live/a")
    box.enqueue(call(10), "live/b")
    assert fake.payloads() == [0, 10]  # one in flight per key, keys independent
    fake.fail(0)
    fake.answer(1)
    clock.advance(0.9)
    assert fake.payloads() == [0, 10]  # waiting out the back-off; 1 must not overtake 0
    clock.advance(0.2)
    assert fake.payloads() == [0, 10, 0]
    fake.fail(2)
    clock.advance(1.9)
    assert len(fake.sent) == 3  # back-off doubled: 2 s
    clock.advance(0.2)
    assert fake.payloads() == [0, 10, 0, 0]
    ids = {h[EVENT_ID_HEADER] for _, p, h, _ in fake.sent if p["n"] == 0}
    assert len(ids) == 1  # a retry carries the same event id
    deliver_all(fake, clock)
    assert fake.payloads() == [0, 10, 0, 0, 1]
    assert box.depth == 0 and box.failures == 2
    box.stop()
    box.close()


def test_non_2xx_is_retried(tmp_path: Path, fake: FakeClient) -> None:
    clock = Clock()
    box = make(tmp_path, fake, clock)
    box.start()
    box.enqueue(call(0), "k")
    fake.answer(0, status=503)
    clock.advance(1.01)
    assert fake.payloads() == [0, 0]
    fake.answer(1)
    assert box.depth == 0 and box.delivered == 1
    box.stop()
    box.close()


def test_pending_notifications_survive_a_restart(tmp_path: Path, fake: FakeClient) -> None:
    clock = Clock()
    box = make(tmp_path, fake, clock)
    for n in range(3):
        box.enqueue(call(n), "live/a")
    box.close()  # never started: nothing sent
    assert rows(tmp_path) == 3
    again = FakeClient()
    box2 = make(tmp_path, again, clock)
    assert box2.depth == 3
    box2.start()
    deliver_all(again, clock)
    assert again.payloads() == [0, 1, 2]
    assert len({h[EVENT_ID_HEADER] for _, _, h, _ in again.sent}) == 3
    assert rows(tmp_path) == 0
    box2.stop()
    box2.close()


# -- interop: kill -9 while the backend is down -------------------------------------------------------------------
@pytest.mark.interop
@needs_ffmpeg
def test_notifications_survive_kill_9_and_arrive_once_in_order(tmp_path: Path) -> None:
    port = _free_port()  # the backend's port: nothing listens there yet
    url = f"http://127.0.0.1:{port}"
    outbox = tmp_path / "outbox"
    sets = ["hook.enable=1", f"hook.on_flow_report={url}/zlm/on_flow_report", "general.flowThreshold=0",
            "http_hooks.enabled=1", f"http_hooks.on_stop={url}/srs/on_stop",
            f"http_hooks.on_unpublish={url}/srs/on_unpublish", f"hook.outbox={outbox}", "hook.timeoutSec=2"]
    with running_server(tmp_path, *sets) as srv:
        pub = publisher(f"{srv.rtmp}/live/ob", duration=4)
        time.sleep(1.5)
        for token in ("first", "second"):
            assert run_probe(f"{srv.rtmp}/live/ob?token={token}").returncode == 0
        assert wait_exit(pub, 15) == 0
        deadline = time.monotonic() + 5
        while rows(outbox) < 6 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert rows(outbox) == 6  # 3 flow reports, 2 on_stop, 1 on_unpublish: all waiting
        srv.proc.kill()  # kill -9
        srv.proc.wait()
    assert rows(outbox) == 6
    (tmp_path / "again").mkdir()
    with HookServer(tmp_path / "backend", port=port) as hs, running_server(tmp_path / "again", *sets):
        hs.wait_for(lambda r: True, count=6, timeout=15)
        time.sleep(1.5)  # anything sent twice would be here by now
        reqs = hs.requests()
        assert len(reqs) == 6, [r["path"] for r in reqs]
        ids = [r["headers"][EVENT_ID_HEADER.lower()] for r in reqs]
        assert len(set(ids)) == 6
        flows = [r["json"] for r in reqs if r["path"] == "/zlm/on_flow_report"]
        assert [(f["player"], f["params"]) for f in flows] == [(True, "token=first"), (True, "token=second"),
                                                               (False, "")]
        stops = [r["json"]["param"] for r in reqs if r["path"] == "/srs/on_stop"]
        assert stops == ["?token=first", "?token=second"]
        assert len([r for r in reqs if r["path"] == "/srs/on_unpublish"]) == 1
        assert all(f["mediaServerId"] and type(f["hook_index"]) is int for f in flows)
        assert rows(outbox) == 0
