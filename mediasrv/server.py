"""MediaServer: the MultiService ``twistd mediasrv`` runs, one child per listener."""

from __future__ import annotations

import sys
from typing import Any, NoReturn

from twisted.application import strports
from twisted.application.service import MultiService
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from mediasrv import __version__
from mediasrv.config import Config
from mediasrv.core.context import Core
from mediasrv.hooks.client import HookClient
from mediasrv.hooks.outbox import Outbox
from mediasrv.hooks.service import hooks_configured
from mediasrv.http.hls import HlsService
from mediasrv.http.site import build_site
from mediasrv.record.recorder import RecordService
from mediasrv.rtmp.protocol import RtmpFactory
from mediasrv.rtsp.protocol import RtspFactory
from mediasrv.shell.realm import ShellFactory

log = Logger()


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


class StartupError(Exception):
    """A listener could not start; ``str`` is the one line for the operator."""


def _one_line_hook(previous: Any) -> Any:
    def hook(kind: type[BaseException], value: BaseException, tb: Any) -> None:
        if isinstance(value, StartupError):
            err = sys.__stderr__
            if err is not None:
                err.write(f"{value}\n")
                err.flush()
            return
        previous(kind, value, tb)

    return hook


def _startup_failure(line: str) -> NoReturn:
    """Stop start-up with one line in the log and on stderr, and exit status 1.

    An Exception (not SystemExit) is what twistd reports through its daemon
    status pipe -- with SystemExit a daemonizing parent would wait forever --
    and the excepthook prints it as that one line instead of a traceback when
    it leaves ``twistd -n``."""
    log.critical("{line}", line=line)
    sys.excepthook = _one_line_hook(sys.excepthook)
    raise StartupError(line)


class MediaServer(MultiService):
    def __init__(self, config: Config, reactor: Any) -> None:
        super().__init__()
        self.config = config
        self.reactor = reactor
        clock: IReactorTime = reactor
        self.hook_client: HookClient | None = None
        outbox: Outbox | None = None
        if hooks_configured(config):
            self.hook_client = HookClient.from_config(reactor, config, user_agent=f"mediasrv/{__version__}")
            outbox = Outbox.from_config(config, self.hook_client, clock)
        self.core = Core.build(config, clock, self.hook_client, outbox)
        if outbox is not None:
            outbox.stampers["zlm"] = self.core.hooks.zlm.stamp
        # per-stream outputs that are not listeners: HLS muxing, MP4 recording
        self.hls = HlsService.of(self.core)
        self.record = RecordService.of(self.core)
        # listener name → (config key, interface, port) for error messages
        self.listeners: dict[str, tuple[str, str, int]] = {}
        ip = config.general.listen_ip
        if config.rtmp.port:
            self._listen("rtmp", "[rtmp] port", ip, config.rtmp.port, RtmpFactory(self.core))
        if config.rtmp.sslport:
            self._listen("rtmps", "[rtmp] sslport", ip, config.rtmp.sslport, RtmpFactory(self.core, secure=True),
                         tls=True)
        if config.rtsp.port:
            self._listen("rtsp", "[rtsp] port", ip, config.rtsp.port, RtspFactory(self.core, reactor))
        if config.rtsp.sslport:
            self._listen("rtsps", "[rtsp] sslport", ip, config.rtsp.sslport, RtspFactory(self.core, reactor, secure=True),
                         tls=True)
        if config.http.port:
            self._listen("http", "[http] port", ip, config.http.port, build_site(self.core))
        if config.http.sslport:
            self._listen("https", "[http] sslport", ip, config.http.sslport, build_site(self.core), tls=True)
        if config.shell.port:
            self._listen("shell", "[shell] port", config.shell.interface, config.shell.port,
                         ShellFactory(self.core, reactor, namespace={"server": self}))

    def _listen(self, name: str, key: str, ip: str, port: int, factory: Any, tls: bool = False) -> None:
        if tls:
            ssl = self.config.ssl
            desc = (f"ssl:{port}:interface={_escape(ip)}:certKey={_escape(ssl.certFile)}"
                    f":privateKey={_escape(ssl.keyFile or ssl.certFile)}")
        else:
            desc = f"tcp:{port}:interface={_escape(ip)}"
        svc = strports.service(desc, factory, reactor=self.reactor)
        svc.setName(name)
        svc.setServiceParent(self)
        self.listeners[name] = (key, ip, port)

    def privilegedStartService(self) -> None:
        for svc in self:
            try:
                svc.privilegedStartService()
            except CannotListenError as e:
                key, ip, port = self.listeners[svc.name]
                why = e.socketError.strerror if hasattr(e.socketError, "strerror") else e.socketError
                _startup_failure(f"mediasrv: {self.config.source}: {key}: cannot listen on {ip}:{port}: {why}")
            except Exception as e:  # e.g. a missing or bad TLS certificate
                key, ip, port = self.listeners.get(svc.name, ("", "", 0))
                _startup_failure(f"mediasrv: {self.config.source}: {key}: cannot start {svc.name}: {e}")

    def startService(self) -> None:
        super().startService()
        self.core.hooks.start()
        names = ", ".join(f"{n} {ip}:{port}" for n, (_, ip, port) in self.listeners.items())
        log.info("mediasrv serving: {names}", names=names)

    def stopService(self) -> Any:
        # End every session first so end events pair up, then close listeners.
        for session in self.core.sessions:
            session.kick("server shutting down")
        self.core.registry.close_all("server shutting down")
        self.hls.stop()
        # recordings being finished are complete (and announced) before the hooks stop
        d = self.record.stop()
        d.addBoth(lambda _: self.core.hooks.stop())
        d.addBoth(lambda _: super(MediaServer, self).stopService())
        if self.hook_client is not None:
            d.addBoth(lambda _: self.hook_client.close() if self.hook_client else None)
        if self.core.hooks.outbox is not None:
            d.addBoth(lambda _: self.core.hooks.outbox.close() if self.core.hooks.outbox else None)
        return d
