"""From ``[cluster]`` to this node's identity and directory.

:func:`build_directory` is the only door to Redis: it imports :mod:`mediasrv.cluster.redis`
(and so txredisapi) only when ``[cluster] redis`` is set.
"""

from __future__ import annotations

import os
import secrets
import socket
from typing import Any

from twisted.internet.interfaces import IReactorTime

from mediasrv.cluster.directory import OwnerInfo
from mediasrv.cluster.local import LocalDirectory
from mediasrv.cluster.node import NodeDirectory
from mediasrv.cluster.origin import OriginRotation
from mediasrv.config import Config, ConfigError, parse_origin_urls, parse_redis_url


def new_epoch() -> str:
    """A fresh id for this run of the node (claims of an earlier run are not ours)."""
    return secrets.token_hex(8)


def node_id(config: Config) -> str:
    return config.cluster.node_id or config.general.mediaServerId


def advertised_urls(config: Config) -> tuple[str, str]:
    """The base URLs other nodes pull our streams from: (HTTP-FLV, RTMP)."""
    c = config.cluster
    host = c.advertise_host
    if not host:
        ip = config.general.listen_ip
        host = ip if ip not in ("0.0.0.0", "::") else socket.getfqdn()
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    flv = c.advertise_url.rstrip("/") or (f"http://{host}:{config.http.port}" if config.http.port else "")
    rtmp = f"rtmp://{host}:{config.rtmp.port}" if config.rtmp.port else ""
    return flv, rtmp


def node_identity(config: Config, epoch: str, worker: int = 0, since_ms: int = 0) -> OwnerInfo:
    flv, rtmp = advertised_urls(config)
    return OwnerInfo(node=node_id(config), epoch=epoch, worker=worker, flv=flv, rtmp=rtmp, since_ms=since_ms)


def build_directory(config: Config, reactor: Any, clock: IReactorTime, node: OwnerInfo) -> NodeDirectory:
    """This host's directory: the in-memory map, backed by Redis when ``[cluster] redis`` is set
    (the returned directory's cluster part is started; ``close()`` stops it)."""
    host = LocalDirectory(clock)
    c = config.cluster
    if not c.redis:
        return NodeDirectory(host)
    from mediasrv.cluster.redis import RedisDirectory  # only here: no Redis client without [cluster] redis

    if c.redis_ca and not os.access(c.redis_ca, os.R_OK):
        raise ConfigError(config.source, "[cluster] redis_ca", f"cannot read {c.redis_ca!r}")

    redis = RedisDirectory(reactor, clock, parse_redis_url(c.redis, c.redis_password), node, c.ttl_ms,
                           c.redis_timeout_ms, ca_file=c.redis_ca)
    redis.start()
    return NodeDirectory(host, redis)


def origin_rotation(config: Config) -> OriginRotation:
    return OriginRotation(parse_origin_urls(config.cluster.origin_url), config.cluster.timeout_sec)
