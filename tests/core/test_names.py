"""The names policy (core/names.py) against hostile names: the gate, the
log/terminal-safe text and the disk paths."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mediasrv.core.names import (
    DEFAULT_MAX_NAME_BYTES,
    BadName,
    disk_segment,
    safe_disk_path,
    safe_text,
    validate_name,
)

GOOD = ["live", "cam1", "a.b-c_d", "live/sub", "stream with spaces", "...", "..x", "x..", ".hidden", "émission",
        "直播", "%2e%2e", "a~b", "name%00", "x" * DEFAULT_MAX_NAME_BYTES]

HOSTILE = {
    "../../x": "'..' segment",
    "..": "'..' segment",
    ".": "'.' segment",
    "live/./victim": "'.' segment",
    "a/../test": "'..' segment",
    "test/": "empty segment",
    "a//b": "empty segment",
    "/srv/x": "starts with '/'",
    "/": "starts with '/'",
    "": "is empty",
    "a\\b": "backslash",
    "..\\..\\x": "backslash",
    "a\x00b": "NUL",
    "evil\x1b]0;ALL OK\x07": "control character",
    "x\ny": "control character",
    "x\r": "control character",
    "x\x7f": "control character",
    "x\x85y": "control character",  # C1 NEL
    "x\u202ey": "U+202E",  # right-to-left override
    "x\u200by": "U+200B",  # zero-width space
    "x\u2028y": "U+2028",  # line separator
    "x\udcc0": "U+DCC0",  # a lone surrogate (surrogateescape of a bad byte)
    "x\u00a0y": "space other than",  # no-break space
    " live": "space",
    "live ": "space",
    "\uff0e\uff0e": "NFKC",  # fullwidth "..": a normalising layer would see ".."
    "\uff0e\uff0e\uff0fetc": "NFKC",  # fullwidth "../etc"
    "a\u2025": None,  # "a‥" normalises to "a..", which is fine
    "\u2025": "NFKC",  # "‥" (two dot leader) normalises to ".."
    "x" * (DEFAULT_MAX_NAME_BYTES + 1): "longer than",
    "é" * (DEFAULT_MAX_NAME_BYTES // 2 + 1): "longer than",  # 2 bytes each in UTF-8
}


@pytest.mark.parametrize("name", GOOD)
def test_ordinary_names_pass(name: str) -> None:
    validate_name("live", name)
    validate_name(name)


@pytest.mark.parametrize("name,why", list(HOSTILE.items()))
def test_hostile_names_are_refused(name: str, why: str | None) -> None:
    if why is None:
        validate_name("live", name)
        return
    with pytest.raises(BadName, match="stream name") as e:
        validate_name("live", name)
    assert why in str(e.value)
    with pytest.raises(BadName, match="app name"):
        validate_name(name, "ok")
    # the message is one safe line whatever the name held
    assert "\n" not in str(e.value) and "\x1b" not in str(e.value) and "\x00" not in str(e.value)


@pytest.mark.parametrize("encoded", ["%2e%2e", "%2e%2e%2f%2e%2e%2fx", "%2E%2E/x", "live%2f%2e%2fvictim", "%00x",
                                     "..%2fx", "%2e", "%5c..%5cx"])
def test_percent_decoded_forms_are_refused(encoded: str) -> None:
    """RTSP decodes %XX in each path segment: the decoded form meets the gate."""
    with pytest.raises(BadName):
        validate_name("live", unquote(encoded))


def test_app_only_and_length_limit() -> None:
    validate_name("live")
    validate_name("live", None, max_bytes=4)
    with pytest.raises(BadName, match="longer than 4 bytes"):
        validate_name("lives", max_bytes=4)
    with pytest.raises(BadName):
        validate_name("live", "x" * 10_000_000)  # an 8 MiB RTMP name: refused without a long scan


def test_safe_text_escapes_controls_and_cuts() -> None:
    assert safe_text("live/cam1") == "live/cam1"
    assert safe_text("evil\x1b]0;t\x07\x1b[2K") == "evil\\x1b]0;t\\x07\\x1b[2K"
    forged = "x\n2026-01-01T00:00:00+0000 [mediasrv.shell.auth#info] shell login: root"
    assert "\n" not in safe_text(forged) and safe_text(forged).startswith("x\\x0a2026")
    assert safe_text("a\\x1b") == "a\\\\x1b"  # unambiguous: a literal backslash is doubled
    assert safe_text("x\u202e\u2028\x85") == "x\\u202e\\u2028\\x85"
    assert safe_text("直播 émission") == "直播 émission"
    long = safe_text("y" * 1000, limit=10)
    assert long == "yyyyyyyyyy...(990 more characters)"
    assert safe_text(12) == "12"


def test_disk_segments() -> None:
    assert disk_segment("cam1") == "cam1"
    assert disk_segment("a.b-c_d") == "a.b-c_d"
    assert disk_segment("my stream") == "my%20stream"
    assert disk_segment("%2e") == "%252e"  # '%' is encoded: one-to-one
    assert disk_segment("a~b") == "a%7Eb"
    assert disk_segment("é") == "%C3%A9"
    assert disk_segment("..x") == "..x"
    for bad in ("", ".", ".."):
        with pytest.raises(BadName):
            disk_segment(bad)
    long = disk_segment("é" * 100)  # 600 characters encoded
    assert len(long) <= 200 and "~" in long and not long.split("~")[0].endswith("%")
    assert disk_segment("é" * 100) != disk_segment("é" * 99 + "e")


def test_safe_disk_path_stays_under_root(tmp_path: Path) -> None:
    root = tmp_path / "hls"
    root.mkdir()
    real_root = os.path.realpath(root)
    assert safe_disk_path(root, "live", "cam1") == Path(real_root, "live", "cam1")
    assert safe_disk_path(root, "live", "cam1", "hls.m3u8") == Path(real_root, "live", "cam1", "hls.m3u8")
    assert safe_disk_path(root, "app/sub", "s") == Path(real_root, "app", "sub", "s")
    for parts in (("..", "..", "x"), ("live", "../../x"), ("live", "./victim"), ("live", "a/../test"),
                  ("live", ""), ("live", "test/"), ()):
        with pytest.raises(BadName):
            safe_disk_path(root, *parts)
    # names the gate would refuse still cannot escape: they are encoded
    with pytest.raises(BadName):
        safe_disk_path(root, "/srv/x")
    p = safe_disk_path(root, "live", "a\\..\\..\\x")
    assert p.parent == Path(real_root, "live") and p.name == "a%5C..%5C..%5Cx"
    p = safe_disk_path(root, "live", "x\x00y")
    assert p.name == "x%00y"


def test_absolute_parts_are_refused_not_joined(tmp_path: Path) -> None:
    with pytest.raises(BadName):  # a leading "/" is an empty segment
        safe_disk_path(tmp_path, "/etc", "passwd")


def test_a_symlink_out_of_the_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "live").symlink_to(outside)
    with pytest.raises(BadName, match="leaves its root"):
        safe_disk_path(root, "live", "cam1")
    (root / "ok").mkdir()
    (root / "inner").symlink_to(root / "ok")
    assert safe_disk_path(root, "inner", "cam1").name == "cam1"


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=0, max_size=40), st.text(min_size=0, max_size=40))
def test_any_name_is_refused_or_stays_under_the_root(app: str, stream: str) -> None:
    root = "/nonexistent-mediasrv-root/hls"
    try:
        validate_name(app, stream)
    except BadName:
        accepted = False
    else:
        accepted = True
    try:
        path = safe_disk_path(root, app, stream)
    except BadName:
        assert not accepted, "the encoder refuses only names the gate refuses too"
        return
    assert os.path.commonpath([root, os.path.realpath(path)]) == root
    assert all(ch not in os.path.relpath(path, root) for ch in "\x00\\\n\x1b")
    if accepted:
        assert safe_disk_path(root, app, stream) == path
