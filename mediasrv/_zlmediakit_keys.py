"""The keys of a stock ZLMediaKit ``config.ini`` (upstream commit daaa74a, as that server
reported them in on_server_started; shared/spec/zlmediakit-config-keys.ini).

A ZLMediaKit config file may hold any of these: the ones mediasrv implements take
effect, the others are ignored with one warning line (mediasrv.config.load).  A key in
neither list is a typo and stops start-up.
"""

ZLMEDIAKIT_KEYS: dict[str, frozenset[str]] = {
    "api": frozenset({"apiDebug", "defaultSnap", "downloadRoot", "secret", "snapRoot"}),
    "cluster": frozenset({"origin_url", "retry_count", "timeout_sec"}),
    "ffmpeg": frozenset({"bin", "cmd", "log", "restart_sec", "snap"}),
    "general": frozenset({
        "broadcast_player_count_changed", "check_nvidia_dev", "enableVhost", "enable_ffmpeg_log", "flowThreshold",
        "listen_ip", "maxStreamWaitMS", "mediaServerId", "mergeWriteMS", "resetWhenRePlay",
        "streamNoneReaderDelayMS", "unready_frame_cache", "wait_add_track_ms", "wait_audio_track_data_ms",
        "wait_track_ready_ms",
    }),
    "hls": frozenset({
        "broadcastRecordTs", "deleteDelaySec", "fastRegister", "fileBufSize", "fmp4SegExt", "segDelay", "segDur",
        "segKeep", "segNum", "segRetain",
    }),
    "hook": frozenset({
        "alive_interval", "enable", "on_flow_report", "on_http_access", "on_play", "on_publish", "on_record_mp4",
        "on_record_ts", "on_rtp_server_timeout", "on_rtsp_auth", "on_rtsp_realm", "on_send_rtp_stopped",
        "on_server_exited", "on_server_keepalive", "on_server_started", "on_shell_login", "on_stream_changed",
        "on_stream_none_reader", "on_stream_not_found", "retry", "retry_delay", "stream_changed_schemas",
        "timeoutSec",
    }),
    "http": frozenset({
        "allow_cross_domains", "allow_ip_range", "charSet", "dirMenu", "forbidCacheSuffix", "forwarded_ip_header",
        "keepAliveSecond", "maxReqSize", "notFound", "port", "rootPath", "sendBufSize", "sslport", "virtualPath",
    }),
    "multicast": frozenset({"addrMax", "addrMin", "udpTTL"}),
    "onvif": frozenset({"port"}),
    "protocol": frozenset({
        "add_mute_audio", "auto_close", "continue_push_ms", "enable_audio", "enable_fmp4", "enable_hls",
        "enable_hls_fmp4", "enable_mp4", "enable_rtmp", "enable_rtsp", "enable_ts", "fmp4_demand", "hls_demand",
        "hls_save_path", "modify_stamp", "mp4_as_player", "mp4_max_second", "mp4_save_path", "paced_sender_ms",
        "rtmp_demand", "rtsp_demand", "ts_demand",
    }),
    "python": frozenset({"plugin"}),
    "record": frozenset({"appName", "enableFmp4", "fastStart", "fileBufSize", "fileRepeat", "sampleMS"}),
    "rtc": frozenset({
        "bfilter", "datachannel_echo", "enableTurn", "externIP", "icePort", "icePwd", "iceTcpPort",
        "iceTransportPolicy", "iceUfrag", "interfaces", "maxRtpCacheMS", "maxRtpCacheSize", "max_bitrate",
        "max_stun_retry", "min_bitrate", "nackAudioRtpSize", "nackIntervalRatio", "nackMaxCount", "nackMaxMS",
        "nackMaxSize", "nackRtpSize", "port", "port_range", "preferredCodecA", "preferredCodecV", "preferred_tcp",
        "rembBitRate", "signalingPort", "signalingSslPort", "start_bitrate", "tcpPort", "timeoutSec",
    }),
    "rtmp": frozenset({"directProxy", "enhanced", "handshakeSecond", "keepAliveSecond", "port", "sslport"}),
    "rtp": frozenset({"audioMtuSize", "h264_stap_a", "lowLatency", "rtpMaxSize", "videoMtuSize"}),
    "rtp_proxy": frozenset({
        "dumpDir", "gop_cache", "h264_pt", "h265_pt", "merge_frame", "opus_pt", "port", "port_range", "ps_pt",
        "rtp_g711_dur_ms", "timeoutSec", "udp_recv_socket_buffer",
    }),
    "rtsp": frozenset({
        "authBasic", "directProxy", "handshakeSecond", "keepAliveSecond", "lowLatency", "port", "rtpTransportType",
        "sslport",
    }),
    "shell": frozenset({"maxReqSize", "port"}),
    "srt": frozenset({"latencyMul", "passPhrase", "pktBufSize", "port", "timeoutSec"}),
}
