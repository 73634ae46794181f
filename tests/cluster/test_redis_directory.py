"""RedisDirectory against a real redis-server (one per test: they restart and pause it).

Redis TTLs run on the server's clock, so these tests use the real reactor and short TTLs,
and wait for conditions with a deadline, never for a fixed time."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.logger import LogEvent, capturedLogs, formatEvent

from mediasrv.cluster.directory import DirectoryEvent, DirectoryUnavailable, OwnerInfo
from mediasrv.cluster.local import LocalDirectory
from mediasrv.cluster.node import NodeDirectory
from mediasrv.cluster.redis import PREFIX, RedisDirectory
from mediasrv.config import parse_redis_url
from tests.support.redis import RedisServer

R: Any = reactor
KEY = "__defaultVhost__/live/cam"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


def owner(node: str, epoch: str = "e1", worker: int = 0) -> OwnerInfo:
    return OwnerInfo(node=node, epoch=epoch, worker=worker, flv=f"http://{node}:8080", rtmp=f"rtmp://{node}:1935")


class Dirs:
    """Directories of several nodes on one Redis, all closed at the end."""

    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self.made: list[RedisDirectory] = []

    def make(self, node: str, ttl_ms: int = 10000, timeout_ms: int = 500, start: bool = False,
             url: str | None = None, epoch: str = "e1") -> RedisDirectory:
        d = RedisDirectory(R, R, parse_redis_url(url or self.server.url), owner(node, epoch), ttl_ms, timeout_ms)
        if start:
            d.start()
        self.made.append(d)
        return d

    async def close(self) -> None:
        for d in self.made:
            await d.close()


@pytest_twisted.async_yield_fixture
async def dirs(redis_server: RedisServer) -> AsyncIterator[Dirs]:
    made = Dirs(redis_server)
    yield made
    await made.close()


async def until(predicate: Callable[[], Any], timeout: float = 10, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        await deferLater(R, 0.02, lambda: None)


def lines(events: Sequence[LogEvent]) -> list[str]:
    return [formatEvent(e) for e in events]


async def connected(d: RedisDirectory) -> None:
    """Wait until both connections are up (the first commands would otherwise wait for them)."""
    await until(lambda: d._factory.size and d._sub_factory.size, what="connections")


@pytest_twisted.ensureDeferred
async def test_claim_race_one_winner_and_the_loser_learns_the_owner(dirs: Dirs, redis_server: RedisServer) -> None:
    a, b = dirs.make("node-a"), dirs.make("node-b")
    await connected(a)
    await connected(b)
    results = await defer.gatherResults([a.claim(KEY, owner("node-a")), b.claim(KEY, owner("node-b"))])
    winners = [r for r in results if r.ours]
    losers = [r for r in results if not r.ours]
    assert len(winners) == 1 and len(losers) == 1
    assert losers[0].owner == winners[0].owner
    stored = OwnerInfo.from_json(redis_server.get(PREFIX + "stream:" + KEY) or b"")
    assert stored == winners[0].owner
    assert 0 < redis_server.pttl(PREFIX + "stream:" + KEY) <= 10000


@pytest_twisted.ensureDeferred
async def test_renew_release_and_never_steal(dirs: Dirs, redis_server: RedisServer) -> None:
    a, b = dirs.make("node-a", ttl_ms=5000), dirs.make("node-b", ttl_ms=5000)
    first = await a.claim(KEY, owner("node-a"))
    assert first.ours
    redis_server.command("PEXPIRE", PREFIX + "stream:" + KEY, "1000")
    # renewing is claiming again: the TTL is back to ttl_ms and the record is updated
    moved = OwnerInfo(node="node-a", epoch="e1", worker=3, flv="http://node-a:8080")
    again = await a.renew(KEY, moved)
    assert again.ours and again.owner == moved
    assert redis_server.pttl(PREFIX + "stream:" + KEY) > 4000
    # another node never takes it, and cannot release it
    other = await b.claim(KEY, owner("node-b"))
    assert not other.ours and other.owner == moved
    assert await b.release(KEY, owner("node-b")) is False
    # an earlier run of node-a (another epoch) is not node-a now
    stale = await b.claim(KEY, owner("node-a", epoch="e0"))
    assert not stale.ours
    assert await b.lookup(KEY) == moved
    assert await a.release(KEY, moved) is True
    assert redis_server.get(PREFIX + "stream:" + KEY) is None
    assert await b.lookup(KEY) is None
    assert (await b.claim(KEY, owner("node-b"))).ours


@pytest_twisted.ensureDeferred
async def test_claim_of_a_dead_node_expires_then_another_node_takes_over(dirs: Dirs, redis_server: RedisServer) -> None:
    a = dirs.make("node-a", ttl_ms=400, start=True)
    b = dirs.make("node-b", ttl_ms=400)
    assert (await a.claim(KEY, owner("node-a"))).ours
    started = time.monotonic()
    # alive: the renew loop keeps it well past its TTL
    await until(lambda: time.monotonic() - started > 1.0, what="1 s")
    assert (await b.lookup(KEY)) == owner("node-a")
    # node-a dies without releasing (its loop stops, nothing else)
    a._renew_loop.stop()
    died = time.monotonic()
    await until(lambda: redis_server.get(PREFIX + "stream:" + KEY) is None, what="expiry")
    assert time.monotonic() - died < 1.0
    assert (await b.claim(KEY, owner("node-b"))).ours


@pytest_twisted.ensureDeferred
async def test_node_record_has_a_ttl(dirs: Dirs, redis_server: RedisServer) -> None:
    a = dirs.make("node-a", ttl_ms=3000, start=True)
    await until(lambda: redis_server.get(PREFIX + "node:node-a"), what="node record")
    record = json.loads(redis_server.get(PREFIX + "node:node-a") or b"")
    assert record["node"] == "node-a" and record["flv"] == "http://node-a:8080"
    assert 0 < redis_server.pttl(PREFIX + "node:node-a") <= 3000
    assert [n["node"] for n in await a.nodes()] == ["node-a"]
    await a.close()
    assert redis_server.get(PREFIX + "node:node-a") is None


@pytest_twisted.ensureDeferred
async def test_redis_restart_renew_loop_restores_claims(dirs: Dirs, redis_server: RedisServer) -> None:
    a = dirs.make("node-a", ttl_ms=900, start=True)
    b = dirs.make("node-b", ttl_ms=900)
    assert (await a.claim(KEY, owner("node-a"))).ours
    assert (await a.claim("v/live/other", owner("node-a"))).ours
    with capturedLogs() as events:
        redis_server.restart()  # SHUTDOWN NOSAVE: every key is gone, the scripts too
        assert redis_server.get(PREFIX + "stream:" + KEY) is None
        restarted = time.monotonic()
        await until(lambda: redis_server.get(PREFIX + "stream:" + KEY) and redis_server.get(
            PREFIX + "stream:v/live/other"), timeout=10, what="claims restored")
        restore_s = time.monotonic() - restarted
    assert OwnerInfo.from_json(redis_server.get(PREFIX + "stream:" + KEY) or b"") == owner("node-a")
    assert not (await b.claim(KEY, owner("node-b"))).ours
    print(f"claims restored {restore_s:.2f} s after the Redis restart")
    assert not any("Traceback" in line for line in lines(events))


@pytest_twisted.ensureDeferred
async def test_restore_never_steals_a_name_another_node_claimed_meanwhile(dirs: Dirs,
                                                                          redis_server: RedisServer) -> None:
    a = dirs.make("node-a", ttl_ms=900, start=True)
    host = LocalDirectory(R)
    node_a = NodeDirectory(host, a)
    events: list[DirectoryEvent] = []
    node_a.add_listener(events.append)
    assert (await node_a.claim(KEY, owner("node-a"))).ours
    a._renew_loop.stop()  # hold node-a's renewal while Redis restarts
    redis_server.restart()
    b = dirs.make("node-b", ttl_ms=900)
    assert (await b.claim(KEY, owner("node-b"))).ours  # node-b publishes first after the restart
    a._renew_loop.start(0.3, now=True)
    await until(lambda: any(e.op == "lost" for e in events), what="lost event")
    assert OwnerInfo.from_json(redis_server.get(PREFIX + "stream:" + KEY) or b"") == owner("node-b")
    assert host.owner_of(KEY) is None
    assert KEY not in a.owned()


@pytest_twisted.ensureDeferred
async def test_paused_redis_fails_fast_with_one_clear_line_then_recovers(dirs: Dirs,
                                                                         redis_server: RedisServer) -> None:
    a = dirs.make("node-a", ttl_ms=900, timeout_ms=300, start=True)
    assert (await a.claim(KEY, owner("node-a"))).ours
    with capturedLogs() as events:
        redis_server.command("CLIENT", "PAUSE", "2000", "ALL")
        started = time.monotonic()
        with pytest.raises(DirectoryUnavailable, match=r"no reply to GET within 300 ms"):
            await a.lookup(KEY)
        failed_after = time.monotonic() - started
        await until(lambda: any("unavailable" in line for line in lines(events)), what="log line")
        await until(lambda: any("reachable again" in line for line in lines(events)), timeout=10, what="recovery line")
    assert failed_after < 1.5, failed_after  # the 300 ms deadline, not the 2 s pause
    down = [line for line in lines(events) if "unavailable" in line]
    assert len(down) == 1, down  # said once per outage, not once per renewal
    assert down[0].startswith(f"cluster: Redis redis://127.0.0.1:{redis_server.port}/0 unavailable (")
    assert "local streams go on" in down[0]
    assert await a.lookup(KEY) == owner("node-a")


@pytest_twisted.ensureDeferred
async def test_redis_down_claims_stay_local_and_return_with_redis(dirs: Dirs, redis_server: RedisServer) -> None:
    redis_server.stop()
    a = dirs.make("node-a", ttl_ms=900, timeout_ms=300, start=True)
    node_a = NodeDirectory(LocalDirectory(R), a)
    started = time.monotonic()
    with capturedLogs() as events:
        claim = await node_a.claim(KEY, owner("node-a"))
        with pytest.raises(DirectoryUnavailable):
            await node_a.lookup("v/live/elsewhere")
    assert time.monotonic() - started < 2.5  # two 300 ms deadlines, not a hang
    assert claim.ours  # local publishing goes on
    text = "\n".join(lines(events))
    assert f"cluster: {KEY} is claimed on this node only for now: Redis redis://127.0.0.1:" in text
    assert "cluster: look-up of v/live/elsewhere failed: Redis" in text
    redis_server.start()  # same port
    await until(lambda: redis_server.get(PREFIX + "stream:" + KEY), timeout=10, what="claim in Redis")


@pytest_twisted.ensureDeferred
async def test_wait_for_owner_woken_by_pubsub(dirs: Dirs) -> None:
    a, b = dirs.make("node-a"), dirs.make("node-b")
    await connected(a)
    await until(lambda: dirs.server.subscribers(a.events_channel) == 2, what="subscribed")
    seen: list[DirectoryEvent] = []
    a.add_listener(seen.append)
    started = time.monotonic()
    wait = a.wait_for_owner(KEY, 10)
    await deferLater(R, 0.05, lambda: None)
    assert not wait.called
    assert (await b.claim(KEY, owner("node-b"))).ours
    assert await wait == owner("node-b")
    assert time.monotonic() - started < 2
    await until(lambda: seen, what="up event")
    assert seen[0] == DirectoryEvent("up", KEY, owner("node-b"))
    await b.release(KEY, owner("node-b"))
    await until(lambda: len(seen) == 2, what="down event")
    assert seen[1].op == "down"


@pytest_twisted.ensureDeferred
async def test_event_lost_during_disconnect_is_recovered_by_the_reget(dirs: Dirs, redis_server: RedisServer) -> None:
    a, b = dirs.make("node-a"), dirs.make("node-b")
    await connected(a)
    await connected(b)
    await until(lambda: redis_server.subscribers(a.events_channel) == 2, what="both subscribed")
    wait = a.wait_for_owner(KEY, 20)
    started = time.monotonic()
    # drop every subscriber connection, then claim before they are back: the "up" reaches nobody
    redis_server.command("CLIENT", "KILL", "TYPE", "pubsub")
    assert redis_server.subscribers(a.events_channel) == 0
    assert (await b.claim(KEY, owner("node-b"))).ours
    assert await wait == owner("node-b")
    assert time.monotonic() - started < 5  # the reconnect's re-GET, not the 20 s deadline


@pytest_twisted.ensureDeferred
async def test_password_in_url_and_wrong_password(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, password="s3cret")
    server.start()
    made = Dirs(server)
    try:
        good = made.make("node-a", url=f"redis://:s3cret@127.0.0.1:{server.port}/2")
        assert (await good.claim(KEY, owner("node-a"))).ours
        assert server.command("SELECT", "2") == b"+OK"
        with capturedLogs() as events:
            bad = made.make("node-b", url=f"redis://:wrong@127.0.0.1:{server.port}/2", timeout_ms=300)
            with pytest.raises(DirectoryUnavailable):
                await bad.lookup(KEY)
        said = [line for line in lines(events) if line.startswith("cluster:") and "could not auth" in line]
        assert len(said) == 1, said
        assert said[0].startswith(f"cluster: Redis redis://127.0.0.1:{server.port}/2: Redis error: could not auth")
        assert "wrong" not in said[0]
    finally:
        await made.close()
        server.stop()


def _tls_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it: (ca, cert, key)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("test CA")).issuer_name(name("test CA"))
          .public_key(ca_key.public_key()).serial_number(1).not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(name("redis")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(2).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = tmp_path / "ca.pem", tmp_path / "redis.pem", tmp_path / "redis.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


@pytest_twisted.ensureDeferred
async def test_rediss_verifies_the_server_certificate(tmp_path: Path) -> None:
    ca, cert, key = _tls_files(tmp_path)
    server = RedisServer(tmp_path, tls=(cert, key))
    server.start()
    url = parse_redis_url(server.url)
    assert url.tls
    trusted = RedisDirectory(R, R, url, owner("node-a"), 5000, 500, ca_file=str(ca))
    untrusted = RedisDirectory(R, R, url, owner("node-b"), 5000, 300)  # the system's trust store
    try:
        assert (await trusted.claim(KEY, owner("node-a"))).ours
        assert await trusted.lookup(KEY) == owner("node-a")
        with pytest.raises(DirectoryUnavailable):
            await untrusted.lookup(KEY)
    finally:
        await trusted.close()
        await untrusted.close()
        server.stop()
