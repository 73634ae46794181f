"""A real HTTP hook backend for interop tests, run as its own process.

    python -m tests.support.hookserver --port P --rules rules.json --log requests.jsonl \
        [--tls-cert cert.pem --tls-key key.pem]      # HTTPS instead of HTTP

pytest-twisted owns the test process's reactor and the interop tests block in
``subprocess`` calls, so the backend runs in a process of its own (a Twisted
web server).  It

* records every request as one JSON line in ``--log``, flushed at once:
  ``{"time", "method", "path", "query" (first value per name), "query_all"
  (every value), "headers" (lower-case names), "body" (text), "json" (the
  parsed body, or null), "seq"}``;
* answers by the rules in ``--rules``, re-read on every request (a test
  changes the answers between phases with :meth:`HookServer.set_rules`).

A rules file is a JSON list; the first rule whose ``match`` fits answers::

    {"match": {"path": "/zlm/on_play", "method": "POST",
               "field": {"stream": "a"},          # JSON body members (equal)
               "query": {"call": "play"}},        # query-string values (equal)
     "status": 200, "body": "..." or {...},       # an object is sent as JSON
     "headers": {"Location": "rtmp://..."},
     "delay": 1.5,                                # seconds before the reply
     "drop": true,                                # close the socket, no reply
     "times": 1}                                  # only the first N matches

No rule fits: ``200`` with ``{"code":0}``.

:class:`HookServer` is the test-side handle: start/stop the process, read the
recorded requests, :meth:`~HookServer.wait_for` a predicate over them.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

DEFAULT_REPLY = {"status": 200, "body": {"code": 0}}

Record = dict[str, Any]


# --------------------------------------------------------------------------------------------------------------
# the server process
# --------------------------------------------------------------------------------------------------------------
def _load_rules(path: Path) -> list[dict[str, Any]]:
    try:
        rules = json.loads(path.read_text(encoding="utf-8") or "[]")
    except (OSError, ValueError):
        return []
    return rules if isinstance(rules, list) else []


def _fits(rule: dict[str, Any], rec: Record) -> bool:
    match = rule.get("match") or {}
    if "path" in match and match["path"] != rec["path"]:
        return False
    if "path_prefix" in match and not rec["path"].startswith(match["path_prefix"]):
        return False
    if "method" in match and match["method"].upper() != rec["method"]:
        return False
    body = rec["json"] if isinstance(rec["json"], dict) else {}
    for k, v in (match.get("field") or {}).items():
        if k not in body or body[k] != v:
            return False
    for k, v in (match.get("query") or {}).items():
        if rec["query"].get(k) != v:
            return False
    return True


def serve(port: int, rules_path: Path, log_path: Path, tls: tuple[Path, Path] | None = None) -> None:
    from twisted.internet import reactor, ssl
    from twisted.web import resource, server

    log = open(log_path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the process
    used: dict[str, int] = {}
    seq = [0]

    class Backend(resource.Resource):
        isLeaf = True

        def render(self, request: Any) -> Any:
            uri = request.uri.decode("latin-1")
            parts = urlsplit(uri)
            query_all = parse_qs(parts.query, keep_blank_values=True)
            body = request.content.read() if request.content is not None else b""
            text = body.decode("utf-8", "replace")
            try:
                parsed = json.loads(text) if text.strip() else None
            except ValueError:
                parsed = None
            seq[0] += 1
            rec: Record = {
                "seq": seq[0], "time": time.time(), "method": request.method.decode("latin-1"),
                "path": parts.path, "query": {k: v[0] for k, v in query_all.items()}, "query_all": query_all,
                "headers": {k.decode("latin-1").lower(): v[-1].decode("latin-1")
                            for k, v in request.requestHeaders.getAllRawHeaders()},
                "body": text, "json": parsed,
            }
            log.write(json.dumps(rec, ensure_ascii=False) + "\n")
            log.flush()
            reply: dict[str, Any] = DEFAULT_REPLY
            for rule in _load_rules(rules_path):
                if not _fits(rule, rec):
                    continue
                if "times" in rule:
                    ident = json.dumps(rule, sort_keys=True)
                    if used.get(ident, 0) >= int(rule["times"]):
                        continue
                    used[ident] = used.get(ident, 0) + 1
                reply = rule
                break
            if reply.get("drop"):
                request.channel.transport.abortConnection()
                return server.NOT_DONE_YET
            delay = float(reply.get("delay", 0) or 0)
            if delay <= 0:
                return self._answer(request, reply)
            call = reactor.callLater(delay, self._answer_later, request, reply)  # type: ignore[attr-defined]
            request.notifyFinish().addErrback(lambda _: call.cancel() if call.active() else None)
            return server.NOT_DONE_YET

        @staticmethod
        def _answer(request: Any, reply: dict[str, Any]) -> bytes:
            request.setResponseCode(int(reply.get("status", 200)))
            body = reply.get("body", "")
            if not isinstance(body, str):
                body = json.dumps(body)
                request.setHeader(b"content-type", b"application/json")
            for k, v in (reply.get("headers") or {}).items():
                request.setHeader(k.encode("latin-1"), str(v).encode("latin-1"))
            return body.encode("utf-8")

        def _answer_later(self, request: Any, reply: dict[str, Any]) -> None:
            if request.finished or request._disconnected:
                return
            request.write(self._answer(request, reply))
            request.finish()

    site = server.Site(Backend())
    site.displayTracebacks = False
    site.log = lambda request: None  # type: ignore[method-assign]
    if tls is not None:
        context = ssl.DefaultOpenSSLContextFactory(str(tls[1]), str(tls[0]))
        reactor.listenSSL(port, site, context, interface="127.0.0.1")  # type: ignore[attr-defined]
    else:
        reactor.listenTCP(port, site, interface="127.0.0.1")  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--rules", type=Path, required=True)
    p.add_argument("--log", type=Path, required=True)
    p.add_argument("--tls-cert", type=Path)
    p.add_argument("--tls-key", type=Path)
    a = p.parse_args(argv)
    serve(a.port, a.rules, a.log, (a.tls_cert, a.tls_key) if a.tls_cert else None)


# --------------------------------------------------------------------------------------------------------------
# the test-side handle
# --------------------------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class HookServer:
    """Start/stop the backend process, script its answers, read what it got."""

    def __init__(self, workdir: Path, port: int | None = None, rules: list[dict[str, Any]] | None = None,
                 tls: tuple[Path, Path] | None = None) -> None:
        """``tls``: (certificate, key) PEM files: serve HTTPS."""
        self.tls = tls
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or _free_port()
        self.rules_path = self.workdir / f"hook-rules-{self.port}.json"
        self.log_path = self.workdir / f"hook-requests-{self.port}.jsonl"
        self.stderr_path = self.workdir / f"hook-stderr-{self.port}.txt"
        self.proc: subprocess.Popen[bytes] | None = None
        self.set_rules(rules or [])

    # -- process ------------------------------------------------------------------------
    def start(self, timeout: float = 15) -> HookServer:
        from tests.conftest import ROOT
        from tests.support.server import server_env

        self.log_path.touch()
        with open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.support.hookserver", "--port", str(self.port),
                 "--rules", str(self.rules_path), "--log", str(self.log_path),
                 *(["--tls-cert", str(self.tls[0]), "--tls-key", str(self.tls[1])] if self.tls else [])],
                cwd=ROOT, env=server_env(), stdin=subprocess.DEVNULL, stdout=err, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hook server exited with {self.proc.returncode}: "
                                   f"{self.stderr_path.read_text(errors='replace')}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"hook server not listening on {self.port} after {timeout} s")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def __enter__(self) -> HookServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- scripting ------------------------------------------------------------------------
    def url(self, path: str) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}{path}"

    def set_rules(self, rules: list[dict[str, Any]]) -> None:
        """Replace the answers (atomically: the server never reads half a file)."""
        tmp = self.rules_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(rules), encoding="utf-8")
        os.replace(tmp, self.rules_path)

    def add_rules(self, *rules: dict[str, Any]) -> None:
        """Put ``rules`` in front of the current ones."""
        self.set_rules([*rules, *_load_rules(self.rules_path)])

    # -- reading ----------------------------------------------------------------------------
    def requests(self) -> list[Record]:
        out: list[Record] = []
        try:
            text = self.log_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return out
        for line in text.splitlines():
            if line.endswith("}"):
                try:
                    out.append(json.loads(line))
                except ValueError:  # a line being written right now
                    pass
        return out

    def find(self, path: str | None = None, **fields: Any) -> list[Record]:
        return [r for r in self.requests() if matches(r, path, **fields)]

    def wait_for(self, predicate: Callable[[Record], bool], timeout: float = 10, count: int = 1,
                 what: str = "") -> list[Record]:
        """Wait until at least ``count`` recorded requests satisfy ``predicate``; return them all."""
        deadline = time.monotonic() + timeout
        while True:
            hits = [r for r in self.requests() if predicate(r)]
            if len(hits) >= count:
                return hits
            if time.monotonic() >= deadline:
                seen = "\n".join(_summary(r) for r in self.requests()[-40:])
                raise AssertionError(f"hook server: wanted {count} x {what or predicate}, got {len(hits)} "
                                     f"within {timeout} s; last requests:\n{seen}")
            time.sleep(0.05)

    def wait(self, path: str | None = None, timeout: float = 10, count: int = 1, **fields: Any) -> list[Record]:
        """``wait_for`` requests to ``path`` whose JSON body (or query) has ``fields``."""
        return self.wait_for(lambda r: matches(r, path, **fields), timeout, count,
                             what=f"{path} {fields}")

    def absent(self, predicate: Callable[[Record], bool], seconds: float, what: str = "") -> None:
        """Assert that no request satisfying ``predicate`` arrives within ``seconds``."""
        deadline = time.monotonic() + seconds
        while True:
            hits = [r for r in self.requests() if predicate(r)]
            assert not hits, f"unexpected {what or 'request'}: {[_summary(r) for r in hits]}"
            if time.monotonic() >= deadline:
                return
            time.sleep(0.05)


def fields_of(rec: Record) -> dict[str, Any]:
    """The JSON body of a POST hook, or the query of a GET hook."""
    return rec["json"] if isinstance(rec.get("json"), dict) else rec["query"]


def matches(rec: Record, path: str | None = None, **fields: Any) -> bool:
    if path is not None and rec["path"] != path:
        return False
    body = fields_of(rec)
    return all(k in body and body[k] == v for k, v in fields.items())


def _summary(rec: Record) -> str:
    body = fields_of(rec)
    keys = ("action", "call", "act", "app", "stream", "name", "id", "client_id", "clientid", "regist", "player")
    brief = {k: body[k] for k in keys if k in body}
    return f"{rec['method']} {rec['path']} {brief}"


def hook_sets(hs: HookServer, section: str, hooks: list[str], prefix: str) -> list[str]:
    """``--set`` values pointing ``section.<hook>`` at ``hs`` under ``prefix`` (e.g. ``/index/hook/``)."""
    return [f"{section}.{h}={hs.url(prefix + h)}" for h in hooks]


def dead_url(path: str = "/") -> str:
    """A URL where nothing listens (connection refused)."""
    return f"http://127.0.0.1:{_free_port()}{path}"


# --------------------------------------------------------------------------------------------------------------
# real clients, small and quick (the hook tests need many short sessions)
# --------------------------------------------------------------------------------------------------------------
def publisher(url: str, duration: float | None = None) -> subprocess.Popen[bytes]:
    """ffmpeg publishing a small H.264+AAC test stream to ``url`` (in the background)."""
    from tests.support.clients import start_publisher

    return start_publisher(url, size="320x240", rate=25, bitrate="300k", duration=duration)


@dataclass
class Run:
    returncode: int
    elapsed: float
    stderr: str


def run_publish(url: str, duration: float = 4, timeout: float = 30) -> Run:
    """Publish for ``duration`` s (or until refused); wait for ffmpeg to end."""
    from tests.support.clients import publish_args

    t0 = time.monotonic()
    r = subprocess.run(publish_args(url, size="320x240", rate=25, bitrate="300k", duration=duration),
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    return Run(r.returncode, time.monotonic() - t0, r.stderr)


def run_probe(url: str, timeout: float = 30) -> Run:
    """ffprobe ``url``; returncode 0 when it found the streams."""
    from tests.support.clients import FFPROBE

    t0 = time.monotonic()
    r = subprocess.run([FFPROBE or "ffprobe", "-v", "error", "-show_entries", "stream=codec_type", "-of", "json",
                        url], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    ok = r.returncode == 0 and '"codec_type"' in r.stdout
    return Run(r.returncode if r.returncode or ok else 1, time.monotonic() - t0, r.stderr)


def player(url: str, seconds: float = 30) -> subprocess.Popen[bytes]:
    """ffmpeg reading ``url`` for ``seconds`` and throwing the decoded media away (in the background)."""
    from tests.support.clients import FFMPEG

    return subprocess.Popen([FFMPEG or "ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-i", url,
                             "-t", str(seconds), "-f", "null", "-"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def http_get_status(url: str, timeout: float = 15) -> tuple[int, bytes]:
    """Status and the first bytes of a GET (an HTTP-FLV stream never ends: read a little, then close)."""
    import http.client

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""))
        resp = conn.getresponse()
        return resp.status, resp.read(64) if resp.status != 200 else resp.read(13)
    finally:
        conn.close()


def wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> int | None:
    """The exit status once ``proc`` ended within ``timeout`` s, else None (still running)."""
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


def kill9(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()


@contextmanager
def running_hookserver(workdir: Path, port: int | None = None, rules: list[dict[str, Any]] | None = None,
                       tls: tuple[Path, Path] | None = None) -> Iterator[HookServer]:
    hs = HookServer(workdir, port, rules, tls)
    hs.start()
    try:
        yield hs
    finally:
        hs.stop()


if __name__ == "__main__":
    main()
