"""The web console in headless Chromium (Debian's ``chromium``), driven by
playwright-core from npm (no browser download): the page lists a live ffmpeg
stream, its HTTP-FLV player (mpegts.js) and HLS player (hls.js) play
(``currentTime`` advances), and the kick and close buttons work.

playwright-core is installed once into a cache directory
(``$XDG_CACHE_HOME/mediasrv-tests/node``); without npm, network or chromium
the test is skipped.  The screenshot's path is printed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.clients import needs_ffmpeg, start_publisher, stop
from tests.support.server import Server, running_server

pytestmark = [pytest.mark.interop, needs_ffmpeg]

PLAYWRIGHT_CORE = "playwright-core@1.56.1"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SECRET = "console-secret"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage",
         "--autoplay-policy=no-user-gesture-required", "--mute-audio"]

DRIVER = r"""
const { chromium } = require(process.env.PW_CORE);
const [url, secret, shot, hlsShot, chromiumPath, flags] = process.argv.slice(2);
const out = { logs: [] };
const currentTime = (page) => page.evaluate(() => document.getElementById("player").currentTime);
async function plays(page) {
  await page.waitForFunction(() => document.getElementById("player").currentTime > 0.3, null,
                             { timeout: 40000 });
  const a = await currentTime(page);
  await page.waitForTimeout(2000);
  const b = await currentTime(page);
  return [a, b];
}
(async () => {
  const browser = await chromium.launch({ executablePath: chromiumPath, headless: true,
                                          args: JSON.parse(flags) });
  try {
    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    page.on("console", (m) => out.logs.push(m.type() + ": " + m.text()));
    page.on("pageerror", (e) => out.logs.push("pageerror: " + e.message));
    await page.goto(url + "#secret=" + encodeURIComponent(secret));
    const row = 'tr[data-stream="live/console"]';
    await page.waitForSelector(row, { timeout: 30000 });
    out.streamRow = await page.textContent(row);
    out.mse = await page.evaluate(() => window.mpegts && mpegts.getFeatureList().mseLivePlayback);

    await page.click(row + ' button[data-action="play-flv"]');
    out.flv = await plays(page);
    out.sessionsWhilePlaying = await page.$$eval("#sessions tbody tr",
      (rows) => rows.map((r) => r.textContent));
    await page.screenshot({ path: shot, fullPage: true });

    // the kick button on the browser's own HTTP-FLV session
    const flvRow = await page.waitForSelector('#sessions tbody tr:has(td:text-is("http-flv"))', { timeout: 10000 });
    out.kicked = await flvRow.getAttribute("data-session");
    await page.click('#sessions tr[data-session="' + out.kicked + '"] button[data-action="kick"]');
    await page.waitForFunction((sid) => !document.querySelector('#sessions tr[data-session="' + sid + '"]'),
                               out.kicked, { timeout: 15000 });

    if (await page.$(row + ' button[data-action="play-hls"]')) {
      await page.click(row + ' button[data-action="play-hls"]');
      out.hls = await plays(page);
      await page.screenshot({ path: hlsShot, fullPage: true });
    }

    // the close button ends the stream
    await page.click(row + ' button[data-action="close"]');
    await page.waitForFunction((sel) => !document.querySelector(sel), row, { timeout: 15000 });
    out.closed = true;
  } finally {
    await browser.close();
  }
  console.log(JSON.stringify(out));
})().catch((e) => { console.error(String(e && e.stack || e)); console.log(JSON.stringify(out)); process.exit(1); });
"""


def node_modules() -> Path:
    """playwright-core in a cache directory, installed by npm on first use."""
    npm = shutil.which("npm")
    if not npm or not shutil.which("node"):
        pytest.skip("npm/node not installed (scripts/test.sh installs them)")
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mediasrv-tests" / "node"
    pkg = cache / "node_modules" / "playwright-core"
    if not (pkg / "package.json").exists():
        cache.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD": "1"}
        r = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--no-save", "--prefix", str(cache),
                            PLAYWRIGHT_CORE], capture_output=True, text=True, timeout=300, env=env)
        if r.returncode != 0 or not (pkg / "package.json").exists():
            pytest.skip(f"could not install {PLAYWRIGHT_CORE} with npm: {r.stderr[-500:]}")
    return pkg


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    with running_server(tmp_path, f"api.secret={SECRET}", "hls.segDur=1", "hls.segNum=3") as srv:
        yield srv


def test_console_lists_and_plays_a_live_stream(server: Server, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    if not os.path.exists(CHROMIUM):
        pytest.skip("chromium not installed (scripts/test.sh installs it)")
    pw = node_modules()
    pub = start_publisher(f"{server.rtmp}/live/console", size="640x360", bitrate="600k")
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and "live/console" not in server.log():
            time.sleep(0.3)
        driver = tmp_path / "driver.js"
        driver.write_text(DRIVER)
        shot, hls_shot = tmp_path / "console-flv.png", tmp_path / "console-hls.png"
        r = subprocess.run(["node", str(driver), f"{server.http}/console/", SECRET, str(shot), str(hls_shot),
                            CHROMIUM, json.dumps(FLAGS)],
                           capture_output=True, text=True, timeout=240, env={**os.environ, "PW_CORE": str(pw)})
        last = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else "{}"
        out = json.loads(last)
        assert r.returncode == 0, f"driver failed: {r.stderr[-2000:]}\n{json.dumps(out, indent=1)[:3000]}"
        with capsys.disabled():
            print(f"\nconsole screenshot (HTTP-FLV via mpegts.js): {shot}")
            if hls_shot.exists():
                print(f"console screenshot (HLS via hls.js): {hls_shot}")
        assert "live/console" in out["streamRow"] and "H264 640x360" in out["streamRow"]
        a, b = out["flv"]
        assert b > a > 0.3, f"HTTP-FLV currentTime did not advance: {a} -> {b}"
        assert any("rtmp" in s and "publisher" in s for s in out["sessionsWhilePlaying"])
        assert out["kicked"]
        assert "hls" in out, "the stream offers HLS, so the console plays it with hls.js"
        a, b = out["hls"]
        assert b > a > 0.3, f"HLS currentTime did not advance: {a} -> {b}"
        assert out["closed"]
        pub.wait(20)  # closing the stream disconnected the publisher
        assert shot.stat().st_size > 10_000
        errors = [line for line in out["logs"] if line.startswith("pageerror")]
        assert not errors, errors
    finally:
        stop(pub)
