"""A stock ZLMediaKit config.ini works as is (issue 10, item 10; CONTRACT §1).

The fixture ``tests/fixtures/zlmediakit-config.ini`` holds every key of a stock
ZLMediaKit (shared/spec/zlmediakit-config-keys.ini) with ZLMediaKit's stock
values, in ZLMediaKit's syntax.  Keys mediasrv implements take effect; the
others are named in one warning line; a key in neither list stops start-up.
"""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from mediasrv import config
from mediasrv._zlmediakit_keys import ZLMEDIAKIT_KEYS
from tests.conftest import FIXTURES
from tests.support.server import free_port, run_twistd, server_env, twistd_command, wait_port

STOCK = FIXTURES / "zlmediakit-config.ini"


def _fixture_keys() -> dict[str, set[str]]:
    p = configparser.ConfigParser(interpolation=None)
    p.optionxform = str  # type: ignore[assignment,method-assign]
    p.read(STOCK, encoding="utf-8")
    return {s: set(p[s]) for s in p.sections()}


def test_fixture_holds_every_stock_key() -> None:
    assert _fixture_keys() == {s: set(keys) for s, keys in ZLMEDIAKIT_KEYS.items()}


def test_stock_config_loads_and_the_implemented_keys_take_effect() -> None:
    cfg = config.load(STOCK)
    assert cfg.general.listen_ip == "::" and cfg.general.mediaServerId == "your_server_id"
    assert (cfg.rtmp.port, cfg.rtsp.port, cfg.http.port, cfg.shell.port) == (1935, 554, 80, 0)
    assert cfg.http.dirMenu is True  # ZLMediaKit's 1; mediasrv's own default is 0
    assert cfg.hook.enable is False and cfg.hook.alive_interval == 10.0 and cfg.hook.retry_delay == 3.0
    assert cfg.hook.stream_changed_schemas == "rtsp/rtmp/fmp4/ts/hls/hls.fmp4"
    assert cfg.protocol.enable_hls and not cfg.protocol.enable_mp4 and cfg.protocol.continue_push_ms == 15000
    assert cfg.api.secret == "035c73f7-bb6b-4889-a715-d9eb2d1925cc"
    assert cfg.http.allow_ip_range.startswith("::1,127.0.0.1,")
    # ZLMediaKit serves HTTPS on 443 with its bundled default.pem; without [ssl] certFile it stays off
    assert cfg.http.sslport == 0


def test_not_implemented_keys_are_named_once() -> None:
    cfg = config.load(STOCK)
    ours = {s: {f for f in vars(getattr(cfg, s))} for s in ZLMEDIAKIT_KEYS if hasattr(cfg, s)}
    expected_keys = [f"{s}.{k}" for s in ZLMEDIAKIT_KEYS if s in ours for k in ZLMEDIAKIT_KEYS[s]
                     if k not in ours[s]]
    expected_sections = [f"[{s}]" for s in ZLMEDIAKIT_KEYS if s not in ours]
    assert sorted(x for x in cfg.ignored if "." in x and "sslport" not in x) == sorted(expected_keys)
    assert sorted(x for x in cfg.ignored if x.startswith("[")) == sorted(expected_sections)
    assert "http.sslport=443 (no [ssl] certFile)" in cfg.ignored
    for must in ("[rtc]", "[rtp_proxy]", "[srt]", "api.apiDebug", "hook.on_rtp_server_timeout",
                 "protocol.modify_stamp", "general.wait_track_ready_ms"):
        assert must in cfg.ignored
    line = config.ignored_keys_line(cfg)
    assert line is not None and "\n" not in line
    assert line.startswith(f"{STOCK}: {len(cfg.ignored)} ZLMediaKit setting(s) not implemented by mediasrv, ignored: ")
    assert config.ignored_keys_line(config.load()) is None


@pytest.mark.parametrize(("section", "line", "error"), [
    ("rtc", "prot=8000", "[rtc] prot: unknown key"),  # a typo inside a ZLMediaKit section we lack
    ("http", "prot=8080", "[http] prot: unknown key"),
    ("hook", "on_plays=", "[hook] on_plays: unknown key"),
])
def test_a_typo_still_stops_start_up(tmp_path: Path, section: str, line: str, error: str) -> None:
    text = STOCK.read_text(encoding="utf-8").replace(f"[{section}]\n", f"[{section}]\n{line}\n", 1)
    ini = tmp_path / "config.ini"
    ini.write_text(text, encoding="utf-8")
    with pytest.raises(config.ConfigError) as exc:
        config.load(ini)
    assert str(exc.value) == f"{ini}: {error}"


def test_unknown_section_still_stops_start_up(tmp_path: Path) -> None:
    ini = tmp_path / "config.ini"
    ini.write_text(STOCK.read_text(encoding="utf-8") + "\n[rtcc]\nport=1\n", encoding="utf-8")
    with pytest.raises(config.ConfigError, match=r": \[rtcc\]: unknown section$"):
        config.load(ini)


def test_sslport_without_certificate_is_an_error_in_a_mediasrv_file(tmp_path: Path) -> None:
    """Only a ZLMediaKit file (it names ZLMediaKit keys mediasrv lacks) gets the sslport excused."""
    ini = tmp_path / "m.ini"
    ini.write_text("[http]\nsslport = 443\n")
    with pytest.raises(config.ConfigError, match=r"\[ssl\] certFile: required when an sslport is set"):
        config.load(ini)


def test_set_does_not_accept_keys_mediasrv_lacks() -> None:
    with pytest.raises(config.ConfigError, match=r"--set: \[rtc\]: unknown section"):
        config.load(STOCK, ["rtc.port=1"])


def test_twistd_starts_on_the_stock_file_and_serves(tmp_path: Path) -> None:
    """``twistd mediasrv --config config.ini`` on the stock file: one warning line, then it serves
    (ports moved off the privileged ones with --set, as an unprivileged test must)."""
    ini = tmp_path / "config.ini"
    shutil.copy(STOCK, ini)
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "hello.txt").write_text("hi")
    rtmp, http, rtsp = free_port(), free_port(), free_port()
    log_path = tmp_path / "twistd.log"
    args = ["--config", str(ini), "--set", "general.listen_ip=127.0.0.1", "--set", f"rtmp.port={rtmp}",
            "--set", f"http.port={http}", "--set", f"rtsp.port={rtsp}"]
    with open(log_path, "wb") as logf:
        proc = subprocess.Popen(twistd_command() + ["-n", "--pidfile=", f"--logfile={log_path}", "mediasrv", *args],
                                cwd=tmp_path, env=server_env(), stdout=logf, stderr=subprocess.STDOUT)
    try:
        for port in (rtmp, http, rtsp):
            wait_port(port, proc)
        # dirMenu=1 from the ZLMediaKit file took effect: the root directory is listed
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/", timeout=10) as r:
            assert r.status == 200 and b"hello.txt" in r.read()
        deadline = time.monotonic() + 10
        while "mediasrv serving" not in log_path.read_text(errors="replace") and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(15)
    log = log_path.read_text(errors="replace")
    warnings = [x for x in log.splitlines() if "not implemented by mediasrv, ignored:" in x]
    assert len(warnings) == 1, log
    assert re.search(r"\[rtc\].*\[srt\]|\[srt\].*\[rtc\]", warnings[0]) and "api.apiDebug" in warnings[0]
    assert "Traceback" not in log


def test_twistd_refuses_a_typo_in_the_stock_file(tmp_path: Path) -> None:
    ini = tmp_path / "config.ini"
    ini.write_text(STOCK.read_text(encoding="utf-8").replace("[rtmp]\n", "[rtmp]\nprot=1936\n", 1), encoding="utf-8")
    r = run_twistd(["--config", str(ini)], tmp_path)
    assert r.returncode != 0
    assert r.stderr.strip() == f"mediasrv: {ini}: [rtmp] prot: unknown key"
