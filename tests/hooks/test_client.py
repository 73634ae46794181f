"""The hook HTTP client: quiet pools, the hook log line, per-dialect TLS settings
(the TLS handshakes themselves: tests/interop/test_hooks_https.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from OpenSSL import SSL
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.web._newclient import ResponseNeverReceived

from mediasrv import config
from mediasrv.hooks.client import HookClient, HookTransportError, TlsTrust, hook_line, mask_url
from mediasrv.hooks.settings import dialect_settings, hook_urls


def test_pool_factories_are_quiet() -> None:
    client = HookClient(MemoryReactorClock())
    factory = client.pool._factory(lambda p: None, "endpoint")
    assert factory.noisy is False  # no "Starting factory _HTTP11ClientFactory" per hook call


@pytest.mark.parametrize(("url", "shown"), [
    ("http://b/on_play", "http://b/on_play"),
    ("http://b/on_play?secret=abc&app=live", "http://b/on_play?secret=***&app=live"),
    ("https://u:pw@b:8443/h?token=t&sign=s&api_key=k", "https://u:***@b:8443/h?token=***&sign=***&api_key=***"),
    ("http://b/h?name=a%20b", "http://b/h?name=a%20b"),
])
def test_mask_url(url: str, shown: str) -> None:
    assert mask_url(url) == shown


def test_hook_line() -> None:
    assert hook_line("zlm", "on_play", "http://b/on_play?token=x", "allowed", 0.0123) == \
        "hook zlm on_play http://b/on_play?token=***: allowed (12 ms)"
    assert hook_line("srs", "on_stop", "http://b/s", "HTTP 500; attempt 1") == "hook srs on_stop http://b/s: HTTP 500; attempt 1"


def test_per_dialect_settings_and_defaults() -> None:
    cfg = config.load()
    zlm, srs, nms, oclp = (dialect_settings(cfg, d) for d in ("zlm", "srs", "nms", "oclp"))
    assert (zlm.retry, zlm.retry_delay, zlm.section) == (1, 3.0, "[hook]")
    # SRS, Node-Media-Server and PingOS never retry a hook
    assert (srs.retry, nms.retry, oclp.retry) == (0, 0, 0)
    assert (srs.timeout, nms.timeout, oclp.timeout) == (10.0, 10.0, 3.0)
    assert all(s.ssl_verify and not s.ssl_ca_file for s in (zlm, srs, nms, oclp))
    cfg = config.load(overrides=["http_hooks.retry=2", "http_hooks.retry_delay=0.5", "oclp.ssl_verify=0"])
    assert (dialect_settings(cfg, "srs").retry, dialect_settings(cfg, "srs").retry_delay) == (2, 0.5)
    assert dialect_settings(cfg, "oclp").ssl_verify is False


def test_urls_map_to_their_dialect() -> None:
    cfg = config.load(overrides=["hook.on_play=https://z/on_play", "http_hooks.on_play=https://s/a https://s/b",
                                 "notify.notify_url=https://n/notify", "oclp.oclp_play=https://o/play stage=update"])
    assert hook_urls(cfg) == {"https://z/on_play": "zlm", "https://s/a": "srs", "https://s/b": "srs",
                              "https://n/notify": "nms", "https://o/play": "oclp"}
    client = HookClient.from_config(MemoryReactorClock(), config.load(overrides=[
        "hook.on_play=https://z/on_play", "oclp.oclp_play=https://o/play", "oclp.ssl_verify=0"]))
    assert client.trust_for("https://o/play?call=play&act=start") == TlsTrust(False, "", "[oclp]")
    assert client.trust_for("https://z/on_play").verify is True
    assert client.trust_for("https://elsewhere/x", dialect="oclp").verify is False
    # one pool per TLS policy: an unchecked connection is never reused for a checked dialect
    assert len(client.pools) == 2


def test_unusable_ca_file_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    cfg = config.load(overrides=[f"notify.ssl_ca_file={bad}"])
    with pytest.raises(config.ConfigError, match=r"\[notify\] ssl_ca_file: cannot use .*no PEM certificate"):
        HookClient.from_config(MemoryReactorClock(), cfg)
    with pytest.raises(config.ConfigError, match=r"\[hook\] ssl_ca_file: cannot read"):
        config.load(overrides=[f"hook.ssl_ca_file={tmp_path / 'missing.pem'}"])


def test_tls_failure_names_the_key() -> None:
    failure = Failure(ResponseNeverReceived([Failure(SSL.Error([("SSL routines", "", "certificate verify failed")]))]))
    err = HookClient._transport_error(failure, 10, "https://127.0.0.1:8443/h", TlsTrust(section="[http_hooks]"))
    assert err.check(HookTransportError)
    message = err.getErrorMessage()
    assert message == ("TLS: certificate of 127.0.0.1:8443 not accepted (certificate verify failed); to trust it "
                       "set [http_hooks] ssl_ca_file to its CA certificate (PEM), or [http_hooks] ssl_verify = 0 "
                       "to accept any certificate")
    plain = HookClient._transport_error(Failure(ConnectionRefusedError("refused")), 10, "http://b/h")
    assert "ssl_" not in plain.getErrorMessage()
