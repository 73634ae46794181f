"""Node-Media-Server dialect ([notify] notify_url) against a real hook backend and real ffmpeg/ffprobe.

The bodies follow seed 000 (``id, ip, app, name, query, action, protocol,
createtime, endtime, inbytes, outbytes``); any status but 200 on postPublish /
postPlay closes that client; a backend that does not answer in time lets the
client in (``notify.on_failure=allow``).
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
    http_get_status,
    player,
    publisher,
    run_probe,
    run_publish,
    running_hookserver,
    wait_exit,
)
from tests.support.server import Server, running_server

pytestmark = [pytest.mark.interop, needs_ffmpeg]

N = "/nms/notify"
FIELDS = {"id": str, "ip": str, "app": str, "name": str, "query": dict, "action": str, "protocol": str,
          "createtime": int, "endtime": int, "inbytes": int, "outbytes": int}


@pytest.fixture(scope="module")
def hooks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HookServer]:
    with running_hookserver(tmp_path_factory.mktemp("nms-backend")) as hs:
        yield hs


@pytest.fixture(scope="module")
def server(hooks: HookServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("nms-server")
    sets = [f"notify.notify_url={hooks.url(N)}", "notify.timeoutSec=1", "hook.retry=1", "hook.retry_delay=0.5",
            f"hook.outbox={work / 'outbox'}"]
    with running_server(work, *sets) as srv:
        yield srv


@pytest.fixture(scope="module")
def base(server: Server, hooks: HookServer) -> Iterator[str]:
    proc = publisher(f"{server.rtmp}/live/nbase")
    hooks.wait(N, action="postPublish", name="nbase", timeout=15)
    time.sleep(1)
    yield "live/nbase"
    stop(proc)


def _body(rec: Record, action: str) -> dict[str, Any]:
    body = rec["json"]
    assert rec["method"] == "POST"
    assert set(FIELDS) <= set(body), body
    for key, kind in FIELDS.items():
        assert type(body[key]) is kind, f"{key}: {body}"
    assert body["action"] == action and body["id"] and body["ip"] == "127.0.0.1"
    return body  # type: ignore[no-any-return]


def test_publish_and_play_bodies(server: Server, hooks: HookServer) -> None:
    t0 = time.time()
    proc = publisher(f"{server.rtmp}/live/nf?token=abc")
    try:
        posts = hooks.wait(N, action="postPublish", name="nf", timeout=15)
        pub = _body(posts[0], "postPublish")
        assert (pub["app"], pub["name"], pub["protocol"]) == ("live", "nf", "rtmp")
        assert pub["query"] == {"token": ["abc"]}
        assert (pub["endtime"], pub["inbytes"], pub["outbytes"]) == (0, 0, 0)
        assert t0 * 1000 - 1000 <= pub["createtime"] <= time.time() * 1000, "createtime is not ms since the epoch"

        assert run_probe(f"{server.rtmp}/live/nf?user=123&vip=0&money=666").returncode == 0
        post_play = _body(hooks.wait(N, action="postPlay", name="nf")[0], "postPlay")
        assert post_play["query"] == {"user": ["123"], "vip": ["0"], "money": ["666"]}
        assert post_play["protocol"] == "rtmp" and post_play["endtime"] == 0
        done_play = _body(hooks.wait(N, action="donePlay", id=post_play["id"])[0], "donePlay")
        assert done_play["createtime"] == post_play["createtime"]
        assert done_play["endtime"] >= done_play["createtime"]
        assert done_play["outbytes"] > 10_000 and done_play["inbytes"] > 0
        assert done_play["query"] == post_play["query"]

        assert http_get_status(f"{server.http}/live/nf.flv?sign=x")[0] == 200
        flv = _body(hooks.wait(N, action="postPlay", name="nf", protocol="flv")[0], "postPlay")
        assert flv["query"] == {"sign": ["x"]}
        assert hooks.wait(N, action="donePlay", id=flv["id"])[0]["json"]["protocol"] == "flv"
        time.sleep(0.5)
        assert len(hooks.find(N, action="postPublish", name="nf")) == 1  # (NMS itself sends it twice)
    finally:
        stop(proc)
    done_pub = _body(hooks.wait(N, action="donePublish", id=pub["id"])[0], "donePublish")
    assert done_pub["createtime"] == pub["createtime"] and done_pub["endtime"] > done_pub["createtime"]
    assert done_pub["inbytes"] > 10_000
    assert done_pub["query"] == {"token": ["abc"]}


@pytest.mark.parametrize("status", [400, 403, 500, 201])
def test_non_200_on_post_play_closes_the_player(server: Server, hooks: HookServer, base: str,
                                                status: int) -> None:
    case = f"s{status}"
    hooks.add_rules({"match": {"path": N, "field": {"action": "postPlay", "query": {"case": [case]}}},
                     "status": status, "body": ""})
    r = run_probe(f"{server.rtmp}/{base}?case={case}")
    assert r.returncode != 0 and r.elapsed < 4
    assert http_get_status(f"{server.http}/{base}.live.flv?case={case}")[0] == 401
    time.sleep(0.5)
    ids = {p["json"]["id"] for p in hooks.find(N, action="postPlay", query={"case": [case]})}
    assert len(ids) == 2
    assert not [d for d in hooks.find(N, action="donePlay") if d["json"]["id"] in ids]


def test_non_200_on_post_publish_closes_the_publisher(server: Server, hooks: HookServer) -> None:
    hooks.add_rules({"match": {"path": N, "field": {"action": "postPublish", "name": "ndeny"}}, "status": 400})
    r = run_publish(f"{server.rtmp}/live/ndeny", duration=6)
    assert r.returncode != 0 and r.elapsed < 5


def test_slow_backend_lets_the_player_in(server: Server, hooks: HookServer, base: str) -> None:
    """on_failure=allow (NMS ignores its backend's errors): a reply later than timeoutSec allows."""
    hooks.add_rules({"match": {"path": N, "field": {"action": "postPlay", "query": {"case": ["slow"]}}},
                     "status": 400, "delay": 5})
    r = run_probe(f"{server.rtmp}/{base}?case=slow")
    assert r.returncode == 0, r.stderr
    assert 2.3 < r.elapsed < 5, f"allowed after {r.elapsed:.1f} s (1 s + 0.5 s + 1 s expected)"


def test_killed_player_gets_one_done_play(server: Server, hooks: HookServer, base: str) -> None:
    proc = player(f"{server.rtmp}/{base}?case=kill")
    try:
        sid = hooks.wait(N, action="postPlay", query={"case": ["kill"]}, timeout=10)[0]["json"]["id"]
        time.sleep(1)
    finally:
        proc.kill()
        wait_exit(proc, 5)
    done = hooks.wait(N, action="donePlay", id=sid)
    time.sleep(1)
    assert len(hooks.find(N, action="donePlay", id=sid)) == 1
    assert done[0]["json"]["outbytes"] > 0
