"""SRS-style API (/api/v1/clients, /api/v1/streams) in memory."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest

from mediasrv.core.context import Core
from tests.shell.fakes import SECRET, Conn, Http, connect, make_core, play, publish, shutdown


@pytest.fixture
def core() -> Iterator[Core]:
    c = make_core()
    yield c
    shutdown(c)


@pytest.fixture
def http(core: Core) -> Http:
    return Http(core)


@pytest.fixture
def live(core: Core) -> tuple[Conn, Conn, Conn]:
    stream, pub = publish(core)
    return pub, play(core, stream, "http-flv"), play(core, stream, "rtmp")


AUTH = {"secret": SECRET}


@pytest.mark.parametrize("method,path", [("GET", "/api/v1/clients"), ("GET", "/api/v1/clients/x"),
                                         ("DELETE", "/api/v1/clients/x"), ("GET", "/api/v1/streams/"),
                                         ("GET", "/api/v1/streams/x")])
def test_every_call_needs_the_secret(http: Http, live: object, method: str, path: str) -> None:
    r = http.request(method, path)
    assert r.status == 401 and r.json["code"] == 401
    assert r.headers["www-authenticate"].startswith("Basic")
    assert http.request(method, path, params={"secret": "wrong"}).status == 401
    assert http.request(method, path, params=AUTH).status == 200
    basic = base64.b64encode(f"admin:{SECRET}".encode()).decode()
    assert http.request(method, path, headers={"Authorization": f"Basic {basic}"}).status == 200


def test_closed_without_api_secret() -> None:
    core = make_core("api.secret=")
    try:
        r = Http(core).get("/api/v1/clients", params={"secret": ""})
        assert r.status == 401 and "api.secret" in r.json["msg"]
    finally:
        shutdown(core)


def test_clients_shape_and_types(http: Http, live: tuple[Conn, Conn, Conn]) -> None:
    pub, flv, rtmp = live
    body = http.get("/api/v1/clients/", params=AUTH).json
    assert body["code"] == 0 and {"server", "service", "pid"} <= set(body)
    by_id = {c["id"]: c for c in body["clients"]}
    assert by_id[pub.session.id]["type"] == "fmle-publish" and by_id[pub.session.id]["publish"] is True
    assert by_id[flv.session.id]["type"] == "flv-play"
    assert by_id[rtmp.session.id]["type"] == "rtmp-play" and by_id[rtmp.session.id]["publish"] is False
    c = by_id[flv.session.id]
    for key in ("id", "vhost", "stream", "ip", "pageUrl", "swfUrl", "tcUrl", "url", "name", "type", "publish",
                "alive", "send_bytes", "recv_bytes", "kbps"):
        assert key in c, key
    assert c["url"] == "/live/cam" and c["name"] == "cam" and c["send_bytes"] == 2000
    assert set(c["kbps"]) == {"recv_30s", "send_30s"}
    one = http.get(f"/api/v1/clients/{flv.session.id}", params=AUTH).json
    assert one["code"] == 0 and one["client"]["id"] == flv.session.id
    assert http.get("/api/v1/clients/nope", params=AUTH).json == {"code": 2049}


def test_shell_sessions_are_not_srs_clients(http: Http, core: Core) -> None:
    shell = connect(core, "shell")
    assert http.get("/api/v1/clients", params=AUTH).json["clients"] == []
    assert http.get(f"/api/v1/clients/{shell.session.id}", params=AUTH).json == {"code": 2049}


def test_paging_count_is_floored_at_10(http: Http, core: Core) -> None:
    stream, _ = publish(core)
    for _ in range(14):
        play(core, stream)
    first = http.get("/api/v1/clients", params={**AUTH, "count": "2"}).json["clients"]
    assert len(first) == 10  # SRS: max(10, count)
    rest = http.get("/api/v1/clients", params={**AUTH, "start": "10", "count": "10"}).json["clients"]
    assert len(rest) == 5
    assert not {c["id"] for c in first} & {c["id"] for c in rest}


def test_delete_client_kicks(http: Http, core: Core, live: tuple[Conn, Conn, Conn]) -> None:
    _, flv, _ = live
    assert http.delete(f"/api/v1/clients/{flv.session.id}", params=AUTH).json["code"] == 0
    assert flv.kicked and core.sessions.get(flv.session.id) is None
    assert http.delete(f"/api/v1/clients/{flv.session.id}", params=AUTH).json == {"code": 2049}
    assert http.request("PUT", "/api/v1/clients/x", params=AUTH).status == 405


def test_streams_shape(http: Http, live: tuple[Conn, Conn, Conn]) -> None:
    pub = live[0]
    body = http.get("/api/v1/streams", params=AUTH).json
    (s,) = body["streams"]
    assert s["name"] == "cam" and s["app"] == "live" and s["url"] == "/live/cam"
    assert s["clients"] == 3 and s["recv_bytes"] == 1000 and s["send_bytes"] == 4000
    assert s["publish"] == {"active": True, "cid": pub.session.id}
    assert s["video"]["codec"] == "H264" and (s["video"]["width"], s["video"]["height"]) == (1280, 720)
    assert s["audio"]["codec"] == "AAC" and s["audio"]["sample_rate"] == 44100
    assert isinstance(s["live_ms"], int) and set(s["kbps"]) == {"recv_30s", "send_30s"}
    one = http.get(f"/api/v1/streams/{s['id']}", params=AUTH).json
    assert one["stream"]["id"] == s["id"]
    assert http.get("/api/v1/streams/nope", params=AUTH).json == {"code": 2048}
