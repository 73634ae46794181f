"""Relay clients against a foreign origin: nginx with Debian's libnginx-mod-rtmp, started by the test
with a generated configuration on a free port (scripts/test.sh installs both packages).

nginx-rtmp is the reference RTMP server many deployments pull from and push
to; it ends a player's stream with a bare StreamEOF (``publish_notify`` is
off by default), which the pull must take as the end of the source.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue

from mediasrv.relay.errors import SourceEnded, Stopped
from mediasrv.relay.factory import push_client
from mediasrv.relay.rtmp import RtmpPullClient
from mediasrv.relay.source import IteratorSource
from tests.relay.support import Recorder, check_pulled, until, video_span_ms
from tests.support.clients import FFPROBE, needs_ffmpeg, start_publisher, stop
from tests.support.media import load_flv, looped
from tests.support.server import free_port, wait_port

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
RTMP_MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")
needs_nginx_rtmp = pytest.mark.skipif(
    not (os.path.exists(NGINX) and RTMP_MODULE.exists()) and not os.environ.get("CI"),
    reason="nginx and libnginx-mod-rtmp not installed (scripts/test.sh installs them)")

pytestmark = [pytest.mark.interop, needs_ffmpeg, needs_nginx_rtmp]

CLOCK: Any = reactor

CONF = """\
load_module {module};
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 256; }}
rtmp {{
    server {{
        listen 127.0.0.1:{port};
        chunk_size 4096;
        application live {{
            live on;
        }}
    }}
}}
"""


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``rtmp://127.0.0.1:<port>`` of a private nginx-rtmp."""
    workdir = tmp_path_factory.mktemp("nginx")
    port = free_port()
    conf = workdir / "nginx.conf"
    conf.write_text(CONF.format(module=RTMP_MODULE, dir=workdir, port=port))
    with open(workdir / "stderr.log", "wb") as log:
        proc = subprocess.Popen([NGINX, "-p", str(workdir), "-e", str(workdir / "error.log"), "-c", str(conf)],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_port(port, proc)
        yield f"rtmp://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGQUIT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("digest", [False, True], ids=["plain-handshake", "digest-handshake"])
@pytest_twisted.ensureDeferred
async def test_pull_from_nginx_rtmp(nginx: str, digest: bool) -> None:
    name = f"cam{int(digest)}"
    pub = start_publisher(f"{nginx}/live/{name}", size="320x240", bitrate="300k")
    try:
        sink = Recorder()
        client = RtmpPullClient(f"{nginx}/live/{name}", sink, CLOCK, timeout_sec=10, digest_handshake=digest)
        await client.start()
        await until(lambda: video_span_ms(sink) >= 2500, 15, "2.5 s of video")
        check_pulled(sink, width=320, height=240, fps=25, sample_rate=44100, channels=1, min_span_ms=2500)
    finally:
        stop(pub)
    gone = CLOCK.seconds()
    reason = await client.when_closed()
    assert isinstance(reason, SourceEnded) and "StreamEOF" in str(reason)
    assert CLOCK.seconds() - gone < 2.0


@pytest_twisted.ensureDeferred
async def test_push_to_nginx_rtmp(nginx: str) -> None:
    tracks, frames = load_flv()
    source = IteratorSource(list(tracks.values()), looped(frames, 8), CLOCK)
    client = push_client(f"{nginx}/live/pushed", source, CLOCK)
    await client.start()
    out, err, code = await getProcessOutputAndValue(
        FFPROBE or "ffprobe", ["-v", "error", "-show_entries", "stream=codec_type,codec_name,width,height",
                               "-of", "json", f"{nginx}/live/pushed"])
    assert code == 0, err.decode(errors="replace")
    streams = {s["codec_type"]: s for s in json.loads(out)["streams"]}
    assert streams["video"]["codec_name"] == "h264"
    assert (streams["video"]["width"], streams["video"]["height"]) == (1280, 720)
    assert streams["audio"]["codec_name"] == "aac"
    client.stop()
    assert isinstance(await client.when_closed(), Stopped)
