"""rtmps://, rtsps:// and https:// relays: a real mediasrv with TLS listeners (a self-signed certificate
made for the test), pulled and pushed to by the relay clients trusting that certificate; a client that
does not trust it fails with a clear TLS error."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.internet.utils import getProcessOutputAndValue

from mediasrv.relay.errors import ConnectFailed, Stopped
from mediasrv.relay.factory import pull_client, push_client
from mediasrv.relay.source import IteratorSource
from tests.relay.support import Recorder, check_pulled, until, video_span_ms
from tests.support.clients import FFPROBE, needs_ffmpeg, start_publisher, stop
from tests.support.media import load_flv, looped
from tests.support.rtmp_client import self_signed_pem
from tests.support.server import Server, free_port, running_server, wait_port

pytestmark = [pytest.mark.interop, needs_ffmpeg]

CLOCK: Any = reactor


@dataclass
class TlsSource:
    server: Server
    rtmps: str
    rtsps: str
    https: str
    cert_pem: bytes

    def tls(self) -> Any:
        return optionsForClientTLS("127.0.0.1", trustRoot=Certificate.loadPEM(self.cert_pem))


@pytest.fixture(scope="module")
def tls_source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsSource]:
    workdir = tmp_path_factory.mktemp("relay-tls")
    cert_pem, key_pem = self_signed_pem()
    (workdir / "cert.pem").write_bytes(cert_pem)
    (workdir / "key.pem").write_bytes(key_pem)
    ports = {name: free_port() for name in ("rtmp", "rtsp", "http")}
    with running_server(workdir, *(f"{name}.sslport={port}" for name, port in ports.items()),
                        f"ssl.certFile={workdir / 'cert.pem'}", f"ssl.keyFile={workdir / 'key.pem'}") as srv:
        for port in ports.values():
            wait_port(port, srv.proc)
        pub = start_publisher(f"{srv.rtmp}/live/cam", size="320x240", bitrate="300k")
        yield TlsSource(srv, f"rtmps://127.0.0.1:{ports['rtmp']}", f"rtsps://127.0.0.1:{ports['rtsp']}",
                        f"https://127.0.0.1:{ports['http']}", cert_pem)
        stop(pub)


@pytest.mark.parametrize("kind", ["rtmps", "rtsps", "https"])
@pytest_twisted.ensureDeferred
async def test_pull_over_tls(tls_source: TlsSource, kind: str) -> None:
    url = {"rtmps": f"{tls_source.rtmps}/live/cam", "rtsps": f"{tls_source.rtsps}/live/cam",
           "https": f"{tls_source.https}/live/cam.live.flv"}[kind]
    sink = Recorder()
    client = pull_client(url, sink, CLOCK, tls=tls_source.tls())
    await client.start()
    await until(lambda: video_span_ms(sink) >= 2000, 15, "2 s of video")
    check_pulled(sink, width=320, height=240, fps=25, sample_rate=44100, channels=1, min_span_ms=2000)
    client.stop()
    assert isinstance(await client.when_closed(), Stopped)


@pytest_twisted.ensureDeferred
async def test_push_over_rtmps(tls_source: TlsSource) -> None:
    tracks, frames = load_flv()
    client = push_client(f"{tls_source.rtmps}/live/pushed", IteratorSource(list(tracks.values()),
                                                                           looped(frames, 8), CLOCK),
                         CLOCK, tls=tls_source.tls())
    await client.start()
    out, err, code = await getProcessOutputAndValue(
        FFPROBE or "ffprobe", ["-v", "error", "-show_entries", "stream=codec_name", "-of", "json",
                               f"{tls_source.server.rtmp}/live/pushed"])
    assert code == 0, err.decode(errors="replace")
    assert sorted(s["codec_name"] for s in json.loads(out)["streams"]) == ["aac", "h264"]
    client.stop()


@pytest.mark.parametrize("kind", ["rtmps", "https"])
@pytest_twisted.ensureDeferred
async def test_an_untrusted_certificate_is_a_clear_connect_failure(tls_source: TlsSource, kind: str) -> None:
    url = f"{tls_source.rtmps}/live/cam" if kind == "rtmps" else f"{tls_source.https}/live/cam.live.flv"
    client = pull_client(url, Recorder(), CLOCK)
    with pytest.raises(ConnectFailed) as e:
        await client.start()
    assert "certificate verify failed" in str(e.value), str(e.value)
