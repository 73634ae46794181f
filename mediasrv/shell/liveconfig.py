"""Changing configuration keys on the running server (shell ``config set``,
ZLMediaKit ``setServerConfig``).

The configuration is a frozen value: a change builds a validated copy
(``config.with_value``), swaps it into ``core.config``, and pushes it into the
few objects that keep their own copy (the stream registry, the hook
dialects).  Everything else reads ``core.config`` when it needs a value, so a
new value applies from the next connection, stream or hook call.  Keys that
are only read at start-up (listeners, TLS files, the hook outbox, the
keepalive timer, the shell itself) are stored and reported as needing a
restart.  Nothing is written back to the INI file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mediasrv.config import Config, ConfigError, cross_checks, with_value
from mediasrv.hooks.oclp import OclpDialect
from mediasrv.hooks.service import hooks_configured

if TYPE_CHECKING:
    from mediasrv.core.context import Core

# read once, when the server starts
RESTART_KEYS = frozenset({
    "general.listen_ip", "rtmp.port", "rtmp.sslport", "rtsp.port", "rtsp.sslport", "http.port",
    "http.sslport", "ssl.certFile", "ssl.keyFile", "shell.port", "shell.interface", "shell.python",
    "hook.outbox", "hook.outbox_max", "hook.outbox_overflow", "hook.alive_interval",
    "hook.on_server_keepalive", "hook.outbox_max_bytes", "hook.outbox_max_age", "hook.outbox_connections",
    *(f"{section}.{key}" for section in ("hook", "http_hooks", "notify", "oclp")
      for key in ("ssl_verify", "ssl_ca_file")),
    "shell.maxConcurrentChecks",
})
HOOK_SECTIONS = ("hook", "http_hooks", "notify", "oclp")
NEW_STREAMS = ("protocol.", "hls.", "record.", "general.maxGopCacheBytes", "general.enableVhost")
NEW_CONNECTIONS = ("rtmp.", "rtsp.", "general.maxPlayerQueueBytes")


@dataclass(frozen=True)
class Change:
    key: str
    old: Any
    new: Any
    restart: bool
    note: str = ""

    def describe(self) -> str:
        if self.restart:
            return f"{self.key}: {self.old!r} -> {self.new!r} (saved; takes effect after a restart{self.note})"
        return f"{self.key}: {self.old!r} -> {self.new!r} (applied live{self.note})"


def validate(cfg: Config) -> None:
    """Checks beyond one key's type (raise ConfigError)."""
    cross_checks(cfg)
    OclpDialect(cfg)  # parses every oclp_* value
    from mediasrv.shell.auth import parse_users

    try:
        parse_users(cfg.shell.users)
    except ValueError as e:
        raise ConfigError("set", "shell.users", str(e)) from None


def apply_changes(core: Core, wanted: dict[str, str]) -> list[Change]:
    """Validate every ``section.key -> text`` first, then apply them all;
    a ConfigError leaves the configuration as it was.  Returns the keys whose
    value changed."""
    old = core.config
    new = old
    for key, value in wanted.items():
        new = with_value(new, key, value)
    validate(new)
    hooks_wait_restart = core.hooks.client is None and hooks_configured(new)
    changes = []
    for key in wanted:
        before, after = old.get(key), new.get(key)
        if before == after:
            continue
        section = key.partition(".")[0]
        restart = key in RESTART_KEYS
        note = ""
        if not restart and section in HOOK_SECTIONS and hooks_wait_restart:
            restart, note = True, ": hooks were off when the server started"
        elif not restart and key.startswith(NEW_STREAMS):
            note = ", for new streams"
        elif not restart and key.startswith(NEW_CONNECTIONS):
            note = ", for new connections"
        changes.append(Change(key, before, after, restart, note))
    if not changes:
        return []
    core.config = new
    _propagate(core, new)
    return changes


def _propagate(core: Core, cfg: Config) -> None:
    registry = core.registry
    registry.continue_push_ms = cfg.protocol.continue_push_ms
    registry.max_gop_bytes = cfg.general.maxGopCacheBytes
    registry.enable_vhost = cfg.general.enableVhost
    hooks = core.hooks
    # keep the dialect objects where they carry state (ZLMediaKit's hook_index
    # counter, SRS's service_id); rebuild the one that pre-parses its config
    hooks.zlm.config, hooks.zlm.cfg = cfg, cfg.hook
    hooks.srs.config, hooks.srs.cfg = cfg, cfg.http_hooks
    hooks.nms.cfg = cfg.notify
    hooks.oclp = OclpDialect(cfg)
