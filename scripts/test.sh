#!/usr/bin/env bash
# Installs everything the test suite needs (Debian packages: ffmpeg, GStreamer,
# chromium, nodejs/npm, redis-server, nginx with libnginx-mod-rtmp and python3-venv; Python packages
# into ./.venv) and runs the whole suite.
# Works on a fresh Debian machine with Python 3.11, as root or with sudo.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
need=()
command -v ffmpeg >/dev/null 2>&1 && command -v ffprobe >/dev/null 2>&1 || need+=(ffmpeg)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
# the web console test: headless Chromium driven by playwright-core (npm)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v npm >/dev/null 2>&1 || need+=(nodejs npm)
# the cluster directory's contract tests run a real Redis
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
# systemd-analyze verify/security for etc/mediasrv.service (tests/service/test_systemd_unit.py)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
# GStreamer for the RTSP interop tests: rtspsrc, RTP depayloaders, parsers, libav decoders
{ command -v gst-launch-1.0 && gst-inspect-1.0 rtspsrc && gst-inspect-1.0 rtpmp4gdepay && gst-inspect-1.0 h264parse \
    && gst-inspect-1.0 avdec_h264; } >/dev/null 2>&1 \
  || need+=(gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
            gstreamer1.0-libav)
# nginx-rtmp, the foreign origin/target of the relay interop tests (each test starts its own nginx)
{ command -v nginx && test -f /usr/lib/nginx/modules/ngx_rtmp_module.so; } >/dev/null 2>&1 \
  || need+=(nginx libnginx-mod-rtmp)
if [ ${#need[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q '.[test]'

exec .venv/bin/python -m pytest "$@"
