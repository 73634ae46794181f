"""A blocking telnet client that negotiates like netkit/inetutils ``telnet``.

It answers the server's option negotiation the way a real client does
(agrees to the server echoing and suppressing go-ahead, reports a window
size, refuses LINEMODE), then types whole lines the way ``telnet`` sends
them in character mode: each key, then CR NUL for Enter.  ``text()`` gives
what a terminal would show, without the escape sequences.
"""

from __future__ import annotations

import re
import socket
import time

IAC, DONT, DO, WONT, WILL, SB, SE = 255, 254, 253, 252, 251, 250, 240
ECHO, SGA, NAWS, LINEMODE = 1, 3, 31, 34
_ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][0-9A-Za-z]|\x1b[cE78]")


class TelnetClient:
    def __init__(self, host: str, port: int, timeout: float = 10.0, width: int = 160, height: int = 48,
                 source: str | None = None) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout,
                                             source_address=(source, 0) if source else None)
        self.timeout = timeout
        self.size = (width, height)
        self.raw = bytearray()  # application data as received (escape sequences included)
        self.negotiation: list[tuple[str, int]] = []  # what the server asked for
        self.him: dict[int, bool] = {}
        self.us: dict[int, bool] = {}
        self._pending = b""
        self._pos = 0  # read position in raw, for expect()
        self.closed = False

    # -- wire -----------------------------------------------------------------------------------
    def _send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _feed(self, data: bytes) -> None:
        buf = self._pending + data
        self._pending = b""
        i = 0
        while i < len(buf):
            b = buf[i]
            if b != IAC:
                self.raw.append(b)
                i += 1
                continue
            if i + 1 >= len(buf):
                self._pending = buf[i:]
                return
            cmd = buf[i + 1]
            if cmd == IAC:
                self.raw.append(IAC)
                i += 2
            elif cmd in (DO, DONT, WILL, WONT):
                if i + 2 >= len(buf):
                    self._pending = buf[i:]
                    return
                self._negotiate(cmd, buf[i + 2])
                i += 3
            elif cmd == SB:
                end = buf.find(bytes([IAC, SE]), i + 2)
                if end < 0:
                    self._pending = buf[i:]
                    return
                sub = buf[i + 2:end]
                if len(sub) >= 3 and sub[0] == LINEMODE and sub[1] == 1 and self.us.get(LINEMODE):
                    # LINEMODE MODE: acknowledge the mode the server set (RFC 1184)
                    self._send(bytes([IAC, SB, LINEMODE, 1, sub[2] | 4, IAC, SE]))
                i = end + 2
            else:
                i += 2

    def _negotiate(self, cmd: int, opt: int) -> None:
        name = {DO: "DO", DONT: "DONT", WILL: "WILL", WONT: "WONT"}[cmd]
        self.negotiation.append((name, opt))
        if cmd == WILL:
            want = opt in (ECHO, SGA)
            if self.him.get(opt) != want:
                self.him[opt] = want
                self._send(bytes([IAC, DO if want else DONT, opt]))
            elif not want:
                self._send(bytes([IAC, DONT, opt]))
        elif cmd == WONT:
            if self.him.get(opt, False) or opt not in self.him:
                self.him[opt] = False
                self._send(bytes([IAC, DONT, opt]))
        elif cmd == DO:
            want = opt in (NAWS, SGA, LINEMODE)
            if self.us.get(opt) != want:
                self.us[opt] = want
                self._send(bytes([IAC, WILL if want else WONT, opt]))
            if opt == NAWS and want:
                w, h = self.size
                self._send(bytes([IAC, SB, NAWS, w >> 8, w & 255, h >> 8, h & 255, IAC, SE]))
        elif cmd == DONT:
            if self.us.get(opt, False):
                self.us[opt] = False
                self._send(bytes([IAC, WONT, opt]))

    def pump(self, seconds: float) -> bool:
        """Read for up to ``seconds``; False once the server has closed."""
        if self.closed:
            return False
        self.sock.settimeout(max(0.01, seconds))
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return True
        except OSError:
            data = b""
        if not data:
            self.closed = True
            return False
        self._feed(data)
        return True

    # -- screen ------------------------------------------------------------------------------------
    @staticmethod
    def clean(data: bytes) -> str:
        text = _ANSI.sub(b"", bytes(data)).replace(b"\r\n", b"\n").replace(b"\r", b"")
        return text.decode("utf-8", "replace")

    def text(self) -> str:
        return self.clean(self.raw)

    def expect(self, pattern: str, timeout: float | None = None) -> str:
        """Wait for ``pattern`` (a regex) in the output after the last match; return the text up to it."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        rx = re.compile(pattern)
        while True:
            text = self.clean(self.raw[self._pos:])
            m = rx.search(text)
            if m:
                # advance past the match, measured in raw bytes
                consumed = self._raw_offset(text[:m.end()])
                self._pos += consumed
                return text[:m.end()]
            left = deadline - time.monotonic()
            if left <= 0 or not self.pump(min(left, 0.2)):
                if self.closed:
                    text = self.clean(self.raw[self._pos:])
                    m = rx.search(text)
                    if m:
                        self._pos = len(self.raw)
                        return text[:m.end()]
                raise AssertionError(f"no {pattern!r} within the time; got {text[-800:]!r}"
                                     + (" (connection closed)" if self.closed else ""))

    def _raw_offset(self, clean_prefix: str) -> int:
        """Raw bytes (from _pos) whose cleaned text is ``clean_prefix``."""
        lo, hi = 0, len(self.raw) - self._pos
        target = len(clean_prefix)
        while lo < hi:
            mid = (lo + hi) // 2
            if len(self.clean(self.raw[self._pos:self._pos + mid])) < target:
                lo = mid + 1
            else:
                hi = mid
        return lo

    # -- typing ---------------------------------------------------------------------------------------
    def type(self, text: str) -> None:
        self._send(text.encode("utf-8").replace(b"\xff", b"\xff\xff"))

    @property
    def char_mode(self) -> bool:
        """telnet's character-at-a-time mode: the server echoes and suppresses go-ahead."""
        return bool(self.him.get(ECHO) and self.him.get(SGA))

    def line(self, text: str) -> None:
        """Type ``text`` and Enter: CR LF in line mode, CR NUL in character mode (as telnet)."""
        self.type(text)
        self._send(b"\r\x00" if self.char_mode else b"\r\n")

    def login(self, user: str, password: str) -> None:
        self.expect(r"Username: ")
        self.line(user)
        self.expect(r"Password: ")
        self.line(password)

    def command(self, text: str, prompt: str = r"mediasrv> ", timeout: float | None = None) -> str:
        """Run one shell command; return its output (without the echoed command line)."""
        self.line(text)
        out = self.expect(prompt, timeout)
        body = re.sub(f"(?:{prompt})$", "", out)
        first, _, rest = body.partition("\n")
        return rest if text in first else body

    def wait_closed(self, timeout: float = 10) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.pump(0.2):
                return True
        return False

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
