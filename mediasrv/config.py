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
import re
import typing
import urllib.parse
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from mediasrv._defaults import DEFAULT_INI
from mediasrv._zlmediakit_keys import ZLMEDIAKIT_KEYS

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


def _ca_file(value: str) -> str | None:
    if not value:
        return None
    try:
        with open(value, "rb"):
            return None
    except OSError as e:
        return f"cannot read {value!r}: {e.strerror or e}"


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
    workers: str = field(metadata={"check": lambda v: _workers(v)})
    worker_port_offset: int = field(metadata={"check": _port})
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
    outbox_max_bytes: int = field(metadata={"check": _positive})
    outbox_max_age: float = field(metadata={"check": _positive})
    outbox_connections: int = field(metadata={"check": _positive})
    outbox_overflow: str = field(metadata={"check": _overflow})
    ssl_verify: bool = field()
    ssl_ca_file: str = field(metadata={"check": _ca_file})
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
    retry: int = field(metadata={"check": _not_negative})
    retry_delay: float = field(metadata={"check": _not_negative})
    on_failure: str = field(metadata={"check": _policy})
    ssl_verify: bool = field()
    ssl_ca_file: str = field(metadata={"check": _ca_file})
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
    retry: int = field(metadata={"check": _not_negative})
    retry_delay: float = field(metadata={"check": _not_negative})
    on_failure: str = field(metadata={"check": _policy})
    ssl_verify: bool = field()
    ssl_ca_file: str = field(metadata={"check": _ca_file})


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
    retry: int = field(metadata={"check": _not_negative})
    retry_delay: float = field(metadata={"check": _not_negative})
    on_failure: str = field(metadata={"check": _policy})
    ssl_verify: bool = field()
    ssl_ca_file: str = field(metadata={"check": _ca_file})


# --- [cluster] and general.workers (scale-out) ------------------------------------------

def _workers(value: str) -> str | None:
    if value == "auto" or (value.isdigit() and int(value) >= 1):
        return None
    return f"{value!r} must be a number of worker processes (1 or more) or 'auto'"


@dataclass(frozen=True)
class RedisUrl:
    """Where the cluster's Redis is: ``redis://[user:password@]host[:port][/db]``, ``rediss://`` for TLS."""

    host: str
    port: int
    db: int
    password: str | None
    username: str | None
    tls: bool

    def redacted(self) -> str:
        """The URL for log lines: no password."""
        scheme = "rediss" if self.tls else "redis"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}/{self.db}"


def parse_redis_url(text: str, password: str = "") -> RedisUrl:
    """Parse ``cluster.redis``; ``password`` (``cluster.redis_password``) applies when the URL has none.

    ValueError (one line) when it is not such a URL."""
    try:
        u = urllib.parse.urlsplit(text.strip())
        port = u.port
    except ValueError as e:
        raise ValueError(f"{text!r} is not a redis:// URL: {e}") from None
    if u.scheme not in ("redis", "rediss") or not u.hostname:
        raise ValueError(f"{text!r} is not a redis://host:port/db or rediss:// URL")
    path = u.path.strip("/")
    if path and not path.isdigit():
        raise ValueError(f"{text!r}: the database {path!r} is not a number")
    if u.query or u.fragment:
        raise ValueError(f"{text!r}: no query or fragment expected")
    url_password = urllib.parse.unquote(u.password) if u.password else None
    username = urllib.parse.unquote(u.username) if u.username else None
    return RedisUrl(host=u.hostname, port=port or 6379, db=int(path or 0),
                    password=url_password if url_password is not None else (password or None),
                    username=username, tls=u.scheme == "rediss")


ORIGIN_SCHEMES = ("rtmp", "rtmps", "rtsp", "rtsps", "http", "https")
# ZLMediaKit formats each template with snprintf(fmt, app, stream): only %s (twice at most) and %%
_PRINTF = re.compile(r"%(.)", re.S)


def parse_origin_urls(text: str) -> list[str]:
    """``cluster.origin_url``: templates separated by ``;`` (blanks dropped, as ZLMediaKit).

    ValueError (one line) for a template with another scheme or printf directive."""
    urls = [u.strip() for u in text.split(";") if u.strip()]
    for url in urls:
        scheme = url.partition("://")[0].lower()
        if "://" not in url or scheme not in ORIGIN_SCHEMES:
            raise ValueError(f"{url!r} must start with one of {', '.join(s + '://' for s in ORIGIN_SCHEMES)}")
        directives = [m.group(1) for m in _PRINTF.finditer(url.replace("%%", ""))]
        if any(d != "s" for d in directives) or len(directives) > 2:
            raise ValueError(f"{url!r}: only %s (app, then stream) and %% may follow a %")
    return urls


def _redis(value: str) -> str | None:
    if not value:
        return None
    try:
        parse_redis_url(value)
    except ValueError as e:
        return str(e)
    return None


def _origin_urls(value: str) -> str | None:
    try:
        parse_origin_urls(value)
    except ValueError as e:
        return str(e)
    return None


def _retry_count(value: int) -> str | None:
    return None if value >= -1 else f"{value} must be -1 (forever) or more"


@dataclass(frozen=True)
class Cluster:
    redis: str = field(metadata={"check": _redis})
    redis_password: str = field()
    redis_ca: str = field()
    redis_timeout_ms: int = field(metadata={"check": _positive})
    ttl_ms: int = field(metadata={"check": lambda v: None if v >= 300 else f"{v} must be 300 or more"})
    node_id: str = field()
    advertise_url: str = field()
    advertise_host: str = field()
    secret: str = field()
    origin_url: str = field(metadata={"check": _origin_urls})
    timeout_sec: float = field(metadata={"check": _positive})
    retry_count: int = field(metadata={"check": _retry_count})


# ----------------------------------------------------------------------------------------


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
    cluster: Cluster
    source: str = "(built-in defaults)"
    # ZLMediaKit keys the file held that mediasrv does not implement ("section.key";
    # "[section]" for a whole section mediasrv lacks): see ignored_keys_line
    ignored: tuple[str, ...] = ()

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
            if sec_field.name in _NOT_SECTIONS:
                continue
            sec = getattr(self, sec_field.name)
            for f in fields(sec):
                out[f"{sec_field.name}.{f.name}"] = getattr(sec, f.name)
        return out


_NOT_SECTIONS = ("source", "ignored")
_SECTIONS: dict[str, type[Any]] = {
    f.name: typing.get_type_hints(Config)[f.name] for f in fields(Config) if f.name not in _NOT_SECTIONS
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


def _is_zlmediakit_key(section: str, key: str) -> bool:
    return key in ZLMEDIAKIT_KEYS.get(section, frozenset())


def load(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Build the configuration: defaults, then the file at ``path``, then ``overrides``.

    ``overrides`` are ``section.key=value`` strings (``--set``).  A key of a
    stock ZLMediaKit config.ini that mediasrv does not implement is not an
    error in the file: it is recorded in ``Config.ignored`` (one warning line,
    :func:`ignored_keys_line`); any other unknown section or key is.
    """
    raw: dict[str, dict[str, tuple[str, str]]] = {
        sec: {k: (v, "(built-in defaults)") for k, v in keys.items()}
        for sec, keys in _read_ini(DEFAULT_INI, "(built-in defaults)").items()
    }
    source = "(built-in defaults)"
    ignored: list[str] = []
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(source, "", f"cannot read: {e.strerror or e}") from None
        except UnicodeDecodeError:
            raise ConfigError(source, "", "not UTF-8 text") from None
        for sec, keys in _read_ini(text, source).items():
            if sec not in raw and sec not in ZLMEDIAKIT_KEYS:
                raise ConfigError(source, f"[{sec}]", "unknown section")
            if sec not in raw:
                typo = next((k for k in keys if not _is_zlmediakit_key(sec, k)), None)
                if typo is not None:
                    raise ConfigError(source, f"[{sec}] {typo}", "unknown key")
                ignored.append(f"[{sec}]")
                continue
            for k, v in keys.items():
                if k in raw[sec]:
                    raw[sec][k] = (v, source)
                elif _is_zlmediakit_key(sec, k):
                    ignored.append(f"{sec}.{k}")
                else:
                    raise ConfigError(source, f"[{sec}] {k}", "unknown key")
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
    if ignored:
        # a ZLMediaKit config.ini names ZLMediaKit's sslport without a
        # certificate (ZLMediaKit loads its bundled default.pem): that listener
        # stays off, and the warning line says so
        for sec in ("http", "rtmp", "rtsp"):
            port, port_src = raw[sec]["sslport"]
            if port_src == source and port.strip() not in ("", "0") and not raw["ssl"]["certFile"][0].strip():
                raw[sec]["sslport"] = ("0", source)
                ignored.append(f"{sec}.sslport={port.strip()} (no [ssl] certFile)")
    sections: dict[str, Any] = {}
    for sec, cls in _SECTIONS.items():
        values = {k: _convert(sec, k, v, src) for k, (v, src) in raw[sec].items()}
        sections[sec] = cls(**values)
    cfg = Config(**sections, source=source, ignored=tuple(ignored))
    cross_checks(cfg)
    return cfg


def ignored_keys_line(cfg: Config) -> str | None:
    """The one warning line naming the ZLMediaKit keys the file held that
    mediasrv does not implement (None when there are none)."""
    if not cfg.ignored:
        return None
    return (f"{cfg.source}: {len(cfg.ignored)} ZLMediaKit setting(s) not implemented by mediasrv, ignored: "
            + ", ".join(cfg.ignored))


def cross_checks(cfg: Config) -> None:
    """Checks between keys (raise ConfigError); at load and for live changes."""
    if (cfg.rtmp.sslport or cfg.rtsp.sslport or cfg.http.sslport) and not cfg.ssl.certFile:
        raise ConfigError(cfg.source, "[ssl] certFile", "required when an sslport is set")
    if cfg.cluster.redis and not cfg.cluster.secret:
        raise ConfigError(cfg.source, "[cluster] secret", "required when [cluster] redis is set (signs relays between nodes)")
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
