"""Nimble-style /manage/sessions with the salt/hash token, the hash computed
here independently of the server's code."""

from __future__ import annotations

import base64
import hashlib
import random
from collections.abc import Iterator

import pytest

from mediasrv.core.context import Core
from tests.shell.fakes import Conn, Http, connect, make_core, play, publish, shutdown

TOKEN = "nimble-T0ken"


def signed(token: str = TOKEN) -> dict[str, str]:
    salt = str(random.randint(0, 1_000_000))
    digest = hashlib.md5((salt + "/" + token).encode("utf-8")).digest()
    return {"salt": salt, "hash": base64.b64encode(digest).decode("ascii")}


@pytest.fixture
def core() -> Iterator[Core]:
    c = make_core(f"api.nimble_token={TOKEN}")
    yield c
    shutdown(c)


@pytest.fixture
def http(core: Core) -> Http:
    return Http(core)


@pytest.fixture
def live(core: Core) -> tuple[Conn, Conn]:
    stream, pub = publish(core)
    return pub, play(core, stream, "http-flv")


@pytest.mark.parametrize("method,path", [("GET", "/manage/sessions"), ("POST", "/manage/sessions/delete")])
def test_refused_without_a_valid_hash(http: Http, live: object, method: str, path: str) -> None:
    for params in ({}, {"salt": "1"}, {"salt": "1", "hash": "AAAA"}, signed("other-token")):
        r = http.request(method, path, params=params, json={"data": []})
        assert r.status == 403 and r.json["status"] == "error", params
    ok = http.request(method, path, params=signed(), json={"data": []})
    assert ok.status == 200 and ok.json["status"] == "ok"


def test_closed_without_token(live: object) -> None:
    core = make_core("api.nimble_token=")
    try:
        r = Http(core).get("/manage/sessions", params=signed(""))
        assert r.status == 403 and "nimble_token" in r.json["message"]
    finally:
        shutdown(core)


def test_address_range_applies() -> None:
    core = make_core(f"api.nimble_token={TOKEN}", "http.allow_ip_range=10.0.0.1")
    try:
        assert Http(core).get("/manage/sessions", params=signed()).status == 403
    finally:
        shutdown(core)


def test_list_then_delete_the_unwanted(http: Http, core: Core, live: tuple[Conn, Conn]) -> None:
    pub, viewer = live
    connect(core, "shell")  # admin sessions are not media sessions
    sessions = http.get("/manage/sessions", params=signed()).json["sessions"]
    by_id = {s["id"]: s for s in sessions}
    assert set(by_id) == {pub.session.id, viewer.session.id}
    v = by_id[viewer.session.id]
    assert (v["app"], v["stream"], v["ip"], v["type"], v["protocol"]) == ("live", "cam", "127.0.0.1", "play",
                                                                         "HTTP-FLV")
    assert by_id[pub.session.id]["type"] == "publish"
    r = http.post("/manage/sessions/delete", params=signed(), json={"data": [viewer.session.id, "gone"]})
    assert r.json == {"status": "ok", "deleted": 1, "not_found": ["gone"]}
    assert viewer.kicked and not pub.kicked


def test_delete_needs_the_data_list(http: Http) -> None:
    r = http.post("/manage/sessions/delete", params=signed(), json={"ids": ["x"]})
    assert r.status == 400
    assert http.get("/manage/sessions/delete", params=signed()).status == 405
