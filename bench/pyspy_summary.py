"""Summarise a py-spy ``raw`` (collapsed stacks) profile: where the server's busy time goes.

py-spy drops idle samples by default (a thread blocked in ``epoll_wait``), so the shares are of the time
the server was running Python or a system call. Prints the functions with the largest *inclusive* share
(the function or anything it called was on the stack) and the largest *self* share (the leaf frame), plus
a few named groups of the RTMP/HTTP-FLV write path.

    python bench/pyspy_summary.py bench/results/profile-….txt
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

# named groups: a sample belongs to the group when any frame on its stack matches the pattern
GROUPS = [
    ("socket send (Connection.writeSomeData)", r"Connection\.writeSomeData \("),
    ("readable-event dispatch: Connection.doRead and below (the publisher read, so the fan-out too)",
     r"Connection\.doRead \(twisted/internet/tcp\.py"),
    ("RTMP publisher parsing (ChunkReader.feed)", r"ChunkReader\.feed \("),
    ("fan-out: Stream.write and everything below it", r"Stream\.write \(mediasrv/core/stream\.py"),
    ("  of which FileDescriptor.write/writeSequence", r"FileDescriptor\.(write|writeSequence) \("),
    ("  of which EPollReactor.addWriter (epoll_ctl +EPOLLOUT)", r"EPollReactor\.addWriter \("),
    ("HTTP chunked framing (http.Request.write)", r"Request\.write \(twisted/web/http\.py"),
    ("writable-event dispatch: FileDescriptor.doWrite and below", r"FileDescriptor\.doWrite \("),
    ("  of which EPollReactor.removeWriter (epoll_ctl -EPOLLOUT)", r"EPollReactor\.removeWriter \("),
]
# self time (leaf frame) of Twisted's per-event wrappers around every readable/writable event
WRAPPERS = r"(callWithLogger|callWithContext|_doReadOrWrite|EPollReactor\.doPoll|ContextTracker\.getContext) \("


def load(path: Path) -> Counter[tuple[str, ...]]:
    stacks: Counter[tuple[str, ...]] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = tuple(f.strip() for f in stack.split(";") if f.strip())
        # the first frame of a thread is "process …" / "thread …" with -t; keep only code frames
        stacks[frames] += int(count)
    return stacks


def summarise(stacks: Counter[tuple[str, ...]], top: int = 25) -> str:
    total = sum(stacks.values())
    if not total:
        return "no samples\n"
    inclusive: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    for frames, n in stacks.items():
        for f in set(frames):
            inclusive[f] += n
        leaf[frames[-1]] += n
    out = [f"{total} busy samples", "", "named groups (share of busy samples with a matching frame on the stack):"]
    for name, pattern in GROUPS:
        rx = re.compile(pattern)
        n = sum(c for frames, c in stacks.items() if any(rx.search(f) for f in frames))
        out.append(f"  {100 * n / total:5.1f} %  {name}")
    wrappers = sum(c for frames, c in stacks.items() if re.search(WRAPPERS, frames[-1]))
    out.append(f"  {100 * wrappers / total:5.1f} %  self time of Twisted's per-event wrappers (callWithLogger, "
               "callWithContext, _doReadOrWrite, doPoll)")
    out += ["", f"top {top} inclusive:"]
    out += [f"  {100 * n / total:5.1f} %  {f}" for f, n in inclusive.most_common(top)]
    out += ["", f"top {top} self (leaf):"]
    out += [f"  {100 * n / total:5.1f} %  {f}" for f, n in leaf.most_common(top)]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("raw", type=Path, help="py-spy record -f raw output")
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args(argv)
    print(summarise(load(args.raw), args.top), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
