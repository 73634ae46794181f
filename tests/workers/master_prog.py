"""A master process for the supervisor tests: the real WorkerSupervisor and MasterControl
running ``echo_worker.py`` workers, stopped by SIGTERM as twistd stops its services.

usage: master_prog.py WORKERS PORT OFFSET MARKER_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.logger import globalLogBeginner, textFileLogObserver

from mediasrv.cluster.directory import OwnerInfo
from mediasrv.cluster.local import LocalDirectory
from mediasrv.cluster.node import NodeDirectory
from mediasrv.workers.master import MasterControl
from mediasrv.workers.sockets import ListenError, ListenSpec
from mediasrv.workers.supervisor import WorkerSupervisor

R: Any = reactor


def main() -> int:
    workers, port, offset, markers = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
    node = OwnerInfo(node="host-1", epoch="ep1")
    master = MasterControl(NodeDirectory(LocalDirectory(R)), node, R)
    worker = Path(__file__).with_name("echo_worker.py")
    env = {"PYTHONPATH": str(Path(__file__).resolve().parents[2]), "TEST_MARKERS": markers,
           "PYTHONUNBUFFERED": "1"}
    sup = WorkerSupervisor(R, workers, [ListenSpec("echo", "[test] port", "127.0.0.1", port)],
                           [sys.executable, str(worker)], env=env, port_offset=offset,
                           control=master.factory_for, epoch=node.epoch, source="test.ini",
                           min_restart_delay=0.5, stop_timeout=10)
    try:
        sup.privilegedStartService()
    except ListenError as e:
        sys.__stderr__.write(f"{e}\n")  # twisted redirected sys.stderr into the log
        return 1
    R.callWhenRunning(sup.startService)
    R.addSystemEventTrigger("before", "shutdown", sup.stopService)
    R.run()
    print("master: clean exit", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
