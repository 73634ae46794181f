"""SRS hook dialect ([http_hooks]) against a real hook backend and real ffmpeg/ffprobe.

on_play names two URLs (``/srs/on_play`` then ``/srs/on_play2``): SRS calls
them in order and the first refusal ends the chain.  The server runs with
``http_hooks.on_failure = allow``: an answer that refuses (``1``,
``{"code":1}``, ``{"code":"0"}``, another status) must still refuse -- only a
backend that cannot answer falls to the failure policy.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.clients import needs_ffmpeg, stop
from tests.support.hookserver import (
    HookServer,
    Record,
    hook_sets,
    http_get_status,
    publisher,
    run_probe,
    run_publish,
    running_hookserver,
)
from tests.support.server import Server, running_server

pytestmark = [pytest.mark.interop, needs_ffmpeg]

S = "/srs/"
SERVER_ID = "srs-interop"
COMMON = {"server_id": str, "service_id": str, "action": str, "client_id": str, "ip": str, "vhost": str,
          "app": str}


@pytest.fixture(scope="module")
def hooks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HookServer]:
    with running_hookserver(tmp_path_factory.mktemp("srs-backend")) as hs:
        yield hs


@pytest.fixture(scope="module")
def server(hooks: HookServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("srs-server")
    sets = ["http_hooks.enabled=1", "http_hooks.timeoutSec=2", "http_hooks.on_failure=allow",
            "hook.retry=1", "hook.retry_delay=0.5", "http_hooks.retry=1", "http_hooks.retry_delay=0.5",
            f"general.mediaServerId={SERVER_ID}", f"hook.outbox={work / 'outbox'}",
            *hook_sets(hooks, "http_hooks", ["on_connect", "on_close", "on_publish", "on_unpublish", "on_stop"], S),
            f"http_hooks.on_play={hooks.url(S + 'on_play')} {hooks.url(S + 'on_play2')}"]
    with running_server(work, *sets) as srv:
        yield srv


@pytest.fixture(scope="module")
def base(server: Server, hooks: HookServer) -> Iterator[str]:
    proc = publisher(f"{server.rtmp}/live/sbase")
    hooks.wait(S + "on_publish", stream="sbase", timeout=15)
    time.sleep(1)
    yield "live/sbase"
    stop(proc)


def _common(rec: Record, action: str) -> dict[str, Any]:
    body = rec["json"]
    assert rec["method"] == "POST" and rec["headers"]["content-type"].startswith("application/json")
    for key, kind in COMMON.items():
        assert type(body.get(key)) is kind, f"{key}: {body}"
    assert body["server_id"] == SERVER_ID and body["service_id"]
    assert body["action"] == action and body["client_id"]
    assert (body["ip"], body["vhost"]) == ("127.0.0.1", "__defaultVhost__")
    return body  # type: ignore[no-any-return]


def test_publish_play_stop_unpublish_fields(server: Server, hooks: HookServer) -> None:
    proc = publisher(f"{server.rtmp}/live/sf?token=abc&salt=1")
    try:
        pub = _common(hooks.wait(S + "on_publish", stream="sf", timeout=15)[0], "on_publish")
        assert (pub["app"], pub["stream"], pub["param"]) == ("live", "sf", "?token=abc&salt=1")
        assert pub["tcUrl"] == f"rtmp://127.0.0.1:{server.rtmp_port}/live"
        assert pub["stream_url"] == "/live/sf" and isinstance(pub["stream_id"], str)

        assert run_probe(f"{server.rtmp}/live/sf?token=p").returncode == 0
        first = hooks.wait(S + "on_play", stream="sf")
        second = hooks.wait(S + "on_play2", stream="sf")
        play = _common(first[0], "on_play")
        assert (play["stream"], play["param"], play["stream_url"]) == ("sf", "?token=p", "/live/sf")
        assert play["tcUrl"] == f"rtmp://127.0.0.1:{server.rtmp_port}/live"
        assert "pageUrl" in play and isinstance(play["stream_id"], str)
        assert second[0]["json"] == first[0]["json"]
        assert first[0]["seq"] < second[0]["seq"]  # in order: the second URL after the first answered
        stop_ = _common(hooks.wait(S + "on_stop", client_id=play["client_id"])[0], "on_stop")
        assert (stop_["stream"], stop_["param"], stop_["stream_url"]) == ("sf", "?token=p", "/live/sf")
        assert stop_["tcUrl"] == play["tcUrl"]
    finally:
        stop(proc)
    unpub = _common(hooks.wait(S + "on_unpublish", client_id=pub["client_id"])[0], "on_unpublish")
    assert (unpub["stream"], unpub["param"], unpub["stream_url"]) == ("sf", "?token=abc&salt=1", "/live/sf")
    time.sleep(0.5)
    assert len(hooks.find(S + "on_unpublish", stream="sf")) == 1
    assert len(hooks.find(S + "on_stop", stream="sf")) == 1


def test_connect_and_close(server: Server, hooks: HookServer, base: str) -> None:
    assert run_probe(f"{server.rtmp}/{base}?case=connect").returncode == 0
    # ffmpeg sends the query with the play path, so at connect time (as in SRS)
    # there is none yet: find the connection through its on_play
    play = hooks.wait(S + "on_play", param="?case=connect", timeout=3)[0]["json"]
    conn = _common(hooks.wait(S + "on_connect", client_id=play["client_id"], timeout=3)[0], "on_connect")
    assert conn["tcUrl"] and "pageUrl" in conn
    close = _common(hooks.wait(S + "on_close", client_id=conn["client_id"], timeout=3)[0], "on_close")
    assert type(close["send_bytes"]) is int and type(close["recv_bytes"]) is int and close["send_bytes"] > 0


# (case, status, body, allowed)
REPLIES = [
    ("zero", 200, "0", True),
    ("code-zero", 200, {"code": 0, "data": {"x": 1}}, True),
    ("zero-201", 201, "0", True),
    ("zero-newline", 200, "0\n", True),  # SRS refuses (ossrs/srs#3215); docs/design.md "SRS reply codes"
    ("zero-space", 200, " 0", True),
    ("one", 200, "1", False),  # an integer answer: refused at once, despite on_failure=allow
    ("one-newline", 200, "1\n", False),
    ("minus-one", 200, "-1", False),
    ("code-string", 200, {"code": "0"}, False),
    ("code-one", 200, {"code": 1}, False),
    ("zero-500", 500, "0", False),
    ("empty", 200, "", True),  # not an answer: a broken backend, so on_failure=allow lets it in
]


@pytest.mark.parametrize(("case", "status", "body", "allowed"), REPLIES, ids=[r[0] for r in REPLIES])
def test_play_reply_rules(server: Server, hooks: HookServer, base: str, case: str, status: int, body: Any,
                          allowed: bool) -> None:
    hooks.add_rules({"match": {"path": S + "on_play", "field": {"param": f"?case={case}"}}, "status": status,
                     "body": body})
    r = run_probe(f"{server.rtmp}/{base}?case={case}")
    assert (r.returncode == 0) is allowed, r.stderr
    code, _ = http_get_status(f"{server.http}/{base}.live.flv?case={case}")
    assert code == (200 if allowed else 401)
    time.sleep(0.2)
    seconds = hooks.find(S + "on_play2", param=f"?case={case}")
    # the chain: the second URL is asked only when the first allowed
    assert len(seconds) == (2 if allowed else 0)
    # an answer is never retried; only the broken reply is (http_hooks.retry=1)
    assert len(hooks.find(S + "on_play", param=f"?case={case}")) == (4 if case == "empty" else 2)


def test_publish_denied(server: Server, hooks: HookServer) -> None:
    hooks.add_rules({"match": {"path": S + "on_publish", "field": {"stream": "sdeny"}}, "body": "1"})
    r = run_publish(f"{server.rtmp}/live/sdeny", duration=6)
    assert r.returncode != 0 and r.elapsed < 5
    time.sleep(0.5)
    assert not hooks.find(S + "on_unpublish", stream="sdeny")
