"""One row per client connection: the single source for hooks, APIs, shell and metrics."""

from __future__ import annotations

import enum
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from mediasrv.config import DEFAULT_VHOST


class Role(enum.Enum):
    NONE = "none"
    PUBLISHER = "publisher"
    PLAYER = "player"


@dataclass(slots=True, eq=False)
class SessionInfo:
    """What is known about one connection.  Protocol adapters update the
    counters in place; readers of the table (APIs, shell, metrics) only read."""

    id: str
    protocol: str
    peer_ip: str
    peer_port: int
    local_port: int
    started: float
    role: Role = Role.NONE
    vhost: str = DEFAULT_VHOST
    app: str = ""
    stream: str = ""
    params: str = ""
    bytes_in: int = 0
    bytes_out: int = 0
    dropped_frames: int = 0
    closer: Callable[[str], None] | None = field(default=None, repr=False)

    def kick(self, reason: str) -> None:
        if self.closer is not None:
            self.closer(reason)


class SessionListener(Protocol):
    def session_opened(self, session: SessionInfo) -> None: ...
    def session_closed(self, session: SessionInfo) -> None: ...


class SessionTable:
    """``id → SessionInfo`` for every live connection of every protocol."""

    def __init__(self, new_id: Callable[[], str] = lambda: secrets.token_hex(4)) -> None:
        self._rows: dict[str, SessionInfo] = {}
        self._new_id = new_id
        self._listeners: list[SessionListener] = []
        self.total_opened = 0

    def add_listener(self, listener: SessionListener) -> None:
        self._listeners.append(listener)

    def open(
        self, protocol: str, peer_ip: str, peer_port: int, local_port: int, now: float
    ) -> SessionInfo:
        sid = self._new_id()
        while sid in self._rows:
            sid = self._new_id()
        row = SessionInfo(sid, protocol, peer_ip, peer_port, local_port, now)
        self._rows[sid] = row
        self.total_opened += 1
        for listener in self._listeners:
            listener.session_opened(row)
        return row

    def close(self, session: SessionInfo) -> None:
        """Remove the row; a second call for the same session does nothing."""
        if self._rows.pop(session.id, None) is None:
            return
        for listener in self._listeners:
            listener.session_closed(session)

    def get(self, sid: str) -> SessionInfo | None:
        return self._rows.get(sid)

    def kick(self, sid: str, reason: str = "kicked") -> bool:
        row = self._rows.get(sid)
        if row is None:
            return False
        row.kick(reason)
        return True

    def __iter__(self) -> Iterator[SessionInfo]:
        return iter(list(self._rows.values()))

    def __len__(self) -> int:
        return len(self._rows)
