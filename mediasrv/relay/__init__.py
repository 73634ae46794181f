"""Relay clients: pull streams from, and push streams to, other servers and cameras.

Stands on core (the media vocabulary) and the protocols' sans-IO codecs; no
protocol package and nothing in core imports it.  The rest of the server
sees it through two narrow interfaces (:mod:`mediasrv.relay.interfaces`):
a pull feeds a ``RelaySink``, a push drains a ``FrameSource``.

Modules: ``url`` (parse, validate, mask), ``errors`` (why a relay stopped),
``interfaces``, ``tracks`` (when the tracks are known), ``flvbody``,
``rtmp_session`` and ``rtsp_session`` (sans-IO protocol state machines),
``client`` (lifecycle, timeouts, TCP/TLS), ``rtmp``, ``rtsp``, ``httpflv``
(the Twisted clients), ``source`` (a frame source over an iterable),
``factory`` (the client for a URL).
"""
