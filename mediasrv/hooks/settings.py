"""Per-dialect hook settings: which config section a dialect reads its retry
and TLS keys from.

ZLMediaKit hooks use ``[hook] retry`` / ``retry_delay`` (ZLMediaKit's own
keys); the SRS (``[http_hooks]``), NMS (``[notify]``) and PingOS (``[oclp]``)
hooks have their own, defaulting to no retry as the originals do.  Every
section has ``ssl_verify`` and ``ssl_ca_file`` for https:// hook servers.
"""

from __future__ import annotations

from dataclasses import dataclass

from mediasrv.config import Config

SECTIONS = {"zlm": "hook", "srs": "http_hooks", "nms": "notify", "oclp": "oclp"}


@dataclass(frozen=True, slots=True)
class DialectSettings:
    dialect: str
    section: str  # the config section, for messages: "[hook]"
    timeout: float
    retry: int
    retry_delay: float
    ssl_verify: bool
    ssl_ca_file: str


def dialect_settings(cfg: Config, dialect: str) -> DialectSettings:
    """The settings of ``dialect`` ("zlm", "srs", "nms", "oclp"); KeyError for another name."""
    name = SECTIONS[dialect]
    sec = getattr(cfg, name)
    timeout = float(sec.timeout if dialect == "oclp" else sec.timeoutSec)
    return DialectSettings(dialect, f"[{name}]", timeout, sec.retry, sec.retry_delay, sec.ssl_verify,
                           sec.ssl_ca_file)


def hook_urls(cfg: Config) -> dict[str, str]:
    """Every configured hook URL (without options or query) -> the dialect it belongs to."""
    out: dict[str, str] = {}
    for dialect, name in SECTIONS.items():
        sec = getattr(cfg, name)
        for key in dir(sec):
            if key.startswith(("on_", "oclp_")) or key == "notify_url":
                for url in str(getattr(sec, key)).split():
                    if url.startswith(("http://", "https://")):
                        out.setdefault(url.split("?")[0], dialect)
    return out
