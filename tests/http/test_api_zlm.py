"""ZLMediaKit API (/index/api/*) in memory: envelope, codes, secret and address
rules, and every endpoint with and without the secret."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mediasrv.core.context import Core
from tests.shell.fakes import SECRET, Conn, Http, make_core, play, publish, shutdown

ENDPOINTS = ["getApiList", "getMediaList", "isMediaOnline", "getMediaInfo", "getMediaPlayerList", "getAllSession",
             "kick_session", "kick_sessions", "close_stream", "close_streams", "getServerConfig",
             "setServerConfig"]
STREAM_ARGS = {"schema": "rtmp", "vhost": "__defaultVhost__", "app": "live", "stream": "cam"}


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
    return pub, play(core, stream, "http-flv"), play(core, stream, "rtmp", ip="192.168.1.7")


def api(http: Http, name: str, **args: str) -> dict:
    r = http.get(f"/index/api/{name}", params={"secret": SECRET, **args})
    assert r.status == 200
    assert r.headers["content-type"] == "application/json; charset=utf-8"
    return r.json


@pytest.mark.parametrize("name", ENDPOINTS)
def test_every_endpoint_refuses_without_secret(http: Http, live: object, name: str) -> None:
    r = http.get(f"/index/api/{name}", params={**STREAM_ARGS, "id": "x"})
    assert r.status == 200
    assert r.json == {"code": -100, "msg": "Please login first"}
    r = http.post(f"/index/api/{name}", json={**STREAM_ARGS, "secret": "wrong"})
    assert r.json == {"code": -100, "msg": "Incorrect secret"}


@pytest.mark.parametrize("name", ENDPOINTS)
def test_every_endpoint_answers_with_secret(http: Http, live: object, name: str) -> None:
    body = api(http, name, **STREAM_ARGS, force="1", id="nope")
    assert body["code"] in (0, -1), body  # kick_session of an unknown id is -1
    assert "msg" in body


def test_empty_secret_closes_the_api_for_everyone() -> None:
    core = make_core("api.secret=")
    try:
        r = Http(core).get("/index/api/getMediaList", params={"secret": ""})
        assert r.json == {"code": -100, "msg": "the API is closed: api.secret is not set"}
    finally:
        shutdown(core)


def test_address_outside_allow_ip_range_is_refused_even_with_secret() -> None:
    core = make_core("http.allow_ip_range=10.0.0.0-10.255.255.255")
    try:
        r = Http(core).get("/index/api/getMediaList", params={"secret": SECRET})
        assert r.json == {"code": -100, "msg": "Your ip is not allowed to access the service."}
    finally:
        shutdown(core)


def test_forwarded_ip_header_decides_the_address_when_configured() -> None:
    core = make_core("http.allow_ip_range=10.0.0.0-10.255.255.255", "http.forwarded_ip_header=X-Real-IP")
    try:
        http = Http(core)
        ok = http.get("/index/api/getMediaList", params={"secret": SECRET}, headers={"X-Real-IP": "10.1.2.3"})
        assert ok.json["code"] == 0
        bad = http.get("/index/api/getMediaList", params={"secret": SECRET}, headers={"X-Real-IP": "8.8.8.8"})
        assert bad.json["code"] == -100
    finally:
        shutdown(core)


def test_query_form_and_json_arguments_query_wins(http: Http, live: object) -> None:
    assert http.post("/index/api/isMediaOnline", data={"secret": SECRET, **STREAM_ARGS}).json["online"] is True
    assert http.post("/index/api/isMediaOnline", json={"secret": SECRET, **STREAM_ARGS}).json["online"] is True
    # the query's stream overrides the body's
    r = http.post("/index/api/isMediaOnline", params={"stream": "other"}, json={"secret": SECRET, **STREAM_ARGS})
    assert r.json == {"code": 0, "msg": "success", "online": False}


def test_missing_arguments_are_minus_300(http: Http) -> None:
    # (that the connection closes after an error reply is pinned over a real socket in
    # tests/interop/test_admin_api.py: the in-memory client hides hop-by-hop headers)
    r = http.get("/index/api/getMediaInfo", params={"secret": SECRET, "app": "live"})
    assert r.json == {"code": -300, "msg": 'Required parameter missed: "schema","vhost","app","stream"'}


def test_unknown_api_is_404_after_auth(http: Http) -> None:
    assert http.get("/index/api/nope").json["code"] == -100
    r = http.get("/index/api/nope", params={"secret": SECRET})
    assert r.status == 404 and r.json["code"] == -500


def test_get_media_list_shape_and_filters(http: Http, live: tuple[Conn, Conn, Conn]) -> None:
    pub = live[0]
    items = api(http, "getMediaList")["data"]
    assert len(items) == 1
    item = items[0]
    assert {k: item[k] for k in ("schema", "vhost", "app", "stream", "params", "originType", "originTypeStr")} == {
        "schema": "rtmp", "vhost": "__defaultVhost__", "app": "live", "stream": "cam", "params": "token=abc",
        "originType": 1, "originTypeStr": "rtmp_push"}
    assert item["readerCount"] == 2 and item["totalReaderCount"] == 2
    assert item["originSock"]["identifier"] == pub.session.id
    codecs = {t["codec_id_name"] for t in item["tracks"]}
    assert codecs == {"CodecH264", "CodecAAC"}
    assert api(http, "getMediaList", app="other")["data"] == []
    assert api(http, "getMediaList", schema="rtsp")["data"] == []
    assert len(api(http, "getMediaList", stream="cam", vhost="__defaultVhost__")["data"]) == 1


def test_is_media_online_and_get_media_info(http: Http, live: object) -> None:
    assert api(http, "isMediaOnline", **STREAM_ARGS) == {"code": 0, "msg": "success", "online": True}
    info = api(http, "getMediaInfo", **STREAM_ARGS)
    assert info["code"] == 0 and info["online"] is True
    assert info["app"] == "live" and "data" not in info and info["tracks"]
    missing = api(http, "getMediaInfo", **{**STREAM_ARGS, "stream": "gone"})
    assert missing["code"] == -500 and missing["msg"] == "can not find the stream"


def test_get_media_player_list(http: Http, live: tuple[Conn, Conn, Conn]) -> None:
    _, flv, rtmp = live
    data = api(http, "getMediaPlayerList", **STREAM_ARGS)["data"]
    assert {d["identifier"] for d in data} == {flv.session.id, rtmp.session.id}
    assert {d["typeid"] for d in data} == {"mediakit::HttpSession", "mediakit::RtmpSession"}
    assert all({"peer_ip", "peer_port", "local_ip", "local_port"} <= set(d) for d in data)


def test_get_all_session_and_filters(http: Http, live: tuple[Conn, Conn, Conn]) -> None:
    pub, flv, rtmp = live
    data = api(http, "getAllSession")["data"]
    assert {d["id"] for d in data} == {pub.session.id, flv.session.id, rtmp.session.id}
    row = next(d for d in data if d["id"] == flv.session.id)
    assert row["type"] == "tcp" and row["typeid"] == "mediakit::HttpSession" and row["local_port"] == 8080
    assert [d["id"] for d in api(http, "getAllSession", peer_ip="192.168.1.7")["data"]] == [rtmp.session.id]
    assert {d["id"] for d in api(http, "getAllSession", local_port="8080")["data"]} == {flv.session.id,
                                                                                      rtmp.session.id}


def test_kick_session(http: Http, core: Core, live: tuple[Conn, Conn, Conn]) -> None:
    _, flv, _ = live
    assert api(http, "kick_session", id=flv.session.id) == {"code": 0, "msg": "success"}
    assert flv.kicked and core.sessions.get(flv.session.id) is None
    assert api(http, "kick_session", id=flv.session.id) == {"code": -1, "msg": "can not find the target"}


def test_kick_sessions_by_peer(http: Http, core: Core, live: tuple[Conn, Conn, Conn]) -> None:
    pub, flv, rtmp = live
    assert api(http, "kick_sessions", peer_ip="192.168.1.7")["count_hit"] == 1
    assert rtmp.kicked and not flv.kicked and not pub.kicked
    assert api(http, "kick_sessions")["count_hit"] == 2
    assert len(core.sessions) == 0


def test_close_stream_without_force_refuses_while_watched(http: Http, core: Core,
                                                          live: tuple[Conn, Conn, Conn]) -> None:
    pub = live[0]
    assert api(http, "close_stream", **STREAM_ARGS) == {"code": -1, "result": -1, "msg": "close failed"}
    assert api(http, "close_stream", **STREAM_ARGS, force="1") == {"code": 0, "result": 0, "msg": "success"}
    assert pub.kicked, "closing a stream disconnects its publisher"
    assert core.registry.find(core.registry.key("", "live", "cam")) is None
    assert api(http, "close_stream", **STREAM_ARGS)["code"] == -500


def test_close_streams_counts(http: Http, core: Core, live: object) -> None:
    publish(core, "live", "idle")  # no viewers: closes without force
    body = api(http, "close_streams", app="live")
    assert body == {"code": 0, "msg": "success", "count_hit": 2, "count_closed": 1}
    body = api(http, "close_streams", app="live", force="true")
    assert body == {"code": 0, "msg": "success", "count_hit": 1, "count_closed": 1}


def test_get_server_config_is_flat_strings(http: Http) -> None:
    data = api(http, "getServerConfig")["data"]
    assert isinstance(data, list) and len(data) == 1
    flat = data[0]
    assert flat["rtmp.port"] == "1935" and flat["hook.enable"] == "0" and flat["api.secret"] == SECRET
    assert all(isinstance(v, str) for v in flat.values())


def test_set_server_config_applies_live_and_reports_restarts(http: Http, core: Core) -> None:
    body = api(http, "setServerConfig", **{"general.maxConnections": "77", "rtmp.port": "1936",
                                           "nosuch.key": "1", "general.flowThreshold": "1024"})
    assert body == {"code": 0, "msg": "success", "changed": 2, "restart_needed": ["rtmp.port"]}
    assert core.config.general.maxConnections == 77
    bad = api(http, "setServerConfig", **{"general.maxConnections": "lots"})
    assert bad["code"] == -300 and "maxConnections" in bad["msg"]
    assert core.config.general.maxConnections == 77


def test_set_server_config_pushes_values_into_live_objects(http: Http, core: Core) -> None:
    api(http, "setServerConfig", **{"protocol.continue_push_ms": "500", "hook.enable": "1",
                                    "hook.on_play": "http://127.0.0.1:1/on_play"})
    assert core.registry.continue_push_ms == 500
    assert core.hooks.zlm.url("on_play") == "http://127.0.0.1:1/on_play"


def test_secret_change_is_live(http: Http) -> None:
    api(http, "setServerConfig", **{"api.secret": "new-one"})
    assert http.get("/index/api/getMediaList", params={"secret": SECRET}).json["code"] == -100
    assert http.get("/index/api/getMediaList", params={"secret": "new-one"}).json["code"] == 0


def test_get_api_list(http: Http) -> None:
    names = api(http, "getApiList")["data"]
    assert {f"/index/api/{n}" for n in ENDPOINTS} <= set(names)


def test_players_that_are_not_readers_count(http: Http, core: Core, live: object) -> None:
    # HLS viewers are served from one muxer (one reader standing for all its
    # viewers); a recorder is a reader with no viewer
    from mediasrv.core.frames import MediaFrame
    from mediasrv.core.reader import StreamReader
    from mediasrv.core.stream import Stream

    class Muxer(StreamReader):
        def __init__(self, schema: str, viewers: int) -> None:
            super().__init__(1 << 20)
            self.schema, self.viewers = schema, viewers

        def viewer_count(self) -> int:
            return self.viewers

        def send_headers(self, stream: Stream) -> None:
            pass

        def send_frame(self, frame: MediaFrame) -> None:
            pass

    stream = next(iter(core.registry))
    stream.add_reader(Muxer("hls", 1))
    stream.add_reader(Muxer("mp4", 0))
    (item,) = api(http, "getMediaList", schema="rtmp")["data"]
    assert item["totalReaderCount"] == 3 and item["readerCount"] == 2  # rtmp schema: rtmp + flv players
    assert api(http, "close_stream", **STREAM_ARGS)["result"] == -1
