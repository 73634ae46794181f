"""The outbox's delivery rules on task.Clock with a fake client (issue 10, item 3):
order per session, final 4xx, retry of 5xx/408/429/transport failures up to
``max_age`` then dead letters, the in-flight cap, the byte cap, and periodic
events delivered now or never."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from twisted.internet.task import Clock

from mediasrv import config
from mediasrv.hooks.model import HookCall
from mediasrv.hooks.outbox import Outbox
from tests.interop.test_hooks_outbox import FakeClient, call, deliver_all, make, rows


def dead_rows(path: Path) -> int:
    db = sqlite3.connect(str(path / "outbox.sqlite3"))
    try:
        return int(db.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0])
    finally:
        db.close()


@pytest.fixture
def fake() -> FakeClient:
    return FakeClient()


def test_order_is_per_session_not_per_url(tmp_path: Path, fake: FakeClient, clock: Clock) -> None:
    box = make(tmp_path, fake, clock)
    box.start()
    box.enqueue(call(0, "http://b/on_stop"), "session-a")
    box.enqueue(call(1, "http://b/on_close"), "session-a")  # another URL, same session: waits
    box.enqueue(call(2, "http://b/on_stop"), "session-b")  # same URL, another session: goes
    assert fake.payloads() == [0, 2]
    fake.fail(0)
    fake.answer(1)
    assert fake.payloads() == [0, 2]  # 1 is held back by 0, the earlier one of its session
    clock.advance(1.01)
    fake.answer(2)
    clock.advance(0)
    assert fake.payloads() == [0, 2, 0, 1]
    deliver_all(fake, clock)
    box.stop()
    box.close()


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 422])
def test_4xx_is_final_and_does_not_hold_the_session_back(tmp_path: Path, fake: FakeClient, clock: Clock,
                                                         status: int) -> None:
    box = make(tmp_path, fake, clock)
    box.start()
    box.enqueue(call(0), "s")
    box.enqueue(call(1), "s")
    fake.answer(0, status=status)
    clock.advance(0)
    assert fake.payloads() == [0, 1]  # the next one goes at once
    fake.answer(1)
    clock.advance(120)
    assert fake.payloads() == [0, 1]  # never resent
    assert (box.rejected, box.delivered, box.depth, box.failures) == (1, 1, 0, 0)
    (dead,) = box.dead_letters()
    assert (dead.hook, dead.url, dead.payload, dead.reason, dead.key) == (
        "on_flow_report", "http://backend/on_flow_report", {"n": 0}, f"HTTP {status}", "s")
    assert rows(tmp_path) == 0 and dead_rows(tmp_path) == 1
    box.stop()
    box.close()


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504, 301, 100])
def test_retryable_answers_are_retried(tmp_path: Path, fake: FakeClient, clock: Clock, status: int) -> None:
    box = make(tmp_path, fake, clock)
    box.start()
    box.enqueue(call(0), "s")
    fake.answer(0, status=status)
    clock.advance(1.01)
    assert fake.payloads() == [0, 0]
    fake.answer(1)
    assert (box.delivered, box.failures, box.rejected, box.depth) == (1, 1, 0, 0)
    box.stop()
    box.close()


def test_undeliverable_for_max_age_becomes_a_dead_letter(tmp_path: Path, fake: FakeClient, clock: Clock) -> None:
    box = make(tmp_path, fake, clock, max_age=300.0)
    box.start()
    box.enqueue(call(0), "s")
    box.enqueue(call(1), "s")
    times = []
    while box.expired == 0:
        (i,) = fake.pending()
        assert fake.sent[i][1]["n"] == 0
        times.append(clock.seconds())
        fake.fail(i)
        while not fake.pending() and box.expired == 0:
            clock.advance(0.5)
    # back-off doubling from 1 s to 60 s; the failure at 303 s is past max_age
    assert times == [0, 1, 3, 7, 15, 31, 63, 123, 183, 243, 303]
    assert box.failures == 11 and box.depth == 1
    (dead,) = box.dead_letters()
    assert dead.attempts == 11 and "after 11 attempts" in dead.reason and "connection refused" in dead.reason
    (i,) = fake.pending()
    assert fake.sent[i][1]["n"] == 1  # the session's next one goes on
    fake.answer(i)
    assert box.depth == 0 and box.delivered == 1
    box.stop()
    box.close()


def test_dead_letters_survive_a_restart(tmp_path: Path, fake: FakeClient, clock: Clock) -> None:
    box = make(tmp_path, fake, clock)
    box.start()
    box.enqueue(call(0), "s")
    fake.answer(0, status=404)
    box.stop()
    box.close()
    again = make(tmp_path, FakeClient(), clock)
    assert [d.payload for d in again.dead_letters()] == [{"n": 0}] and again.dead_count == 1
    again.close()


def test_at_most_max_inflight_on_the_wire(tmp_path: Path, fake: FakeClient, clock: Clock) -> None:
    box = make(tmp_path, fake, clock, max_inflight=3)
    box.start()
    for n in range(10):
        box.enqueue(call(n), f"session-{n}")
    assert fake.payloads() == [0, 1, 2] and box.inflight == 3
    fake.answer(1)
    assert fake.payloads() == [0, 1, 2, 3]
    fake.fail(0)  # backing off frees its slot too
    assert fake.payloads() == [0, 1, 2, 3, 4]
    for _ in range(20):
        for i in fake.pending():
            fake.answer(i)
        clock.advance(1.1)
        assert box.inflight <= 3
    assert box.depth == 0 and sorted(fake.payloads()) == sorted([0, *range(10)])
    box.stop()
    box.close()


def test_byte_cap(tmp_path: Path, fake: FakeClient, clock: Clock) -> None:
    big = HookCall("zlm", "on_flow_report", "http://b/f", {"pad": "x" * 1000}, 2.0)
    box = make(tmp_path, fake, clock, max_bytes=3500, overflow="drop_oldest")
    for _ in range(5):
        box.enqueue(big, "s")
    assert box.depth == 3 and box.dropped == 2 and box.bytes <= 3500
    huge = HookCall("zlm", "on_flow_report", "http://b/f", {"pad": "x" * 5000}, 2.0)
    box.enqueue(huge, "s")  # larger than the whole cap: never stored
    assert box.depth == 3 and box.dropped == 3
    newest = make(tmp_path / "n", fake, clock, max_bytes=3500, overflow="drop_newest")
    for _ in range(5):
        newest.enqueue(big, "s")
    assert newest.depth == 3 and newest.dropped == 2
    box.close()
    newest.close()


def test_byte_count_survives_restart(tmp_path: Path, fake: FakeClient, clock: Clock) -> None:
    box = make(tmp_path, fake, clock)
    box.enqueue(call(0), "s")
    size = box.bytes
    box.close()
    again = make(tmp_path, fake, clock)
    assert again.bytes == size > 0
    again.close()


def test_an_outbox_file_of_the_previous_schema_opens(tmp_path: Path, fake: FakeClient, clock: Clock) -> None:
    db = sqlite3.connect(str(tmp_path / "outbox.sqlite3"))
    db.execute("CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, event_id TEXT NOT NULL,"
               " dialect TEXT NOT NULL, hook TEXT NOT NULL, method TEXT NOT NULL, url TEXT NOT NULL,"
               " payload TEXT NOT NULL, headers TEXT NOT NULL, timeout REAL NOT NULL, created REAL NOT NULL,"
               " attempts INTEGER NOT NULL DEFAULT 0)")
    db.execute("INSERT INTO outbox (key, event_id, dialect, hook, method, url, payload, headers, timeout, created)"
               " VALUES ('http://b/f|live/a', 'e1', 'zlm', 'on_flow_report', 'POST', 'http://b/f', '{\"n\": 7}',"
               " '{}', 2.0, 0)")
    db.commit()
    db.close()
    box = make(tmp_path, fake, clock)
    assert box.depth == 1 and box.bytes > 0
    box.start()
    assert fake.payloads() == [7]
    fake.answer(0)
    assert box.depth == 0
    box.stop()
    box.close()


def test_deliver_now_is_never_queued(tmp_path: Path, fake: FakeClient, clock: Clock) -> None:
    box = make(tmp_path, fake, clock)
    box.start()
    keepalive = HookCall("zlm", "on_server_keepalive", "http://b/ka", {"data": {}}, 2.0)
    box.deliver_now(keepalive)
    assert rows(tmp_path) == 0 and box.depth == 0 and len(fake.sent) == 1
    box.deliver_now(keepalive)  # the previous one is still unanswered: skipped, not stacked
    assert len(fake.sent) == 1 and box.periodic_missed == 1
    fake.fail(0)
    clock.advance(120)
    assert len(fake.sent) == 1 and box.periodic_missed == 2  # not retried
    box.deliver_now(keepalive)
    fake.answer(1, status=500)
    assert box.periodic_missed == 3 and box.failures == 0 and box.depth == 0
    box.deliver_now(keepalive)
    fake.answer(2)
    assert box.periodic_missed == 3
    box.stop()
    box.close()


def test_from_config_reads_the_keys(tmp_path: Path, fake: FakeClient, clock: Clock) -> None:
    cfg = config.load(overrides=[f"hook.outbox={tmp_path}", "hook.outbox_max_age=60", "hook.outbox_max_bytes=1000",
                                 "hook.outbox_connections=2", "hook.outbox_max=5"])
    box = Outbox.from_config(cfg, fake, clock)  # type: ignore[arg-type]
    assert (box.max_age, box.max_bytes, box.max_inflight, box.max_rows) == (60.0, 1000, 2, 5)
    box.close()
    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(config.ConfigError, match=r"\[hook\] outbox: cannot open"):
        Outbox.from_config(config.load(overrides=[f"hook.outbox={blocked}"]), fake, clock)  # type: ignore[arg-type]


def test_payload_is_kept_as_sent(tmp_path: Path, fake: FakeClient, clock: Clock) -> None:
    box = make(tmp_path, fake, clock)
    box.start()
    box.enqueue(HookCall("srs", "on_stop", "http://b/s", {"client_id": "x", "param": "?a=é"}, 2.0), "x")
    assert json.loads(json.dumps(fake.sent[0][1])) == {"client_id": "x", "param": "?a=é"}
    fake.answer(0)
    box.stop()
    box.close()
