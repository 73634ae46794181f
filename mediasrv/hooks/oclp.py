"""PingOS dialect (``[oclp]``): HTTP GET ``URL?call=..&act=start|update|done&domain=..&app=..&name=..&clientid=..&<client args>``.

Each ``oclp_*`` value is written as in PingOS: ``URL [stage=start,update,done]
[timeout=3s] [update=60s] [args=k=v&...]``; ``start`` is always on.  For
publish/play/stream a 2xx reply allows and a 4xx closes the client (also on
``update``); for pull/push, 200 means "no relay" and 301/302 with a
``Location`` names the relay (shared/spec/hooks.md §4.2).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from mediasrv.config import Config
from mediasrv.core.sessions import Role, SessionInfo
from mediasrv.hooks.client import HookResponse
from mediasrv.hooks.model import AccessRequest, Action, Decision, HookCall, HookReplyError

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m)?$")


def parse_duration(text: str) -> float:
    m = _DURATION.match(text.strip())
    if not m:
        raise ValueError(f"bad duration {text!r} (use e.g. 3s, 500ms, 1m)")
    value = float(m.group(1))
    return value / 1000 if m.group(2) == "ms" else value * 60 if m.group(2) == "m" else value


@dataclass(frozen=True, slots=True)
class OclpHook:
    url: str
    stages: frozenset[str]
    timeout: float
    update: float
    args: str


def parse_hook(value: str, default_timeout: float, default_update: float) -> OclpHook | None:
    """Parse one ``oclp_*`` value; None when empty.  Raises ValueError naming the problem."""
    parts = value.split()
    if not parts:
        return None
    url, stages, timeout, update, args = parts[0], {"start"}, default_timeout, default_update, ""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"{url!r} is not an http:// or https:// URL")
    for opt in parts[1:]:
        key, eq, val = opt.partition("=")
        if not eq:
            raise ValueError(f"option {opt!r} is not key=value")
        if key == "stage":
            names = {s.strip() for s in val.split(",") if s.strip()}
            if not names <= {"start", "update", "done"}:
                raise ValueError(f"unknown stage in {opt!r}")
            stages |= names
        elif key == "timeout":
            timeout = parse_duration(val)
        elif key == "update":
            update = parse_duration(val)
        elif key == "args":
            args = val
        elif key != "groupid":
            raise ValueError(f"unknown option {key!r}")
    return OclpHook(url, frozenset(stages), timeout, update, args)


def decode_gate(response: HookResponse) -> Decision:
    if 200 <= response.status <= 300:
        return Decision(True)
    if 400 <= response.status < 500:
        return Decision(False, f"HTTP {response.status}")
    raise HookReplyError(f"HTTP {response.status}")


def decode_relay(response: HookResponse) -> Decision:
    """pull/push: 200 = no relay; 301/302 + Location = relay there (options['relay'])."""
    if response.status == 200:
        return Decision(True)
    if response.status in (301, 302):
        location = response.headers.get("location", "")
        if not location.startswith(("rtmp://", "http://", "https://")):
            raise HookReplyError(f"HTTP {response.status} without a usable Location ({location!r})")
        return Decision(True, options={"relay": location, "domain": response.headers.get("domain", "")})
    if 400 <= response.status < 500:
        return Decision(False, f"HTTP {response.status}")
    raise HookReplyError(f"HTTP {response.status}")


class OclpDialect:
    name = "oclp"
    EVENTS = ("proc", "publish", "play", "stream", "pull", "push", "meta", "record")

    def __init__(self, config: Config) -> None:
        self.cfg = config.oclp
        self.hooks: dict[str, OclpHook] = {}
        for event in self.EVENTS:
            key = f"oclp_{event}"
            try:
                hook = parse_hook(getattr(self.cfg, key), self.cfg.timeout, self.cfg.update_interval)
            except ValueError as e:
                from mediasrv.config import ConfigError

                raise ConfigError(config.source, f"[oclp] {key}", str(e)) from None
            if hook is not None:
                self.hooks[event] = hook

    def has(self, event: str, stage: str = "start") -> bool:
        hook = self.hooks.get(event)
        return hook is not None and stage in hook.stages

    def call(self, event: str, stage: str, domain: str, app: str, name: str, clientid: str, client_args: str,
             decode: Any = decode_gate, extra: dict[str, str] | None = None) -> HookCall | None:
        hook = self.hooks.get(event)
        if hook is None or stage not in hook.stages:
            return None
        payload: dict[str, Any] = {"call": event, "act": stage, "domain": domain, "app": app, "name": name,
                                   "clientid": clientid, **(extra or {})}
        raw = "&".join(x for x in (hook.args, client_args) if x)
        if raw:
            payload["_raw"] = raw
        return HookCall("oclp", f"{event}.{stage}", hook.url, payload, hook.timeout, self.cfg.on_failure,
                        method="GET", decode=decode)

    @staticmethod
    def domain(req: AccessRequest) -> str:
        return (urlsplit(req.tc_url).hostname if req.tc_url else None) or req.vhost

    def gate(self, req: AccessRequest) -> list[list[HookCall]]:
        if req.action is Action.CONNECT:
            return []
        event = "publish" if req.action is Action.PUBLISH else "play"
        call = self.call(event, "start", self.domain(req), req.app, req.stream, req.session_id, req.params)
        return [[call]] if call else []

    def session_call(self, s: SessionInfo, stage: str, domain: str) -> HookCall | None:
        event = "publish" if s.role is Role.PUBLISHER else "play"
        return self.call(event, stage, domain, s.app, s.stream, s.id, s.params)

    def stream_call(self, stage: str, domain: str, app: str, name: str, clientid: str) -> HookCall | None:
        return self.call("stream", stage, domain, app, name, clientid, "")

    def relay_call(self, event: str, req: AccessRequest) -> HookCall | None:
        return self.call(event, "start", self.domain(req), req.app, req.stream, req.session_id, req.params,
                         decode=decode_relay)

    def proc_call(self) -> HookCall | None:
        """PingOS sends ``URL?call=init_process&worker_id=N`` at process start, nothing else."""
        hook = self.hooks.get("proc")
        if hook is None:
            return None
        return HookCall("oclp", "proc.start", hook.url, {"call": "init_process", "worker_id": "0"}, hook.timeout,
                        self.cfg.on_failure, method="GET")
