"""App and stream names: the one policy for what a name may be, how it is
shown, and how it becomes a path on disk.

Names come from clients (an RTMP ``connect``/``publish``, an RTSP URL, an
HTTP path) and end up in the registry, hook bodies, logs, the admin shell
and file paths (HLS ``filePath``, MP4 recordings).  Three functions:

* :func:`validate_name` -- the gate.  An app or stream name is refused when
  it is empty, longer than the configured number of UTF-8 bytes
  (``general.maxNameLength``), starts with ``/``, has an empty, ``.`` or
  ``..`` segment, contains ``\\``, NUL, a control character (C0, DEL, C1),
  an invisible or direction-changing format character (zero-width space,
  bidi overrides ...), a line or paragraph separator, a lone surrogate, an
  unassigned code point, whitespace other than the plain space, or leading or
  trailing spaces -- or when its NFKC compatibility form (what a later layer
  might normalise it to: fullwidth ``．．／`` becomes ``../``) would be
  refused.  ``/`` inside a name separates segments (``app/sub``, as SRS and
  nginx-rtmp allow).

* :func:`safe_text` -- a name (or any client string) as it may appear in a
  log line or on the admin's terminal: control and format characters shown
  as ``\\xNN``/``\\uNNNN`` escapes, backslashes doubled, long text cut.  No
  client string can then end a log line, forge the next one, or send escape
  sequences to an operator's terminal.

* :func:`safe_disk_path` -- ``root/<segment>/...`` where every segment is
  percent-encoded (everything but ASCII letters, digits, ``.``, ``_`` and
  ``-``, including ``%`` and ``~``, so the mapping is one-to-one), ``.``,
  ``..`` and empty segments are refused, over-long segments are shortened
  with a hash suffix, and the real path (symlinks resolved) must stay under
  the real root.  Names the gate accepts and that use only the safe
  characters map to themselves, so ``live/cam1`` is still
  ``<root>/live/cam1``.
"""

from __future__ import annotations

import hashlib
import os
import unicodedata
from pathlib import Path
from typing import Final

__all__ = [
    "DEFAULT_MAX_NAME_BYTES",
    "BadName",
    "disk_segment",
    "safe_disk_path",
    "safe_text",
    "validate_name",
]

DEFAULT_MAX_NAME_BYTES: Final = 128
"""The built-in ``general.maxNameLength``: bytes of UTF-8 per app or stream name."""

MAX_SEGMENT_BYTES: Final = 200
"""Longest encoded path segment; longer ones get a hash suffix (NAME_MAX is 255)."""

_SAFE_ASCII: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")
# Unicode general categories refused in names: controls, format characters
# (zero-width, bidi overrides), lone surrogates, unassigned code points,
# line and paragraph separators.  Private use (Co) is harmless and allowed.
_BAD_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs", "Cn", "Zl", "Zp"})


class BadName(ValueError):
    """A name the policy refuses; ``str()`` is one log-safe line saying why."""


# -- display ---------------------------------------------------------------------------------------
def _escape_char(ch: str) -> str:
    n = ord(ch)
    if n < 0x100:
        return f"\\x{n:02x}"
    if n < 0x10000:
        return f"\\u{n:04x}"
    return f"\\U{n:08x}"


def _needs_escape(ch: str) -> bool:
    n = ord(ch)
    if n < 0x20 or 0x7F <= n < 0xA0:
        return True
    if n < 0x7F:
        return ch == "\\"
    return unicodedata.category(ch) in _BAD_CATEGORIES


def safe_text(value: object, limit: int = 256, backslashes: bool = True) -> str:
    """``value`` as text safe for a log line or a terminal.

    C0/C1 control characters, DEL, format characters, separators and lone
    surrogates become ``\\xNN``/``\\uNNNN`` escapes and ``\\`` becomes
    ``\\\\`` (unless ``backslashes`` is false: for text whose parts were
    escaped already), so the result is unambiguous and holds no line break
    or escape sequence.  Text longer than ``limit`` characters (0: no limit)
    is cut and says how much was left out.
    """
    text = value if isinstance(value, str) else str(value)
    cut = 0
    if limit and len(text) > limit:
        cut = len(text) - limit
        text = text[:limit]
    if any(_needs_escape(ch) for ch in text):
        text = "".join(
            ("\\\\" if backslashes else ch) if ch == "\\" else (_escape_char(ch) if _needs_escape(ch) else ch)
            for ch in text
        )
    if cut:
        text += f"...({cut} more characters)"
    return text


# -- the gate --------------------------------------------------------------------------------------
def _problem(name: str, max_bytes: int) -> str | None:
    """Why ``name`` is refused, or None."""
    if not name:
        return "is empty"
    if len(name) > max_bytes or len(name.encode("utf-8", "surrogatepass")) > max_bytes:
        return f"is longer than {max_bytes} bytes"
    for ch in name:
        n = ord(ch)
        if n == 0:
            return "contains NUL"
        if ch == "\\":
            return "contains a backslash"
        if n < 0x20 or 0x7F <= n < 0xA0:
            return "contains a control character"
        if n > 0x7F:
            cat = unicodedata.category(ch)
            if cat in _BAD_CATEGORIES:
                return f"contains U+{n:04X} ({cat})"
            if cat == "Zs":
                return f"contains U+{n:04X} (a space other than U+0020)"
    if name[0] == " " or name[-1] == " ":
        return "starts or ends with a space"
    if name[0] == "/":
        return "starts with '/'"
    for segment in name.split("/"):
        if segment == "":
            return "has an empty segment ('//' or a trailing '/')"
        if segment in (".", ".."):
            return f"has a {segment!r} segment"
    return None


def validate_name(app: str, stream: str | None = None, max_bytes: int = DEFAULT_MAX_NAME_BYTES) -> None:
    """Refuse (raise :class:`BadName`) an app or stream name outside the policy.

    ``stream`` None checks the app only (an RTMP ``connect``).  The message
    names which of the two failed and why, with the name shown through
    :func:`safe_text`.
    """
    for what, name in (("app", app), ("stream", stream)):
        if name is None:
            continue
        problem = _problem(name, max_bytes)
        if problem is None:
            folded = unicodedata.normalize("NFKC", name)
            if folded != name:
                folded_problem = _problem(folded, max_bytes)
                if folded_problem is not None:
                    problem = f"normalises (NFKC) to a name that {folded_problem}"
        if problem is not None:
            raise BadName(f"{what} name {safe_text(name, 80)!r} {problem}")


# -- disk ----------------------------------------------------------------------------------------------
def disk_segment(segment: str) -> str:
    """One path segment, percent-encoded so it is a plain, safe file name.

    Raises :class:`BadName` for ``""``, ``"."`` and ``".."``.
    """
    if segment in ("", ".", ".."):
        raise BadName(f"path segment {segment!r} is not allowed")
    if all(ch in _SAFE_ASCII for ch in segment):
        encoded = segment
    else:
        parts = []
        for ch in segment:
            if ch in _SAFE_ASCII:
                parts.append(ch)
            else:
                parts.append("".join(f"%{b:02X}" for b in ch.encode("utf-8", "surrogatepass")))
        encoded = "".join(parts)
    if len(encoded) > MAX_SEGMENT_BYTES:
        keep = encoded[:120]
        tail = keep.rfind("%", len(keep) - 2)
        if tail >= 0:
            keep = keep[:tail]
        digest = hashlib.sha256(segment.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        # "~" is always encoded above, so only a shortened segment holds one.
        encoded = f"{keep}~{digest}"
    return encoded


def safe_disk_path(root: str | os.PathLike[str], *parts: str) -> Path:
    """``root`` joined with ``parts`` (each split at ``/``), every segment
    encoded by :func:`disk_segment`, and checked to stay under ``root``.

    The check is on real paths: a symlink inside ``root`` that leads out of
    it is refused too.  Raises :class:`BadName` when a segment is refused or
    the result would leave ``root``.
    """
    base = os.path.realpath(root)
    segments = [disk_segment(seg) for part in parts for seg in part.split("/")]
    if not segments:
        raise BadName("no path below the root")
    path = os.path.join(base, *segments)
    real = os.path.realpath(path)
    if os.path.commonpath([base, real]) != base or real == base:
        raise BadName(f"path {safe_text('/'.join(parts), 80)!r} leaves its root {safe_text(base, 80)!r}")
    return Path(path)
