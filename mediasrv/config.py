"""Typed, validated configuration.

The INI text in :mod:`mediasrv._defaults` is the single source of defaults.
Loading layers, in order: the embedded defaults, the ``--config`` file, then
each ``--set section.key=value``.  Every value is checked against the type of
its dataclass field; any problem raises :class:`ConfigError`, whose ``str`` is
one line naming the file, the key and the problem (the contract, §1).
"""

from __future__ import annotations

import configparser
import dataclasses
import ipaddress
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from mediasrv._defaults import DEFAULT_INI

DEFAULT_VHOST = "__defaultVhost__"


class ConfigError(Exception):
    """A configuration problem, reported as ``<source>: [section] key: problem``."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        self.source = source
        self.key = key
        self.problem = problem
        super().__init__(f"{source}: {key}: {problem}" if key else f"{source}: {problem}")


def _port(value: int) -> str | None:
    return None if 0 <= value <= 65535 else f"{value} is not a port number (0-65535)"


def _positive(value: float) -> str | None:
    return None if value > 0 else f"{value} must be greater than zero"


def _not_negative(value: float) -> str | None:
    return None if value >= 0 else f"{value} must not be negative"


def _policy(value: str) -> str | None:
    return None if value in ("allow", "deny") else f"{value!r} must be 'allow' or 'deny'"


def _overflow(value: str) -> str | None:
    return None if value in ("drop_oldest", "drop_newest") else f"{value!r} must be 'drop_oldest' or 'drop_newest'"


def _ip(value: str) -> str | None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return f"{value!r} is not an IP address"
    return None


def _ip_ranges(value: str) -> str | None:
    try:
        parse_ip_ranges(value)
    except ValueError as e:
        return str(e)
    return None


def parse_ip_ranges(
    text: str,
) -> list[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ipaddress.IPv4Address | ipaddress.IPv6Address]]:
    """Parse ZLMediaKit's ``allow_ip_range``: comma-separated addresses or ``a-b`` ranges."""
    ranges = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        lo_text, _, hi_text = part.partition("-")
        try:
            lo = ipaddress.ip_address(lo_text.strip())
            hi = ipaddress.ip_address(hi_text.strip()) if hi_text else lo
        except ValueError:
            raise ValueError(f"{part!r} is not an address or an address range") from None
        if lo.version != hi.version or lo > hi:  # type: ignore[operator]
            raise ValueError(f"{part!r} is not an address range")
        ranges.append((lo, hi))
    return ranges


@dataclass(frozen=True)
class General:
    mediaServerId: str
    listen_ip: str = field(metadata={"check": _ip})
    flowThreshold: int = field(metadata={"check": _not_negative})
    streamNoneReaderDelayMS: int = field(metadata={"check": _not_negative})
    maxStreamWaitMS: int = field(metadata={"check": _not_negative})
    enableVhost: bool = field()
    maxConnections: int = field(metadata={"check": _positive})
    maxPlayerQueueBytes: int = field(metadata={"check": _positive})
    maxGopCacheBytes: int = field(metadata={"check": _positive})
    maxNameLength: int = field(metadata={"check": _positive})


@dataclass(frozen=True)
class Rtmp:
    port: int = field(metadata={"check": _port})
    sslport: int = field(metadata={"check": _port})
    handshakeSecond: float = field(metadata={"check": _positive})
    keepAliveSecond: float = field(metadata={"check": _positive})
    maxMessageSize: int = field(metadata={"check": _positive})
    maxMessageSizeBeforePublish: int = field(metadata={"check": _positive})
    maxBufferedBytes: int = field(metadata={"check": _positive})


@dataclass(frozen=True)
class Rtsp:
    port: int = field(metadata={"check": _port})
    sslport: int = field(metadata={"check": _port})
    authBasic: bool = field()
    handshakeSecond: float = field(metadata={"check": _positive})
    keepAliveSecond: float = field(metadata={"check": _positive})


@dataclass(frozen=True)
class Http:
    port: int = field(metadata={"check": _port})
    sslport: int = field(metadata={"check": _port})
    rootPath: str = field()
    allow_ip_range: str = field(metadata={"check": _ip_ranges})
    allow_cross_domains: bool = field()
    dirMenu: bool = field()
    forwarded_ip_header: str = field()


@dataclass(frozen=True)
class Ssl:
    certFile: str
    keyFile: str


@dataclass(frozen=True)
class Hls:
    segDur: float = field(metadata={"check": _positive})
    segNum: int = field(metadata={"check": _positive})
    segRetain: int = field(metadata={"check": _not_negative})
    filePath: str = field()


@dataclass(frozen=True)
class Record:
    filePath: str
    fileSecond: int = field(metadata={"check": _positive})


@dataclass(frozen=True)
class Api:
    secret: str
    nimble_token: str


@dataclass(frozen=True)
class Protocol:
    enable_hls: bool
    enable_rtsp: bool
    enable_rtmp: bool
    enable_mp4: bool
    auto_close: bool
    continue_push_ms: int = field(metadata={"check": _not_negative})


@dataclass(frozen=True)
class Shell:
    port: int = field(metadata={"check": _port})
    interface: str = field(metadata={"check": _ip})
    users: str = field()
    python: bool = field()
    maxPendingLoginsPerIp: int = field(metadata={"check": _positive})
    maxConcurrentChecks: int = field(metadata={"check": _positive})


@dataclass(frozen=True)
class Hook:
    enable: bool
    timeoutSec: float = field(metadata={"check": _positive})
    alive_interval: float = field(metadata={"check": _positive})
    retry: int = field(metadata={"check": _not_negative})
    retry_delay: float = field(metadata={"check": _not_negative})
    on_failure: str = field(metadata={"check": _policy})
    stream_changed_schemas: str = field()
    outbox: str = field()
    outbox_max: int = field(metadata={"check": _positive})
    outbox_overflow: str = field(metadata={"check": _overflow})
    on_publish: str = field()
    on_play: str = field()
    on_flow_report: str = field()
    on_http_access: str = field()
    on_rtsp_realm: str = field()
    on_rtsp_auth: str = field()
    on_shell_login: str = field()
    on_stream_changed: str = field()
    on_stream_none_reader: str = field()
    on_stream_not_found: str = field()
    on_record_mp4: str = field()
    on_record_ts: str = field()
    on_server_started: str = field()
    on_server_exited: str = field()
    on_server_keepalive: str = field()


@dataclass(frozen=True)
class HttpHooks:
    enabled: bool
    timeoutSec: float = field(metadata={"check": _positive})
    on_failure: str = field(metadata={"check": _policy})
    on_connect: str = field()
    on_close: str = field()
    on_publish: str = field()
    on_unpublish: str = field()
    on_play: str = field()
    on_stop: str = field()
    on_dvr: str = field()
    on_hls: str = field()


@dataclass(frozen=True)
class Notify:
    notify_url: str
    timeoutSec: float = field(metadata={"check": _positive})
    on_failure: str = field(metadata={"check": _policy})


@dataclass(frozen=True)
class Oclp:
    oclp_proc: str
    oclp_publish: str
    oclp_play: str
    oclp_stream: str
    oclp_pull: str
    oclp_push: str
    oclp_meta: str
    oclp_record: str
    update_interval: float = field(metadata={"check": _positive})
    timeout: float = field(metadata={"check": _positive})
    on_failure: str = field(metadata={"check": _policy})


@dataclass(frozen=True)
class Config:
    general: General
    rtmp: Rtmp
    rtsp: Rtsp
    http: Http
    ssl: Ssl
    hls: Hls
    record: Record
    api: Api
    protocol: Protocol
    shell: Shell
    hook: Hook
    http_hooks: HttpHooks
    notify: Notify
    oclp: Oclp
    source: str = "(built-in defaults)"

    def get(self, dotted: str) -> Any:
        """Value of ``section.key``; KeyError when there is no such key."""
        section, _, key = dotted.partition(".")
        sec = getattr(self, section, None)
        if not dataclasses.is_dataclass(sec) or key not in {f.name for f in fields(sec)}:
            raise KeyError(dotted)
        return getattr(sec, key)

    def as_flat_dict(self) -> dict[str, Any]:
        """``{"section.key": value}`` for every key (on_server_started, getServerConfig)."""
        out: dict[str, Any] = {}
        for sec_field in fields(self):
            if sec_field.name == "source":
                continue
            sec = getattr(self, sec_field.name)
            for f in fields(sec):
                out[f"{sec_field.name}.{f.name}"] = getattr(sec, f.name)
        return out


_SECTIONS: dict[str, type[Any]] = {
    f.name: typing.get_type_hints(Config)[f.name] for f in fields(Config) if f.name != "source"
}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _convert(section: str, key: str, raw: str, source: str) -> Any:
    cls = _SECTIONS[section]
    hints = typing.get_type_hints(cls)
    kind = hints[key]
    where = f"[{section}] {key}"
    text = raw.strip()
    value: Any
    if kind is bool:
        low = text.lower()
        if low not in _TRUE | _FALSE:
            raise ConfigError(source, where, f"{raw!r} is not a boolean (use 0 or 1)")
        value = low in _TRUE
    elif kind is int:
        try:
            value = int(text, 10)
        except ValueError:
            raise ConfigError(source, where, f"{raw!r} is not an integer") from None
    elif kind is float:
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(source, where, f"{raw!r} is not a number") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise ConfigError(source, where, f"{raw!r} is not a finite number")
    else:
        value = text
    check = {f.name: f for f in fields(cls)}[key].metadata.get("check")
    if check is not None:
        problem = check(value)
        if problem:
            raise ConfigError(source, where, problem)
    return value


def _read_ini(text: str, source: str) -> dict[str, dict[str, str]]:
    parser = configparser.ConfigParser(interpolation=None, strict=True, inline_comment_prefixes=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # ZLMediaKit keys are case-sensitive
    try:
        parser.read_string(text, source=source)
    except configparser.Error as e:
        line = getattr(e, "lineno", None)
        detail = type(e).__name__
        msg = e.message.splitlines()[0] if hasattr(e, "message") else str(e).splitlines()[0]
        raise ConfigError(source, f"line {line}" if line else "", f"{detail}: {msg}") from None
    return {s: dict(parser.items(s)) for s in parser.sections()}


def load(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Build the configuration: defaults, then the file at ``path``, then ``overrides``.

    ``overrides`` are ``section.key=value`` strings (``--set``).
    """
    raw: dict[str, dict[str, tuple[str, str]]] = {
        sec: {k: (v, "(built-in defaults)") for k, v in keys.items()}
        for sec, keys in _read_ini(DEFAULT_INI, "(built-in defaults)").items()
    }
    source = "(built-in defaults)"
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(source, "", f"cannot read: {e.strerror or e}") from None
        except UnicodeDecodeError:
            raise ConfigError(source, "", "not UTF-8 text") from None
        for sec, keys in _read_ini(text, source).items():
            if sec not in raw:
                raise ConfigError(source, f"[{sec}]", "unknown section")
            for k, v in keys.items():
                if k not in raw[sec]:
                    raise ConfigError(source, f"[{sec}] {k}", "unknown key")
                raw[sec][k] = (v, source)
    for item in overrides:
        dotted, eq, value = item.partition("=")
        sec, dot, k = dotted.strip().partition(".")
        if not eq or not dot:
            raise ConfigError("--set", dotted.strip() or item, "expected section.key=value")
        if sec not in raw:
            raise ConfigError("--set", f"[{sec}]", "unknown section")
        if k not in raw[sec]:
            raise ConfigError("--set", f"[{sec}] {k}", "unknown key")
        raw[sec][k] = (value, "--set")
    sections: dict[str, Any] = {}
    for sec, cls in _SECTIONS.items():
        values = {k: _convert(sec, k, v, src) for k, (v, src) in raw[sec].items()}
        sections[sec] = cls(**values)
    cfg = Config(**sections, source=source)
    cross_checks(cfg)
    return cfg


def cross_checks(cfg: Config) -> None:
    """Checks between keys (raise ConfigError); at load and for live changes."""
    if (cfg.rtmp.sslport or cfg.rtsp.sslport or cfg.http.sslport) and not cfg.ssl.certFile:
        raise ConfigError(cfg.source, "[ssl] certFile", "required when an sslport is set")
    if cfg.rtmp.maxBufferedBytes < cfg.rtmp.maxMessageSize:
        raise ConfigError(cfg.source, "[rtmp] maxBufferedBytes",
                          f"{cfg.rtmp.maxBufferedBytes} is less than [rtmp] maxMessageSize"
                          f" ({cfg.rtmp.maxMessageSize}): no large message could ever complete")


def with_value(cfg: Config, dotted: str, value: str) -> Config:
    """A copy of ``cfg`` with one key changed (validated like ``--set``)."""
    sec, _, key = dotted.partition(".")
    if sec not in _SECTIONS or key not in {f.name for f in fields(_SECTIONS[sec])}:
        raise ConfigError("set", dotted, "unknown key")
    new_sec = dataclasses.replace(getattr(cfg, sec), **{key: _convert(sec, key, value, "set")})
    return dataclasses.replace(cfg, **{sec: new_sec})
