"""Files under http.rootPath: containment, on_http_access (fields, err/path/second,
cookie and query-string caching), allow_ip_range without the hook, dirMenu."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock

from mediasrv import config
from mediasrv.core.context import Core
from mediasrv.http.site import build_site
from mediasrv.http.static import Refused, resolve
from tests.support.http import AutoClient, HttpHarness, Response


@pytest.fixture
def root(tmp_path: Path) -> Path:
    www = tmp_path / "www"
    (www / "vod" / "sub").mkdir(parents=True)
    (www / "vod" / "a.mp4").write_bytes(b"MP4DATA" * 100)
    (www / "vod" / "sub" / "b.txt").write_text("bee")
    (www / "index.html").write_text("<h1>home</h1>")
    (www / "odd name%2e.txt").write_text("odd")
    (tmp_path / "secret.txt").write_text("TOP SECRET")
    os.symlink(tmp_path / "secret.txt", www / "vod" / "leak.txt")
    os.symlink(tmp_path, www / "up")
    os.symlink(www / "vod" / "a.mp4", www / "alias.mp4")  # a symlink that stays inside is fine
    return www


# -- containment (pure) -------------------------------------------------------------------------------------
@pytest.mark.parametrize("raw", [
    b"/../secret.txt", b"/vod/../../secret.txt", b"/%2e%2e/secret.txt", b"/%2E%2e/secret.txt",
    b"/vod/%2e%2e/%2e%2e/secret.txt", b"/..%2fsecret.txt", b"/%2e%2e%2fsecret.txt", b"/vod/..",
])
def test_dot_dot_is_refused(root: Path, raw: bytes) -> None:
    with pytest.raises(Refused) as e:
        resolve(str(root), raw)
    assert e.value.code == 403


@pytest.mark.parametrize("raw", [b"/vod/a.mp4\x00.txt", b"/vod/a.mp4%00.txt", b"/%00"])
def test_nul_is_refused(root: Path, raw: bytes) -> None:
    with pytest.raises(Refused) as e:
        resolve(str(root), raw)
    assert e.value.code == 400


@pytest.mark.parametrize("raw", [b"/vod/leak.txt", b"/up/secret.txt", b"/up/www/../secret.txt"])
def test_symlinks_out_of_the_root_are_refused(root: Path, raw: bytes) -> None:
    with pytest.raises(Refused):
        resolve(str(root), raw)


def test_absolute_looking_paths_stay_inside(root: Path, tmp_path: Path) -> None:
    t = resolve(str(root), b"//etc/passwd")
    assert t.file_path == str(root / "etc" / "passwd") and not t.exists
    t = resolve(str(root), ("/" + str(tmp_path / "secret.txt")).encode())
    assert t.file_path.startswith(str(root) + os.sep) and not t.exists


def test_plain_paths(root: Path) -> None:
    t = resolve(str(root), b"/vod/a.mp4")
    assert (t.url_path, t.exists, t.is_dir) == ("/vod/a.mp4", True, False)
    t = resolve(str(root), b"/vod")
    assert (t.url_path, t.is_dir) == ("/vod/", True)
    assert resolve(str(root), b"/alias.mp4").file_path == str(root / "vod" / "a.mp4")
    # decoded once: %252e%252e is a file literally named %2e%2e
    assert resolve(str(root), b"/%252e%252e/x").url_path == "/%2e%2e/x"
    assert resolve(str(root), b"/odd%20name%252e.txt").exists


# -- over HTTP ----------------------------------------------------------------------------------------------
ACCESS = ("hook.enable=1", "hook.on_http_access=http://h/on_http_access")


@pytest.fixture
def make(clock: Clock, root: Path) -> Iterator[Callable[..., tuple[HttpHarness, AutoClient, Core]]]:
    def factory(*sets: str, reply: Any = None) -> tuple[HttpHarness, AutoClient, Core]:
        client = AutoClient(reply) if reply else AutoClient()
        core = Core.build(config.load(overrides=[f"http.rootPath={root}", *sets]), clock, client)  # type: ignore[arg-type]
        return HttpHarness(build_site(core)), client, core

    yield factory


def test_serves_files_with_types(make: Callable[..., Any]) -> None:
    http, _, _ = make()
    r = http.get("/vod/a.mp4", peer=("127.0.0.1", 5000))
    assert r.status == 200 and r.body == b"MP4DATA" * 100
    assert r.header("content-type") == "video/mp4"
    assert http.get("/", peer=("127.0.0.1", 5000)).body == b"<h1>home</h1>"
    ranged = http.get("/vod/a.mp4", headers={"Range": "bytes=0-6"}, peer=("127.0.0.1", 5000))
    assert ranged.status == 206 and ranged.body == b"MP4DATA"
    assert http.get("/vod/none.mp4", peer=("127.0.0.1", 5000)).status == 404


@pytest.mark.parametrize("target", [
    "/../secret.txt", "/%2e%2e/secret.txt", "/vod/%2e%2e/%2e%2e/secret.txt", "/vod/leak.txt", "/up/secret.txt",
    "//etc/passwd", "/vod/a.mp4%00.txt",
])
def test_no_byte_outside_the_root(make: Callable[..., Any], target: str) -> None:
    http, _, _ = make()
    r = http.get(target, peer=("127.0.0.1", 5000))
    assert r.status in (400, 403, 404)
    assert b"TOP SECRET" not in r.body and b"root:" not in r.body


def test_without_the_hook_allow_ip_range_decides(make: Callable[..., Any]) -> None:
    http, _, _ = make()
    assert http.get("/vod/a.mp4", peer=("192.168.3.4", 5000)).status == 200
    assert http.get("/vod/a.mp4", peer=("8.8.8.8", 5000)).status == 403
    http, _, _ = make("http.allow_ip_range=8.8.8.0-8.8.8.255")
    assert http.get("/vod/a.mp4", peer=("8.8.8.8", 5000)).status == 200
    assert http.get("/vod/a.mp4", peer=("127.0.0.1", 5000)).status == 403


def test_directory_listing_only_with_dir_menu(make: Callable[..., Any]) -> None:
    http, _, _ = make()
    assert http.get("/vod/", peer=("127.0.0.1", 5000)).status == 404
    http, _, _ = make("http.dirMenu=1")
    r = http.get("/vod/", peer=("127.0.0.1", 5000))
    assert r.status == 200 and b'href="a.mp4"' in r.body and b'href="sub/"' in r.body
    assert http.get("/vod", peer=("127.0.0.1", 5000)).status == 302


def test_on_http_access_fields(make: Callable[..., Any], root: Path) -> None:
    http, client, _ = make(*ACCESS)
    r = http.get("/vod/a.mp4?token=1&x=2", headers={"User-Agent": "TestAgent/1", "X-Custom": "yes"},
                 peer=("8.8.8.8", 5555))
    assert r.status == 200  # the hook decides, not the address range
    (body,) = client.to("/on_http_access")
    assert body["ip"] == "8.8.8.8" and body["port"] == 5555 and body["id"]
    assert body["path"] == "/vod/a.mp4" and body["file_path"] == str(root / "vod" / "a.mp4")
    assert body["is_dir"] is False and body["params"] == "token=1&x=2"
    assert body["header.User-Agent"] == "TestAgent/1" and body["header.X-Custom"] == "yes"
    assert body["header.Host"] == "example.test"
    assert body["mediaServerId"] and isinstance(body["hook_index"], int)


def test_err_denies_with_401(make: Callable[..., Any]) -> None:
    http, _, _ = make(*ACCESS, reply=lambda url, body: (200, {"code": 0, "err": "no ticket", "second": 0}))
    r = http.get("/vod/a.mp4")
    assert r.status == 401 and b"no ticket" in r.body and r.cookie() is None


def test_hook_failure_denies_this_request_only(make: Callable[..., Any]) -> None:
    answers = iter([(500, b"oops"), (500, b"oops"), (200, {"code": 0, "second": 0})])
    http, client, core = make(*ACCESS, "hook.retry=1", "hook.retry_delay=1",
                              reply=lambda url, body: next(answers))
    ex = http.request("/vod/a.mp4")
    core.clock.advance(1)  # the retry
    assert ex.done().status == 401
    assert http.get("/vod/a.mp4").status == 200


def _cookie(r: Response) -> dict[str, str]:
    c = r.cookie()
    assert c is not None
    return {"Cookie": f"other=1; ZLM_HTTP_COOKIE={c[0]}"}


def test_decision_cached_by_cookie_for_its_path(make: Callable[..., Any]) -> None:
    http, client, core = make(*ACCESS, reply=lambda url, body: (200, {"code": 0, "err": "", "path": "/vod/",
                                                                      "second": 100}))
    r = http.get("/vod/a.mp4")
    value, attrs = r.cookie()  # type: ignore[misc]
    assert attrs["path"] == "/vod/" and attrs["max-age"] == "100"
    assert http.get("/vod/sub/b.txt", headers=_cookie(r)).body == b"bee"
    assert http.get("/vod/a.mp4", headers=_cookie(r)).status == 200
    assert len(client.to("/on_http_access")) == 1
    assert http.get("/index.html", headers=_cookie(r)).status == 200  # outside /vod/: asked
    assert len(client.to("/on_http_access")) == 2
    core.clock.advance(101)  # expired
    http.get("/vod/a.mp4", headers=_cookie(r))
    assert len(client.to("/on_http_access")) == 3


def test_empty_path_covers_the_request_directory(make: Callable[..., Any]) -> None:
    http, client, _ = make(*ACCESS, reply=lambda url, body: (200, {"code": 0, "second": 60}))
    r = http.get("/vod/sub/b.txt")
    assert r.cookie()[1]["path"] == "/vod/sub/"  # type: ignore[index]
    http.get("/vod/sub/b.txt", headers=_cookie(r))
    http.get("/vod/a.mp4", headers=_cookie(r))
    assert len(client.to("/on_http_access")) == 2


def test_query_string_is_the_fallback_id(make: Callable[..., Any]) -> None:
    http, client, _ = make(*ACCESS, reply=lambda url, body: (200, {"code": 0, "second": 60}))
    http.get("/vod/a.mp4?token=abc")
    http.get("/vod/sub/b.txt?token=abc")
    assert len(client.to("/on_http_access")) == 1
    http.get("/vod/a.mp4?token=other")
    assert len(client.to("/on_http_access")) == 2


def test_cached_denial_replayed_only_while_params_unchanged(make: Callable[..., Any]) -> None:
    http, client, _ = make(*ACCESS, reply=lambda url, body: (200, {"code": 0, "err": "bad token", "second": 60})
                           if body["params"] != "token=good" else (200, {"code": 0, "second": 60}))
    r = http.get("/vod/a.mp4?token=bad")
    assert r.status == 401
    assert http.get("/vod/a.mp4?token=bad", headers=_cookie(r)).status == 401
    assert http.get("/vod/a.mp4", headers=_cookie(r)).status == 401
    assert len(client.to("/on_http_access")) == 1
    assert http.get("/vod/a.mp4?token=good", headers=_cookie(r)).status == 200
    assert len(client.to("/on_http_access")) == 2


def test_code_not_zero_denies(make: Callable[..., Any]) -> None:
    http, _, _ = make(*ACCESS, reply=lambda url, body: (200, {"code": -1, "msg": "nope"}))
    assert http.get("/vod/a.mp4").status == 401


def test_hls_paths_are_not_files(make: Callable[..., Any], root: Path) -> None:
    """hls.m3u8 goes to on_play, never on_http_access (hooks.md §1.4)."""
    (root / "live" / "x").mkdir(parents=True)
    (root / "live" / "x" / "hls.m3u8").write_text("#EXTM3U\n")
    http, client, _ = make(*ACCESS, "hook.on_play=http://h/on_play", "general.maxStreamWaitMS=0")
    assert http.get("/live/x/hls.m3u8").status == 404
    assert client.to("/on_http_access") == [] and len(client.to("/on_play")) == 1
