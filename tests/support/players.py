"""Real players that count frames as they arrive, and the server's memory.

:class:`FramePlayer` runs ``ffmpeg -i <url> -map 0:v:0 -c copy -f framecrc -``
(no decoding: the two CPUs are shared) with every packet flushed, and a
thread stamps each video frame line with ``time.monotonic()`` when it
arrives.  ``frames_between(t0, t1)`` then says how many frames the player
really received in a wall-clock window: a server that freezes shows as a
gap, even if a burst catches up later.
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

from tests.support.clients import FFMPEG


def rss_kb(pid: int) -> int:
    """VmRSS of ``pid`` in KiB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


class FramePlayer:
    def __init__(self, url: str, extra: list[str] | None = None) -> None:
        self.url = url
        self.arrivals: list[float] = []
        self.proc = subprocess.Popen(
            [FFMPEG or "ffmpeg", "-hide_banner", "-nostdin", "-v", "error", *(extra or []), "-i", url,
             "-map", "0:v:0", "-c", "copy", "-flush_packets", "1", "-f", "framecrc", "-"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line[:1] != b"#" and line.strip():
                self.arrivals.append(time.monotonic())

    def wait_frames(self, n: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while len(self.arrivals) < n:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                return len(self.arrivals) >= n
            time.sleep(0.05)
        return True

    def frames_between(self, t0: float, t1: float) -> int:
        return sum(1 for t in list(self.arrivals) if t0 <= t < t1)

    def longest_gap(self, t0: float, t1: float) -> float:
        """The longest time without a frame inside [t0, t1)."""
        times = [t0] + [t for t in list(self.arrivals) if t0 <= t < t1] + [t1]
        return max(b - a for a, b in zip(times, times[1:], strict=False))

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._thread.join(5)
        return self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
