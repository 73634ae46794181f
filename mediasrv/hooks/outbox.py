"""Durable, ordered, at-least-once delivery of hook notifications.

Every notification (flow report, stop/done/unpublish/close, stream changed,
record, server events) is committed to SQLite *before* the first attempt to
send it, and leaves the queue only when the hook server answered:

* 2xx: delivered.
* 4xx other than 408 and 429: the backend refused this notification for
  good.  Resending it would get the same answer and, worse, hold back every
  later one of its session, so it is final: logged, counted (``rejected``)
  and moved aside as a *dead letter*.
* a transport failure (refused, timed out, cut short), 5xx, 408 or 429:
  retried with exponential back-off (1 s doubling to 60 s), across restarts
  and ``kill -9``, for up to ``max_age`` seconds (``hook.outbox_max_age``,
  a day by default) after it was queued; then it becomes a dead letter too
  (counted in ``expired``).

Dead letters live in a second table of the same SQLite file, are counted (see
the counters below, read by /metrics) and listed by :meth:`Outbox.dead_letters`
(the shell's ``hooks`` command): never silently lost.

Order is per *key*, which the caller sets to the session a notification
belongs to (a stream's events: the stream): a notification is held back only
by an earlier one of the same key, never by another session's trouble.  At
most ``max_inflight`` notifications are on the wire at once, over all keys
(``hook.outbox_connections``): a slow backend costs that many connections,
not one per session.  Each request carries ``X-Mediasrv-Event-Id`` so a
receiver can drop a duplicate (a crash between the reply and the delete
re-sends once).

Periodic events (ZLMediaKit's on_server_keepalive) are not queued: a stale
keepalive is noise.  :meth:`Outbox.deliver_now` sends one at once and forgets
it; a failure is logged and counted (``periodic_missed``), never retried, and a
new one is skipped while the previous one of the same hook is still in flight.

Why SQLite (standard library) in WAL mode: one file, transactional appends
that survive a killed process (WAL with ``synchronous=NORMAL`` loses nothing on
a process crash, only possibly the last transactions on power loss), no
server to run, and a few tens of microseconds per small insert on the reactor
thread -- far below the rate of session ends.

The queue is bounded by ``hook.outbox_max`` rows and ``hook.outbox_max_bytes``
bytes (bodies and headers).  When full, the policy ``hook.outbox_overflow``
decides: ``drop_oldest`` deletes the oldest waiting notification (not one on
the wire), ``drop_newest`` refuses the new one; either way the loss is logged
and counted (``dropped``).  The dead-letter table keeps the newest
``hook.outbox_max`` entries.
"""

from __future__ import annotations

import heapq
import json
import sqlite3
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from mediasrv.config import Config, ConfigError
from mediasrv.hooks.client import HookClient, HookResponse, hook_line, mask_url
from mediasrv.hooks.model import HookCall

log = Logger()

EVENT_ID_HEADER = "X-Mediasrv-Event-Id"
MAX_BACKOFF = 60.0
RETRYABLE_4XX = (408, 429)

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
    attempts INTEGER NOT NULL DEFAULT 0,
    size INTEGER NOT NULL DEFAULT 0
)
"""
_DEAD_SCHEMA = """
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    dialect TEXT NOT NULL,
    hook TEXT NOT NULL,
    method TEXT NOT NULL,
    url TEXT NOT NULL,
    payload TEXT NOT NULL,
    headers TEXT NOT NULL,
    created REAL NOT NULL,
    died REAL NOT NULL,
    attempts INTEGER NOT NULL,
    reason TEXT NOT NULL
)
"""
_COLUMNS = "key, event_id, dialect, hook, method, url, payload, headers"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A notification given up on: answered 4xx, or undeliverable for too long."""

    id: int
    key: str
    dialect: str
    hook: str
    url: str
    payload: dict[str, Any]
    created: float
    died: float
    attempts: int
    reason: str

    @property
    def shown_url(self) -> str:
        """The URL fit for display (secret-looking query values masked)."""
        return mask_url(self.url)


class Outbox:
    def __init__(self, path: str | Path, client: HookClient, clock: IReactorTime, max_rows: int = 100000,
                 overflow: str = "drop_oldest",
                 stampers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] | None = None, *,
                 max_bytes: int = 128 * 1024 * 1024, max_age: float = 86400.0, max_inflight: int = 8) -> None:
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(folder / "outbox.sqlite3"), isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(_SCHEMA)
        self.db.execute(_DEAD_SCHEMA)
        if "size" not in {row[1] for row in self.db.execute("PRAGMA table_info(outbox)")}:  # an older file
            self.db.execute("ALTER TABLE outbox ADD COLUMN size INTEGER NOT NULL DEFAULT 0")
            self.db.execute("UPDATE outbox SET size = length(payload) + length(headers) + length(url)")
        self.client = client
        self.clock = clock
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.max_age = max_age
        self.max_inflight = max(1, max_inflight)
        self.overflow = overflow
        self.stampers = stampers or {}
        # counters (read by /metrics and the shell)
        self.delivered = 0
        self.failures = 0
        self.dropped = 0
        self.rejected = 0
        self.expired = 0
        self.periodic_missed = 0
        self.bytes = 0
        self._queues: dict[str, deque[int]] = {}
        self._rows: dict[int, tuple[float, int, int]] = {}  # id -> (created, size, attempts)
        self._ready: deque[str] = deque()
        self._ready_set: set[str] = set()
        self._backoff: list[tuple[float, str]] = []
        self._retry_at: dict[str, float] = {}
        self._inflight: dict[str, tuple[int, defer.Deferred[Any]]] = {}
        self._periodic: dict[str, defer.Deferred[Any]] = {}
        self._timer: IDelayedCall | None = None
        self._running = False
        for row_id, key, attempts, created, size in self.db.execute(
                "SELECT id, key, attempts, created, size FROM outbox ORDER BY id"):
            self._queues.setdefault(key, deque()).append(row_id)
            self._rows[row_id] = (created, size, attempts)
            self.bytes += size
        for key in self._queues:
            self._mark_ready(key)

    @classmethod
    def from_config(cls, cfg: Config, client: HookClient, clock: IReactorTime) -> Outbox:
        h = cfg.hook
        try:
            return cls(h.outbox, client, clock, h.outbox_max, h.outbox_overflow, max_bytes=h.outbox_max_bytes,
                       max_age=h.outbox_max_age, max_inflight=h.outbox_connections)
        except (OSError, sqlite3.Error) as e:
            raise ConfigError(cfg.source, "[hook] outbox", f"cannot open {h.outbox!r}: {e}") from None

    @property
    def depth(self) -> int:
        return len(self._rows)

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    @property
    def dead_count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0])

    def dead_letters(self, limit: int = 50) -> list[DeadLetter]:
        """The newest ``limit`` dead letters, newest first."""
        rows = self.db.execute("SELECT id, key, dialect, hook, url, payload, created, died, attempts, reason"
                               " FROM dead_letters ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [DeadLetter(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), r[6], r[7], r[8], r[9]) for r in rows]

    # -- producing ------------------------------------------------------------
    def enqueue(self, call: HookCall, key: str) -> None:
        """Queue ``call`` durably, behind earlier notifications of ``key`` (the session)."""
        payload = json.dumps(call.payload, ensure_ascii=False)
        headers = json.dumps(call.headers)
        size = len(payload.encode()) + len(headers) + len(call.url)
        if not self._make_room(size):
            self.dropped += 1
            log.warn("hook outbox full ({n} waiting, {b} bytes): dropped new {hook} for {key}", n=self.depth,
                     b=self.bytes, hook=call.hook, key=key)
            return
        now = self.clock.seconds()
        cur = self.db.execute(
            "INSERT INTO outbox (key, event_id, dialect, hook, method, url, payload, headers, timeout, created, size)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (key, uuid.uuid4().hex, call.dialect, call.hook, call.method, call.url, payload, headers, call.timeout,
             now, size))
        row_id = cur.lastrowid
        assert row_id is not None
        self._queues.setdefault(key, deque()).append(row_id)
        self._rows[row_id] = (now, size, 0)
        self.bytes += size
        self._mark_ready(key)
        self._pump()

    def _make_room(self, size: int) -> bool:
        if size > self.max_bytes:
            return False
        while self.depth + 1 > self.max_rows or self.bytes + size > self.max_bytes:
            if self.overflow == "drop_newest" or not self._drop_oldest():
                return False
        return True

    def _drop_oldest(self) -> bool:
        # the oldest row not being sent right now (a queue's head may be on the wire)
        busy = {row for row, _ in self._inflight.values()}
        for row_id, key, hook in self.db.execute("SELECT id, key, hook FROM outbox ORDER BY id LIMIT ?",
                                                 (len(busy) + 1,)):
            if row_id not in busy:
                self._remove(key, row_id)
                self.dropped += 1
                log.warn("hook outbox full: dropped oldest waiting {hook} for {key}", hook=hook, key=key)
                return True
        return False

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
        meta = self._rows.pop(row_id, None)
        if meta is not None:
            self.bytes -= meta[1]

    def _bury(self, key: str, row_id: int, reason: str) -> None:
        """Move a row to the dead letters (same transaction)."""
        created, _, attempts = self._rows.get(row_id, (0.0, 0, 0))
        self.db.execute("BEGIN")
        try:
            self.db.execute(f"INSERT INTO dead_letters ({_COLUMNS}, created, died, attempts, reason)"
                            f" SELECT {_COLUMNS}, created, ?, ?, ? FROM outbox WHERE id = ?",
                            (self.clock.seconds(), attempts, reason, row_id))
            self._remove(key, row_id)
            excess = self.dead_count - self.max_rows
            if excess > 0:
                self.db.execute("DELETE FROM dead_letters WHERE id IN"
                                " (SELECT id FROM dead_letters ORDER BY id LIMIT ?)", (excess,))
                log.warn("hook dead letters: removed the {n} oldest (more than {max} kept)", n=excess,
                         max=self.max_rows)
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

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
        pending = [d for _, d in self._inflight.values()] + list(self._periodic.values())
        return defer.DeferredList(pending, consumeErrors=True).addCallback(lambda _: None)

    def close(self) -> None:
        self.db.close()

    def _mark_ready(self, key: str) -> None:
        if (key in self._ready_set or key in self._inflight or key in self._retry_at
                or not self._queues.get(key)):
            return
        self._ready.append(key)
        self._ready_set.add(key)

    def _pump(self) -> None:
        if not self._running:
            return
        now = self.clock.seconds()
        while self._backoff and self._backoff[0][0] <= now:
            at, key = heapq.heappop(self._backoff)
            if self._retry_at.get(key) == at:
                del self._retry_at[key]
                self._mark_ready(key)
        while self._ready and len(self._inflight) < self.max_inflight:
            key = self._ready.popleft()
            self._ready_set.discard(key)
            q = self._queues.get(key)
            if q and key not in self._inflight and key not in self._retry_at:
                self._send(key, q[0])
        self._schedule()

    def _schedule(self) -> None:
        while self._backoff and self._retry_at.get(self._backoff[0][1]) != self._backoff[0][0]:
            heapq.heappop(self._backoff)  # stale: the key was retried or emptied meanwhile
        if not self._backoff:
            return
        soonest = self._backoff[0][0]
        if self._timer is not None and self._timer.active():
            if self._timer.getTime() <= soonest:
                return
            self._timer.cancel()
        self._timer = self.clock.callLater(max(0.0, soonest - self.clock.seconds()), self._tick)

    def _tick(self) -> None:
        self._timer = None
        self._pump()

    def _send(self, key: str, row_id: int) -> None:
        row = self.db.execute("SELECT event_id, dialect, hook, method, url, payload, headers, timeout FROM outbox"
                              " WHERE id = ?", (row_id,)).fetchone()
        if row is None:
            self._remove(key, row_id)
            self._mark_ready(key)
            return
        event_id, dialect, hook, method, url, payload, headers, timeout = row
        call = HookCall(dialect, hook, url, json.loads(payload), timeout, method=method,
                        headers={**json.loads(headers), EVENT_ID_HEADER: event_id}, stamp=self.stampers.get(dialect))
        target, body, hdrs = call.encode()
        started = self.clock.seconds()
        d = self.client.request(method, target, timeout, body, hdrs, dialect=dialect)
        self._inflight[key] = (row_id, d)
        d.addCallbacks(self._answered, self._failed, callbackArgs=(key, row_id, call, started),
                       errbackArgs=(key, row_id, call, started))
        d.addBoth(self._done, key)

    def _answered(self, response: HookResponse, key: str, row_id: int, call: HookCall, started: float) -> None:
        took = self.clock.seconds() - started
        status = response.status
        if 200 <= status < 300:
            self._remove(key, row_id)
            self.delivered += 1
            log.info("{line}", line=hook_line(call.dialect, call.hook, call.url, f"delivered (HTTP {status})", took))
        elif 400 <= status < 500 and status not in RETRYABLE_4XX:
            self._bury(key, row_id, f"HTTP {status}")
            self.rejected += 1
            log.warn("{line}", line=hook_line(call.dialect, call.hook, call.url,
                                              f"HTTP {status}: refused for good, not resent (dead letter)", took))
        else:
            self._retry_later(key, row_id, call, f"HTTP {status}")

    def _failed(self, failure: Failure, key: str, row_id: int, call: HookCall, started: float) -> None:
        if failure.check(defer.CancelledError):
            return
        self._retry_later(key, row_id, call, failure.getErrorMessage())

    def _retry_later(self, key: str, row_id: int, call: HookCall, why: str) -> None:
        created, size, attempts = self._rows.get(row_id, (self.clock.seconds(), 0, 0))
        attempts += 1
        self._rows[row_id] = (created, size, attempts)
        self.failures += 1
        self.db.execute("UPDATE outbox SET attempts = ? WHERE id = ?", (attempts, row_id))
        now = self.clock.seconds()
        if now - created >= self.max_age:
            self._bury(key, row_id, f"undelivered for {now - created:.0f} s after {attempts} attempts: {why}")
            self.expired += 1
            log.warn("{line}", line=hook_line(call.dialect, call.hook, call.url,
                                              f"{why}; gave up after {attempts} attempts (dead letter)"))
            return
        backoff = min(MAX_BACKOFF, 2.0 ** (attempts - 1))
        at = now + backoff
        self._retry_at[key] = at
        heapq.heappush(self._backoff, (at, key))
        if attempts == 1 or attempts % 10 == 0:
            log.warn("{line}", line=hook_line(call.dialect, call.hook, call.url,
                                              f"{why}; attempt {attempts}, retrying in {backoff:g} s"))

    def _done(self, result: object, key: str) -> None:
        self._inflight.pop(key, None)
        self._mark_ready(key)
        self._pump()

    # -- periodic events: now or never --------------------------------------------------
    def deliver_now(self, call: HookCall) -> None:
        """Send ``call`` at once, outside the queue; a failure is logged and
        counted, never retried (a stale periodic event is noise).  Skipped
        while the previous one of the same hook and URL is still in flight."""
        slot = f"{call.dialect} {call.hook} {call.url}"
        if not self._running or slot in self._periodic:
            self.periodic_missed += 1
            log.warn("{line}", line=hook_line(call.dialect, call.hook, call.url,
                                              "skipped: the previous one is still unanswered" if self._running
                                              else "skipped: not delivering"))
            return
        target, body, hdrs = call.encode()
        started = self.clock.seconds()
        d = self.client.request(call.method, target, call.timeout, body, hdrs, dialect=call.dialect)
        self._periodic[slot] = d

        def answered(response: HookResponse) -> None:
            took = self.clock.seconds() - started
            if 200 <= response.status < 300:
                log.info("{line}", line=hook_line(call.dialect, call.hook, call.url, "delivered", took))
            else:
                self.periodic_missed += 1
                log.warn("{line}", line=hook_line(call.dialect, call.hook, call.url,
                                                  f"HTTP {response.status}; not resent (periodic)", took))

        def failed(failure: Failure) -> None:
            if failure.check(defer.CancelledError):
                return
            self.periodic_missed += 1
            log.warn("{line}", line=hook_line(call.dialect, call.hook, call.url,
                                              f"{failure.getErrorMessage()}; not resent (periodic)"))

        def settled(_: object) -> None:
            self._periodic.pop(slot, None)

        d.addCallbacks(answered, failed)
        d.addBoth(settled)


__all__ = ["EVENT_ID_HEADER", "DeadLetter", "Outbox"]
