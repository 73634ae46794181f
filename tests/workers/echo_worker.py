"""A tiny worker program for the supervisor tests (run by the master as a real process).

It adopts the sockets the master passed (``MEDIASRV_FDS``), greets every connection with
``<listener> worker=<index> pid=<pid>``, then answers line commands through the real
HostDirectory over the control channel: ``claim KEY``, ``release KEY``, ``lookup KEY``,
``wait KEY SECONDS``, ``fanout CALL``.  On SIGTERM its shutdown code writes a marker file.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineReceiver

from mediasrv.cluster.directory import DirectoryUnavailable, OwnerInfo
from mediasrv.workers.hostdir import HostDirectory, connect_control
from mediasrv.workers.sockets import adopted_endpoints, worker_env

R: Any = reactor


def main() -> None:
    env = worker_env()
    assert env is not None and env.control_fd is not None, "not started by a master"
    markers = Path(os.environ["TEST_MARKERS"])
    pid = os.getpid()
    me = OwnerInfo(node="", epoch="", worker=env.index, flv=f"http://w{env.index}")
    control = connect_control(R, env.control_fd, on_master_lost=lambda: R.stop() if R.running else None)
    directory = HostDirectory(control, me, R)
    control.handle("sessions", lambda args: [{"id": f"{env.index}-1", "worker": env.index}])
    control.handle("kick", lambda args: {"count_hit": 1 if args.get("id") == f"{env.index}-1" else 0})
    control.handle("metrics", lambda args: f"# HELP conns connections\n# TYPE conns gauge\nconns {env.index + 1}\n")

    class Session(LineReceiver):
        delimiter = b"\n"

        def __init__(self, name: str) -> None:
            self.name = name

        def connectionMade(self) -> None:
            self.sendLine(f"{self.name} worker={env.index} pid={pid}".encode())

        def lineReceived(self, line: bytes) -> None:
            verb, _, rest = line.decode().strip().partition(" ")
            d: Deferred[Any]
            if verb == "claim":
                d = directory.claim(rest, me).addCallback(lambda c: {"ours": c.ours, "worker": c.owner.worker,
                                                                     "node": c.owner.node})
            elif verb == "release":
                d = directory.release(rest, me)
            elif verb == "lookup":
                d = directory.lookup(rest).addCallback(lambda o: o and {"worker": o.worker, "flv": o.flv})
            elif verb == "wait":
                key, _, secs = rest.partition(" ")
                d = directory.wait_for_owner(key, float(secs)).addCallback(lambda o: o and {"worker": o.worker})
            elif verb == "fanout":
                call, _, args = rest.partition(" ")
                d = directory.fan_out(call, json.loads(args or "{}")).addCallback(list)
            else:
                self.sendLine(b"?")
                return
            d.addCallbacks(lambda r: self.sendLine(json.dumps(r).encode()),
                           lambda f: self.sendLine(json.dumps({"error": f.getErrorMessage(),
                                                               "unavailable": bool(f.check(DirectoryUnavailable))})
                                                   .encode()))

    for name, endpoint in adopted_endpoints(R, env).items():
        endpoint.listen(Factory.forProtocol(lambda n=name: Session(n)))

    def shutdown() -> None:
        (markers / f"clean-{env.index}-{pid}").write_text("bye")
        print(f"worker {env.index} shutting down cleanly", flush=True)

    R.addSystemEventTrigger("before", "shutdown", shutdown)
    print(f"worker {env.index} ready on {sorted(env.fds)}", flush=True)
    R.run()


if __name__ == "__main__":
    sys.exit(main())
