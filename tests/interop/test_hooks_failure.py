"""Failure policy, cancellation and pairing of hook events, with a real backend and real clients.

The module server runs three dialects at once (ZLMediaKit, SRS, NMS), all
pointing at one backend process, with short deadlines (``timeoutSec=2``,
``retry=1``, ``retry_delay=0.5``).  Tests that need another configuration
(a dead hook URL, a server stopped with SIGTERM) start their own server.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mediasrv.rtmp import messages as m
from mediasrv.rtmp.chunks import ChunkReader, RtmpMessage
from mediasrv.rtmp.handshake import ClientHandshake
from tests.support.clients import needs_ffmpeg, stop
from tests.support.hookserver import (
    HookServer,
    Record,
    dead_url,
    hook_sets,
    kill9,
    player,
    publisher,
    run_probe,
    running_hookserver,
    wait_exit,
)
from tests.support.server import Server, running_server

pytestmark = [pytest.mark.interop, needs_ffmpeg]

Z, S, N = "/zlm/", "/srs/", "/nms"
SHORT = ["hook.timeoutSec=2", "hook.retry=1", "hook.retry_delay=0.5", "http_hooks.timeoutSec=2",
         "notify.timeoutSec=2", "general.flowThreshold=0"]


def all_dialects(hs: HookServer, outbox: Path) -> list[str]:
    return [*SHORT, "hook.enable=1", "http_hooks.enabled=1", f"hook.outbox={outbox}",
            *hook_sets(hs, "hook", ["on_publish", "on_play", "on_flow_report", "on_server_exited"], Z),
            *hook_sets(hs, "http_hooks", ["on_publish", "on_unpublish", "on_play", "on_stop"], S),
            f"notify.notify_url={hs.url(N)}"]


@pytest.fixture(scope="module")
def hooks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HookServer]:
    with running_hookserver(tmp_path_factory.mktemp("failure-backend")) as hs:
        yield hs


@pytest.fixture(scope="module")
def server(hooks: HookServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("failure-server")
    with running_server(work, *all_dialects(hooks, work / "outbox")) as srv:
        yield srv


@pytest.fixture(scope="module")
def base(server: Server, hooks: HookServer) -> Iterator[str]:
    proc = publisher(f"{server.rtmp}/live/fbase")
    hooks.wait(N, action="postPublish", name="fbase", timeout=15)
    time.sleep(1)
    yield "live/fbase"
    stop(proc)


def end_events(hooks: HookServer, sid: str) -> dict[str, list[Record]]:
    """Every end-of-session request of the three dialects for session ``sid``."""
    reqs = hooks.requests()
    return {
        "on_flow_report": [r for r in reqs if r["path"] == Z + "on_flow_report" and r["json"]["id"] == sid],
        "on_stop": [r for r in reqs if r["path"] == S + "on_stop" and r["json"]["client_id"] == sid],
        "on_unpublish": [r for r in reqs if r["path"] == S + "on_unpublish" and r["json"]["client_id"] == sid],
        "donePlay": [r for r in reqs if r["path"] == N and r["json"]["action"] == "donePlay"
                     and r["json"]["id"] == sid],
        "donePublish": [r for r in reqs if r["path"] == N and r["json"]["action"] == "donePublish"
                        and r["json"]["id"] == sid],
    }


def counts(events: dict[str, list[Record]]) -> dict[str, int]:
    return {k: len(v) for k, v in events.items()}


# -- a raw RTMP player on a real socket (sees every byte the server sends) -------------------------------------------
class RawPlayer:
    def __init__(self, port: int, app: str, name: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.reader = ChunkReader()
        self.messages: list[RtmpMessage] = []
        hs = ClientHandshake()
        self.sock.sendall(hs.initial_bytes())
        while not hs.complete:
            data = self.sock.recv(65536)
            assert data, "server closed during the handshake"
            hs.receive_data(data)
            out = hs.data_to_send()
            if out:
                self.sock.sendall(out)
        if hs.leftover:
            self.messages += self.reader.feed(hs.leftover)
        obj = {"app": app, "type": "nonprivate", "flashVer": "LNX 9,0,124,2", "tcUrl": f"rtmp://127.0.0.1:{port}/{app}"}
        self.sock.sendall(m.command("connect", 1.0, obj, chunk_size=128))
        self.sock.sendall(m.command("createStream", 2.0, None, chunk_size=128))
        self.sock.sendall(m.command("play", 0.0, None, name, -2000.0, stream_id=1, csid=m.CSID_DATA, chunk_size=128))

    def read_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return
            if not data:
                return
            self.messages += self.reader.feed(data)

    def statuses(self) -> list[str]:
        out = []
        for msg in self.messages:
            if msg.type_id == m.COMMAND_AMF0:
                cmd = m.parse_command(msg)
                if cmd.name == "onStatus" and cmd.args and isinstance(cmd.args[0], dict):
                    out.append(str(cmd.args[0].get("code")))
        return out

    def media(self) -> list[RtmpMessage]:
        return [msg for msg in self.messages if msg.type_id in (m.VIDEO, m.AUDIO)]

    def close(self) -> None:
        self.sock.close()


# -- failure policy ---------------------------------------------------------------------------------------------------
def test_unreachable_hook_zlm_denies_after_retry_nms_allows(tmp_path: Path) -> None:
    """Nothing listens at the hook URLs.  NMS (on_failure=allow) lets the publisher in; ZLMediaKit
    (deny) refuses the player, after hook.retry attempts spaced by retry_delay."""
    with running_server(tmp_path, *SHORT, "hook.enable=1", f"hook.on_play={dead_url('/on_play')}",
                        f"notify.notify_url={dead_url('/nms')}", "hook.retry_delay=1",
                        f"hook.outbox={tmp_path / 'ob'}") as srv:
        pub = publisher(f"{srv.rtmp}/live/dead")
        try:
            time.sleep(3)
            assert pub.poll() is None, f"publisher refused although NMS allows on failure: {stop(pub)}"
            r = run_probe(f"{srv.rtmp}/live/dead")
            assert r.returncode != 0, "played although the ZLMediaKit on_play hook is unreachable"
            assert 1.0 <= r.elapsed < 4, f"refused after {r.elapsed:.1f} s (one retry after 1 s expected)"
        finally:
            stop(pub)
        log = srv.log()
        assert "attempt 2 of 2" in log and "on_failure=deny" in log


def test_hook_slower_than_timeout_denies(server: Server, hooks: HookServer, base: str) -> None:
    hooks.add_rules({"match": {"path": Z + "on_play", "field": {"params": "case=slow"}}, "delay": 5})
    r = run_probe(f"{server.rtmp}/{base}?case=slow")
    assert r.returncode != 0
    assert 4.3 < r.elapsed < 7, f"refused after {r.elapsed:.1f} s (2 s + 0.5 s + 2 s expected)"
    tries = hooks.find(Z + "on_play", params="case=slow")
    assert len(tries) == 2
    assert tries[0]["json"]["hook_index"] < tries[1]["json"]["hook_index"]
    assert 2.3 < tries[1]["time"] - tries[0]["time"] < 3.5


def test_garbage_reply_denies_after_retry(server: Server, hooks: HookServer, base: str) -> None:
    hooks.add_rules({"match": {"path": Z + "on_play", "field": {"params": "case=garbage"}},
                     "body": "<html>502 Bad Gateway</html>", "status": 200})
    r = run_probe(f"{server.rtmp}/{base}?case=garbage")
    assert r.returncode != 0
    tries = hooks.find(Z + "on_play", params="case=garbage")
    assert len(tries) == 2 and tries[0]["json"]["id"] == tries[1]["json"]["id"]
    assert tries[0]["json"]["hook_index"] < tries[1]["json"]["hook_index"]
    assert 0.45 < tries[1]["time"] - tries[0]["time"] < 1.5


def test_dropped_connection_then_success_is_retried_and_allowed(server: Server, hooks: HookServer,
                                                                base: str) -> None:
    hooks.add_rules({"match": {"path": Z + "on_play", "field": {"params": "case=flaky"}}, "drop": True,
                     "times": 1})
    r = run_probe(f"{server.rtmp}/{base}?case=flaky")
    assert r.returncode == 0, r.stderr
    tries = hooks.find(Z + "on_play", params="case=flaky")
    assert len(tries) == 2
    assert tries[0]["json"]["hook_index"] < tries[1]["json"]["hook_index"]


def test_hung_gate_does_not_delay_another_player(server: Server, hooks: HookServer, base: str) -> None:
    hooks.add_rules({"match": {"path": Z + "on_play", "field": {"params": "case=hung"}}, "delay": 20})
    result: dict[str, Any] = {}

    def hung() -> None:
        result["hung"] = run_probe(f"{server.rtmp}/{base}?case=hung")

    t = threading.Thread(target=hung)
    t.start()
    try:
        hooks.wait(Z + "on_play", params="case=hung")
        fast = run_probe(f"{server.rtmp}/{base}?case=fast")
        assert fast.returncode == 0
        assert fast.elapsed < 2.5, f"a second player took {fast.elapsed:.1f} s next to a hung hook"
        assert "hung" not in result, "the hung player was answered before the other one"
    finally:
        t.join(15)
    assert result["hung"].returncode != 0


def test_player_leaving_while_its_gate_hangs(server: Server, hooks: HookServer, base: str) -> None:
    """The gate is cancelled: no retry of the hook, no media, no Play.Start.  The
    dialects that had already allowed (SRS on_play, NMS postPlay) saw a start,
    so they get their end event, once; ZLMediaKit's hung on_play gets none."""
    hooks.add_rules({"match": {"path": Z + "on_play", "field": {"params": "case=leave"}}, "delay": 20})
    raw = RawPlayer(server.rtmp_port, "live", "fbase?case=leave")
    try:
        first = hooks.wait(Z + "on_play", params="case=leave")[0]
        sid = first["json"]["id"]
        raw.read_for(1.0)
        assert not raw.media(), "media reached a player whose gate has not allowed"
        assert not [s for s in raw.statuses() if s.startswith("NetStream.Play.")], raw.statuses()
    finally:
        raw.close()
    time.sleep(3.5)  # the deadline (2 s) and retry_delay (0.5 s) have passed: a retry would be here
    assert len(hooks.find(Z + "on_play", params="case=leave")) == 1
    assert hooks.find(S + "on_play", client_id=sid) and hooks.find(N, action="postPlay", id=sid)
    assert counts(end_events(hooks, sid)) == {"on_flow_report": 0, "on_stop": 1, "on_unpublish": 0,
                                             "donePlay": 1, "donePublish": 0}


# -- pairing ----------------------------------------------------------------------------------------------------------
def test_player_killed_pairs_its_end_events_once(server: Server, hooks: HookServer, base: str) -> None:
    proc = player(f"{server.rtmp}/{base}?case=kill9")
    try:
        start = hooks.wait(Z + "on_play", params="case=kill9", timeout=10)[0]
        sid = start["json"]["id"]
        # the other dialects know the same session by the same id
        hooks.wait(S + "on_play", client_id=sid)
        hooks.wait(N, action="postPlay", id=sid)
        time.sleep(1.5)
        assert proc.poll() is None
    finally:
        kill9(proc)
    hooks.wait(N, action="donePlay", id=sid)
    hooks.wait(S + "on_stop", client_id=sid)
    flow = hooks.wait(Z + "on_flow_report", id=sid)[0]["json"]
    assert flow["player"] is True and flow["totalBytes"] > 0 and flow["duration"] >= 1
    time.sleep(1)
    assert counts(end_events(hooks, sid)) == {"on_flow_report": 1, "on_stop": 1, "on_unpublish": 0,
                                             "donePlay": 1, "donePublish": 0}


@pytest.mark.parametrize("how", ["ends", "killed"])
def test_publisher_pairs_publish_and_unpublish_once(server: Server, hooks: HookServer, how: str) -> None:
    name = f"pair-{how}"
    proc = publisher(f"{server.rtmp}/live/{name}", duration=2.5 if how == "ends" else None)
    try:
        sid = hooks.wait(Z + "on_publish", stream=name, timeout=10)[0]["json"]["id"]
        if how == "ends":
            assert wait_exit(proc, 15) == 0
        else:
            hooks.wait(N, action="postPublish", id=sid)
            time.sleep(1)
            kill9(proc)
    finally:
        stop(proc)
    hooks.wait(S + "on_unpublish", client_id=sid)
    hooks.wait(N, action="donePublish", id=sid)
    hooks.wait(Z + "on_flow_report", id=sid, player=False)
    time.sleep(1)
    assert counts(end_events(hooks, sid)) == {"on_flow_report": 1, "on_stop": 0, "on_unpublish": 1,
                                             "donePlay": 0, "donePublish": 1}
    reqs = hooks.requests()
    assert len([r for r in reqs if r["path"] == S + "on_publish" and r["json"]["client_id"] == sid]) == 1
    assert len([r for r in reqs if r["path"] == N and r["json"]["action"] == "postPublish"
                and r["json"]["id"] == sid]) == 1


def test_sigterm_fires_the_end_events_of_connected_sessions_once(tmp_path: Path) -> None:
    with running_hookserver(tmp_path / "backend") as hs:
        with running_server(tmp_path, *all_dialects(hs, tmp_path / "outbox")) as srv:
            pub = publisher(f"{srv.rtmp}/live/term")
            play = None
            try:
                pub_id = hs.wait(Z + "on_publish", stream="term", timeout=10)[0]["json"]["id"]
                hs.wait(N, action="postPublish", id=pub_id)
                play = player(f"{srv.rtmp}/live/term")
                play_id = hs.wait(N, action="postPlay", name="term", timeout=10)[0]["json"]["id"]
                time.sleep(1)
                srv.proc.send_signal(signal.SIGTERM)
                assert srv.proc.wait(15) in (0, -signal.SIGTERM)  # twistd re-raises the signal it stopped on
            finally:
                stop(pub)
                if play is not None:
                    stop(play)
        time.sleep(0.5)
        assert counts(end_events(hs, pub_id)) == {"on_flow_report": 1, "on_stop": 0, "on_unpublish": 1,
                                                 "donePlay": 0, "donePublish": 1}
        assert counts(end_events(hs, play_id)) == {"on_flow_report": 1, "on_stop": 1, "on_unpublish": 0,
                                                  "donePlay": 1, "donePublish": 0}
        assert len(hs.find(Z + "on_server_exited")) == 1
