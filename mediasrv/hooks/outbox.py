"""Durable, ordered, at-least-once delivery of hook notifications.

Every notification (flow report, stop/done/unpublish/close, stream changed,
record, server events) is committed to SQLite *before* the first attempt to
send it, and deleted only after the hook server took it (a 2xx reply).  A
notification that fails is retried with exponential back-off (1 s doubling to
60 s) for as long as it takes, across restarts and ``kill -9``.  Delivery is
in order per key (hook URL + stream): a later event for a stream is never sent
before an earlier one was taken.  Each request carries ``X-Mediasrv-Event-Id``
so a receiver can drop a duplicate (a crash between the reply and the delete
re-sends once).

Why SQLite (standard library) in WAL mode: one file, transactional appends
that survive a killed process (WAL with ``synchronous=NORMAL`` loses nothing on
a process crash, only possibly the last transactions on power loss), no
server to run, and a few tens of microseconds per small insert on the reactor
thread -- far below the rate of session ends.  A plain append-only log would
need its own compaction and torn-write handling; a message broker would be a
second service to operate.

The outbox is bounded by ``hook.outbox_max`` rows.  When full, the policy
``hook.outbox_overflow`` decides: ``drop_oldest`` deletes the oldest waiting
notification, ``drop_newest`` refuses the new one; either way the loss is
logged and counted (``dropped``).
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from mediasrv.hooks.client import HookClient, HookResponse
from mediasrv.hooks.model import HookCall

log = Logger()

EVENT_ID_HEADER = "X-Mediasrv-Event-Id"
MAX_BACKOFF = 60.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    dialect TEXT NOT NULL,
    hook TEXT NOT NULL,
    method TEXT NOT NULL,
    url TEXT NOT NULL,
    payload TEXT NOT NULL,
    headers TEXT NOT NULL,
    timeout REAL NOT NULL,
    created REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0
)
"""


class Outbox:
    def __init__(self, path: str | Path, client: HookClient, clock: IReactorTime, max_rows: int = 100000,
                 overflow: str = "drop_oldest",
                 stampers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] | None = None) -> None:
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(folder / "outbox.sqlite3"), isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(_SCHEMA)
        self.client = client
        self.clock = clock
        self.max_rows = max_rows
        self.overflow = overflow
        self.stampers = stampers or {}
        self.delivered = 0
        self.failures = 0
        self.dropped = 0
        self._queues: dict[str, deque[int]] = {}
        self._retry_at: dict[str, float] = {}
        self._attempts: dict[int, int] = {}
        self._inflight: dict[str, defer.Deferred[Any]] = {}
        self._timer: IDelayedCall | None = None
        self._running = False
        for row_id, key, attempts in self.db.execute("SELECT id, key, attempts FROM outbox ORDER BY id"):
            self._queues.setdefault(key, deque()).append(row_id)
            self._attempts[row_id] = attempts

    @property
    def depth(self) -> int:
        return sum(len(q) for q in self._queues.values())

    # -- producing ------------------------------------------------------------
    def enqueue(self, call: HookCall, key: str) -> None:
        if self.depth >= self.max_rows:
            if self.overflow == "drop_newest" or not self._drop_oldest():
                self.dropped += 1
                log.warn("hook outbox full ({n} waiting): dropped new {hook} for {key}", n=self.depth,
                         hook=call.hook, key=key)
                return
        order_key = f"{call.url}|{key}"
        cur = self.db.execute(
            "INSERT INTO outbox (key, event_id, dialect, hook, method, url, payload, headers, timeout, created)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (order_key, uuid.uuid4().hex, call.dialect, call.hook, call.method, call.url,
             json.dumps(call.payload, ensure_ascii=False), json.dumps(call.headers), call.timeout,
             self.clock.seconds()))
        row_id = cur.lastrowid
        assert row_id is not None
        self._queues.setdefault(order_key, deque()).append(row_id)
        self._attempts[row_id] = 0
        self._pump()

    def _drop_oldest(self) -> bool:
        # the oldest row not being sent right now (a queue's head may be in flight)
        candidates = [(q[1] if k in self._inflight else q[0], k) for k, q in self._queues.items()
                      if len(q) > (1 if k in self._inflight else 0)]
        if not candidates:
            return False
        row_id, key = min(candidates)
        row = self.db.execute("SELECT hook FROM outbox WHERE id = ?", (row_id,)).fetchone()
        self._remove(key, row_id)
        self.dropped += 1
        log.warn("hook outbox full: dropped oldest waiting {hook} for {key}", hook=row[0] if row else "?", key=key)
        return True

    def _remove(self, key: str, row_id: int) -> None:
        self.db.execute("DELETE FROM outbox WHERE id = ?", (row_id,))
        q = self._queues.get(key)
        if q and q[0] == row_id:
            q.popleft()
        elif q and row_id in q:
            q.remove(row_id)
        if q is not None and not q:
            del self._queues[key]
            self._retry_at.pop(key, None)
        self._attempts.pop(row_id, None)

    # -- delivering -------------------------------------------------------------
    def start(self) -> None:
        self._running = True
        self._pump()

    def stop(self) -> defer.Deferred[None]:
        """Stop delivering; wait (briefly) for requests in flight."""
        self._running = False
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        pending = list(self._inflight.values())
        return defer.DeferredList(pending, consumeErrors=True).addCallback(lambda _: None)

    def close(self) -> None:
        self.db.close()

    def _pump(self) -> None:
        if not self._running:
            return
        now = self.clock.seconds()
        soonest: float | None = None
        for key, q in list(self._queues.items()):
            if key in self._inflight or not q:
                continue
            at = self._retry_at.get(key, 0.0)
            if at <= now:
                self._send(key, q[0])
            elif soonest is None or at < soonest:
                soonest = at
        if soonest is not None:
            delay = max(0.0, soonest - now)
            if self._timer is not None and self._timer.active():
                if self._timer.getTime() <= soonest:
                    return
                self._timer.cancel()
            self._timer = self.clock.callLater(delay, self._tick)

    def _tick(self) -> None:
        self._timer = None
        self._pump()

    def _send(self, key: str, row_id: int) -> None:
        row = self.db.execute("SELECT event_id, dialect, hook, method, url, payload, headers, timeout FROM outbox"
                              " WHERE id = ?", (row_id,)).fetchone()
        if row is None:
            self._remove(key, row_id)
            return
        event_id, dialect, hook, method, url, payload, headers, timeout = row
        call = HookCall(dialect, hook, url, json.loads(payload), timeout, method=method,
                        headers={**json.loads(headers), EVENT_ID_HEADER: event_id}, stamp=self.stampers.get(dialect))
        target, body, hdrs = call.encode()
        d = self.client.request(method, target, timeout, body, hdrs)
        self._inflight[key] = d
        d.addCallbacks(self._sent, self._failed, callbackArgs=(key, row_id, call), errbackArgs=(key, row_id, call))
        d.addBoth(self._done, key)

    def _sent(self, response: HookResponse, key: str, row_id: int, call: HookCall) -> None:
        if not 200 <= response.status < 300:
            self._failed(Failure(Exception(f"HTTP {response.status}")), key, row_id, call)
            return
        self._remove(key, row_id)
        self.delivered += 1

    def _failed(self, failure: Failure, key: str, row_id: int, call: HookCall) -> None:
        if failure.check(defer.CancelledError):
            return
        attempts = self._attempts.get(row_id, 0) + 1
        self._attempts[row_id] = attempts
        self.failures += 1
        self.db.execute("UPDATE outbox SET attempts = ? WHERE id = ?", (attempts, row_id))
        backoff = min(MAX_BACKOFF, 2.0 ** (attempts - 1))
        self._retry_at[key] = self.clock.seconds() + backoff
        if attempts == 1 or attempts % 10 == 0:
            log.warn("hook {dialect} {hook} to {url} failed ({why}); attempt {n}, retrying in {s:g} s",
                     dialect=call.dialect, hook=call.hook, url=call.url, why=failure.getErrorMessage(), n=attempts,
                     s=backoff)

    def _done(self, result: object, key: str) -> None:
        self._inflight.pop(key, None)
        self._pump()
