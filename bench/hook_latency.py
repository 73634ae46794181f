"""Added start latency of a gated play, against a local hook server.

For each mode the real server (``twistd -n mediasrv``) runs with one ffmpeg
publisher; the load client (bench/loadclient.py) then opens players one after
another at a low rate and records each one's time to first media (TCP connect
start → first coded frame). The difference of the medians between a mode with
hooks and the mode without is the latency the gate adds. The hook backend is
tests/support/hookserver.py (a Twisted web server in its own process) answering
``{"code":0}`` at once.

    PYTHONPATH=. python bench/hook_latency.py [-n 40]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import Publisher, free_port, prepare_clip, stop, twistd_command, wait_port  # noqa: E402
from tests.support.hookserver import HookServer  # noqa: E402
from tests.support.server import server_env  # noqa: E402


def modes(hs: HookServer) -> dict[str, list[str]]:
    return {
        "no hooks": [],
        "ZLMediaKit on_play": ["hook.enable=1", f"hook.on_play={hs.url('/on_play')}"],
        "all four dialects": ["hook.enable=1", f"hook.on_play={hs.url('/on_play')}",
                              "http_hooks.enabled=1", f"http_hooks.on_play={hs.url('/srs')}",
                              f"notify.notify_url={hs.url('/nms')}", f"oclp.oclp_play={hs.url('/oclp')}"],
    }


def run_mode(sets: list[str], n: int, clip: Path, work: Path) -> dict[str, float]:
    rtmp, http = free_port(), free_port()
    args = ["--set", "general.listen_ip=127.0.0.1", "--set", f"rtmp.port={rtmp}", "--set", f"http.port={http}",
            "--set", "rtsp.port=0", "--set", "shell.port=0", "--set", f"hook.outbox={work / 'outbox'}"]
    for s in sets:
        args += ["--set", s]
    log = open(work / "twistd.log", "ab")
    srv = subprocess.Popen(twistd_command() + ["-n", "--pidfile=", "mediasrv", *args], cwd=work, env=server_env(),
                           stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_port(rtmp, srv)
        pub = Publisher(f"rtmp://127.0.0.1:{rtmp}/live/bench", clip)
        time.sleep(3)
        out = work / "lc.json"
        subprocess.run([sys.executable, str(ROOT / "bench" / "loadclient.py"), "--url",
                        f"rtmp://127.0.0.1:{rtmp}/live/bench", "-n", str(n), "--rate", "8", "--settle", "0.5",
                        "--window", "1", "--no-verify", "--json", str(out)], check=True, env=server_env())
        pub.stop()
        ttfm = json.loads(out.read_text())["ttfm_ms"]
        return {"median": ttfm["median"], "p95": ttfm["p95"], "reached": len(ttfm["all"])}
    finally:
        stop(srv)
        log.close()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=40, help="players per mode")
    ap.add_argument("--rounds", type=int, default=2, help="repeat the series (interleaved) this often")
    args = ap.parse_args()
    clip = prepare_clip(60)
    with tempfile.TemporaryDirectory() as tmp, HookServer(Path(tmp)) as hs:
        results: dict[str, list[dict[str, float]]] = {}
        for _ in range(args.rounds):
            for name, sets in modes(hs).items():
                work = Path(tempfile.mkdtemp(dir=tmp))
                results.setdefault(name, []).append(run_mode(sets, args.n, clip, work))
        hooks_seen = len(hs.requests())
    base = [r["median"] for r in results["no hooks"]]
    print("| mode | TTFM median ms (per round) | p95 ms | added vs no hooks (median) |\n|---|---|---|---|")
    for name, rs in results.items():
        med = [r["median"] for r in rs]
        added = [m - b for m, b in zip(med, base, strict=True)]
        p95 = " / ".join(f"{r['p95']:.1f}" for r in rs)
        print(f"| {name} | {' / '.join(f'{m:.1f}' for m in med)} | {p95} | {' / '.join(f'{a:+.1f}' for a in added)} |")
    print(f"\nhook requests answered: {hooks_seen}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
