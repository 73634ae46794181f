"""PingOS dialect ([oclp]) against a real hook backend and real ffmpeg/ffprobe.

Every event is an HTTP GET ``URL?call=..&act=start|update|done&domain=..&app=..&name=..&clientid=..``
followed by the client's own args; for publish/play a 2xx start allows and a 4xx closes,
also on ``update`` (here every second: ``oclp_play = URL stage=start,update,done update=1s``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

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

OC = "/oclp/"
KEYS = ["call", "act", "domain", "app", "name", "clientid"]


@pytest.fixture(scope="module")
def hooks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HookServer]:
    with running_hookserver(tmp_path_factory.mktemp("oclp-backend")) as hs:
        yield hs


@pytest.fixture(scope="module")
def server(hooks: HookServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("oclp-server")
    sets = [f"oclp.oclp_proc={hooks.url(OC + 'proc')}",
            f"oclp.oclp_publish={hooks.url(OC + 'publish')} stage=start,done",
            f"oclp.oclp_play={hooks.url(OC + 'play')} stage=start,update,done update=1s timeout=2s",
            f"oclp.oclp_stream={hooks.url(OC + 'stream')} stage=start,done",
            f"oclp.oclp_meta={hooks.url(OC + 'meta')}",
            "oclp.timeout=2", "hook.retry=1", "hook.retry_delay=0.5", f"hook.outbox={work / 'outbox'}"]
    with running_server(work, *sets) as srv:
        yield srv


@pytest.fixture(scope="module")
def base(server: Server, hooks: HookServer) -> Iterator[str]:
    proc = publisher(f"{server.rtmp}/live/obase")
    hooks.wait(OC + "meta", name="obase", timeout=15)
    yield "live/obase"
    stop(proc)


def _get(rec: Record, call: str, act: str) -> dict[str, str]:
    q: dict[str, str] = rec["query"]
    assert rec["method"] == "GET" and not rec["body"]
    assert list(q)[:len(KEYS)] == KEYS, f"PingOS order: {list(q)}"
    assert (q["call"], q["act"]) == (call, act)
    assert q["domain"] == "127.0.0.1" and q["clientid"]
    return q


def test_proc_at_start(server: Server, hooks: HookServer) -> None:
    rec = hooks.wait(OC + "proc")
    assert len(rec) == 1
    assert rec[0]["method"] == "GET" and rec[0]["query_all"] == {"call": ["init_process"], "worker_id": ["0"]}


def test_publish_stream_meta_play_update_done(server: Server, hooks: HookServer) -> None:
    pub = publisher(f"{server.rtmp}/live/of?token=abc")
    try:
        start = _get(hooks.wait(OC + "publish", name="of", act="start", timeout=15)[0], "publish", "start")
        assert (start["app"], start["name"], start["token"]) == ("live", "of", "abc")
        stream = _get(hooks.wait(OC + "stream", name="of", act="start")[0], "stream", "start")
        assert stream["app"] == "live"
        meta = _get(hooks.wait(OC + "meta", name="of", act="start")[0], "meta", "start")
        assert meta["clientid"] == start["clientid"]

        viewer = player(f"{server.rtmp}/live/of?token=p", seconds=3.5)
        play = _get(hooks.wait(OC + "play", name="of", act="start", timeout=10)[0], "play", "start")
        assert play["token"] == "p" and play["clientid"] != start["clientid"]
        assert wait_exit(viewer, 20) == 0, stop(viewer)
        updates = hooks.wait(OC + "play", clientid=play["clientid"], act="update", count=2)
        for u in updates:
            assert _get(u, "play", "update")["token"] == "p"
        gaps = [b["time"] - a["time"] for a, b in zip(updates, updates[1:], strict=False)]
        assert all(0.6 < g < 1.6 for g in gaps), gaps
        done = _get(hooks.wait(OC + "play", clientid=play["clientid"], act="done")[0], "play", "done")
        assert done["token"] == "p"
        # a stream is started once, by its first client
        assert len(hooks.find(OC + "stream", name="of", act="start")) == 1
    finally:
        stop(pub)
    _get(hooks.wait(OC + "publish", clientid=start["clientid"], act="done")[0], "publish", "done")
    _get(hooks.wait(OC + "stream", name="of", act="done")[0], "stream", "done")
    time.sleep(1.5)
    # no update after done
    last_done = hooks.find(OC + "play", clientid=play["clientid"], act="done")[0]["time"]
    assert not [u for u in hooks.find(OC + "play", clientid=play["clientid"], act="update") if u["time"] > last_done]
    assert len(hooks.find(OC + "publish", clientid=start["clientid"], act="done")) == 1


def test_4xx_on_update_closes_the_player(server: Server, hooks: HookServer, base: str) -> None:
    hooks.add_rules({"match": {"path": OC + "play", "query": {"act": "update", "case": "upd"}}, "status": 403})
    viewer = player(f"{server.rtmp}/{base}?case=upd", seconds=30)
    try:
        play = hooks.wait(OC + "play", act="start", case="upd", timeout=10)[0]
        t0 = time.monotonic()
        assert wait_exit(viewer, 6) is not None, "the player is still connected after its update was refused"
        assert time.monotonic() - t0 < 4
    finally:
        stop(viewer)
    sid = play["query"]["clientid"]
    assert len(hooks.find(OC + "play", clientid=sid, act="update")) == 1
    hooks.wait(OC + "play", clientid=sid, act="done")


@pytest.mark.parametrize(("status", "allowed"), [(204, True), (300, True), (401, False), (404, False),
                                                 (500, False)])
def test_play_start_reply(server: Server, hooks: HookServer, base: str, status: int, allowed: bool) -> None:
    case = f"s{status}"
    hooks.add_rules({"match": {"path": OC + "play", "query": {"act": "start", "case": case}}, "status": status})
    r = run_probe(f"{server.rtmp}/{base}?case={case}")
    assert (r.returncode == 0) is allowed, r.stderr
    assert http_get_status(f"{server.http}/{base}.live.flv?case={case}")[0] == (200 if allowed else 401)
    time.sleep(0.5)
    starts = hooks.find(OC + "play", act="start", case=case)
    # a 4xx is a refusal (asked once); a 5xx is a failure (retried once, then on_failure=deny)
    assert len(starts) == (2 if allowed or 400 <= status < 500 else 4)
    ids = {s["query"]["clientid"] for s in starts}
    dones = [d for d in hooks.find(OC + "play", act="done") if d["query"]["clientid"] in ids]
    assert len(dones) == (2 if allowed else 0)


def test_publish_refused_by_4xx(server: Server, hooks: HookServer) -> None:
    hooks.add_rules({"match": {"path": OC + "publish", "query": {"act": "start", "name": "odeny"}}, "status": 403})
    r = run_publish(f"{server.rtmp}/live/odeny", duration=6)
    assert r.returncode != 0 and r.elapsed < 5
    time.sleep(0.5)
    assert not hooks.find(OC + "meta", name="odeny")
    assert not hooks.find(OC + "publish", name="odeny", act="done")
    # the stream start it caused (first client) is paired with a stream done
    assert len(hooks.find(OC + "stream", name="odeny", act="start")) == 1
    assert len(hooks.find(OC + "stream", name="odeny", act="done")) == 1
