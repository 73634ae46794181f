"""The control channel between the master and its workers: AMP commands and how answers merge.

One AMP connection per worker, over a unix socket pair the master creates at each spawn
(its end adopted by the master, the other passed as ``MEDIASRV_CONTROL_FD``): the master
knows which worker speaks without any handshake, and nothing else can connect.

Worker -> master: the host directory (:class:`Claim`, :class:`Release`, :class:`Lookup`,
:class:`Watch`/:class:`Unwatch`) and :class:`FanOut` (ask every worker, merge the answers).
Master -> worker: :class:`StreamUp`/:class:`StreamDown`/:class:`StreamLost` for watched keys,
and the per-worker calls a fan-out is made of (:data:`CALLS`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from twisted.protocols import amp

_CHUNK = 60000  # an AMP value holds at most 65535 bytes


class BigJson(amp.Argument):  # type: ignore[misc]
    """Any JSON value, of any size: split over ``name``, ``name.1``, ``name.2``... in the box."""

    def toBox(self, name: bytes, strings: dict[bytes, bytes], objects: dict[str, Any], proto: Any) -> None:
        data = json.dumps(objects[name.decode()], separators=(",", ":")).encode()
        chunks = [data[i:i + _CHUNK] for i in range(0, len(data), _CHUNK)] or [b""]
        strings[name] = chunks[0]
        for n, chunk in enumerate(chunks[1:], 1):
            strings[b"%s.%d" % (name, n)] = chunk

    def fromBox(self, name: bytes, strings: dict[bytes, bytes], objects: dict[str, Any], proto: Any) -> None:
        parts = [strings.pop(name)]
        n = 1
        while (b"%s.%d" % (name, n)) in strings:
            parts.append(strings.pop(b"%s.%d" % (name, n)))
            n += 1
        objects[name.decode()] = json.loads(b"".join(parts))


class DirectoryError(Exception):
    """The master's directory could not answer (e.g. Redis unavailable)."""


_ERRORS: dict[type[Exception], bytes] = {DirectoryError: b"DIRECTORY"}


# -- worker -> master: the host directory --

class Claim(amp.Command):  # type: ignore[misc]
    arguments = [(b"key", amp.Unicode()), (b"owner", BigJson())]
    response = [(b"ours", amp.Boolean()), (b"owner", BigJson())]
    errors = _ERRORS


class Release(amp.Command):  # type: ignore[misc]
    arguments = [(b"key", amp.Unicode()), (b"owner", BigJson())]
    response = [(b"released", amp.Boolean())]
    errors = _ERRORS


class Lookup(amp.Command):  # type: ignore[misc]
    arguments = [(b"key", amp.Unicode())]
    response = [(b"owner", BigJson())]  # null: no owner
    errors = _ERRORS


class Watch(amp.Command):  # type: ignore[misc]
    """Send me StreamUp/StreamDown for ``key`` until Unwatch."""

    arguments = [(b"key", amp.Unicode())]


class Unwatch(amp.Command):  # type: ignore[misc]
    arguments = [(b"key", amp.Unicode())]


class FanOut(amp.Command):  # type: ignore[misc]
    """Run ``call`` on every worker (the asking one too) and merge (:func:`merge`)."""

    arguments = [(b"call", amp.Unicode()), (b"args", BigJson())]
    response = [(b"result", BigJson()), (b"missing", amp.ListOf(amp.Integer()))]


# -- master -> worker --

class StreamUp(amp.Command):  # type: ignore[misc]
    arguments = [(b"key", amp.Unicode()), (b"owner", BigJson())]
    requiresAnswer = False


class StreamDown(StreamUp):
    pass


class StreamLost(StreamUp):
    """A stream this worker owns is owned by another node now: stop it here."""


class _WorkerCall(amp.Command):  # type: ignore[misc]
    arguments = [(b"args", BigJson())]
    response = [(b"result", BigJson())]


class ListSessions(_WorkerCall):
    """-> a list of session rows (getAllSession's ``data``)."""


class Kick(_WorkerCall):
    """{"id": ...} or filters -> {"count_hit": n, ...}."""


class CloseStreams(_WorkerCall):
    """close_streams' arguments -> {"count_hit": n, "count_closed": n}."""


class ListStreams(_WorkerCall):
    """getMediaList's arguments -> a list of stream rows."""


class MetricsText(_WorkerCall):
    """-> the worker's Prometheus exposition text."""


CALLS: dict[str, type[_WorkerCall]] = {
    "sessions": ListSessions,
    "kick": Kick,
    "close_streams": CloseStreams,
    "streams": ListStreams,
    "metrics": MetricsText,
}


# -- merging the workers' answers --

def merge_lists(results: list[Any]) -> list[Any]:
    return [row for r in results if isinstance(r, list) for row in r]


def merge_counts(results: list[Any]) -> dict[str, Any]:
    """Numbers are added; any other field keeps the first worker's value."""
    out: dict[str, Any] = {}
    for r in results:
        if not isinstance(r, dict):
            continue
        for k, v in r.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and isinstance(out.get(k, 0), (int, float)):
                out[k] = out.get(k, 0) + v
            else:
                out.setdefault(k, v)
    return out


def merge_metrics(texts: list[Any]) -> str:
    """One exposition from several: samples with the same name and labels are added (counters
    and gauges of workers are additive: connections, bytes, streams)."""
    families: dict[str, Any] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for text in texts:
        if not isinstance(text, str):
            continue
        for fam in text_string_to_metric_families(text):
            families.setdefault(fam.name, fam)
            samples = values.setdefault(fam.name, {})
            for s in fam.samples:
                k = (s.name, tuple(sorted(s.labels.items())))
                samples[k] = samples.get(k, 0.0) + s.value
    lines = []
    for name, fam in families.items():
        lines.append(f"# HELP {name} {fam.documentation}")
        lines.append(f"# TYPE {name} {fam.type}")
        for (sample, labels), value in values[name].items():
            label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
            lines.append(f"{sample}{{{label_text}}} {_number(value)}" if labels else f"{sample} {_number(value)}")
    return "\n".join(lines) + "\n" if lines else ""


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(v: float) -> str:
    return repr(int(v)) + ".0" if v == int(v) and abs(v) < 2**53 else repr(v)


MERGE: dict[str, Callable[[list[Any]], Any]] = {
    "sessions": merge_lists,
    "streams": merge_lists,
    "kick": merge_counts,
    "close_streams": merge_counts,
    "metrics": merge_metrics,
}


def merge(call: str, results: list[Any]) -> Any:
    return MERGE[call](results)
