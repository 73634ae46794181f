"""An in-memory server core with publishers, players and kickable sessions,
and an in-memory HTTP client for the admin routes (no sockets, task.Clock)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from treq.testing import StubTreq
from twisted.internet import defer
from twisted.internet.task import Clock

from mediasrv import config
from mediasrv.core.context import Core
from mediasrv.core.frames import Codec, MediaFrame, Track
from mediasrv.core.reader import StreamReader
from mediasrv.core.sessions import Role, SessionInfo
from mediasrv.core.stream import Stream
from mediasrv.hooks.zlm import session_schema

SECRET = "s3cr3t-api"


def make_core(*sets: str, clock: Clock | None = None) -> Core:
    cfg = config.load(overrides=[f"api.secret={SECRET}", *sets])
    return Core.build(cfg, clock or Clock())


class FakePlayer(StreamReader):
    def __init__(self, session: SessionInfo) -> None:
        super().__init__(1 << 20, session)
        self.schema = session_schema(session)  # as the real player of that protocol declares
        self.frames = 0

    def send_headers(self, stream: Stream) -> None:
        pass

    def send_frame(self, frame: MediaFrame) -> None:
        self.frames += 1


@dataclass
class Conn:
    """One fake client connection: its session row, and what kicked it."""

    core: Core
    session: SessionInfo
    player: FakePlayer | None = None
    kicked: list[str] = field(default_factory=list)

    def close(self, reason: str) -> None:
        self.kicked.append(reason)
        if self.player is not None:
            self.player.detach()
        if self.session.role is Role.PUBLISHER:
            stream = self.core.registry.find(self.core.registry.key(self.session.vhost, self.session.app,
                                                                       self.session.stream))
            if stream is not None:
                self.core.registry.unpublish(stream, self.session, abrupt=False)
        self.core.sessions.close(self.session)


def connect(core: Core, protocol: str, ip: str = "127.0.0.1", port: int = 50000, local_port: int = 1935) -> Conn:
    s = core.sessions.open(protocol, ip, port, local_port, core.clock.seconds())
    conn = Conn(core, s)
    s.closer = conn.close
    return conn


def publish(core: Core, app: str = "live", stream: str = "cam", protocol: str = "rtmp",
            params: str = "token=abc") -> tuple[Stream, Conn]:
    conn = connect(core, protocol, port=40000 + len(core.sessions))
    s = conn.session
    s.role, s.app, s.stream, s.params = Role.PUBLISHER, app, stream, params
    st = core.registry.publish(core.registry.key(s.vhost, app, stream), s)
    st.set_track(Track(Codec.H264, b"\x01", width=1280, height=720, fps=25))
    st.set_track(Track(Codec.AAC, b"\x12\x10", sample_rate=44100, channels=2))
    st.write(MediaFrame(Codec.H264, 0, 0, True, b"\x00" * 1000))
    s.bytes_in += 1500
    return st, conn


def play(core: Core, stream: Stream, protocol: str = "http-flv", ip: str = "127.0.0.1") -> Conn:
    conn = connect(core, protocol, ip=ip, port=50000 + len(core.sessions), local_port=8080)
    s = conn.session
    s.role, s.app, s.stream = Role.PLAYER, stream.key.app, stream.key.stream
    conn.player = FakePlayer(s)
    stream.add_reader(conn.player)
    s.bytes_out += 2000
    return conn


def shutdown(core: Core) -> None:
    """Close everything so no timer is left on the clock."""
    for s in list(core.sessions):
        s.kick("test over")
    core.registry.close_all("test over")


# -- HTTP -----------------------------------------------------------------------------------------------
def _result(d: defer.Deferred[Any]) -> Any:
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "request did not finish"
    if hasattr(out[0], "raiseException"):
        out[0].raiseException()
    return out[0]


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class Http:
    """``StubTreq`` over the site's root resource (peer address 127.0.0.1)."""

    def __init__(self, core: Core) -> None:
        from mediasrv.http.site import RootResource, admin_routes

        self.stub = StubTreq(RootResource(core, admin_routes(core)))

    def request(self, method: str, path: str, **kw: Any) -> Reply:
        d = self.stub.request(method, "http://127.0.0.1:8080" + path, **kw)
        self.stub.flush()
        resp = _result(d)
        body_d = self.stub.content(resp)
        self.stub.flush()
        body = _result(body_d)
        headers = {k.decode().lower(): v[-1].decode() for k, v in resp.headers.getAllRawHeaders()}
        return Reply(resp.code, headers, body)

    def get(self, path: str, **kw: Any) -> Reply:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Reply:
        return self.request("POST", path, **kw)

    def delete(self, path: str, **kw: Any) -> Reply:
        return self.request("DELETE", path, **kw)
