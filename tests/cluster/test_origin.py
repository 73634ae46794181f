"""ZLMediaKit's origin_url templates (WebHook.cpp getPullUrl / pullStreamFromOrigin)."""

from __future__ import annotations

import pytest

from mediasrv.cluster.origin import OriginAttempt, OriginRotation, expand, is_edge_request
from mediasrv.config import parse_origin_urls

V = "__defaultVhost__"


@pytest.mark.parametrize(("template", "params", "url"), [
    # snprintf(fmt, app, stream), then ?edge=1&vhost=...&<player params>
    ("rtmp://origin:1935/%s/%s", "token=1", f"rtmp://origin:1935/live/cam?edge=1&vhost={V}&token=1"),
    ("http://origin/%s/%s.live.flv", "", f"http://origin/live/cam.live.flv?edge=1&vhost={V}"),
    ("http://origin/%s/%s/hls.m3u8?k=v", "a=b", f"http://origin/live/cam/hls.m3u8?k=v&edge=1&vhost={V}&a=b"),
    ("rtsp://origin:554/%s", "", f"rtsp://origin:554/live?edge=1&vhost={V}"),  # one %s: the app only
    ("http://origin/100%%/%s/%s.flv", "", f"http://origin/100%/live/cam.flv?edge=1&vhost={V}"),
    ("rtmp://origin/$app/$stream", "", f"rtmp://origin/live/cam?edge=1&vhost={V}"),
    ("rtmp://$vhost.origin/$app/$stream", "", f"rtmp://{V}.origin/live/cam?edge=1&vhost={V}"),
])
def test_expand_as_zlmediakit(template: str, params: str, url: str) -> None:
    assert expand(template, V, "live", "cam", params) == url


def test_origin_url_list_parsing() -> None:
    assert parse_origin_urls(" rtmp://a/%s/%s ; ;http://b/%s/%s.live.flv;") == [
        "rtmp://a/%s/%s", "http://b/%s/%s.live.flv"]
    assert parse_origin_urls("") == []
    for bad, why in [("file:///etc/passwd", "must start with"), ("origin/%s/%s", "must start with"),
                     ("rtmp://a/%d/%s", "only %s"), ("rtmp://a/%s/%s/%s", "only %s"),
                     ("http://a/x%20y/%s", "only %s")]:
        with pytest.raises(ValueError, match=why):
            parse_origin_urls(bad)


def test_rotation_tries_each_origin_once_from_a_round_robin_start() -> None:
    r = OriginRotation(["rtmp://a/%s/%s", "rtmp://b/%s/%s", "rtmp://c/%s/%s"], timeout_sec=15)
    first = r.plan(V, "live", "cam")
    assert [a.url.split("/")[2] for a in first] == ["a", "b", "c"]
    assert all(a.timeout_sec == 5 for a in first)  # timeout_sec is the budget for all of them
    assert [a.url.split("/")[2] for a in r.plan(V, "live", "cam")] == ["b", "c", "a"]
    assert [a.url.split("/")[2] for a in r.plan(V, "live", "cam")] == ["c", "a", "b"]
    assert r.plan(V, "live", "cam")[0] == OriginAttempt(f"rtmp://a/live/cam?edge=1&vhost={V}", 5)
    assert not OriginRotation([], 15) and OriginRotation([], 15).plan(V, "a", "b") == []


def test_edge_requests() -> None:
    assert is_edge_request(f"edge=1&vhost={V}&token=x")
    assert is_edge_request("?edge=1")
    assert is_edge_request("token=x&edge=1")
    assert not is_edge_request("token=x") and not is_edge_request("edge=10")
