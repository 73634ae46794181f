"""``GET /metrics``: Prometheus text (or OpenMetrics when asked for).

Nothing on the media path counts for metrics: a custom ``Collector`` reads
the session table, the stream registry and the hook service when Prometheus
scrapes.  Byte and drop counters stay monotonic because the totals of closed
sessions are added up when each session closes (a session-table listener,
once per session).  The hook latency histogram is built at scrape time from
the replies the hook service recorded since the previous scrape.

The exposition is rendered in the reactor thread with
``prometheus_client.generate_latest`` rather than through
``prometheus_client.twisted.MetricsResource``, which runs collectors in a
WSGI thread pool: our collector reads live reactor-owned structures.

Access as for the APIs: ``http.allow_ip_range``, then ``api.secret`` as
``?secret=`` (Prometheus ``params:``), a Bearer token (``authorization:``)
or a Basic password (``basic_auth:``).
"""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from twisted.web.server import Request

from mediasrv import __version__
from mediasrv.core.context import Core
from mediasrv.core.sessions import SessionInfo
from mediasrv.http.api_common import client_ip, header_secret, ip_allowed, query_args, secret_matches, write_json

if TYPE_CHECKING:
    from mediasrv.http.site import Route

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _LatencyHistogram:
    """Cumulative buckets fed, at scrape time, from HookService's recent latencies.

    Every successful hook attempt appends exactly one latency, so
    ``calls - failures`` counts them; the new ones are the newest entries of
    the (bounded) list.  If more replies arrived than the list kept, the
    surplus is counted in ``+Inf`` only.
    """

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.total = 0.0
        self.seen = 0

    def update(self, replies: int, latencies: list[float]) -> None:
        new = replies - self.seen
        if new <= 0:
            return
        self.seen = replies
        recent = latencies[-new:] if new <= len(latencies) else list(latencies)
        for value in recent:
            self.counts[bisect.bisect_left(LATENCY_BUCKETS, value)] += 1
            self.total += value
        self.counts[-1] += new - len(recent)

    def buckets(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        running = 0
        for bound, n in zip([*map(str, LATENCY_BUCKETS), "+Inf"], self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out


class MediaCollector(Collector):
    def __init__(self, core: Core) -> None:
        self.core = core
        self.closed_in: Counter[str] = Counter()
        self.closed_out: Counter[str] = Counter()
        self.closed_dropped: Counter[str] = Counter()
        self.latency = _LatencyHistogram()
        core.sessions.add_listener(self)

    # SessionListener
    def session_opened(self, session: SessionInfo) -> None:
        pass

    def session_closed(self, session: SessionInfo) -> None:
        self.closed_in[session.protocol] += session.bytes_in
        self.closed_out[session.protocol] += session.bytes_out
        self.closed_dropped[session.protocol] += session.dropped_frames

    def collect(self) -> Iterator[Metric]:
        core = self.core
        info = GaugeMetricFamily("mediasrv_info", "Server version and id", labels=["version", "server_id"])
        info.add_metric([__version__, core.config.general.mediaServerId], 1)
        yield info

        sessions = list(core.sessions)
        by_kind: Counter[tuple[str, str]] = Counter((s.protocol, s.role.value) for s in sessions)
        g = GaugeMetricFamily("mediasrv_sessions", "Connections now, by protocol and role",
                              labels=["protocol", "role"])
        for (proto, role), n in sorted(by_kind.items()):
            g.add_metric([proto, role], n)
        yield g
        yield CounterMetricFamily("mediasrv_sessions_opened", "Connections accepted since start",
                                  value=core.sessions.total_opened)

        live_in: defaultdict[str, int] = defaultdict(int)
        live_out: defaultdict[str, int] = defaultdict(int)
        live_drop: defaultdict[str, int] = defaultdict(int)
        for s in sessions:
            live_in[s.protocol] += s.bytes_in
            live_out[s.protocol] += s.bytes_out
            live_drop[s.protocol] += s.dropped_frames
        for name, doc, closed, live in (
                ("mediasrv_received_bytes", "Bytes received from clients", self.closed_in, live_in),
                ("mediasrv_sent_bytes", "Bytes sent to clients", self.closed_out, live_out),
                ("mediasrv_dropped_frames", "Frames dropped for slow players", self.closed_dropped, live_drop)):
            c = CounterMetricFamily(name, doc, labels=["protocol"])
            for proto in sorted(set(closed) | set(live)):
                c.add_metric([proto], closed[proto] + live[proto])
            yield c

        streams = [s for s in core.registry if s.ready and not s.closed]
        by_origin: Counter[str] = Counter(s.publisher.protocol if s.publisher else "none" for s in streams)
        g = GaugeMetricFamily("mediasrv_streams", "Live streams, by the publisher's protocol",
                              labels=["protocol"])
        for proto, n in sorted(by_origin.items()):
            g.add_metric([proto], n)
        yield g
        yield GaugeMetricFamily("mediasrv_stream_readers", "Players attached to streams",
                                value=sum(len(s.readers) for s in streams))

        hooks = core.hooks
        stats = hooks.stats
        yield CounterMetricFamily("mediasrv_hook_calls", "Hook HTTP attempts whose reply matters",
                                  value=stats.calls)
        yield CounterMetricFamily("mediasrv_hook_failures", "Hook attempts that failed (transport or reply)",
                                  value=stats.failures)
        yield CounterMetricFamily("mediasrv_hook_denials", "Gates refused by a hook", value=stats.denials)
        self.latency.update(max(0, stats.calls - stats.failures), stats.latencies)
        yield HistogramMetricFamily("mediasrv_hook_latency_seconds", "Hook reply latency",
                                    buckets=self.latency.buckets(), sum_value=self.latency.total)
        outbox = hooks.outbox
        yield GaugeMetricFamily("mediasrv_hook_outbox_depth", "Notifications waiting in the durable outbox",
                                value=outbox.depth if outbox else 0)
        yield CounterMetricFamily("mediasrv_hook_outbox_delivered", "Notifications delivered",
                                  value=outbox.delivered if outbox else 0)
        yield CounterMetricFamily("mediasrv_hook_outbox_failures", "Notification delivery attempts that failed",
                                  value=outbox.failures if outbox else 0)
        yield CounterMetricFamily("mediasrv_hook_outbox_dropped", "Notifications dropped (outbox full)",
                                  value=outbox.dropped if outbox else 0)


class MetricsPage:
    def __init__(self, core: Core) -> None:
        self.core = core
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(MediaCollector(core))
        ProcessCollector(registry=self.registry)

    def render(self, request: Request) -> Any:
        cfg = self.core.config
        if not ip_allowed(client_ip(request, cfg), cfg):
            return write_json(request, {"code": 403, "msg": "Your ip is not allowed to access the service."},
                              status=403)
        given = query_args(request).get("secret") or header_secret(request)
        if not secret_matches(given, cfg.api.secret):
            request.setHeader(b"www-authenticate", b'Bearer realm="mediasrv"')
            msg = "closed: api.secret is not set" if not cfg.api.secret else "secret required"
            return write_json(request, {"code": 401, "msg": msg}, status=401)
        encoder, content_type = choose_encoder(request.getHeader("accept") or "")
        request.setHeader(b"content-type", content_type.encode("ascii"))
        request.setHeader(b"cache-control", b"no-store")
        data: bytes = encoder(self.registry)
        return data


def metrics_routes(core: Core) -> list[Route]:
    from mediasrv.http.site import Route

    page = MetricsPage(core)
    return [Route("metrics", lambda path: () if path.rstrip("/") == "/metrics" else None, page.render)]
