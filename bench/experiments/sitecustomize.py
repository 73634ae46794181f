"""EXPERIMENT, not part of mediasrv: prototypes of a cheaper RTMP write path, for measuring only.

Loaded by Python at start-up only when this directory is on ``PYTHONPATH``, and then does nothing unless
``MEDIASRV_WRITE_THROUGH`` is set; it monkeypatches ``RtmpServerProtocol`` in the server process::

    PYTHONPATH=bench/experiments MEDIASRV_WRITE_THROUGH=2 python bench/run.py -n 1000

``MEDIASRV_WRITE_THROUGH=1``: every ``write`` goes straight to ``socket.send`` when Twisted has nothing queued
for that transport (the rest, or everything on TLS or a full socket, goes through ``transport.write`` as
before, so producer back-pressure is unchanged). Cuts server CPU but sends one segment per frame, and small
consecutive control replies meet Nagle + delayed ACK (~40 ms added to time to first media).

``MEDIASRV_WRITE_THROUGH=2`` (the proposal): writes made while any RTMP connection is inside
``dataReceived`` are collected per connection and flushed once at the end of it, with the same direct send.
One ``send`` per player per publisher read, no ``epoll_ctl`` add/remove of EPOLLOUT per player per reactor
turn, no writable-event dispatch. See bench/README.md for the figures.

It relies on Twisted internals (``dataBuffer``, ``_tempDataBuffer``, ``socket``) of
``twisted.internet.tcp.Server``; a real patch would keep that check in one helper with a test.
"""

import os

_MODE = os.environ.get("MEDIASRV_WRITE_THROUGH", "0")

if _MODE in ("1", "2"):
    import sys

    from twisted.internet import tcp

    from mediasrv.rtmp import protocol as rtmp_protocol

    def _send_now(t, data):  # type: ignore[no-untyped-def]
        if (t.__class__ is tcp.Server and not t._tempDataBuffer and not t.dataBuffer and t.connected
                and not t.disconnecting and not getattr(t, "TLS", False)):
            try:
                n = t.socket.send(data)
            except BlockingIOError:
                n = 0
            except OSError:
                n = 0  # Twisted's own write path reports the error
            if n == len(data):
                return
            if n:
                data = data[n:]
        t.write(data)

    if _MODE == "1":

        def write(self, data):  # type: ignore[no-untyped-def]
            t = self.transport
            if t is None:
                return
            self.session.bytes_out += len(data)
            _send_now(t, data)

        rtmp_protocol.RtmpServerProtocol.write = write
    else:
        _dirty: list = []
        _depth = [0]

        def write(self, data):  # type: ignore[no-untyped-def]
            t = self.transport
            if t is None:
                return
            self.session.bytes_out += len(data)
            if _depth[0]:
                pending = self.__dict__.get("_pending_out")
                if pending is None:
                    self._pending_out = [data]
                    _dirty.append(self)
                else:
                    pending.append(data)
                return
            _send_now(t, data)

        _original_data_received = rtmp_protocol.RtmpServerProtocol.dataReceived

        def dataReceived(self, data):  # type: ignore[no-untyped-def]
            _depth[0] += 1
            try:
                _original_data_received(self, data)
            finally:
                _depth[0] -= 1
                if not _depth[0] and _dirty:
                    dirty = _dirty[:]
                    _dirty.clear()
                    for p in dirty:
                        pending, p._pending_out = p._pending_out, None
                        if p.transport is not None:
                            _send_now(p.transport, pending[0] if len(pending) == 1 else b"".join(pending))

        rtmp_protocol.RtmpServerProtocol.write = write
        rtmp_protocol.RtmpServerProtocol.dataReceived = dataReceived
    sys.stderr.write(f"bench/experiments/sitecustomize.py: RTMP write path experiment, mode {_MODE}\n")
