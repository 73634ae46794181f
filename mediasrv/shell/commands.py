"""The admin shell: one command per line, answers as aligned tables.

Built on ``twisted.conch.recvline.HistoricRecvLine`` under
``insults.ServerProtocol`` over telnet, so line editing (arrows, backspace,
home/end), history (up/down) and Tab completion work in a real ``telnet``
client.  Commands dispatch by name to ``cmd_<name>``.  Everything is read
from the same session table, stream registry and hook service as the HTTP
APIs and ``/metrics``.

Stream names, parameters and user names come from clients: everything the
shell prints goes through :func:`mediasrv.core.names.safe_text`, so control
characters (ESC, CSI/OSC sequences, CR, BEL ...) show as ``\x1b``-style
escapes instead of acting on the operator's terminal (security audit
finding 15).
"""

from __future__ import annotations

import os
import resource
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from twisted.conch import manhole, recvline
from twisted.conch.insults import insults
from twisted.logger import Logger

from mediasrv import __version__
from mediasrv.config import ConfigError
from mediasrv.core.names import safe_text
from mediasrv.core.sessions import Role, SessionInfo
from mediasrv.core.stream import Stream
from mediasrv.hooks.service import hooks_configured
from mediasrv.http.api_common import stream_players
from mediasrv.shell.liveconfig import apply_changes

if TYPE_CHECKING:
    from mediasrv.core.context import Core

log = Logger()

CTRL_C, CTRL_D, CTRL_L, CTRL_A, CTRL_E, CTRL_U = b"\x03", b"\x04", b"\x0c", b"\x01", b"\x05", b"\x15"
SECRET_KEYS = frozenset({"api.secret", "api.nimble_token", "shell.users"})
CELL_LIMIT = 200  # characters of one table cell

HELP = [
    ("help", "this list"),
    ("streams", "live streams: publisher, codecs, readers, bytes"),
    ("sessions [filter]", "connections; filter words match any column, or key=value"),
    ("", "(keys: id proto role ip port app stream vhost)"),
    ("kick <id> [<id>...]", "disconnect sessions (any protocol)"),
    ("close <app>/<stream>", "end a stream: its publisher and every player"),
    ("config get [key|section]", "show configuration (secrets masked)"),
    ("config set <key> <value>", "change a key now; says when a restart is needed"),
    ("stats", "server totals"),
    ("hooks", "hook URLs, calls, failures, latency, outbox"),
    ("python", "Python REPL inside the server (shell.python = 1)"),
    ("quit", "log out (also exit, Ctrl-D)"),
]


# -- formatting ---------------------------------------------------------------------------------
def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def human_age(seconds: float) -> str:
    s = int(max(0, seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], right: Sequence[int] = ()) -> list[str]:
    """Rows as aligned text columns; columns in ``right`` are right-aligned.
    Cells are shown through :func:`safe_text` (one line, no control characters)."""
    cells = [[str(c) for c in headers]] + [["" if c is None else safe_text(c, CELL_LIMIT) for c in row]
                                           for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    out = []
    for n, row in enumerate(cells):
        parts = [row[i].rjust(widths[i]) if i in right else row[i].ljust(widths[i]) for i in range(len(row))]
        out.append("  ".join(parts).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return out


def mask(key: str, value: Any) -> str:
    text = value_text(value)
    if key in SECRET_KEYS and text:
        return "******** (set)"
    return text


def value_text(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _track_text(stream: Stream) -> tuple[str, str]:
    v, a = stream.video, stream.audio
    video = f"{v.codec.value} {v.width}x{v.height}" if v is not None else "-"
    if v is not None and v.fps:
        video += f"@{v.fps:g}"
    audio = f"{a.codec.value} {a.sample_rate // 1000 if a.sample_rate else '?'}k/{a.channels}" if a else "-"
    return video, audio


def _session_matches(s: SessionInfo, words: list[str]) -> bool:
    fields = {"id": s.id, "proto": s.protocol, "protocol": s.protocol, "role": s.role.value, "ip": s.peer_ip,
              "port": str(s.peer_port), "app": s.app, "stream": s.stream, "vhost": s.vhost}
    for word in words:
        key, eq, value = word.partition("=")
        if eq and key in fields:
            if fields[key] != value and not (key in ("app", "stream") and value == "*"):
                return False
            continue
        haystack = " ".join([s.id, s.protocol, s.role.value, f"{s.peer_ip}:{s.peer_port}",
                             f"{s.app}/{s.stream}", s.params])
        if word.lower() not in haystack.lower():
            return False
    return True


class ShellManhole(manhole.Manhole):
    """The ``python`` command: Twisted's manhole in the running server.
    Ctrl-D, ``exit()`` or ``quit()`` return to the admin shell (the builtins
    would raise SystemExit in the server)."""

    ps = (b"py> ", b"... ")

    def __init__(self, namespace: dict[str, Any], leave: Callable[[], None]) -> None:
        self.leave = leave
        self.left = False
        ns = dict(namespace)
        ns["exit"] = ns["quit"] = _Leave(self)
        super().__init__(ns)

    def initializeScreen(self) -> None:
        self.terminal.write(b"Python REPL in the server: core, registry, sessions, hooks, server.")
        self.terminal.nextLine()
        self.terminal.write(b"Ctrl-D or exit() returns to the admin shell.")
        self.terminal.nextLine()
        self.terminal.write(self.ps[self.pn])
        self.setInsertMode()

    def terminalSize(self, width: int, height: int) -> None:
        self.width, self.height = width, height

    def handle_QUIT(self) -> None:
        if not self.left:
            self.left = True
            self.leave()

    def lineReceived(self, line: bytes) -> None:
        more = self.interpreter.push(line)
        if self.left:  # exit() ran: the admin shell has the terminal now
            return
        self.pn = bool(more)
        if self._needsNewline():
            self.terminal.nextLine()
        self.terminal.write(self.ps[self.pn])


class _Leave:
    def __init__(self, shell: ShellManhole) -> None:
        self.shell = shell

    def __repr__(self) -> str:
        return "Use exit() or Ctrl-D to return to the admin shell"

    def __call__(self, *args: Any) -> None:
        self.shell.handle_QUIT()


class AdminShell(recvline.HistoricRecvLine):
    ps = (b"mediasrv> ", b"... ")

    def __init__(self, core: Core, user: str, session: SessionInfo | None, python_enabled: bool,
                 started: float, namespace: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.core = core
        self.user = user
        self.session = session
        self.python_enabled = python_enabled
        self.started = started
        self.namespace = namespace or {}
        self.in_python = False
        self.closing = False

    # -- terminal ---------------------------------------------------------------------
    def connectionMade(self) -> None:
        super().connectionMade()
        self.keyHandlers.update({CTRL_C: self.handle_INT, CTRL_D: self.handle_EOF, CTRL_L: self.handle_FF,
                                 CTRL_A: self.handle_HOME, CTRL_E: self.handle_END, CTRL_U: self.handle_KILL,
                                 self.terminal.TAB: self.handle_TAB})

    def initializeScreen(self) -> None:
        # no terminal reset: the operator keeps the scrollback
        self.terminal.write(f"mediasrv {__version__} -- logged in as {safe_text(self.user, 64)}; 'help' lists"
                            " commands".encode())
        self.terminal.nextLine()
        self.terminal.write(self.ps[self.pn])
        self.setInsertMode()

    def terminalSize(self, width: int, height: int) -> None:
        self.width, self.height = width, height

    def handle_INT(self) -> None:
        self.lineBuffer = []
        self.lineBufferIndex = 0
        self.terminal.write(b"^C")
        self.terminal.nextLine()
        self.terminal.write(self.ps[self.pn])

    def handle_EOF(self) -> None:
        if self.lineBuffer:
            self.terminal.write(b"\a")
            return
        self.terminal.nextLine()
        self.cmd_quit([])

    def handle_FF(self) -> None:
        self.terminal.eraseDisplay()
        self.terminal.cursorHome()
        self.drawInputLine()

    def handle_KILL(self) -> None:
        if self.lineBufferIndex:
            self.terminal.cursorBackward(self.lineBufferIndex)
        self.terminal.eraseToLineEnd()
        self.lineBuffer = []
        self.lineBufferIndex = 0

    def handle_TAB(self) -> None:
        """Complete a command, a session id, a stream or a config key."""
        if self.lineBufferIndex != len(self.lineBuffer):
            return
        text = b"".join(self.lineBuffer).decode("utf-8", "replace")
        words = text.split(" ")
        prefix = words[-1]
        head = [w for w in words[:-1] if w]
        if not head:
            options = [c for c, _ in HELP if c] + ["exit"]
            options = sorted({o.split()[0] for o in options})
        elif head[0] == "kick":
            options = [s.id for s in self.core.sessions]
        elif head[0] == "close" and len(head) == 1:
            options = [f"{s.key.app}/{s.key.stream}" for s in self.core.registry]
        elif head[0] == "config" and len(head) == 1:
            options = ["get", "set"]
        elif head[0] == "config" and len(head) == 2:
            options = list(self.core.config.as_flat_dict())
        else:
            options = []
        # only names that are safe to type back into the terminal complete
        hits = sorted({o for o in options if o.startswith(prefix) and safe_text(o, 0) == o})
        if not hits:
            self.terminal.write(b"\a")
            return
        common = os.path.commonprefix(hits)
        add = common[len(prefix):] + (" " if len(hits) == 1 else "")
        if add:
            for ch in add.encode("utf-8"):
                self.characterReceived(bytes([ch]), False)
            return
        self.terminal.nextLine()
        self.out("  ".join(hits))
        self.drawInputLine()

    # -- lines ---------------------------------------------------------------------------
    def out(self, *lines: str) -> None:
        for block in lines:
            for line in block.split("\n"):
                # cells were escaped by table(): only control characters left in our own text
                self.terminal.write(safe_text(line, 0, backslashes=False).encode("utf-8", "replace"))
                self.terminal.nextLine()

    def lineReceived(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace").strip()
        if text:
            self.run(text)
        if not self.closing and not self.in_python:
            self.terminal.write(self.ps[self.pn])

    def run(self, text: str) -> None:
        words = text.split()
        name = words[0].lower()
        handler = getattr(self, "cmd_" + name, None) if name.isidentifier() else None
        if handler is None:
            self.out(f"unknown command {words[0]!r}; 'help' lists commands")
            return
        try:
            handler(words[1:], text) if name == "config" else handler(words[1:])
        except Exception as e:  # a bug of ours must not end the operator's session
            log.failure("shell command {text!r} failed", text=text)
            self.out(f"error: {type(e).__name__}: {e}")

    # -- commands -------------------------------------------------------------------------
    def cmd_help(self, args: list[str]) -> None:
        width = max(len(c) for c, _ in HELP)
        self.out(*(f"  {c.ljust(width)}  {d}" for c, d in HELP))

    def cmd_streams(self, args: list[str]) -> None:
        now = self.core.clock.seconds()
        rows = []
        for s in sorted(self.core.registry, key=lambda s: str(s.key)):
            pub = s.publisher
            state = "live" if s.ready and pub is not None else ("waiting" if not s.ready else "no publisher")
            video, audio = _track_text(s)
            name = f"{s.key.app}/{s.key.stream}"
            if s.key.vhost != "__defaultVhost__":
                name = f"{s.key.vhost}/{name}"
            rows.append([name, state, f"{pub.protocol} {pub.id}" if pub else "-", video, audio,
                         len(stream_players(self.core, s)), human_age(now - s.created), human_bytes(s.bytes_in), s.frames_in])
        if not rows:
            self.out("no streams")
            return
        self.out(*table(["STREAM", "STATE", "PUBLISHER", "VIDEO", "AUDIO", "READERS", "AGE", "IN", "FRAMES"],
                        rows, right=(5, 6, 7, 8)))

    def cmd_sessions(self, args: list[str]) -> None:
        now = self.core.clock.seconds()
        rows = []
        own = False
        for s in sorted(self.core.sessions, key=lambda s: s.started):
            if args and not _session_matches(s, args):
                continue
            own = own or (self.session is not None and s.id == self.session.id)
            target = f"{s.app}/{s.stream}" if s.stream else (s.app or s.params if s.protocol == "shell" else s.app)
            mark = " *" if self.session is not None and s.id == self.session.id else ""
            rows.append([s.id + mark, s.protocol, s.role.value, f"{s.peer_ip}:{s.peer_port}", s.local_port,
                         target or "-", human_age(now - s.started), human_bytes(s.bytes_in),
                         human_bytes(s.bytes_out), s.dropped_frames])
        if not rows:
            self.out("no sessions" + (" match" if args else ""))
            return
        self.out(*table(["ID", "PROTO", "ROLE", "PEER", "LPORT", "STREAM", "AGE", "IN", "OUT", "DROPPED"], rows,
                        right=(4, 6, 7, 8, 9)))
        self.out(f"{len(rows)} session(s)" + ("; * = this shell" if own else ""))

    def cmd_kick(self, args: list[str]) -> None:
        if not args:
            self.out("usage: kick <id> [<id>...]  (ids from 'sessions')")
            return
        for sid in args:
            sid = sid.rstrip("*")
            own = self.session is not None and sid == self.session.id
            if own:
                self.out(f"kicking {sid} (this shell)")
                self.closing = True
            if self.core.sessions.kick(sid, f"kicked from the shell by {self.user}"):
                if not own:
                    self.out(f"kicked {sid}")
            else:
                self.out(f"no session {sid}")

    def cmd_close(self, args: list[str]) -> None:
        if len(args) != 1 or "/" not in args[0]:
            self.out("usage: close <app>/<stream>  (names from 'streams')")
            return
        name = args[0].strip("/")
        hits = [s for s in self.core.registry if name in (f"{s.key.app}/{s.key.stream}", str(s.key))]
        if not hits:
            self.out(f"no stream {name}")
            return
        for s in hits:
            readers = len(stream_players(self.core, s))
            self.core.registry.close_stream(s.key, f"closed from the shell by {self.user}")
            self.out(f"closed {safe_text(s.key.app)}/{safe_text(s.key.stream)} ({readers} player(s) disconnected)")

    def cmd_config(self, args: list[str], text: str = "") -> None:
        if not args or args[0] not in ("get", "set"):
            self.out("usage: config get [key|section]   config set <key> <value>")
            return
        flat = self.core.config.as_flat_dict()
        if args[0] == "get":
            if len(args) > 2:
                self.out("usage: config get [key|section]")
                return
            want = args[1] if len(args) == 2 else ""
            if want and want in flat:
                self.out(f"{want} = {mask(want, flat[want])}")
                return
            rows = [[k, mask(k, v)] for k, v in flat.items() if not want or k.startswith(want.rstrip(".") + ".")]
            if not rows:
                self.out(f"no key or section {want!r}")
                return
            self.out(*table(["KEY", "VALUE"], rows))
            return
        # config set <key> <value...>: the value is the rest of the line, spaces kept
        parts = text.split(None, 3)
        if len(parts) < 3:
            self.out("usage: config set <key> <value>   (an empty value: config set <key> \"\")")
            return
        key = parts[2]
        value = parts[3] if len(parts) > 3 else ""
        if value in ('""', "''"):
            value = ""
        if key not in flat:
            self.out(f"no key {key!r}; 'config get' lists them")
            return
        try:
            changes = apply_changes(self.core, {key: value})
        except ConfigError as e:
            self.out(f"not changed: {e.key}: {e.problem}")
            return
        if not changes:
            self.out(f"{key} unchanged")
            return
        for c in changes:
            if c.key in SECRET_KEYS:
                self.out(f"{c.key} changed ({'restart needed' if c.restart else 'applied live'})")
            else:
                self.out(c.describe())
        log.info("shell: {user} set {key}", user=safe_text(self.user, 64), key=key)

    def cmd_stats(self, args: list[str]) -> None:
        core = self.core
        now = core.clock.seconds()
        sessions = list(core.sessions)
        by_proto = Counter(s.protocol for s in sessions)
        streams = list(core.registry)
        live = sum(1 for s in streams if s.ready and s.publisher is not None)
        hooks = core.hooks.describe()
        rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        rows: list[list[Any]] = [
            ["uptime", f"{human_age(now - self.started)} (since "
                       f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(self.started))})"],
            ["sessions", f"{len(sessions)} now ("
                         + (", ".join(f"{p} {n}" for p, n in sorted(by_proto.items())) or "none")
                         + f"); {core.sessions.total_opened} since start"],
            ["publishers", sum(1 for s in sessions if s.role is Role.PUBLISHER)],
            ["players", sum(1 for s in sessions if s.role is Role.PLAYER)],
            ["streams", f"{live} live, {len(streams) - live} waiting for a publisher"],
            ["bytes in", human_bytes(sum(s.bytes_in for s in sessions)) + " (current sessions)"],
            ["bytes out", human_bytes(sum(s.bytes_out for s in sessions)) + " (current sessions)"],
            ["dropped frames", sum(s.dropped_frames for s in sessions)],
            ["hook calls", f"{hooks['calls']} ({hooks['failures']} failed, {hooks['denials']} denials)"],
            ["hook outbox", f"{hooks['outbox_depth']} waiting"],
            ["memory", f"{rss_kb / 1024:.0f} MB max RSS"],
            ["pid", os.getpid()],
        ]
        self.out(*table(["WHAT", "VALUE"], rows))

    def cmd_hooks(self, args: list[str]) -> None:
        cfg = self.core.config
        hooks = self.core.hooks
        rows = []
        if cfg.hook.enable:
            rows += [["zlm", k, str(getattr(cfg.hook, k))] for k in sorted(vars(cfg.hook))
                     if k.startswith("on_") and str(getattr(cfg.hook, k)).strip()]
        if cfg.http_hooks.enabled:
            rows += [["srs", k, str(getattr(cfg.http_hooks, k))] for k in sorted(vars(cfg.http_hooks))
                     if k.startswith("on_") and str(getattr(cfg.http_hooks, k)).strip()]
        if cfg.notify.notify_url.strip():
            rows.append(["nms", "notify_url", cfg.notify.notify_url])
        rows += [["oclp", k, str(getattr(cfg.oclp, k))] for k in sorted(vars(cfg.oclp))
                 if k.startswith("oclp_") and str(getattr(cfg.oclp, k)).strip()]
        if rows:
            self.out(*table(["DIALECT", "HOOK", "URL"], rows))
        else:
            self.out("no hook URLs configured: every gate allows")
        if hooks_configured(cfg) and hooks.client is None:
            self.out("hooks were off at start-up: restart the server to enable them")
        stats = hooks.stats
        lat = sorted(stats.latencies)

        def pct(p: float) -> str:
            return f"{lat[min(len(lat) - 1, int(p * len(lat)))] * 1000:.1f} ms" if lat else "-"

        outbox = hooks.outbox
        self.out("")
        self.out(*table(["WHAT", "VALUE"], [
            ["calls", stats.calls], ["failures", stats.failures], ["denials", stats.denials],
            ["latency", f"p50 {pct(0.5)}  p90 {pct(0.9)}  p99 {pct(0.99)}  max {pct(1.0)}  "
                        f"(last {len(lat)} replies)"],
            ["outbox depth", outbox.depth if outbox else 0],
            ["outbox delivered", outbox.delivered if outbox else 0],
            ["outbox failures", outbox.failures if outbox else 0],
            ["outbox dropped", outbox.dropped if outbox else 0],
            ["outbox refused (4xx)", outbox.rejected if outbox else 0],
            ["outbox expired", outbox.expired if outbox else 0],
            ["outbox dead letters", outbox.dead_count if outbox else 0],
        ]))
        dead = outbox.dead_letters(20) if outbox else []
        if dead:
            self.out("", "dead letters (newest first; not resent):")
            self.out(*table(["DIED", "DIALECT", "HOOK", "URL", "KEY", "TRIES", "WHY"], [
                [time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(d.died)), d.dialect, d.hook, d.shown_url,
                 d.key, d.attempts, d.reason] for d in dead]))

    def cmd_python(self, args: list[str]) -> None:
        if not self.python_enabled:
            self.out("python is off: set shell.python = 1 in the configuration and restart the server")
            return
        ns = {"core": self.core, "registry": self.core.registry, "sessions": self.core.sessions,
              "hooks": self.core.hooks, **self.namespace}
        log.info("shell: {user} entered the python REPL", user=self.user)
        repl = ShellManhole(ns, self._leave_python)
        self.in_python = True
        self.terminal.terminalProtocol = repl  # type: ignore[attr-defined]
        repl.makeConnection(self.terminal)

    def _leave_python(self) -> None:
        self.in_python = False
        self.terminal.terminalProtocol = self  # type: ignore[attr-defined]
        self.terminal.nextLine()
        self.terminal.write(self.ps[self.pn])

    def cmd_quit(self, args: list[str]) -> None:
        self.closing = True
        self.out("bye")
        # leave the operator's terminal as it was: insert mode off, but no
        # full reset (insults' loseConnection would clear the screen)
        self.terminal.resetModes([insults.modes.IRM])
        self.terminal.transport.loseConnection()

    cmd_exit = cmd_quit
