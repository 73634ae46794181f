from twisted.application.service import ServiceMaker

mediasrv = ServiceMaker(
    "mediasrv",
    "mediasrv.tap",
    "Live media server (RTMP, RTSP, HTTP-FLV, WS-FLV, HLS) with web-hook business logic",
    "mediasrv",
)
