"""/metrics parsed with prometheus_client's own text parser."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mediasrv.core.context import Core
from tests.shell.fakes import SECRET, Http, connect, make_core, play, publish, shutdown


@pytest.fixture
def core() -> Iterator[Core]:
    c = make_core()
    yield c
    shutdown(c)


def scrape(http: Http, **kw: object) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    r = http.get("/metrics", params={"secret": SECRET}, **kw)
    assert r.status == 200, r.body
    assert r.headers["content-type"].startswith("text/plain")
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(r.body.decode()):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def test_needs_the_secret(core: Core) -> None:
    http = Http(core)
    assert http.get("/metrics").status == 401
    assert http.get("/metrics", params={"secret": "no"}).status == 401
    assert http.get("/metrics", headers={"Authorization": f"Bearer {SECRET}"}).status == 200


def test_address_range_applies() -> None:
    core = make_core("http.allow_ip_range=10.0.0.0-10.0.0.255")
    try:
        assert Http(core).get("/metrics", params={"secret": SECRET}).status == 403
    finally:
        shutdown(core)


def test_sessions_streams_bytes(core: Core) -> None:
    stream, pub = publish(core)
    viewer = play(core, stream, "http-flv")
    play(core, stream, "rtmp")
    connect(core, "shell")
    http = Http(core)
    m = scrape(http)
    assert m["mediasrv_sessions"][(("protocol", "rtmp"), ("role", "publisher"))] == 1
    assert m["mediasrv_sessions"][(("protocol", "http-flv"), ("role", "player"))] == 1
    assert m["mediasrv_sessions"][(("protocol", "shell"), ("role", "none"))] == 1
    assert m["mediasrv_streams"][(("protocol", "rtmp"),)] == 1
    assert m["mediasrv_stream_readers"][()] == 2
    assert m["mediasrv_received_bytes_total"][(("protocol", "rtmp"),)] == 1500
    assert m["mediasrv_sent_bytes_total"][(("protocol", "http-flv"),)] == 2000
    assert m["mediasrv_sessions_opened_total"][()] == 4
    assert "process_resident_memory_bytes" in m
    # counters stay monotonic when the session goes away
    viewer.session.bytes_out += 500
    viewer.session.kick("bye")
    m2 = scrape(http)
    assert m2["mediasrv_sent_bytes_total"][(("protocol", "http-flv"),)] == 2500
    assert (("protocol", "http-flv"), ("role", "player")) not in m2["mediasrv_sessions"]


def test_hook_counters_latency_histogram_outbox(core: Core) -> None:
    stats = core.hooks.stats
    http = Http(core)
    stats.calls, stats.failures, stats.denials = 5, 1, 2
    stats.latencies.extend([0.003, 0.02, 0.2, 3.0])
    m = scrape(http)
    assert m["mediasrv_hook_calls_total"][()] == 5
    assert m["mediasrv_hook_failures_total"][()] == 1
    assert m["mediasrv_hook_denials_total"][()] == 2
    buckets = {dict(k)["le"]: v for k, v in m["mediasrv_hook_latency_seconds_bucket"].items()}
    assert buckets["0.005"] == 1 and buckets["0.025"] == 2 and buckets["0.25"] == 3 and buckets["5.0"] == 4
    assert buckets["+Inf"] == 4 and m["mediasrv_hook_latency_seconds_count"][()] == 4
    assert m["mediasrv_hook_latency_seconds_sum"][()] == pytest.approx(3.223)
    # the next scrape adds only the new replies
    stats.calls += 1
    stats.latencies.append(0.04)
    m = scrape(http)
    assert m["mediasrv_hook_latency_seconds_count"][()] == 5
    assert m["mediasrv_hook_outbox_depth"][()] == 0


def test_openmetrics_when_asked(core: Core) -> None:
    r = Http(core).get("/metrics", params={"secret": SECRET},
                       headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert r.headers["content-type"].startswith("application/openmetrics-text")
    assert r.body.rstrip().endswith(b"# EOF")
