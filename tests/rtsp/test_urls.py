"""RTSP request URLs (rtsp/urls.py): the stream a URL names, the track a SETUP
names, and the access request for a play or publish."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from mediasrv.core.registry import StreamRegistry
from mediasrv.core.sessions import Role, SessionTable
from mediasrv.hooks.model import Action
from mediasrv.rtsp.reply import RtspError
from mediasrv.rtsp.urls import access_request, base_url, strip_url, target, track_control


@pytest.mark.parametrize("uri, expected", [
    ("rtsp://h:8554/live/test", ("h", "live", "test", "")),
    ("rtsp://h/live/test?token=a&b=c", ("h", "live", "test", "token=a&b=c")),
    ("RTSPS://h/live/cam/1/trackID=0", ("h", "live", "cam/1", "")),  # a stream name with a slash
    ("rtsp://h/live/test/streamid=1", ("h", "live", "test", "")),
    ("rtsp://h/live/a%20b/", ("h", "live", "a b", "")),
])
def test_target(uri: str, expected: tuple[str, str, str, str]) -> None:
    assert target(uri) == expected


@pytest.mark.parametrize("uri, status", [("http://h/live/test", 400), ("rtsp://h/live", 404), ("rtsp://h/", 404)])
def test_target_refusals(uri: str, status: int) -> None:
    with pytest.raises(RtspError) as caught:
        target(uri)
    assert caught.value.status == status


def test_track_control_and_base_url() -> None:
    assert track_control("rtsp://h/live/test/trackID=1") == "trackID=1"
    assert track_control("rtsp://h/live/test?token=x/trackID=1") == "trackID=1"  # Content-Base ignored
    assert track_control("rtsp://h/live/test/streamid=0/") == "streamid=0"
    assert base_url("rtsp://h:1/live/test/?token=x") == "rtsp://h:1/live/test/"
    assert strip_url("RTSP://H:1/live/test/?token=x") == "rtsp://h:1/live/test"


def test_access_request_names_the_stream_and_fills_the_session() -> None:
    registry = StreamRegistry(Clock(), enable_vhost=True)
    session = SessionTable().open("rtsps", "10.0.0.9", 40000, 8322, 0.0)
    req = access_request(Action.PUBLISH, "rtsps://cam.example:8322/live/test?vhost=v1&token=t", session, registry,
                         "rtsps", 8322)
    assert (req.action, req.schema, req.protocol) == (Action.PUBLISH, "rtsp", "rtsps")
    assert (req.vhost, req.app, req.stream, req.params) == ("v1", "live", "test", "vhost=v1&token=t")
    assert (req.ip, req.port, req.session_id) == ("10.0.0.9", 40000, session.id)
    assert req.tc_url == "rtsps://cam.example:8322/live"
    assert (session.vhost, session.app, session.stream, session.role) == ("v1", "live", "test", Role.PUBLISHER)
    play = access_request(Action.PLAY, "rtsp://cam.example/live/test", session, registry, "rtsp", 554)
    assert play.vhost == "cam.example" and session.role is Role.PLAYER


def test_without_vhosts_every_stream_is_in_the_default_one() -> None:
    registry = StreamRegistry(Clock(), enable_vhost=False)
    session = SessionTable().open("rtsp", "10.0.0.9", 40000, 554, 0.0)
    req = access_request(Action.PLAY, "rtsp://cam.example/live/test?vhost=v1", session, registry, "rtsp", 554)
    assert req.vhost == session.vhost == registry.key("", "live", "test").vhost
