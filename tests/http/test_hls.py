"""HLS on task.Clock with real twisted.web requests over StringTransport:
segmenting, the sliding playlist, discontinuities, and HLS viewers as sessions
(one on_play per viewer, cookie / query-string identity, 60 s idle end, kick)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock

from mediasrv import config
from mediasrv.core.context import Core
from mediasrv.core.frames import TrackKind
from mediasrv.core.sessions import Role, SessionInfo
from mediasrv.http.hls import HlsService, parse_playlist_path, parse_segment_path
from mediasrv.http.site import build_site
from tests.support.http import AutoClient, HttpHarness, Response
from tests.support.media import Publisher, load_flv, parse_ts

TRACKS, FRAMES = load_flv()
HOOKS = ("hook.enable=1", "hook.on_play=http://h/on_play", "hook.on_flow_report=http://h/on_flow_report",
         "general.flowThreshold=0")


@dataclass
class Env:
    core: Core
    clock: Clock
    client: AutoClient
    http: HttpHarness

    @property
    def hls(self) -> HlsService:
        return HlsService.of(self.core)

    def publish(self, name: str = "test", **kw: Any) -> Publisher:
        return Publisher(self.core, self.clock, name, **kw)

    def hls_sessions(self) -> list[SessionInfo]:
        return [s for s in self.core.sessions if s.protocol == "hls"]


@pytest.fixture
def make(clock: Clock) -> Iterator[Callable[..., Env]]:
    envs: list[Env] = []

    def factory(*sets: str, reply: Any = None) -> Env:
        client = AutoClient(reply) if reply else AutoClient()
        core = Core.build(config.load(overrides=list(sets)), clock, client)  # type: ignore[arg-type]
        env = Env(core, clock, client, HttpHarness(build_site(core)))
        envs.append(env)
        return env

    yield factory
    for env in envs:
        for d in env.client.held:
            if not d.called:
                d.cancel()
        env.core.registry.close_all("test over")
        env.hls.stop()
    for _ in range(20):
        if not clock.getDelayedCalls():
            break
        clock.advance(600)


def segments_of(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def tag(text: str, name: str) -> str | None:
    m = re.search(rf"^#{name}:(.*)$", text, re.M)
    return m.group(1) if m else None


def cookie_header(r: Response) -> dict[str, str]:
    c = r.cookie()
    assert c is not None, r.headers
    return {"Cookie": f"ZLM_HTTP_COOKIE={c[0]}"}


# -- paths -----------------------------------------------------------------------------------------------------
def test_paths() -> None:
    assert parse_playlist_path("/live/test/hls.m3u8") == ("live", "test")
    assert parse_playlist_path("/a/b/c/hls.m3u8") == ("a/b", "c")
    assert parse_playlist_path("/test/hls.m3u8") is None
    assert parse_playlist_path("/live/test.m3u8") is None
    assert parse_segment_path("/live/test/12.ts") == ("live", "test", 12)
    assert parse_segment_path("/live/test/x12.ts") is None
    assert parse_segment_path("/live/test.ts") is None


# -- segmenting and the playlist -----------------------------------------------------------------------------
def test_segments_cut_on_keyframes_at_segdur(make: Callable[..., Env]) -> None:
    env = make()
    pub = env.publish()
    pub.feed(9.5)
    r = env.http.get("/live/test/hls.m3u8")
    assert r.status == 200
    text = r.body.decode()
    assert text.startswith("#EXTM3U\n")
    assert tag(text, "EXT-X-TARGETDURATION") == "2"
    assert tag(text, "EXT-X-MEDIA-SEQUENCE") == "1"
    assert segments_of(text) == ["1.ts", "2.ts", "3.ts"]
    assert re.findall(r"#EXTINF:([\d.]+),", text) == ["2.000", "2.000", "2.000"]
    seg = env.http.get("/live/test/2.ts", headers=cookie_header(r))
    assert seg.status == 200 and seg.header("content-type") == "video/mp2t"
    ts = parse_ts(seg.body)
    assert ts.crc_ok and not ts.cc_errors
    video = [p for p in ts.pes if p.pid == 0x100]
    assert video[0].random_access
    # segment 2 spans media time 4.0 .. 6.0 s: 50 pictures at 25 fps
    assert len(video) == 50
    assert (video[0].dts or video[0].pts) // 90 - 100 == 4000


def test_window_slides_and_retained_segments_stay_downloadable(make: Callable[..., Env]) -> None:
    env = make("hls.segNum=3", "hls.segRetain=2")
    pub = env.publish()
    pub.feed(20.5)  # segments 0..9 closed
    r = env.http.get("/live/test/hls.m3u8")
    assert tag(r.body.decode(), "EXT-X-MEDIA-SEQUENCE") == "7"
    assert segments_of(r.body.decode()) == ["7.ts", "8.ts", "9.ts"]
    headers = cookie_header(r)
    assert env.http.get("/live/test/5.ts", headers=headers).status == 200  # retained
    assert env.http.get("/live/test/6.ts", headers=headers).status == 200
    assert env.http.get("/live/test/4.ts", headers=headers).status == 404  # gone
    assert env.http.get("/live/test/10.ts", headers=headers).status == 404  # not cut yet
    pub.feed(2)
    r = env.http.get("/live/test/hls.m3u8", headers=headers)
    assert tag(r.body.decode(), "EXT-X-MEDIA-SEQUENCE") == "8"


def test_target_duration_covers_long_gops(make: Callable[..., Env]) -> None:
    env = make("hls.segDur=1.5")
    pub = env.publish()
    pub.feed(8.5)
    text = env.http.get("/live/test/hls.m3u8").body.decode()
    assert re.findall(r"#EXTINF:([\d.]+),", text) == ["2.000"] * 3
    assert tag(text, "EXT-X-TARGETDURATION") == "2"


def test_first_playlist_waits_for_the_first_segment(make: Callable[..., Env]) -> None:
    env = make()
    pub = env.publish()
    pub.feed(0.5)
    ex = env.http.request("/live/test/hls.m3u8")
    assert ex.response() is None
    pub.feed(2)
    r = ex.done()
    assert r.status == 200 and segments_of(r.body.decode()) == ["0.ts"]


def test_player_waits_for_a_stream_then_404(make: Callable[..., Env]) -> None:
    env = make("general.maxStreamWaitMS=3000")
    ex = env.http.request("/live/nothing/hls.m3u8")
    assert ex.response() is None
    env.clock.advance(3.1)
    assert ex.done().status == 404
    assert env.hls_sessions() == []


def test_discontinuity_when_the_publisher_comes_back(make: Callable[..., Env]) -> None:
    env = make("hls.segNum=3", "hls.segRetain=1")
    pub = env.publish()
    pub.feed(6.5)  # 0, 1, 2
    headers = cookie_header(env.http.get("/live/test/hls.m3u8"))
    pub.stop()  # the open segment 3 is closed at the end
    r = env.http.get("/live/test/hls.m3u8", headers=headers)  # a viewer keeps the last playlist
    assert segments_of(r.body.decode()) == ["1.ts", "2.ts", "3.ts"]
    assert 0.4 < float(re.findall(r"#EXTINF:([\d.]+),", r.body.decode())[-1]) < 0.6  # the tail
    env.clock.advance(5)
    again = env.publish()
    again.feed(4.5)  # 4, 5
    text = env.http.get("/live/test/hls.m3u8", headers=headers).body.decode()
    assert segments_of(text) == ["3.ts", "4.ts", "5.ts"]
    lines = text.splitlines()
    assert lines[lines.index("4.ts") - 3] == "#EXT-X-DISCONTINUITY"
    assert text.count("#EXT-X-DISCONTINUITY\n") == 1
    assert tag(text, "EXT-X-DISCONTINUITY-SEQUENCE") is None
    again.feed(6)  # 6, 7, 8: segment 4 leaves the window
    text = env.http.get("/live/test/hls.m3u8", headers=headers).body.decode()
    assert "#EXT-X-DISCONTINUITY\n" not in text
    assert tag(text, "EXT-X-DISCONTINUITY-SEQUENCE") == "1"


def test_new_publisher_after_the_playlist_expired_continues_the_sequence(make: Callable[..., Env]) -> None:
    env = make()
    pub = env.publish()
    pub.feed(4.5)
    pub.stop()
    env.clock.advance(env.hls.linger_seconds + 1)
    assert not env.hls.playlists
    pub = env.publish()
    pub.feed(2.5)
    text = env.http.get("/live/test/hls.m3u8").body.decode()
    assert segments_of(text) == ["3.ts"]
    assert "#EXT-X-DISCONTINUITY" in text


def test_codec_change_starts_a_discontinuity(make: Callable[..., Env]) -> None:
    from mediasrv.core.frames import Track

    env = make()
    pub = env.publish()
    pub.feed(4.5)
    video = TRACKS[TrackKind.VIDEO]
    pub.stream.set_track(Track(video.codec, video.config + b"", 640, 360))  # same bytes: nothing changes
    pub.feed(2)
    text = env.http.get("/live/test/hls.m3u8").body.decode()
    assert "DISCONTINUITY" not in text
    pub.stream.set_track(TRACKS[TrackKind.AUDIO].__class__(TRACKS[TrackKind.AUDIO].codec, b"\x12\x08"))
    pub.feed(4)
    text = env.http.get("/live/test/hls.m3u8").body.decode()
    assert "#EXT-X-DISCONTINUITY" in text


def test_hls_off_for_the_stream(make: Callable[..., Env]) -> None:
    env = make()
    pub = env.publish(options={"enable_hls": "0"})
    pub.feed(3)
    assert env.http.get("/live/test/hls.m3u8").status == 404
    assert env.hls_sessions() == []
    env2 = make("protocol.enable_hls=0")
    pub2 = env2.publish(options={"enable_hls": "1"})
    pub2.feed(2.5)
    assert env2.http.get("/live/test/hls.m3u8").status == 200


def test_headers_and_cors(make: Callable[..., Env]) -> None:
    env = make()
    env.publish().feed(2.5)
    r = env.http.get("/live/test/hls.m3u8", headers={"Origin": "http://player.example"})
    assert r.header("content-type") == "application/vnd.apple.mpegurl"
    assert r.header("cache-control") == "no-cache"
    assert r.header("access-control-allow-origin") == "http://player.example"
    assert r.header("access-control-allow-credentials") == "true"
    name, attrs = r.cookie()  # type: ignore[misc]
    assert attrs["path"] == "/live/test/" and attrs["max-age"] == "60" and "httponly" in attrs
    seg = env.http.get("/live/test/0.ts", headers={**cookie_header(r), "Origin": "http://player.example"})
    assert seg.header("cache-control", ) is not None and "max-age" in seg.header("cache-control")  # type: ignore[operator]
    assert int(seg.header("content-length") or 0) == len(seg.body)
    head = env.http.get("/live/test/0.ts", method="HEAD", headers=cookie_header(r))
    assert head.status == 200 and head.body == b""


# -- viewers --------------------------------------------------------------------------------------------------
def test_one_on_play_per_viewer_across_many_requests(make: Callable[..., Env]) -> None:
    env = make(*HOOKS)
    pub = env.publish()
    pub.feed(6.5)
    r = env.http.get("/live/test/hls.m3u8", peer=("10.0.0.9", 41000))
    headers = cookie_header(r)
    for _ in range(5):
        for seg in segments_of(env.http.get("/live/test/hls.m3u8", headers=headers).body.decode()):
            assert env.http.get(f"/live/test/{seg}", headers=headers).status == 200
        pub.feed(2)
    plays = env.client.to("/on_play")
    assert len(plays) == 1
    body = plays[0]
    assert {k: body[k] for k in ("schema", "protocol", "app", "stream", "params", "ip")} == \
        {"schema": "hls", "protocol": "http", "app": "live", "stream": "test", "params": "", "ip": "10.0.0.9"}
    (s,) = env.hls_sessions()
    assert body["id"] == s.id and s.role is Role.PLAYER and s.bytes_out > 1_000_000
    # the stream counts the viewer
    assert pub.stream.viewer_count == 1


def test_query_string_identifies_a_viewer_without_cookies(make: Callable[..., Env]) -> None:
    env = make(*HOOKS)
    env.publish().feed(4.5)
    r = env.http.get("/live/test/hls.m3u8?token=abc&u=1")
    assert segments_of(r.body.decode()) == ["0.ts?token=abc&u=1", "1.ts?token=abc&u=1"]
    assert env.http.get("/live/test/1.ts?token=abc&u=1").status == 200
    assert env.http.get("/live/test/hls.m3u8?token=abc&u=1").status == 200
    assert len(env.client.to("/on_play")) == 1
    assert env.client.to("/on_play")[0]["params"] == "token=abc&u=1"
    # another query string is another viewer
    env.http.get("/live/test/hls.m3u8?token=xyz")
    assert len(env.client.to("/on_play")) == 2
    assert len(env.hls_sessions()) == 2


def test_without_cookie_or_query_every_request_is_asked(make: Callable[..., Env]) -> None:
    env = make(*HOOKS)
    env.publish().feed(2.5)
    env.http.get("/live/test/hls.m3u8")
    env.http.get("/live/test/hls.m3u8")
    assert len(env.client.to("/on_play")) == 2


def test_concurrent_first_requests_share_one_gate(make: Callable[..., Env]) -> None:
    env = make(*HOOKS, reply=lambda url, body: None if url.endswith("/on_play") else (200, {"code": 0}))
    env.publish().feed(2.5)
    a = env.http.request("/live/test/hls.m3u8?t=1")
    b = env.http.request("/live/test/0.ts?t=1")
    assert len(env.client.to("/on_play")) == 1
    from mediasrv.hooks.client import HookResponse

    env.client.held[0].callback(HookResponse(200, {}, b'{"code":0}'))
    assert a.done().status == 200 and b.done().status == 200
    assert len(env.hls_sessions()) == 1


def test_viewer_session_ends_after_60_s_without_requests(make: Callable[..., Env]) -> None:
    env = make(*HOOKS)
    pub = env.publish()
    pub.feed(2.5)
    r = env.http.get("/live/test/hls.m3u8")
    env.http.get("/live/test/0.ts", headers=cookie_header(r))
    (s,) = env.hls_sessions()
    env.clock.advance(30)
    env.http.get("/live/test/hls.m3u8", headers=cookie_header(r))  # refreshes the 60 s
    env.clock.advance(59)
    assert env.hls_sessions() == [s]
    assert env.client.to("/on_flow_report") == []
    env.clock.advance(2)
    assert env.hls_sessions() == []
    (report,) = env.client.to("/on_flow_report")
    assert report["player"] is True and report["schema"] == "hls" and report["protocol"] == "http"
    assert report["id"] == s.id and report["totalBytes"] == s.bytes_out > 0
    assert report["duration"] == 91
    assert pub.stream.viewer_count == 0
    # the same cookie later is a new viewer, asked again
    env.http.get("/live/test/hls.m3u8", headers=cookie_header(r))
    assert len(env.client.to("/on_play")) == 2


def test_kick_revokes_the_cookie_and_the_query_id(make: Callable[..., Env]) -> None:
    env = make(*HOOKS)
    env.publish().feed(2.5)
    r = env.http.get("/live/test/hls.m3u8?token=abc")
    (s,) = env.hls_sessions()
    assert env.core.sessions.kick(s.id, "kicked by API")
    assert env.hls_sessions() == []
    assert len(env.client.to("/on_flow_report")) == 1
    denied = env.http.get("/live/test/hls.m3u8", headers=cookie_header(r))
    assert denied.status == 403
    assert env.http.get("/live/test/0.ts?token=abc").status == 403
    assert len(env.client.to("/on_play")) == 1  # refused without asking anyone
    # the revocation lasts the cookie's lifetime
    env.clock.advance(61)
    assert env.http.get("/live/test/hls.m3u8?token=abc").status == 200
    assert len(env.client.to("/on_play")) == 2


def test_on_play_refusal_is_401_and_caches_nothing(make: Callable[..., Env]) -> None:
    env = make(*HOOKS, reply=lambda url, body: (200, {"code": -1, "msg": "no ticket"})
               if url.endswith("/on_play") else (200, {"code": 0}))
    env.publish().feed(2.5)
    r = env.http.get("/live/test/hls.m3u8?token=bad")
    assert r.status == 401 and b"no ticket" in r.body and r.cookie() is None
    assert env.hls_sessions() == []
    env.http.get("/live/test/hls.m3u8?token=bad")
    assert len(env.client.to("/on_play")) == 2
    assert env.client.to("/on_flow_report") == []  # play never started


def test_client_leaving_during_the_gate_closes_the_session(make: Callable[..., Env]) -> None:
    env = make(*HOOKS, reply=lambda url, body: None if url.endswith("/on_play") else (200, {"code": 0}))
    env.publish().feed(2.5)
    ex = env.http.request("/live/test/hls.m3u8")
    assert len(env.hls_sessions()) == 1
    ex.close()
    assert env.hls_sessions() == []
    assert env.client.held[0].called  # the hook call was cancelled


def test_hls_muxer_does_not_keep_a_stream_alive(make: Callable[..., Env]) -> None:
    env = make("hook.enable=1", "hook.on_stream_none_reader=http://h/none", "general.streamNoneReaderDelayMS=5000")
    pub = env.publish()
    pub.feed(6)
    assert len(env.client.to("/none")) == 1  # the HLS muxer is a reader, but no viewer
    r = env.http.get("/live/test/hls.m3u8")
    pub.feed(30)
    assert len(env.client.to("/none")) == 1  # a viewer holds it
    del r
    pub.feed(40)  # the viewer's 60 s ran out during this: the timer starts again
    assert len(env.client.to("/none")) == 2


def test_get_media_list_counts_hls_viewers(make: Callable[..., Env]) -> None:
    from mediasrv.hooks.zlm import media_source_json

    env = make()
    pub = env.publish()
    pub.feed(2.5)
    env.http.get("/live/test/hls.m3u8?a=1")
    env.http.get("/live/test/hls.m3u8?a=2")
    item = media_source_json(pub.stream, "hls", env.clock.seconds())
    assert item["readerCount"] == 2 and item["totalReaderCount"] == 2 and item["isRecordingHLS"] is True
    muxer = next(r for r in pub.stream.readers if getattr(r, "schema", "") == "hls")
    assert {s.id for s in muxer.viewer_sessions()} == {s.id for s in env.hls_sessions()}


def test_srs_on_hls_per_segment(make: Callable[..., Env]) -> None:
    env = make("http_hooks.enabled=1", "http_hooks.on_hls=http://h/srs/on_hls")
    env.publish().feed(4.5)
    calls = env.client.to("/srs/on_hls")
    assert [c["seq_no"] for c in calls] == [0, 1]
    c = calls[1]
    assert c["action"] == "on_hls" and c["app"] == "live" and c["stream"] == "test"
    assert c["duration"] == 2.0 and c["url"] == "live/test/1.ts" and c["m3u8_url"] == "live/test/hls.m3u8"
    assert c["stream_url"] == "/live/test"


def test_segments_written_to_disk_when_asked(make: Callable[..., Env], tmp_path: Path) -> None:
    env = make(f"hls.filePath={tmp_path}", "hls.segNum=2", "hls.segRetain=1", "hook.enable=1",
               "hook.on_record_ts=http://h/on_record_ts")
    pub = env.publish()
    pub.feed(10.5)
    folder = tmp_path / "live" / "test"
    assert sorted(p.name for p in folder.iterdir()) == ["2.ts", "3.ts", "4.ts", "hls.m3u8"]
    assert segments_of((folder / "hls.m3u8").read_text()) == ["3.ts", "4.ts"]
    assert (folder / "4.ts").read_bytes() == env.hls.playlists[pub.stream.key].find(4).data  # type: ignore[union-attr]
    rec = env.client.to("/on_record_ts")[-1]
    assert rec["file_name"] == "4.ts" and rec["file_path"] == str((folder / "4.ts").resolve())
    assert rec["time_len"] == 2.0 and rec["file_size"] == (folder / "4.ts").stat().st_size
    pub.stop()
    env.clock.advance(env.hls.linger_seconds + 1)
    assert not any(folder.iterdir())
