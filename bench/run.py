"""Benchmark mediasrv's RTMP fan-out: one ~2 Mbit/s publisher, N RTMP players, per N in a list.

For each N (default 100 400 1000) this script:

1. starts a fresh server (``twistd -n --pidfile= mediasrv`` on free loopback ports,
   ``general.maxConnections`` = N + 64), so every N starts from the same memory baseline;
2. starts ONE ffmpeg publisher with ``-re`` to ``rtmp://127.0.0.1:P/live/bench``: a pre-encoded clip
   (lavfi testsrc2 1280x720 25 fps, libx264 -b:v 1900k -maxrate 2000k -bufsize 2000k -g 50, AAC 96k,
   ~2 Mbit/s) sent with ``-c copy``, so the publisher costs almost no CPU on a 2-core box
   (``--live-encode`` encodes testsrc2 live instead); ffmpeg's ``-progress`` output is read every 0.2 s;
3. waits ``--warmup`` seconds (the GOP cache then holds a keyframe), samples the server's RSS
   (the "publisher only" baseline), and runs ``bench/loadclient.py`` (one process) for N players:
   connect at ``--rate``/s, then ``--settle`` s, then a ``--window`` s measuring window;
4. stops the publisher and the server, and derives the figures below.

Figures, all over the measuring window:

* publisher ingest rate: bytes ffmpeg's FLV muxer handed to its RTMP connection (``total_size`` in
  ``-progress``), interpolated at the window's two ends, per wall-clock second. With ``-re`` that is the
  stream's real-time rate as long as the server reads it; if the server fell behind reading, ffmpeg's
  writes would block and this rate would drop (reported as ``ingest_vs_nominal``, nominal being the same
  bytes per second of media time, ``out_time``).
* players keeping up: players whose byte rate is >= 95 % of the publisher ingest rate (RTMP chunk
  headers vs FLV tag headers differ by ~0.1 %, far below the 5 % margin).
* server CPU-seconds per Gbit delivered: the server process's user+sys CPU time over the window (psutil)
  divided by (sum of all players' bytes in the window x 8 / 1e9).
* time to first media: per player, from the start of its TCP connect to the first audio/video message
  carrying a frame (not a sequence header); median and p95 over the players that got one.
* server RSS per player: (server RSS at the end of the window - RSS with just the publisher) / N.
* load client CPU-seconds over the window, publisher CPU-seconds, and "other" CPU-seconds (machine-wide
  busy time minus server, client and publisher) so a reader can judge who the bottleneck was and how
  noisy the machine was; ``os.getloadavg()`` before each run.

Output: one Markdown table row per N on stdout, and a JSON document in ``bench/results/``.

    python bench/run.py                    # N = 100 400 1000
    python bench/run.py -n 10 --window 10  # quick correctness check
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
FFMPEG = "ffmpeg"
FFPROBE = "ffprobe"
STREAM_PATH = "live/bench"

ENCODE_ARGS = ["-c:v", "libx264", "-b:v", "1900k", "-maxrate", "2000k", "-bufsize", "2000k", "-g", "50",
               "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "96k", "-ar", "48000"]
SOURCES = ["-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=25",
           "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]


# -- helpers --------------------------------------------------------------------------------------------
# the same helpers the interop tests use to run the real server
sys.path.insert(0, str(ROOT))
from tests.support.server import free_port, twistd_command, wait_port  # noqa: E402

sys.path.pop(0)


def listener_sets(rtmp_port: int, http_port: int) -> list[str]:
    """``--set`` values for the listeners: RTMP and HTTP on the given ports, every other listener the
    embedded defaults know (``[section] port``/``sslport``: RTSP, shell, TLS ...) disabled with 0, so a
    run never collides with another server on the machine. Keys the defaults lack are never set (an
    unknown key stops start-up)."""
    import configparser

    sys.path.insert(0, str(ROOT))
    try:
        from mediasrv._defaults import DEFAULT_INI
    finally:
        sys.path.pop(0)
    cp = configparser.ConfigParser(interpolation=None)
    cp.read_string(DEFAULT_INI)
    sets = ["general.listen_ip=127.0.0.1", f"rtmp.port={rtmp_port}", f"http.port={http_port}"]
    for section in cp.sections():
        for key in ("port", "sslport"):
            name = f"{section}.{key}"
            if cp.has_option(section, key) and name not in ("rtmp.port", "http.port") and cp.get(section, key) != "0":
                sets.append(f"{name}=0")
    return sets


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 1 << 20 if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError):
            pass


def stop(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 10) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ffv = subprocess.run([FFMPEG, "-version"], capture_output=True, text=True).stdout.splitlines()[:1]
    return {"nproc": os.cpu_count(), "cpu_model": model, "mem_total": psutil.virtual_memory().total,
            "kernel": platform.release(), "python": platform.python_version(), "ffmpeg": ffv[0] if ffv else ""}


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    k = (len(v) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


# -- the publisher ----------------------------------------------------------------------------------------
def prepare_clip(seconds: int) -> Path:
    """Encode the test clip once (cached under bench/results/)."""
    key = hashlib.sha1(json.dumps([SOURCES, ENCODE_ARGS, seconds]).encode()).hexdigest()[:10]
    clip = RESULTS / f"clip-{key}.flv"
    if clip.exists():
        return clip
    RESULTS.mkdir(parents=True, exist_ok=True)
    tmp = clip.with_suffix(".tmp.flv")
    print(f"encoding the {seconds} s test clip once: {clip.name}", file=sys.stderr)
    subprocess.run([FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *SOURCES, "-t", str(seconds),
                    "-preset", "veryfast", *ENCODE_ARGS, "-f", "flv", str(tmp)], check=True)
    tmp.rename(clip)
    return clip


class Publisher:
    """ffmpeg -re publishing to the server; collects (monotonic time, total_size, out_time_us) from -progress."""

    def __init__(self, url: str, clip: Path | None) -> None:
        args = [FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-re"]
        if clip is not None:
            args += ["-stream_loop", "-1", "-i", str(clip), "-c", "copy"]
        else:
            args += [*SOURCES, "-preset", "ultrafast", "-tune", "zerolatency", *ENCODE_ARGS]
        args += ["-progress", "pipe:1", "-stats_period", "0.2", "-f", "flv", url]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.samples: list[tuple[float, int, int]] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        cur: dict[str, str] = {}
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            now = time.monotonic()
            key, _, value = raw.decode(errors="replace").strip().partition("=")
            cur[key] = value
            if key == "progress":
                try:
                    self.samples.append((now, int(cur.get("total_size", "0")), int(cur.get("out_time_us", "0"))))
                except ValueError:
                    pass

    def at(self, t: float) -> tuple[float, float]:
        """(total_size, out_time_us) linearly interpolated at monotonic time ``t``."""
        s = self.samples
        if not s:
            raise RuntimeError("no progress from ffmpeg")
        if t <= s[0][0]:
            return float(s[0][1]), float(s[0][2])
        for (ta, ba, oa), (tb, bb, ob) in zip(s, s[1:], strict=False):
            if ta <= t <= tb:
                f = (t - ta) / (tb - ta) if tb > ta else 0.0
                return ba + (bb - ba) * f, oa + (ob - oa) * f
        return float(s[-1][1]), float(s[-1][2])

    def stop(self) -> str:
        stop(self.proc, signal.SIGINT)
        err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
        return err


# -- one run --------------------------------------------------------------------------------------------
def ffprobe(url: str) -> list[dict[str, Any]]:
    r = subprocess.run([FFPROBE, "-v", "error", "-show_entries", "stream=codec_type,codec_name,width,height,"
                        "sample_rate", "-of", "json", url], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise RuntimeError(f"ffprobe {url} failed: {r.stderr.strip()}")
    streams: list[dict[str, Any]] = json.loads(r.stdout)["streams"]
    return streams


def run_one(n: int, args: argparse.Namespace, clip: Path | None, tag: str) -> dict[str, Any]:
    logs = RESULTS / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    rtmp_port, http_port = free_port(), free_port()
    log_path = logs / f"server-{tag}.log"
    for old in logs.glob(f"server-{tag}.*"):
        old.unlink()
    # the repository's mediasrv first; the caller's PYTHONPATH entries after it, made absolute (the server
    # runs in bench/results/)
    extra = [str(Path(p).resolve()) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), *extra]), PYTHONUNBUFFERED="1")
    sets = [*listener_sets(rtmp_port, http_port), f"general.maxConnections={n + 64}", *args.set]
    cmd = twistd_command() + ["-n", "--pidfile=", f"--logfile={log_path}", "mediasrv",
                              *sum((["--set", s] for s in sets), [])]
    out_path = logs / f"server-{tag}.out"
    with open(out_path, "wb") as out_file:
        server = subprocess.Popen(cmd, cwd=RESULTS, env=env, stdin=subprocess.DEVNULL, stdout=out_file,
                                  stderr=subprocess.STDOUT, preexec_fn=raise_nofile)
    url = f"rtmp://127.0.0.1:{rtmp_port}/{STREAM_PATH}"
    publisher: Publisher | None = None
    try:
        try:
            wait_port(rtmp_port, server)
        except (RuntimeError, TimeoutError) as e:
            tail = out_path.read_text(errors="replace").strip().splitlines()[-3:]
            raise RuntimeError(f"{e}: {' / '.join(tail)}") from None
        publisher = Publisher(url, clip)
        time.sleep(args.warmup)
        if publisher.proc.poll() is not None:
            raise RuntimeError(f"publisher exited: {publisher.stop()}")
        probe = ffprobe(url) if args.probe else []
        time.sleep(0.5)
        srv = psutil.Process(server.pid)
        rss_base = srv.memory_info().rss
        lc = subprocess.run([sys.executable, str(BENCH / "loadclient.py"), "--url", url, "-n", str(n),
                             "--rate", str(args.rate), "--settle", str(args.settle), "--window", str(args.window),
                             "--tick-ms", str(args.tick_ms), "--server-pid", str(server.pid),
                             "--publisher-pid", str(publisher.proc.pid)],
                            capture_output=True, text=True, env=dict(env, PYTHONPATH=str(ROOT)),
                            timeout=n / args.rate + args.settle + args.window + 120)
        if lc.returncode != 0:
            raise RuntimeError(f"loadclient failed ({lc.returncode}): {lc.stderr}")
        res = json.loads(lc.stdout)
        if server.poll() is not None:
            raise RuntimeError(f"server died during the run (status {server.returncode})")
        pub_alive = publisher.proc.poll() is None
    finally:
        pub_err = publisher.stop() if publisher is not None else ""
        stop(server)
    log_text = log_path.read_text(errors="replace") if log_path.exists() else ""
    w = res["window"]
    t0, t1, secs = w["t0"], w["t1"], w["seconds"]
    b0, o0 = publisher.at(t0)
    b1, o1 = publisher.at(t1)
    ingest_bps = (b1 - b0) * 8 / secs
    nominal_bps = (b1 - b0) * 8 / ((o1 - o0) / 1e6) if o1 > o0 else 0.0
    rates = [b * 8 / secs for b in w["bytes"]]
    keep_up = sum(1 for r in rates if r >= 0.95 * ingest_bps)
    delivered_gbit = w["total_bytes"] * 8 / 1e9
    s0, s1 = res["server"]["start"], res["server"]["end"]
    server_cpu = s1["cpu"] - s0["cpu"]
    p0, p1 = res["publisher"]["start"], res["publisher"]["end"]
    pub_cpu = p1["cpu"] - p0["cpu"]
    client_cpu = res["client"]["cpu_window_s"]
    busy = res["system"]["busy_s"]
    ttfm = res["ttfm_ms"]
    row = {
        "players": n,
        "server_log": str(log_path.relative_to(BENCH)),
        "reached_media": res["reached_media"],
        "alive_at_end": res["alive_at_end"],
        "errors": res["errors"],
        "keep_up": keep_up,
        "publisher_ingest_mbps": ingest_bps / 1e6,
        "publisher_nominal_mbps": nominal_bps / 1e6,
        "ingest_vs_nominal": ingest_bps / nominal_bps if nominal_bps else None,
        "publisher_alive": pub_alive,
        "player_rate_mbps": {"median": statistics.median(rates) / 1e6 if rates else None,
                             "min": min(rates) / 1e6 if rates else None,
                             "max": max(rates) / 1e6 if rates else None,
                             "p5": (percentile(rates, 0.05) or 0) / 1e6},
        "delivered_gbit": delivered_gbit,
        "delivered_gbps": delivered_gbit / secs,
        "window_s": secs,
        "server_cpu_s": server_cpu,
        "server_cpu_user_s": s1["user"] - s0["user"],
        "server_cpu_sys_s": s1["sys"] - s0["sys"],
        "server_cpu_s_per_gbit": server_cpu / delivered_gbit if delivered_gbit else None,
        "server_cpu_util": server_cpu / secs,
        "ttfm_median_ms": ttfm["median"],
        "ttfm_p95_ms": ttfm["p95"],
        "ttfm_max_ms": ttfm["max"],
        "ramp_s": res["ramp_s"],
        "rss_base_mb": rss_base / 2**20,
        "rss_end_mb": s1["rss"] / 2**20,
        "rss_per_player_kib": (s1["rss"] - rss_base) / n / 1024,
        "client_cpu_window_s": client_cpu,
        "client_cpu_total_s": res["client"]["cpu_total_s"],
        "client_cpu_user_s": res["client"]["user_window_s"],
        "client_cpu_sys_s": res["client"]["sys_window_s"],
        "publisher_cpu_s": pub_cpu,
        "machine_busy_cpu_s": busy,
        "other_cpu_s": busy - server_cpu - client_cpu - pub_cpu,
        "machine_cpu_kinds_s": res["system"]["kinds_s"],
        "top_other_procs": res["system"]["top_other_procs"],
        "loadavg_before": load_before,
        "server_log_warnings": sum(1 for line in log_text.splitlines() if "#warn" in line or "#error" in line
                                   or "#critical" in line or "Traceback" in line),
        "ffprobe": probe,
        "verify_player0_per_s": res.get("verify_player0_per_s"),
        "publisher_stderr": pub_err.strip()[-2000:],
        "ttfm_ms_all": ttfm["all"],
        "player_bytes": w["bytes"],
    }
    return row


HEADER = ("| N | reached media | keep up (≥95 %) | publisher ingest Mbit/s | median player Mbit/s | delivered Gbit/s "
          "| server CPU s / window (util) | server CPU-s per Gbit | TTFM median ms | TTFM p95 ms "
          "| server RSS/player KiB | load client CPU s (user+sys) | other CPU s | load avg before |\n"
          "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")


def fmt(v: float | None, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def table_row(r: dict[str, Any]) -> str:
    n = r["players"]
    return (f"| {n} | {r['reached_media']}/{n} | {r['keep_up']}/{n} | {r['publisher_ingest_mbps']:.3f} "
            f"| {fmt(r['player_rate_mbps']['median'], '.3f')} | {r['delivered_gbps']:.3f} "
            f"| {r['server_cpu_s']:.1f} / {r['window_s']:.0f} s ({r['server_cpu_util'] * 100:.0f} %) "
            f"| {fmt(r['server_cpu_s_per_gbit'], '.2f')} | {fmt(r['ttfm_median_ms'], '.1f')} "
            f"| {fmt(r['ttfm_p95_ms'], '.1f')} | {r['rss_per_player_kib']:.0f} "
            f"| {r['client_cpu_window_s']:.1f} ({r['client_cpu_user_s']:.1f}+{r['client_cpu_sys_s']:.1f}) "
            f"| {r['other_cpu_s']:.1f} | {r['loadavg_before'][0]:.2f} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--players", type=int, nargs="+", default=[100, 400, 1000])
    ap.add_argument("--window", type=float, default=20.0, help="measuring window, seconds (default 20)")
    ap.add_argument("--settle", type=float, default=3.0, help="seconds after all players started (default 3)")
    ap.add_argument("--warmup", type=float, default=4.0, help="seconds of publishing before players (default 4)")
    ap.add_argument("--rate", type=float, default=200.0, help="player connections per second (default 200)")
    ap.add_argument("--tick-ms", type=float, default=20.0, help="load client poll period when idle (default 20)")
    ap.add_argument("--clip-seconds", type=int, default=60, help="length of the pre-encoded clip (default 60)")
    ap.add_argument("--live-encode", action="store_true", help="encode testsrc2 live instead of a pre-encoded clip")
    ap.add_argument("--no-probe", dest="probe", action="store_false", help="skip the ffprobe sanity check")
    ap.add_argument("--repeat", type=int, default=1, help="runs per N (default 1), to show the noise")
    ap.add_argument("--set", action="append", default=[], metavar="K=V", help="extra server --set (repeatable)")
    ap.add_argument("--out", help="JSON output file (default bench/results/run-<time>.json)")
    ap.add_argument("--table", metavar="JSON", help="only print the Markdown table of a saved result file")
    args = ap.parse_args(argv)

    if args.table:
        print(HEADER)
        for row in json.loads(Path(args.table).read_text())["runs"]:
            print(table_row(row))
        return 0
    RESULTS.mkdir(parents=True, exist_ok=True)
    clip = None if args.live_encode else prepare_clip(args.clip_seconds)
    out = Path(args.out) if args.out else RESULTS / f"run-{time.strftime('%Y%m%d-%H%M%S')}.json"
    doc: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine(),
                           "settings": {k: v for k, v in vars(args).items() if k != "out"},
                           "publisher": "pre-encoded clip, -re -c copy" if clip else "live libx264 encode",
                           "runs": []}
    print(HEADER)
    for n, k in [(n, k) for n in args.players for k in range(args.repeat)]:
        row = run_one(n, args, clip, f"{out.stem}-{n}-{k + 1}")
        doc["runs"].append(row)
        out.write_text(json.dumps(doc, indent=1))
        print(table_row(row), flush=True)
        if row["errors"]:
            print(f"  errors: {row['errors']}", file=sys.stderr)
        time.sleep(1)
    print(f"results: {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
