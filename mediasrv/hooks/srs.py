"""SRS dialect (``[http_hooks]``): JSON POST; each hook may name several
URLs, called in order; in a gate the first refusal ends the chain
(shared/spec/hooks.md §2).

Reply rules (:func:`decode_reply`), as SRS's ``SrsHttpHooks::do_post``:
HTTP 200 or 201 with a body that parses as JSON is an *answer*: the integer
``0`` (bare) or an object whose integer ``code`` is 0 allows; every other
answer -- another integer such as ``1``, ``{"code":1}``, ``{"code":"0"}`` --
refuses at once: never retried, never handed to ``on_failure``.  Any other
status refuses too (SRS fails the client on it).  Documented departures
(docs/design.md, "SRS reply codes"): whitespace around the integer is
accepted (SRS compares the body byte-for-byte with ``0``, so ``0\n`` from a
backend that prints a line refuses there, ossrs/srs#3215), and an empty or
non-JSON body is a broken backend, not an answer: it goes to the retry and
``on_failure`` policy (SRS refuses it, which is the same with the default
``on_failure = deny``).
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from mediasrv.config import DEFAULT_VHOST, Config
from mediasrv.core.sessions import Role, SessionInfo
from mediasrv.hooks.client import HookResponse
from mediasrv.hooks.model import AccessRequest, Action, Decision, HookCall, HookReplyError


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def decode_reply(response: HookResponse) -> Decision:
    if response.status not in (200, 201):
        # SRS fails the client on any other status: an explicit refusal
        return Decision(False, f"HTTP {response.status}")
    text = response.body.strip()
    if not text:
        raise HookReplyError("empty reply (SRS hooks answer 0 or {\"code\": 0})")
    try:
        answer = json.loads(text)
    except ValueError:
        raise HookReplyError(f"reply is neither an integer nor JSON: {text[:40]!r}") from None
    if _is_int(answer):
        return Decision(True) if answer == 0 else Decision(False, f"code {answer}")
    if not isinstance(answer, dict):
        return Decision(False, f"reply {text[:40]!r} is not an integer code or an object with one")
    code = answer.get("code")
    if not _is_int(code):
        return Decision(False, f"reply 'code' is not an integer: {code!r}")
    return Decision(True) if code == 0 else Decision(False, f"code {code}")


def stream_url(vhost: str, app: str, stream: str) -> str:
    base = f"/{app}/{stream}"
    return base if vhost in ("", DEFAULT_VHOST) else f"/{vhost}{base}"


class SrsDialect:
    name = "srs"

    def __init__(self, config: Config) -> None:
        self.config = config
        self.cfg = config.http_hooks
        self.service_id = secrets.token_hex(4)

    def urls(self, hook: str) -> list[str]:
        if not self.cfg.enabled:
            return []
        return str(getattr(self.cfg, hook, "")).split()

    def _calls(self, hook: str, payload: dict[str, Any]) -> list[HookCall]:
        return [HookCall("srs", hook, url, payload, self.cfg.timeoutSec, self.cfg.on_failure, decode=decode_reply)
                for url in self.urls(hook)]

    def _common(self, action: str, client_id: str, ip: str, vhost: str, app: str) -> dict[str, Any]:
        return {"server_id": self.config.general.mediaServerId, "service_id": self.service_id, "action": action,
                "client_id": client_id, "ip": ip, "vhost": vhost, "app": app}

    def _request_body(self, action: str, req: AccessRequest) -> dict[str, Any]:
        body = self._common(action, req.session_id, req.ip, req.vhost, req.app)
        body.update(stream=req.stream, param=f"?{req.params}" if req.params else "", tcUrl=req.tc_url)
        if action != "on_connect":
            body.update(stream_url=stream_url(req.vhost, req.app, req.stream), stream_id="")
        if action in ("on_connect", "on_play"):
            body["pageUrl"] = req.page_url
        return body

    def gate(self, req: AccessRequest) -> list[list[HookCall]]:
        hook = {Action.CONNECT: "on_connect", Action.PUBLISH: "on_publish", Action.PLAY: "on_play"}[req.action]
        chain = self._calls(hook, self._request_body(hook, req))
        return [chain] if chain else []

    def session_ended(self, s: SessionInfo, started: set[Action], tc_url: str) -> list[HookCall]:
        calls: list[HookCall] = []
        param = f"?{s.params}" if s.params else ""
        if Action.PUBLISH in started or Action.PLAY in started:
            hook = "on_unpublish" if s.role is Role.PUBLISHER else "on_stop"
            body = self._common(hook, s.id, s.peer_ip, s.vhost, s.app)
            body.update(tcUrl=tc_url, stream=s.stream, param=param,
                        stream_url=stream_url(s.vhost, s.app, s.stream), stream_id="")
            calls += self._calls(hook, body)
        if Action.CONNECT in started:
            body = self._common("on_close", s.id, s.peer_ip, s.vhost, s.app)
            body.update(send_bytes=s.bytes_out, recv_bytes=s.bytes_in)
            calls += self._calls("on_close", body)
        return calls
