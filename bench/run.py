"""Side-by-side fan-out benchmark: mediasrv and nginx-rtmp, one ~2 Mbit/s publisher, N players, one run.

For each N (default 100 1000 2400) and each configuration (server x protocol x settings, default
``nginx-rtmp RTMP`` and ``mediasrv RTMP``) this script:

1. starts a fresh server on free loopback ports: ``twistd -n --pidfile= mediasrv`` (``general.maxConnections``
   = N + 64, every listener but RTMP and HTTP off), or nginx with Debian's ``libnginx-mod-rtmp`` from a
   generated ``nginx.conf`` in a temporary directory (one worker, ``rtmp { server { listen PORT;
   application live { live on; } } }``, default settings otherwise: no GOP cache, ``wait_key off``);
2. starts ONE ffmpeg publisher with ``-re`` to ``rtmp://127.0.0.1:P/live/bench``: a pre-encoded clip
   (lavfi testsrc2 1280x720 25 fps, libx264 -b:v 1900k -maxrate 2000k -bufsize 2000k -g 50, AAC 96k,
   ~2 Mbit/s) sent with ``-c copy``, so the publisher costs almost no CPU on a 2-core box
   (``--live-encode`` encodes testsrc2 live instead); ffmpeg's ``-progress`` output is read every 0.2 s;
3. waits ``--warmup`` seconds, samples the measured process's RSS (the "publisher only" baseline), and runs
   ``bench/loadclient.py`` (one process) for N players over RTMP or HTTP-FLV: connect at ``--rate``/s,
   then ``--settle`` s and on until the players' backlog is drained (their mean rate over 1 s is at most
   105 % of the stream's over 2 s; at most ``--max-settle`` s after the ramp; the "settle s" column), then a
   ``--window`` s measuring window during which ``--late-joiners`` more players join one by one (time to
   first media *under load*);
4. stops the publisher and the server, and derives the figures below.

nginx-rtmp has no HTTP-FLV (that is the separate nginx-http-flv module, not in Debian), so HTTP-FLV rows
are mediasrv only; their "x nginx" ratio is against nginx-rtmp's *RTMP* row of the same N, and the
"x RTMP" column compares mediasrv's HTTP-FLV with mediasrv's RTMP.

Figures, all over the measuring window:

* publisher ingest rate: bytes ffmpeg's FLV muxer handed to its RTMP connection (``total_size`` in
  ``-progress``), interpolated at the window's two ends, per wall-clock second.
* players keeping up: players whose byte rate is >= 95 % of the publisher ingest rate.
* server CPU-seconds per Gbit delivered: the measured process's utime+stime (``/proc/PID/stat`` via
  psutil; for nginx the one worker) over the window divided by all players' bytes x 8 / 1e9; and its
  ratio to nginx-rtmp's figure in the same run and N.
* time to first media (TTFM): per player, from the start of its TCP connect to the first audio/video
  message carrying a frame (not a sequence header); median and p95 over the players of the ramp, and
  separately over the late joiners (joining while N others play), with the late joiners' time to first
  video *keyframe* (a server without a GOP cache starts a player wherever the stream is).
* server RSS per player: (RSS at the end of the window - RSS with just the publisher) / N.
* load client CPU-seconds over the window, and "other" CPU-seconds (machine-wide busy time minus server,
  client and publisher) so a reader can judge who the bottleneck was; load average before each run and
  ``uptime`` at the start and end of the run.

With ``--until-behind STEP`` each configuration that kept up at the largest N is run again at N + STEP,
N + 2 STEP ... (up to ``--max-players``) until it falls behind: not every player reached media, or the
median player got less than 95 % of the publisher's rate, or the load client itself used more than 90 %
of a core (then the client, not the server, is the limit and the row says so).

``--merge-write-ms MS`` adds mediasrv configurations with ``--set general.mergeWriteMS=MS`` (ZLMediaKit's
key, issue 12 item 3). If the server rejects the key at start-up the configuration is skipped and the
table says so.

``--profile`` records a py-spy profile (``-f raw``, idle samples dropped) of every mediasrv configuration
during its window and summarises it (``bench/pyspy_summary.py``); profile in a separate run from the
figures, the sampler costs CPU on the same two cores.

Output: one Markdown table row per run on stdout, and a JSON document in ``bench/results/``.

    python bench/run.py                                   # N = 100 1000 2400, nginx-rtmp and mediasrv, RTMP
    python bench/run.py --protocols rtmp flv --merge-write-ms 300 --until-behind 1200
    python bench/run.py --servers mediasrv -n 1000 --profile
    python bench/run.py -n 10 --window 10                 # quick correctness check
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
FFMPEG = "ffmpeg"
FFPROBE = "ffprobe"
NGINX = "nginx"
NGINX_RTMP_MODULE = "/usr/lib/nginx/modules/ngx_rtmp_module.so"
PY_SPY = str(Path(sys.executable).parent / "py-spy")
APP, STREAM = "live", "bench"
STREAM_PATH = f"{APP}/{STREAM}"

ENCODE_ARGS = ["-c:v", "libx264", "-b:v", "1900k", "-maxrate", "2000k", "-bufsize", "2000k", "-g", "50",
               "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "96k", "-ar", "48000"]
SOURCES = ["-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=25",
           "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]


# -- helpers --------------------------------------------------------------------------------------------
# the same helpers the interop tests use to run the real server
sys.path.insert(0, str(ROOT))
from tests.support.server import free_port, twistd_command, wait_port  # noqa: E402

sys.path.pop(0)


def listener_sets(rtmp_port: int, http_port: int, root: Path = ROOT) -> list[str]:
    """``--set`` values for the listeners: RTMP and HTTP on the given ports, every other listener the
    embedded defaults of the checkout ``root`` know (``[section] port``/``sslport``: RTSP, shell, TLS ...)
    disabled with 0, so a run never collides with another server on the machine. Keys the defaults lack
    are never set (an unknown key stops start-up)."""
    import configparser

    default_ini = subprocess.run(  # the checkout's own defaults, read in a fresh interpreter
        [sys.executable, "-c", "from mediasrv._defaults import DEFAULT_INI; print(DEFAULT_INI)"],
        capture_output=True, text=True, check=True, cwd=root, env=dict(os.environ, PYTHONPATH=str(root)),
    ).stdout
    cp = configparser.ConfigParser(interpolation=None)
    cp.read_string(default_ini)
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


# -- servers under test -----------------------------------------------------------------------------------
class StartupFailed(RuntimeError):
    pass


class Mediasrv:
    """``twistd -n mediasrv`` on free loopback ports (RTMP and HTTP)."""

    name = "mediasrv"

    def __init__(self, n: int, sets: list[str], tag: str, root: Path = ROOT) -> None:
        self.rtmp_port, self.http_port = free_port(), free_port()
        logs = RESULTS / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.log_path = logs / f"server-{tag}.log"
        self.out_path = logs / f"server-{tag}.out"
        for old in (self.log_path, self.out_path):
            if old.exists():
                old.unlink()
        # the repository's mediasrv first; the caller's PYTHONPATH entries after it, made absolute (the
        # server runs in bench/results/)
        extra = [str(Path(p).resolve()) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        self.env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), *extra]), PYTHONUNBUFFERED="1")
        all_sets = [*listener_sets(self.rtmp_port, self.http_port, root), f"general.maxConnections={n + 64}",
                    *sets]
        cmd = twistd_command() + ["-n", "--pidfile=", f"--logfile={self.log_path}", "mediasrv",
                                  *sum((["--set", s] for s in all_sets), [])]
        with open(self.out_path, "wb") as out_file:
            self.proc = subprocess.Popen(cmd, cwd=RESULTS, env=self.env, stdin=subprocess.DEVNULL,
                                         stdout=out_file, stderr=subprocess.STDOUT, preexec_fn=raise_nofile)
        try:
            wait_port(self.rtmp_port, self.proc)
        except (RuntimeError, TimeoutError) as e:
            stop(self.proc)
            tail = self.out_path.read_text(errors="replace").strip().splitlines()[-3:]
            raise StartupFailed(f"{e}: {' / '.join(tail)}") from None
        self.pid = self.proc.pid

    def url(self, protocol: str) -> str:
        if protocol == "flv":
            return f"http://127.0.0.1:{self.http_port}/{STREAM_PATH}.live.flv"
        return f"rtmp://127.0.0.1:{self.rtmp_port}/{STREAM_PATH}"

    def publish_url(self) -> str:
        return self.url("rtmp")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        stop(self.proc)

    def log_warnings(self) -> int:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return sum(1 for line in text.splitlines() if "#warn" in line or "#error" in line or "#critical" in line
                   or "Traceback" in line)


NGINX_CONF = """\
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile {nofile};
pid {dir}/nginx.pid;
error_log {dir}/error.log {loglevel};
load_module {module};
events {{ worker_connections {conns}; }}
rtmp {{ server {{ listen 127.0.0.1:{port}; application live {{ live on; }} }} }}
"""


class NginxRtmp:
    """nginx with Debian's libnginx-mod-rtmp, one worker, from a generated nginx.conf in a temp dir. The
    measured process is the worker (the master only supervises it)."""

    name = "nginx-rtmp"

    def __init__(self, n: int, tag: str) -> None:
        if not shutil.which(NGINX) or not Path(NGINX_RTMP_MODULE).exists():
            raise StartupFailed("nginx or libnginx-mod-rtmp is not installed "
                                "(apt-get install nginx libnginx-mod-rtmp)")
        self.dir = Path(tempfile.mkdtemp(prefix=f"bench-nginx-{tag}-"))
        self.rtmp_port = free_port()
        conf = self.dir / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=self.dir, module=NGINX_RTMP_MODULE, port=self.rtmp_port,
                                          conns=n + 256, nofile=n + 1024,
                                          loglevel=os.environ.get("BENCH_NGINX_LOGLEVEL", "warn")))
        self.out_path = self.dir / "nginx.out"
        with open(self.out_path, "wb") as out_file:
            self.proc = subprocess.Popen([NGINX, "-p", str(self.dir), "-c", str(conf), "-e", str(self.dir / "error.log")],
                                         stdin=subprocess.DEVNULL, stdout=out_file, stderr=subprocess.STDOUT,
                                         preexec_fn=raise_nofile)
        try:
            wait_port(self.rtmp_port, self.proc)
            deadline = time.monotonic() + 10
            workers: list[psutil.Process] = []
            while not workers and time.monotonic() < deadline:
                workers = psutil.Process(self.proc.pid).children()
                time.sleep(0.05)
            if len(workers) != 1:
                raise RuntimeError(f"expected one nginx worker, found {len(workers)}")
        except (RuntimeError, TimeoutError) as e:
            stop(self.proc, signal.SIGQUIT)
            raise StartupFailed(f"nginx: {e}: {self.out_path.read_text(errors='replace').strip()[-300:]}") from None
        self.pid = workers[0].pid

    def url(self, protocol: str) -> str:
        if protocol != "rtmp":
            raise ValueError("nginx-rtmp serves RTMP only")
        return f"rtmp://127.0.0.1:{self.rtmp_port}/{STREAM_PATH}"

    def publish_url(self) -> str:
        return self.url("rtmp")

    def alive(self) -> bool:
        return self.proc.poll() is None and psutil.pid_exists(self.pid)

    def stop(self) -> None:
        stop(self.proc, signal.SIGQUIT)  # graceful shutdown; SIGKILL after the timeout
        log = self.dir / "error.log"
        self.warnings = sum(1 for line in log.read_text(errors="replace").splitlines()
                            if "[error]" in line or "[crit]" in line or "[alert]" in line or "[emerg]" in line
                            ) if log.exists() else 0
        keep = RESULTS / "logs" / f"nginx-{self.dir.name}.log"
        keep.parent.mkdir(parents=True, exist_ok=True)
        if log.exists():
            shutil.copy(log, keep)
        if not os.environ.get("BENCH_KEEP_NGINX_DIR"):
            shutil.rmtree(self.dir, ignore_errors=True)

    def log_warnings(self) -> int:
        return getattr(self, "warnings", 0)


@dataclass
class Config:
    server: str  # "mediasrv" | "nginx-rtmp"
    protocol: str  # "rtmp" | "flv"
    sets: list[str] = field(default_factory=list)
    root: Path = ROOT  # the mediasrv checkout
    variant: str = ""  # name of a checkout given with --also-mediasrv

    @property
    def label(self) -> str:
        proto = {"rtmp": "RTMP", "flv": "HTTP-FLV"}[self.protocol]
        extra = "".join(f" {s.split('.', 1)[-1]}" for s in self.sets if "mergeWriteMS" in s)
        name = f"{self.server}[{self.variant}]" if self.variant else self.server
        return f"{name} {proto}{extra}"


def configurations(args: argparse.Namespace) -> list[Config]:
    out: list[Config] = []
    if "nginx" in args.servers:
        out.append(Config("nginx-rtmp", "rtmp"))
    roots = [("", args.mediasrv_root)] if "mediasrv" in args.servers else []
    for spec in args.also_mediasrv:
        name, _, path = spec.partition("=")
        roots.append((name, Path(path).resolve()))
    for variant, root in roots:
        for proto in args.protocols:
            out.append(Config("mediasrv", proto, list(args.set), root, variant))
            if args.merge_write_ms is not None:
                out.append(Config("mediasrv", proto, [*args.set, f"general.mergeWriteMS={args.merge_write_ms}"],
                                  root, variant))
    return out


# -- one run --------------------------------------------------------------------------------------------
def ffprobe(url: str) -> list[dict[str, Any]]:
    r = subprocess.run([FFPROBE, "-v", "error", "-show_entries", "stream=codec_type,codec_name,width,height,"
                        "sample_rate", "-of", "json", url], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise RuntimeError(f"ffprobe {url} failed: {r.stderr.strip()}")
    streams: list[dict[str, Any]] = json.loads(r.stdout)["streams"]
    return streams


def start_profile(pid: int, delay: float, seconds: float, out: Path) -> threading.Thread:
    """py-spy record of ``pid`` for ``seconds``, starting after ``delay`` (roughly the window)."""

    def run() -> None:
        time.sleep(delay)
        subprocess.run([PY_SPY, "record", "--nonblocking", "--nolineno", "-r", "100", "-d", str(int(seconds)),
                        "-f", "raw", "-o", str(out), "-p", str(pid)], capture_output=True, timeout=seconds + 60)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def run_one(n: int, cfg: Config, args: argparse.Namespace, clip: Path | None, tag: str) -> dict[str, Any]:
    load_before = os.getloadavg()
    server: Mediasrv | NginxRtmp = (Mediasrv(n, cfg.sets, tag, cfg.root) if cfg.server == "mediasrv"
                                    else NginxRtmp(n, tag))
    publisher: Publisher | None = None
    profile_out = RESULTS / f"profile-{tag}.txt"
    profiler = None
    try:
        publisher = Publisher(server.publish_url(), clip)
        time.sleep(args.warmup)
        if publisher.proc.poll() is not None:
            raise RuntimeError(f"publisher exited: {publisher.stop()}")
        probe = ffprobe(server.url(cfg.protocol)) if args.probe else []
        time.sleep(0.5)
        srv = psutil.Process(server.pid)
        rss_base = srv.memory_info().rss
        now = time.monotonic()
        expect_mbps = (publisher.at(now)[0] - publisher.at(now - 3)[0]) * 8 / 3 / 1e6
        if args.profile and cfg.server == "mediasrv":
            profiler = start_profile(server.pid, n / args.rate + args.settle + 2, args.window - 3, profile_out)
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        lc = subprocess.run([sys.executable, str(BENCH / "loadclient.py"), "--url", server.url(cfg.protocol),
                             "-n", str(n), "--rate", str(args.rate), "--settle", str(args.settle),
                             "--window", str(args.window), "--tick-ms", str(args.tick_ms),
                             "--late-joiners", str(args.late_joiners), "--server-pid", str(server.pid),
                             "--expect-mbps", f"{expect_mbps:.4f}", "--max-settle", str(args.max_settle),
                             "--publisher-pid", str(publisher.proc.pid)],
                            capture_output=True, text=True, env=env,
                            timeout=n / args.rate + args.max_settle + args.window + 180)
        if lc.returncode != 0:
            raise RuntimeError(f"loadclient failed ({lc.returncode}): {lc.stderr}")
        res = json.loads(lc.stdout)
        if not server.alive():
            raise RuntimeError("server died during the run")
        pub_alive = publisher.proc.poll() is None
        if profiler is not None:
            profiler.join(timeout=60)
    finally:
        pub_err = publisher.stop() if publisher is not None else ""
        server.stop()
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
    late = res["late_joiners"]
    row = {
        "players": n,
        "config": cfg.label,
        "server": cfg.server,
        "protocol": cfg.protocol,
        "sets": cfg.sets,
        "mediasrv_root": str(cfg.root) if cfg.server == "mediasrv" else None,
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
        "late_joiners": late["n"],
        "late_errors": late["errors"],
        "late_ttfm_median_ms": late["ttfm_ms"]["median"],
        "late_ttfm_p95_ms": late["ttfm_ms"]["p95"],
        "late_ttfk_median_ms": late["ttfk_ms"]["median"],
        "late_ttfk_p95_ms": late["ttfk_ms"]["p95"],
        "ramp_s": res["ramp_s"],
        "settle_s": res["settle_s"],
        "catchup_mbps_per_player": res["catchup_mbps_per_player"],
        "rss_base_mb": rss_base / 2**20,
        "rss_end_mb": s1["rss"] / 2**20,
        "rss_per_player_kib": (s1["rss"] - rss_base) / n / 1024,
        "client_cpu_window_s": client_cpu,
        "client_cpu_util": client_cpu / secs,
        "client_cpu_total_s": res["client"]["cpu_total_s"],
        "client_cpu_user_s": res["client"]["user_window_s"],
        "client_cpu_sys_s": res["client"]["sys_window_s"],
        "publisher_cpu_s": pub_cpu,
        "machine_busy_cpu_s": busy,
        "other_cpu_s": busy - server_cpu - client_cpu - pub_cpu,
        "machine_cpu_kinds_s": res["system"]["kinds_s"],
        "top_other_procs": res["system"]["top_other_procs"],
        "loadavg_before": load_before,
        "server_log_warnings": server.log_warnings(),
        "ffprobe": probe,
        "verify_player0_per_s": res.get("verify_player0_per_s"),
        "publisher_stderr": pub_err.strip()[-2000:],
        "ttfm_ms_all": ttfm["all"],
        "late_ttfm_ms_all": late["ttfm_ms"]["all"],
        "late_ttfk_ms_all": late["ttfk_ms"]["all"],
        "player_bytes": w["bytes"],
    }
    if profiler is not None and profile_out.exists():
        sys.path.insert(0, str(BENCH))
        try:
            from pyspy_summary import load, summarise
        finally:
            sys.path.pop(0)
        row["profile"] = str(profile_out.relative_to(BENCH))
        row["profile_summary"] = summarise(load(profile_out))
    return row


def kept_up(r: dict[str, Any]) -> bool:
    """Still serving its N players: every one reached media and the median player got >= 95 % of the
    publisher's rate. (Not "every player >= 95 %": nginx-rtmp drops frames for a few players even at N = 3,
    see bench/README.md; the "keep up" column counts players.)"""
    if "skipped" in r or r.get("reached_media") != r["players"]:
        return False
    median = r["player_rate_mbps"]["median"]
    return bool(median is not None and median >= 0.95 * r["publisher_ingest_mbps"])


def client_bound(r: dict[str, Any]) -> bool:
    return bool(r.get("client_cpu_util", 0) > 0.9)


# -- the table ------------------------------------------------------------------------------------------------
HEADER = ("| N | server, protocol | reached media | keep up (≥95 %) | player 0 video fps | delivered Gbit/s "
          "| server CPU s / window (util) | server CPU-s per Gbit | × nginx-rtmp | × mediasrv RTMP "
          "| settle s | TTFM ramp median / p95 ms | TTFM under load median / p95 ms | first keyframe under load median ms "
          "| RSS/player KiB | client CPU s | other CPU s | load avg |\n"
          "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")


def fmt(v: float | None, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def ratio_to(r: dict[str, Any], rows: list[dict[str, Any]], config: str) -> float | None:
    """r's server CPU-s per Gbit over that of ``config`` at the same N and repeat (None if not run)."""
    for o in rows:
        if (o["config"] == config and o["players"] == r["players"] and o.get("repeat") == r.get("repeat")
                and "skipped" not in o and o.get("server_cpu_s_per_gbit") and r.get("server_cpu_s_per_gbit")):
            return float(r["server_cpu_s_per_gbit"] / o["server_cpu_s_per_gbit"])
    return None


def table_row(r: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    n = r["players"]
    if "skipped" in r:
        return f"| {n} | {r['config']} | skipped: {r['skipped']} |" + " |" * 15
    note = " (client-bound)" if client_bound(r) else ""
    v = r.get("verify_player0_per_s") or {}
    rtmp_twin = r["config"].replace("HTTP-FLV", "RTMP")
    return (f"| {n} | {r['config']} | {r['reached_media']}/{n} | {r['keep_up']}/{n}{note} "
            f"| {fmt(v.get('video_frames'), '.1f')} | {r['delivered_gbps']:.2f} "
            f"| {r['server_cpu_s']:.1f} / {r['window_s']:.0f} s ({r['server_cpu_util'] * 100:.0f} %) "
            f"| {fmt(r['server_cpu_s_per_gbit'], '.3f')} | {fmt(ratio_to(r, rows, 'nginx-rtmp RTMP'), '.2f')} "
            f"| {fmt(ratio_to(r, rows, rtmp_twin) if r['server'] == 'mediasrv' else None, '.2f')} "
            f"| {fmt(r.get('settle_s'), '.0f')} | {fmt(r['ttfm_median_ms'], '.1f')} / {fmt(r['ttfm_p95_ms'], '.1f')} "
            f"| {fmt(r['late_ttfm_median_ms'], '.1f')} / {fmt(r['late_ttfm_p95_ms'], '.1f')} "
            f"| {fmt(r['late_ttfk_median_ms'], '.0f')} | {r['rss_per_player_kib']:.1f} "
            f"| {r['client_cpu_window_s']:.1f} | {r['other_cpu_s']:.1f} | {r['loadavg_before'][0]:.2f} |")


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "load average: " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--players", type=int, nargs="+", default=[100, 1000, 2400])
    ap.add_argument("--servers", nargs="+", choices=["nginx", "mediasrv"], default=["nginx", "mediasrv"])
    ap.add_argument("--protocols", nargs="+", choices=["rtmp", "flv"], default=["rtmp"],
                    help="mediasrv's player protocols (nginx-rtmp is always RTMP)")
    ap.add_argument("--merge-write-ms", type=int, metavar="MS",
                    help="also run mediasrv with --set general.mergeWriteMS=MS (skipped if the key is rejected)")
    ap.add_argument("--until-behind", type=int, default=0, metavar="STEP",
                    help="then raise N by STEP for each configuration that kept up, until it falls behind")
    ap.add_argument("--max-players", type=int, default=9600, help="upper bound for --until-behind (default 9600)")
    ap.add_argument("--window", type=float, default=20.0, help="measuring window, seconds (default 20)")
    ap.add_argument("--settle", type=float, default=3.0, help="seconds after all players started (default 3)")
    ap.add_argument("--max-settle", type=float, default=40.0,
                    help="most seconds after the ramp to wait for players' backlog to drain (default 40)")
    ap.add_argument("--warmup", type=float, default=4.0, help="seconds of publishing before players (default 4)")
    ap.add_argument("--rate", type=float, default=200.0, help="player connections per second (default 200)")
    ap.add_argument("--late-joiners", type=int, default=20,
                    help="players joining one by one during the window (default 20)")
    ap.add_argument("--tick-ms", type=float, default=20.0, help="load client poll period when idle (default 20)")
    ap.add_argument("--clip-seconds", type=int, default=60, help="length of the pre-encoded clip (default 60)")
    ap.add_argument("--live-encode", action="store_true", help="encode testsrc2 live instead of a pre-encoded clip")
    ap.add_argument("--no-probe", dest="probe", action="store_false", help="skip the ffprobe sanity check")
    ap.add_argument("--repeat", type=int, default=1, help="runs per N and configuration (default 1)")
    ap.add_argument("--profile", action="store_true", help="py-spy profile of mediasrv during each window")
    ap.add_argument("--mediasrv-root", type=Path, default=ROOT,
                    help="run mediasrv from this checkout (default: this repository), e.g. a worktree of main")
    ap.add_argument("--also-mediasrv", action="append", default=[], metavar="NAME=PATH",
                    help="also run mediasrv from the checkout PATH, labelled mediasrv[NAME] (repeatable): "
                         "before/after in one run")
    ap.add_argument("--set", action="append", default=[], metavar="K=V", help="extra mediasrv --set (repeatable)")
    ap.add_argument("--out", help="JSON output file (default bench/results/run-<time>.json)")
    ap.add_argument("--table", metavar="JSON", help="only print the Markdown table of a saved result file")
    args = ap.parse_args(argv)

    if args.table:
        doc = json.loads(Path(args.table).read_text())
        print(f"uptime before: {doc.get('uptime_before', '?')}\nuptime after: {doc.get('uptime_after', '?')}\n")
        print(HEADER)
        for row in doc["runs"]:
            print(table_row(row, doc["runs"]))
        return 0
    RESULTS.mkdir(parents=True, exist_ok=True)
    clip = None if args.live_encode else prepare_clip(args.clip_seconds)
    out = Path(args.out) if args.out else RESULTS / f"run-{time.strftime('%Y%m%d-%H%M%S')}.json"
    doc = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine(), "uptime_before": uptime(),
           "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "out"},
           "mediasrv_commit": subprocess.run(["git", "-C", str(args.mediasrv_root), "rev-parse", "HEAD"],
                                             capture_output=True, text=True).stdout.strip(),
           "command": " ".join(["python", "bench/run.py", *(argv if argv is not None else sys.argv[1:])]),
           "publisher": "pre-encoded clip, -re -c copy" if clip else "live libx264 encode", "runs": []}
    print(f"uptime before: {doc['uptime_before']}", file=sys.stderr)
    print(HEADER)
    rows: list[dict[str, Any]] = doc["runs"]
    configs = configurations(args)
    rejected: set[str] = set()

    def run(n: int, cfg: Config, k: int) -> dict[str, Any]:
        tag = f"{out.stem}-{cfg.label.replace(' ', '_').replace('=', '').replace('[', '_').replace(']', '')}-{n}-{k + 1}"
        if cfg.label in rejected:
            row = {"players": n, "config": cfg.label, "server": cfg.server, "skipped": "config rejected"}
        else:
            try:
                row = run_one(n, cfg, args, clip, tag)
            except StartupFailed as e:
                if not any("mergeWriteMS" in s for s in cfg.sets):
                    raise
                rejected.add(cfg.label)
                row = {"players": n, "config": cfg.label, "server": cfg.server,
                       "skipped": f"the server rejects general.mergeWriteMS ({str(e)[-160:]})"}
        row["repeat"] = k
        rows.append(row)
        out.write_text(json.dumps(doc, indent=1))
        print(table_row(row, rows), flush=True)
        if row.get("errors"):
            print(f"  {cfg.label} N={n}: errors {row['errors']}", file=sys.stderr)
        if row.get("profile_summary"):
            print(f"  profile {cfg.label} N={n}:\n{row['profile_summary']}", file=sys.stderr)
        time.sleep(1)
        return row

    last: dict[str, dict[str, Any]] = {}
    for n in args.players:
        for k in range(args.repeat):
            for cfg in configs:  # interleaved, so every configuration of one N sees the same machine
                last[cfg.label] = run(n, cfg, k)
    if args.until_behind:
        n = max(args.players)
        going = [c for c in configs if kept_up(last.get(c.label, {"players": 0})) and not client_bound(last[c.label])]
        while going and n + args.until_behind <= args.max_players:
            n += args.until_behind
            for cfg in list(going):
                r = run(n, cfg, 0)
                if not kept_up(r) or client_bound(r):
                    going.remove(cfg)
    doc["uptime_after"] = uptime()
    out.write_text(json.dumps(doc, indent=1))
    print(f"uptime after: {doc['uptime_after']}\nresults: {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
