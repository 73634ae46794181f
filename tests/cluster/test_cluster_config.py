"""[cluster] and general.workers keys; no Redis client without [cluster] redis."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet.task import Clock

from mediasrv import config
from mediasrv.cluster.settings import advertised_urls, build_directory, node_identity, origin_rotation
from mediasrv.config import RedisUrl, parse_redis_url
from tests.conftest import ROOT
from tests.support.server import free_port


def test_defaults() -> None:
    c = config.load()
    assert c.general.workers == "1" and c.general.worker_port_offset == 0
    k = c.cluster
    assert (k.redis, k.redis_password, k.redis_ca, k.secret, k.node_id, k.origin_url) == ("", "", "", "", "", "")
    assert (k.ttl_ms, k.redis_timeout_ms, k.timeout_sec, k.retry_count) == (10000, 500, 15.0, 3)


@pytest.mark.parametrize(("text", "url"), [
    ("redis://127.0.0.1:6380/2", RedisUrl("127.0.0.1", 6380, 2, None, None, False)),
    ("redis://cache", RedisUrl("cache", 6379, 0, None, None, False)),
    ("rediss://:p%40ss@cache.example:6390/1", RedisUrl("cache.example", 6390, 1, "p@ss", None, True)),
    ("redis://ms:pw@[::1]:7000/", RedisUrl("::1", 7000, 0, "pw", "ms", False)),
])
def test_parse_redis_url(text: str, url: RedisUrl) -> None:
    assert parse_redis_url(text) == url


def test_password_key_applies_when_the_url_has_none() -> None:
    assert parse_redis_url("redis://h/0", "k").password == "k"
    assert parse_redis_url("redis://:u@h/0", "k").password == "u"
    assert parse_redis_url("rediss://:secret@h:1/3").redacted() == "rediss://h:1/3"


@pytest.mark.parametrize(("sets", "message"), [
    (["cluster.redis=http://h/0"], "--set: [cluster] redis: 'http://h/0' is not a redis://host:port/db or rediss:// URL"),
    (["cluster.redis=redis://h/x"], "--set: [cluster] redis: 'redis://h/x': the database 'x' is not a number"),
    (["cluster.redis=redis://h:99999/0"], "--set: [cluster] redis: 'redis://h:99999/0' is not a redis:// URL: "
                                          "Port out of range 0-65535"),
    (["cluster.redis=redis://h/0"], "(built-in defaults): [cluster] secret: required when [cluster] redis is set "
                                    "(signs relays between nodes)"),
    (["cluster.ttl_ms=100"], "--set: [cluster] ttl_ms: 100 must be 300 or more"),
    (["cluster.retry_count=-2"], "--set: [cluster] retry_count: -2 must be -1 (forever) or more"),
    (["cluster.origin_url=ftp://x/%s"], "--set: [cluster] origin_url: 'ftp://x/%s' must start with one of rtmp://, "
                                        "rtmps://, rtsp://, rtsps://, http://, https://"),
    (["general.workers=0"], "--set: [general] workers: '0' must be a number of worker processes (1 or more) or 'auto'"),
    (["general.workers=many"], "--set: [general] workers: 'many' must be a number of worker processes (1 or more) "
                               "or 'auto'"),
])
def test_errors_are_one_line(sets: list[str], message: str) -> None:
    with pytest.raises(config.ConfigError) as exc:
        config.load(None, sets)
    assert str(exc.value) == message


def test_a_full_cluster_section_loads(tmp_path: Path) -> None:
    ini = tmp_path / "m.ini"
    ini.write_text("[general]\nworkers = auto\nmediaServerId = edge-1\n"
                   "[cluster]\nredis = rediss://cache:6390/1\nredis_password = pw\nsecret = s\nttl_ms = 2000\n"
                   "origin_url = rtmp://o1/%s/%s;http://o2/%s/%s.live.flv\ntimeout_sec = 10\nretry_count = -1\n")
    c = config.load(ini)
    assert c.general.workers == "auto"
    assert parse_redis_url(c.cluster.redis, c.cluster.redis_password) == RedisUrl("cache", 6390, 1, "pw", None, True)
    rotation = origin_rotation(c)
    assert [a.timeout_sec for a in rotation.plan("v", "live", "s")] == [5, 5]


def test_node_identity_and_advertised_urls() -> None:
    c = config.load(None, ["general.mediaServerId=m1", "general.listen_ip=10.1.2.3", "http.port=8081",
                           "rtmp.port=1936"])
    assert advertised_urls(c) == ("http://10.1.2.3:8081", "rtmp://10.1.2.3:1936")
    me = node_identity(c, "ep", worker=2)
    assert (me.node, me.epoch, me.worker, me.flv) == ("m1", "ep", 2, "http://10.1.2.3:8081")
    c2 = config.load(None, ["cluster.node_id=n7", "cluster.advertise_host=::1", "rtmp.port=0"])
    assert node_identity(c2, "e").node == "n7"
    assert advertised_urls(c2) == ("http://[::1]:8080", "")
    c3 = config.load(None, ["cluster.advertise_url=https://edge.example/"])
    assert advertised_urls(c3)[0] == "https://edge.example"


def test_without_redis_the_directory_is_the_host_map(clock: Clock) -> None:
    c = config.load()
    d = build_directory(c, clock, clock, node_identity(c, "e"))
    assert d.cluster is None


def test_an_unreadable_redis_ca_is_one_line(tmp_path: Path) -> None:
    c = config.load(None, ["cluster.redis=rediss://127.0.0.1:1/0", "cluster.secret=s",
                           f"cluster.redis_ca={tmp_path / 'missing.pem'}"])
    with pytest.raises(config.ConfigError) as exc:
        build_directory(c, None, Clock(), node_identity(c, "e"))
    assert str(exc.value) == f"(built-in defaults): [cluster] redis_ca: cannot read '{tmp_path / 'missing.pem'}'"


@pytest_twisted.ensureDeferred
async def test_with_redis_the_node_directory_has_a_started_redis_part() -> None:
    from twisted.internet import reactor

    c = config.load(None, [f"cluster.redis=redis://127.0.0.1:{free_port()}/0", "cluster.secret=s"])
    d = build_directory(c, reactor, reactor, node_identity(c, "e"))
    try:
        assert type(d.cluster).__name__ == "RedisDirectory"
        assert d.cluster._renew_loop.running  # type: ignore[union-attr]
    finally:
        await d.close()


def test_no_redis_client_is_imported_without_cluster_redis() -> None:
    code = (
        "import sys\n"
        "import mediasrv.server, mediasrv.tap, mediasrv.cluster.settings, mediasrv.cluster.node\n"
        "import mediasrv.workers.supervisor, mediasrv.workers.control, mediasrv.workers.hostdir\n"
        "from twisted.internet.task import Clock\n"
        "from mediasrv import config\n"
        "from mediasrv.cluster.settings import build_directory, node_identity\n"
        "c = config.load(); build_directory(c, Clock(), Clock(), node_identity(c, 'e'))\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('txredisapi', 'redis', 'hiredis')"
        " or m == 'mediasrv.cluster.redis')\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""
