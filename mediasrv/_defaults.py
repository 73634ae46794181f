"""The embedded default configuration: the single source of every default.

``etc/mediasrv.ini`` is a copy of this text (a test keeps them identical in
meaning).  Section and key names follow ZLMediaKit's ``conf/config.ini`` where
ZLMediaKit has the key; keys that ZLMediaKit lacks are ours and say so.
"""

DEFAULT_INI = """\
; mediasrv configuration. Section and key names follow ZLMediaKit's config.ini.
; Every key below is shown with its built-in default; an unknown section or key
; is an error at start-up.

[general]
; sent in every hook as mediaServerId
mediaServerId = your_server_id
; interface for the media listeners (RTMP, RTSP, HTTP)
listen_ip = 0.0.0.0
; KB; on_flow_report fires only when a session moved more than this
flowThreshold = 1024
; ms a stream may have no reader before on_stream_none_reader
streamNoneReaderDelayMS = 20000
; ms a player of a not-yet-existing stream waits for it to appear
maxStreamWaitMS = 15000
; 0: the vhost is always __defaultVhost__
enableVhost = 0
; (mediasrv) most client connections served at once, all protocols together
maxConnections = 10000
; (mediasrv) bytes a player may have queued before it drops to the next keyframe
maxPlayerQueueBytes = 4194304
; (mediasrv) bytes of the GOP cache per stream (frames since the last keyframe)
maxGopCacheBytes = 16777216
; worker processes sharing the listeners (auto = one per core); 1: one process, no supervisor
workers = 1
; (mediasrv) with workers > 1: worker i also listens alone on each TCP port + offset + i
; (pins a client to one worker, e.g. in tests); 0: off
worker_port_offset = 0
; (mediasrv) longest app or stream name, bytes of UTF-8 (longer names are refused)
maxNameLength = 128

[rtmp]
; 0 disables
port = 1935
; RTMPS (TLS); 0 disables; needs [ssl] certFile
sslport = 0
; seconds a client may take to finish the handshake
handshakeSecond = 15
; seconds a publisher (or a connection that has not started to play) may stay silent
keepAliveSecond = 15
; (mediasrv) largest RTMP message accepted, bytes
maxMessageSize = 8388608
; (mediasrv) largest RTMP message accepted before publishing is allowed (connect,
; createStream, play...: only a publisher sends large messages), bytes
maxMessageSizeBeforePublish = 65536
; (mediasrv) bytes of partially received messages one connection may hold, all
; chunk streams together (counted at their announced length); >= maxMessageSize
maxBufferedBytes = 16777216

[rtsp]
port = 8554
sslport = 0
; 0: challenge with Digest (RFC 2617); 1: Basic allowed
authBasic = 0
handshakeSecond = 15
keepAliveSecond = 15

[http]
; HTTP-FLV, WS-FLV, HLS, the API and files under rootPath
port = 8080
sslport = 0
; static files; never served outside it
rootPath = ./www
; who may reach the API (and files when on_http_access is off)
allow_ip_range = ::1,127.0.0.1,172.16.0.0-172.31.255.255,192.168.0.0-192.168.255.255,10.0.0.0-10.255.255.255
; 1: send Access-Control-Allow-Origin so browser players may fetch streams
allow_cross_domains = 1
; 1: list directories under rootPath
dirMenu = 0
; header holding the real client address behind a proxy (empty: the socket peer)
forwarded_ip_header =

[ssl]
; (mediasrv) PEM certificate (may hold the key too) for the sslport listeners
certFile =
; (mediasrv) PEM private key, when not inside certFile
keyFile =

[hls]
; seconds per segment
segDur = 2
; segments in the playlist
segNum = 3
; segments kept downloadable after leaving the playlist
segRetain = 5
; empty: segments live in memory only; a directory: also written there
filePath =

[record]
filePath = ./www/record
fileSecond = 3600

[api]
; every API call needs secret=; empty: the API is closed
secret =
; Nimble-style /manage/* token (salt/hash auth); empty: /manage/* is closed
nimble_token =

[protocol]
enable_hls = 1
enable_rtsp = 1
enable_rtmp = 1
enable_mp4 = 0
; 1: close a stream that has no reader, without asking on_stream_none_reader
auto_close = 0
; ms a publisher that dropped may take to come back; its players stay connected
continue_push_ms = 15000

[shell]
port = 9000
interface = 127.0.0.1
; user:salted-hash pairs, used when no on_shell_login URL is set
users =
; 1: enables the python manhole command
python = 0
; (mediasrv) connections from one address that may be logging in at once; more are refused
maxPendingLoginsPerIp = 3
; (mediasrv) password checks (PBKDF2) running at once, server-wide; more wait their turn
maxConcurrentChecks = 2

[hook]
enable = 0
timeoutSec = 10
alive_interval = 10
; extra attempts after a transport failure, a status other than 200 or a reply without an
; integer code, retry_delay seconds apart (these two are the ZLMediaKit hooks' own: SRS, NMS
; and PingOS hooks have theirs in their sections)
retry = 1
retry_delay = 3.0
on_failure = deny
stream_changed_schemas = rtsp/rtmp/fmp4/ts/hls/hls.fmp4
; where undelivered notifications wait (durable)
outbox = ./var/hook-outbox
; (mediasrv) most notifications kept waiting; when full, outbox_overflow decides
outbox_max = 100000
; (mediasrv) most bytes of notifications kept waiting (bodies and headers); when full, outbox_overflow decides
outbox_max_bytes = 134217728
; (mediasrv) seconds a notification is retried (transport failures, 5xx, 408, 429) before it is
; moved aside as a dead letter (counted in /metrics, listed by the shell's hooks command)
outbox_max_age = 86400
; (mediasrv) most notifications in flight at once, over all sessions (connections to hook servers)
outbox_connections = 8
; (mediasrv) drop_oldest or drop_newest; every drop is logged and counted
outbox_overflow = drop_oldest
; (mediasrv) 1: check https:// hook servers' certificates (chain and host name); 0: trust any
; certificate (ZLMediaKit does not check them)
ssl_verify = 1
; (mediasrv) PEM file of the CA certificate(s) to trust for https:// hooks instead of the
; system's (a self-signed certificate may be its own CA); empty: the system's CAs
ssl_ca_file =
on_publish =
on_play =
on_flow_report =
on_http_access =
on_rtsp_realm =
on_rtsp_auth =
on_shell_login =
on_stream_changed =
on_stream_none_reader =
on_stream_not_found =
on_record_mp4 =
on_record_ts =
on_server_started =
on_server_exited =
on_server_keepalive =

[http_hooks]
; SRS-style hooks; each value may hold several URLs separated by spaces
enabled = 0
timeoutSec = 10
; (mediasrv) extra attempts after a transport failure or a reply that is not an answer
; (SRS itself never retries); retry_delay: seconds between attempts
retry = 0
retry_delay = 3.0
on_failure = deny
; (mediasrv) as [hook] ssl_verify / ssl_ca_file, for these hooks
ssl_verify = 1
ssl_ca_file =
on_connect =
on_close =
on_publish =
on_unpublish =
on_play =
on_stop =
on_dvr =
on_hls =

[notify]
; Node-Media-Server-style notify_url
notify_url =
timeoutSec = 10
; (mediasrv) extra attempts after a transport failure (Node-Media-Server never retries)
retry = 0
retry_delay = 3.0
on_failure = allow
; (mediasrv) as [hook] ssl_verify / ssl_ca_file, for notify_url
ssl_verify = 1
ssl_ca_file =

[oclp]
; PingOS-style: URL [stage=start,update,done] [timeout=3s]
oclp_proc =
oclp_publish =
oclp_play =
oclp_stream =
oclp_pull =
oclp_push =
oclp_meta =
oclp_record =
update_interval = 60
timeout = 3
; (mediasrv) extra attempts after a transport failure (PingOS never retries)
retry = 0
retry_delay = 3.0
on_failure = deny
; (mediasrv) as [hook] ssl_verify / ssl_ca_file, for the oclp_* URLs
ssl_verify = 1
ssl_ca_file =

[cluster]
; (mediasrv) redis://[user:password@]host:port/db or rediss:// (TLS): nodes share which
; node owns which stream; empty: no cluster and no Redis client
redis =
; (mediasrv) Redis password when it is not in the URL
redis_password =
; (mediasrv) with rediss://: PEM file of the CA that signed Redis's certificate;
; empty: the system's trust store
redis_ca =
; (mediasrv) ms a Redis reply may take before a directory call fails (local streams go on)
redis_timeout_ms = 500
; (mediasrv) ms a stream claim lives in Redis without renewal; renewed every ttl_ms/3
ttl_ms = 10000
; (mediasrv) this node's id in the cluster; empty: general.mediaServerId
node_id =
; (mediasrv) how other nodes reach this one for internal pulls: a base URL
; (http://10.0.0.5:8080); empty: built from advertise_host and the ports
advertise_url =
; (mediasrv) host or address other nodes reach this one at; empty: listen_ip, or the host name
advertise_host =
; (mediasrv) shared secret that signs internal relay tokens; required with redis
secret =
; ZLMediaKit's static edge mode: origin URL templates separated by ';', with %s (app, then
; stream) as ZLMediaKit, or $app/$stream/$vhost; a missing stream is pulled from the first
; origin that has it
origin_url =
; seconds for trying all origins together (divided among them)
timeout_sec = 15
; reconnect attempts of an origin pull after it succeeded once (-1: forever)
retry_count = 3
"""
