"""Endpoint string plugins: ``wtcp:`` and ``wssl:``, TCP (and TLS) listeners with mediasrv's write-through
transport (mediasrv/net/writethrough.py). Kept light: the transport module is imported only when a
description with one of these prefixes is parsed."""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IStreamServerEndpoint, IStreamServerEndpointStringParser
from twisted.plugin import IPlugin
from zope.interface import implementer


@implementer(IPlugin, IStreamServerEndpointStringParser)
class _WriteThroughTCPParser:
    prefix = "wtcp"

    def parseStreamServer(self, reactor: Any, *args: Any, **kwargs: Any) -> IStreamServerEndpoint:
        from mediasrv.net.writethrough import parse_wtcp

        return parse_wtcp(reactor, *args, **kwargs)


@implementer(IPlugin, IStreamServerEndpointStringParser)
class _WriteThroughTLSParser:
    prefix = "wssl"

    def parseStreamServer(self, reactor: Any, *args: Any, **kwargs: Any) -> IStreamServerEndpoint:
        from mediasrv.net.writethrough import parse_wssl

        return parse_wssl(reactor, *args, **kwargs)


wtcp = _WriteThroughTCPParser()
wssl = _WriteThroughTLSParser()
