"""``twistd mediasrv``: options and makeService (the only place that imports the reactor)."""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger
from twisted.python import usage

from mediasrv import config
from mediasrv.server import MediaServer

log = Logger()


class Options(usage.Options):
    synopsis = "[--config FILE] [--set section.key=value ...]"
    longdesc = "Live media server: RTMP, RTSP, HTTP-FLV, WS-FLV and HLS, decisions made by your web hooks."
    optParameters = [["config", "c", None, "INI configuration file (default: the built-in defaults)"]]

    def __init__(self) -> None:
        super().__init__()
        self["set"] = []

    def opt_set(self, value: str) -> None:
        """Override one configuration key: --set rtmp.port=1936 (repeatable)."""
        self["set"].append(value)


def makeService(options: Options) -> MediaServer:
    from twisted.internet import reactor

    r: Any = reactor
    try:
        cfg = config.load(options["config"], options["set"])
        ignored = config.ignored_keys_line(cfg)
        if ignored:
            log.warn("mediasrv: {line}", line=ignored)
        return MediaServer(cfg, r)
    except config.ConfigError as e:
        raise SystemExit(f"mediasrv: {e}") from None
