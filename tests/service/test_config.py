from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from mediasrv import config
from mediasrv._defaults import DEFAULT_INI
from tests.conftest import ROOT


def test_shipped_ini_loads_to_exactly_the_defaults() -> None:
    shipped = config.load(ROOT / "etc" / "mediasrv.ini")
    builtin = config.load()
    assert dataclasses.replace(shipped, source="x") == dataclasses.replace(builtin, source="x")


def test_shipped_ini_has_every_key_of_the_embedded_defaults() -> None:
    assert (ROOT / "etc" / "mediasrv.ini").read_text() == DEFAULT_INI


def test_contract_defaults() -> None:
    c = config.load()
    assert (c.rtmp.port, c.rtsp.port, c.http.port, c.shell.port) == (1935, 8554, 8080, 9000)
    assert c.shell.interface == "127.0.0.1"
    assert c.general.mediaServerId == "your_server_id"
    assert c.general.maxStreamWaitMS == 15000
    assert c.protocol.continue_push_ms == 15000
    assert (c.hls.segDur, c.hls.segNum, c.hls.segRetain) == (2, 3, 5)
    assert c.hook.enable is False and c.hook.retry == 1 and c.hook.retry_delay == 3.0
    assert c.notify.on_failure == "allow" and c.hook.on_failure == "deny"
    assert c.api.secret == ""


def test_overrides_apply_in_order(tmp_path: Path) -> None:
    ini = tmp_path / "m.ini"
    ini.write_text("[rtmp]\nport = 1940\n[general]\nmediaServerId = abc\n")
    c = config.load(ini, ["rtmp.port=1941"])
    assert c.rtmp.port == 1941
    assert c.general.mediaServerId == "abc"
    assert c.get("rtmp.port") == 1941
    assert c.as_flat_dict()["general.mediaServerId"] == "abc"


@pytest.mark.parametrize(
    ("text", "sets", "message"),
    [
        ("[nope]\nx = 1\n", [], "{f}: [nope]: unknown section"),
        ("[rtmp]\nportt = 1\n", [], "{f}: [rtmp] portt: unknown key"),
        ("[rtmp]\nport = abc\n", [], "{f}: [rtmp] port: 'abc' is not an integer"),
        ("[rtmp]\nport = 70000\n", [], "{f}: [rtmp] port: 70000 is not a port number (0-65535)"),
        ("[general]\nenableVhost = maybe\n", [], "{f}: [general] enableVhost: 'maybe' is not a boolean (use 0 or 1)"),
        ("[hook]\ntimeoutSec = 0\n", [], "{f}: [hook] timeoutSec: 0.0 must be greater than zero"),
        ("[hook]\non_failure = sometimes\n", [], "{f}: [hook] on_failure: 'sometimes' must be 'allow' or 'deny'"),
        ("[general]\nlisten_ip = here\n", [], "{f}: [general] listen_ip: 'here' is not an IP address"),
        ("", ["rtmp.port"], "--set: rtmp.port: expected section.key=value"),
        ("", ["rtmp.nope=1"], "--set: [rtmp] nope: unknown key"),
        ("", ["rtmp.port=-1"], "--set: [rtmp] port: -1 is not a port number (0-65535)"),
        ("[rtmp]\nsslport = 1936\n", [], "{f}: [ssl] certFile: required when an sslport is set"),
        ("[http]\nallow_ip_range = 1.2.3.4-1.2.3.1\n", [],
         "{f}: [http] allow_ip_range: '1.2.3.4-1.2.3.1' is not an address range"),
    ],
)
def test_config_errors_are_one_line(tmp_path: Path, text: str, sets: list[str], message: str) -> None:
    ini = tmp_path / "bad.ini"
    ini.write_text(text)
    with pytest.raises(config.ConfigError) as exc:
        config.load(ini, sets)
    assert str(exc.value) == message.format(f=ini)
    assert "\n" not in str(exc.value)


def test_unreadable_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.ini"
    with pytest.raises(config.ConfigError, match="cannot read"):
        config.load(missing)


def test_syntax_error_names_the_line(tmp_path: Path) -> None:
    ini = tmp_path / "bad.ini"
    ini.write_text("[rtmp]\nport = 1\nport = 2\n")
    with pytest.raises(config.ConfigError) as exc:
        config.load(ini)
    assert str(exc.value).startswith(f"{ini}: line 3: ")


def test_with_value_validates() -> None:
    c = config.load()
    assert config.with_value(c, "general.flowThreshold", "0").general.flowThreshold == 0
    with pytest.raises(config.ConfigError):
        config.with_value(c, "general.flowThreshold", "x")
