"""ZLMediaKit hook dialect ([hook]) against a real hook backend and real ffmpeg/ffprobe.

One mediasrv per module (``hook.enable=1``, every ZLMediaKit hook pointing at
the backend under ``/index/hook/``), one backend process
(``tests/support/hookserver.py``).  Each test works on its own stream names,
and scripts the backend's answers with rules matching those names.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.clients import needs_ffmpeg, stop, ws_read_flv
from tests.support.hookserver import (
    HookServer,
    Record,
    hook_sets,
    http_get_status,
    kill9,
    publisher,
    run_probe,
    run_publish,
    running_hookserver,
    wait_exit,
)
from tests.support.server import Server, running_server

pytestmark = [pytest.mark.interop, needs_ffmpeg]

MS_ID = "zlm-interop"
H = "/index/hook/"
ZLM_HOOKS = ["on_publish", "on_play", "on_flow_report", "on_stream_changed", "on_stream_none_reader",
             "on_stream_not_found", "on_server_started", "on_server_keepalive", "on_server_exited"]
MEDIA_INFO = {"schema": str, "protocol": str, "vhost": str, "app": str, "stream": str, "params": str, "ip": str,
              "port": int, "id": str}
MAX_WAIT_MS = 8000


@pytest.fixture(scope="module")
def hooks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HookServer]:
    with running_hookserver(tmp_path_factory.mktemp("zlm-backend")) as hs:
        yield hs


@pytest.fixture(scope="module")
def server(hooks: HookServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("zlm-server")
    sets = ["hook.enable=1", "hook.timeoutSec=2", "hook.retry=1", "hook.retry_delay=0.5", "hook.alive_interval=1",
            "hook.stream_changed_schemas=rtsp/rtmp", f"hook.outbox={work / 'outbox'}",
            f"general.mediaServerId={MS_ID}", "general.flowThreshold=0", "general.streamNoneReaderDelayMS=1000",
            f"general.maxStreamWaitMS={MAX_WAIT_MS}", *hook_sets(hooks, "hook", ZLM_HOOKS, H)]
    with running_server(work, *sets) as srv:
        yield srv


@pytest.fixture(scope="module")
def base(server: Server, hooks: HookServer) -> Iterator[str]:
    """A stream published for the whole module (live/zbase)."""
    proc = publisher(f"{server.rtmp}/live/zbase?token=abc")
    hooks.wait(H + "on_stream_changed", stream="zbase", regist=True, timeout=15)
    yield "live/zbase"
    stop(proc)


def _typed(body: dict[str, Any], spec: dict[str, type]) -> None:
    for key, kind in spec.items():
        assert key in body, f"{key!r} missing from {body}"
        assert type(body[key]) is kind, f"{key!r} is {type(body[key]).__name__}, wanted {kind.__name__}: {body}"


def _stamped(rec: Record) -> None:
    body = rec["json"]
    assert body["mediaServerId"] == MS_ID
    assert type(body["hook_index"]) is int and body["hook_index"] >= 0
    assert rec["method"] == "POST"
    assert rec["headers"]["content-type"].startswith("application/json")
    if body.get("vhost"):
        assert rec["headers"]["x-vhost"] == body["vhost"]


def _one(hooks: HookServer, hook: str, **fields: Any) -> Record:
    recs = hooks.wait(H + hook, **fields)
    assert len(recs) == 1, f"{hook} {fields}: {len(recs)} requests"
    return recs[0]


# -- server life -----------------------------------------------------------------------------------------------
def test_server_started_carries_the_flat_config(server: Server, hooks: HookServer) -> None:
    rec = _one(hooks, "on_server_started")
    _stamped(rec)
    body = rec["json"]
    config = {k: v for k, v in body.items() if k not in ("mediaServerId", "hook_index")}
    assert all(isinstance(v, str) for v in config.values()), config
    assert config["general.mediaServerId"] == MS_ID
    assert config["hook.enable"] == "1"
    assert config["rtmp.port"] == str(server.rtmp_port)
    assert config["hook.on_play"] == hooks.url(H + "on_play")


def test_server_keepalive_every_alive_interval(server: Server, hooks: HookServer) -> None:
    recs = hooks.wait(H + "on_server_keepalive", count=2, timeout=5)
    for rec in recs:
        _stamped(rec)
        data = rec["json"]["data"]
        assert isinstance(data, dict) and data
        assert all(type(v) is int for v in data.values()), data
    gaps = [b["time"] - a["time"] for a, b in zip(recs, recs[1:], strict=False)]
    assert all(0.5 < g < 2.5 for g in gaps), gaps


# -- publish, play, flow report, stream changed ----------------------------------------------------------------
def test_publish_play_flow_report_and_stream_changed(server: Server, hooks: HookServer) -> None:
    proc = publisher(f"{server.rtmp}/live/zf?token=abc")
    try:
        pub = _one(hooks, "on_publish", stream="zf")
        _stamped(pub)
        body = pub["json"]
        _typed(body, {**MEDIA_INFO, "originType": int, "originTypeStr": str})
        assert (body["schema"], body["protocol"], body["vhost"], body["app"], body["stream"], body["params"],
                body["ip"]) == ("rtmp", "rtmp", "__defaultVhost__", "live", "zf", "token=abc", "127.0.0.1")
        assert (body["originType"], body["originTypeStr"]) == (1, "rtmp_push")
        pub_id = body["id"]

        reg = hooks.wait(H + "on_stream_changed", stream="zf", regist=True)
        reg_body = reg[0]["json"]
        _stamped(reg[0])
        _typed(reg_body, {"schema": str, "vhost": str, "app": str, "stream": str, "params": str, "createStamp": int,
                          "aliveSecond": int, "bytesSpeed": int, "totalBytes": int, "readerCount": int,
                          "totalReaderCount": int, "originType": int, "originTypeStr": str, "originUrl": str,
                          "isRecordingMP4": bool, "isRecordingHLS": bool, "originSock": dict, "tracks": list,
                          "regist": bool})
        assert reg_body["originSock"]["identifier"] == pub_id
        assert reg_body["params"] == "token=abc"
        codecs = sorted(t["codec_id_name"] for t in reg_body["tracks"])
        assert codecs == ["CodecAAC", "CodecH264"], reg_body["tracks"]
        # once per schema, filtered by stream_changed_schemas (rtsp/rtmp)
        schemas = [r["json"]["schema"] for r in reg]
        assert "rtmp" in schemas and set(schemas) <= {"rtsp", "rtmp"} and len(schemas) == len(set(schemas))

        # an RTMP player, then an HTTP-FLV player
        assert run_probe(f"{server.rtmp}/live/zf?token=p1").returncode == 0
        play1 = _one(hooks, "on_play", stream="zf", params="token=p1")["json"]
        _typed(play1, MEDIA_INFO)
        assert (play1["schema"], play1["protocol"], play1["app"]) == ("rtmp", "rtmp", "live")
        flow1 = _one(hooks, "on_flow_report", id=play1["id"])
        _stamped(flow1)
        _typed(flow1["json"], {**MEDIA_INFO, "totalBytes": int, "duration": int, "player": bool})
        assert flow1["json"]["player"] is True and flow1["json"]["totalBytes"] > 0
        assert flow1["json"]["params"] == "token=p1" and flow1["json"]["stream"] == "zf"

        assert http_get_status(f"{server.http}/live/zf.live.flv?token=p2")[0] == 200
        play2 = _one(hooks, "on_play", stream="zf", params="token=p2")["json"]
        assert (play2["schema"], play2["protocol"]) == ("rtmp", "http")
        flow2 = _one(hooks, "on_flow_report", id=play2["id"])["json"]
        assert flow2["player"] is True and flow2["totalBytes"] > 0

        assert ws_read_flv("127.0.0.1", server.http_port, "/live/zf.live.flv?token=p3", 1000)[:3] == b"FLV"
        play3 = _one(hooks, "on_play", stream="zf", params="token=p3")["json"]
        assert (play3["schema"], play3["protocol"]) == ("rtmp", "ws")
        assert _one(hooks, "on_flow_report", id=play3["id"])["json"]["player"] is True
    finally:
        stop(proc)
    flow_pub = _one(hooks, "on_flow_report", id=pub_id)["json"]
    assert flow_pub["player"] is False and flow_pub["totalBytes"] > 10_000 and flow_pub["duration"] >= 1
    unreg = hooks.wait(H + "on_stream_changed", stream="zf", regist=False)
    assert sorted(r["json"]["schema"] for r in unreg) == sorted(schemas)
    for r in unreg:
        _stamped(r)
        assert set(r["json"]) == {"schema", "vhost", "app", "stream", "params", "regist", "mediaServerId",
                                  "hook_index"}
    time.sleep(0.5)
    assert len(hooks.find(H + "on_stream_changed", stream="zf")) == 2 * len(schemas)
    assert len(hooks.find(H + "on_publish", stream="zf")) == 1
    # hook_index: unique, and increasing along cause and effect
    index = [r["json"]["hook_index"] for r in hooks.requests() if isinstance(r["json"], dict)]
    assert len(index) == len(set(index))
    assert (pub["json"]["hook_index"] < reg_body["hook_index"] < flow1["json"]["hook_index"]
            < flow_pub["hook_index"])


# -- reply rules -------------------------------------------------------------------------------------------------
DENIALS = [
    # (case, HTTP status, body, attempts: a reply that breaks the contract is retried once, a refusal never)
    ("code-string", 200, {"code": "0"}, 2),
    ("http-201", 201, {"code": 0}, 2),
    ("refused", 200, {"code": -1, "msg": "forbidden"}, 1),
]


@pytest.mark.parametrize(("case", "status", "body", "attempts"), DENIALS, ids=[d[0] for d in DENIALS])
def test_publish_denied(server: Server, hooks: HookServer, case: str, status: int, body: Any,
                        attempts: int) -> None:
    name = f"pd-{case}"
    hooks.add_rules({"match": {"path": H + "on_publish", "field": {"stream": name}}, "status": status,
                     "body": body})
    r = run_publish(f"{server.rtmp}/live/{name}", duration=6)
    assert r.returncode != 0, r.stderr
    assert r.elapsed < 5, f"refusal took {r.elapsed:.1f} s"
    time.sleep(1)  # past retry_delay: a second attempt would be here by now
    assert len(hooks.find(H + "on_publish", stream=name)) == attempts
    recs = hooks.find(H + "on_publish", stream=name)
    assert [r["json"]["hook_index"] for r in recs] == sorted({r["json"]["hook_index"] for r in recs})
    assert not hooks.find(H + "on_stream_changed", stream=name)
    assert not hooks.find(H + "on_flow_report", stream=name)  # play/publish never started: no usage


@pytest.mark.parametrize(("case", "status", "body", "attempts"), DENIALS, ids=[d[0] for d in DENIALS])
def test_play_denied_rtmp_and_http_flv(server: Server, hooks: HookServer, base: str, case: str, status: int,
                                       body: Any, attempts: int) -> None:
    hooks.add_rules({"match": {"path": H + "on_play", "field": {"params": f"case={case}"}}, "status": status,
                     "body": body})
    r = run_probe(f"{server.rtmp}/{base}?case={case}")
    assert r.returncode != 0, "ffprobe played a stream its hook denied"
    assert r.elapsed < 4, f"refusal took {r.elapsed:.1f} s"
    code, text = http_get_status(f"{server.http}/{base}.live.flv?case={case}")
    assert code == 401, (code, text)
    time.sleep(0.8)
    plays = hooks.find(H + "on_play", params=f"case={case}")
    assert len(plays) == 2 * attempts
    ids = {p["json"]["id"] for p in plays}
    assert len(ids) == 2
    assert not [f for f in hooks.find(H + "on_flow_report") if f["json"]["id"] in ids]


def test_play_allowed_by_code_zero(server: Server, hooks: HookServer, base: str) -> None:
    hooks.add_rules({"match": {"path": H + "on_play", "field": {"params": "case=ok"}}, "body": {"code": 0,
                     "msg": "success"}})
    assert run_probe(f"{server.rtmp}/{base}?case=ok").returncode == 0
    assert http_get_status(f"{server.http}/{base}.live.flv?case=ok")[0] == 200
    assert len(hooks.find(H + "on_play", params="case=ok")) == 2


# -- on_publish reply options ---------------------------------------------------------------------------------------
def test_on_publish_reply_continue_push_ms(server: Server, hooks: HookServer) -> None:
    """continue_push_ms=0 in the reply: a publisher that vanishes ends its stream at once; the other
    stream keeps the configured 15 s grace."""
    hooks.add_rules({"match": {"path": H + "on_publish", "field": {"stream": "cp0"}},
                     "body": {"code": 0, "continue_push_ms": 0, "enable_hls": None}})
    a = publisher(f"{server.rtmp}/live/cp0")
    b = publisher(f"{server.rtmp}/live/cp15")
    try:
        hooks.wait(H + "on_stream_changed", stream="cp0", regist=True, timeout=15)
        hooks.wait(H + "on_stream_changed", stream="cp15", regist=True, timeout=15)
    finally:
        kill9(a)
        kill9(b)
    t0 = time.monotonic()
    hooks.wait(H + "on_stream_changed", stream="cp0", regist=False, timeout=3)
    assert time.monotonic() - t0 < 2
    hooks.absent(lambda r: r["path"] == H + "on_stream_changed" and r["json"].get("stream") == "cp15"
                 and r["json"].get("regist") is False, 2, "unregister of cp15 inside its grace period")


def test_on_publish_reply_stream_replace(server: Server, hooks: HookServer) -> None:
    hooks.add_rules({"match": {"path": H + "on_publish", "field": {"stream": "srq"}},
                     "body": {"code": 0, "stream_replace": "srq-renamed"}})
    proc = publisher(f"{server.rtmp}/live/srq")
    try:
        reg = hooks.wait(H + "on_stream_changed", stream="srq-renamed", regist=True, timeout=15)
        assert reg and not hooks.find(H + "on_stream_changed", stream="srq")
        assert run_probe(f"{server.rtmp}/live/srq-renamed").returncode == 0
    finally:
        stop(proc)
    hooks.wait(H + "on_stream_changed", stream="srq-renamed", regist=False)


def test_on_publish_reply_auto_close(server: Server, hooks: HookServer) -> None:
    """auto_close=1 in the reply: no reader for streamNoneReaderDelayMS closes the stream without asking."""
    hooks.add_rules({"match": {"path": H + "on_publish", "field": {"stream": "ac"}},
                     "body": {"code": 0, "auto_close": 1}})
    proc = publisher(f"{server.rtmp}/live/ac")
    try:
        hooks.wait(H + "on_stream_changed", stream="ac", regist=True, timeout=15)
        hooks.wait(H + "on_stream_changed", stream="ac", regist=False, timeout=5)
        assert wait_exit(proc, 5) is not None, "the publisher of an auto-closed stream is still connected"
    finally:
        stop(proc)
    assert not hooks.find(H + "on_stream_none_reader", stream="ac")


# -- on_stream_not_found / on_stream_none_reader ----------------------------------------------------------------------
def test_stream_not_found_close_fails_the_waiting_player_at_once(server: Server, hooks: HookServer) -> None:
    hooks.add_rules({"match": {"path": H + "on_stream_not_found", "field": {"app": "nf"}},
                     "body": {"code": 0, "close": True}})
    r = run_probe(f"{server.rtmp}/nf/missing?token=x")
    assert r.returncode != 0
    assert r.elapsed < 3, f"took {r.elapsed:.1f} s (maxStreamWaitMS is {MAX_WAIT_MS} ms)"
    play = _one(hooks, "on_play", app="nf", stream="missing")
    nf = _one(hooks, "on_stream_not_found", app="nf", stream="missing")
    _stamped(nf)
    _typed(nf["json"], MEDIA_INFO)
    assert nf["json"]["id"] == play["json"]["id"] and nf["json"]["params"] == "token=x"
    assert play["json"]["hook_index"] < nf["json"]["hook_index"]  # on_play first, as ZLMediaKit
    t0 = time.monotonic()
    code, _ = http_get_status(f"{server.http}/nf/missing2.live.flv")
    assert code == 404 and time.monotonic() - t0 < 3


def test_stream_not_found_without_close_keeps_the_player_waiting(server: Server, hooks: HookServer) -> None:
    """The default reply (no close): the player waits, and gets the stream once it is published."""
    late = subprocess.Popen(["ffprobe", "-v", "error", "-show_entries", "stream=codec_type", "-of", "json",
                             f"{server.rtmp}/live/nfwait"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    hooks.wait(H + "on_stream_not_found", stream="nfwait")
    time.sleep(1)
    assert late.poll() is None, "the player gave up although on_stream_not_found did not say close"
    proc = publisher(f"{server.rtmp}/live/nfwait")
    try:
        assert wait_exit(late, 15) == 0
        assert b"video" in (late.stdout.read() if late.stdout else b"")
    finally:
        stop(proc)
        if late.poll() is None:
            late.kill()
        late.wait()


def test_stream_none_reader_close_ends_the_stream(server: Server, hooks: HookServer) -> None:
    hooks.add_rules({"match": {"path": H + "on_stream_none_reader", "field": {"stream": "nr"}},
                     "body": {"code": 0, "close": True}})
    proc = publisher(f"{server.rtmp}/live/nr?k=v")
    try:
        reg = hooks.wait(H + "on_stream_changed", stream="nr", regist=True, timeout=15)[0]
        nr = _one(hooks, "on_stream_none_reader", stream="nr")
        _stamped(nr)
        assert {k: nr["json"][k] for k in ("schema", "vhost", "app", "stream", "params")} == {
            "schema": "rtmp", "vhost": "__defaultVhost__", "app": "live", "stream": "nr", "params": "k=v"}
        delay = nr["time"] - reg["time"]
        assert 0.7 < delay < 2.5, f"on_stream_none_reader {delay:.2f} s after registration (delay 1000 ms)"
        hooks.wait(H + "on_stream_changed", stream="nr", regist=False, timeout=3)
        assert wait_exit(proc, 5) is not None, "the publisher of a closed stream is still connected"
        hooks.wait(H + "on_flow_report", stream="nr", player=False, timeout=3)
    finally:
        stop(proc)


def test_stream_none_reader_without_close_keeps_the_stream(server: Server, hooks: HookServer) -> None:
    proc = publisher(f"{server.rtmp}/live/nrkeep")
    try:
        hooks.wait(H + "on_stream_none_reader", stream="nrkeep", timeout=15)
        time.sleep(1)
        assert proc.poll() is None
        assert run_probe(f"{server.rtmp}/live/nrkeep").returncode == 0
        # the last reader left: the timer runs again
        hooks.wait(H + "on_stream_none_reader", stream="nrkeep", count=2, timeout=5)
    finally:
        stop(proc)


# -- on_stream_changed filter ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("schemas", ["rtmp", ""], ids=["rtmp-only", "no-filter"])
def test_stream_changed_schemas_filter(tmp_path: Path, schemas: str) -> None:
    """One register and one unregister per offered schema that passes stream_changed_schemas
    (empty: no filter).  The server offers rtmp, rtsp and hls."""
    with running_hookserver(tmp_path / "backend") as hs, running_server(
            tmp_path, "hook.enable=1", f"hook.stream_changed_schemas={schemas}", f"hook.outbox={tmp_path / 'ob'}",
            *hook_sets(hs, "hook", ["on_stream_changed", "on_flow_report"], H), "general.flowThreshold=0") as srv:
        r = run_publish(f"{srv.rtmp}/live/filtered", duration=1.5)
        assert r.returncode == 0, r.stderr
        hs.wait(H + "on_flow_report", stream="filtered", player=False)
        hs.wait(H + "on_stream_changed", stream="filtered", regist=False)
        time.sleep(0.5)
        reg = sorted(x["json"]["schema"] for x in hs.find(H + "on_stream_changed", regist=True))
        unreg = sorted(x["json"]["schema"] for x in hs.find(H + "on_stream_changed", regist=False))
        assert reg == unreg and len(reg) == len(set(reg))
        if schemas:
            assert reg == ["rtmp"]
        else:
            assert {"rtmp", "hls"} <= set(reg), reg
