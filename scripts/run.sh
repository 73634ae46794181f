#!/usr/bin/env bash
# Installs mediasrv into ./.venv (first run only) and runs it in the foreground
# on the embedded default configuration (RTMP 1935, RTSP 8554, HTTP 8080,
# shell 127.0.0.1:9000, hooks off). Extra arguments go to the mediasrv plugin,
# e.g.  bash scripts/run.sh --config etc/mediasrv.ini --set rtmp.port=1936
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" != 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q . >/dev/null
exec .venv/bin/twistd -n --pidfile= mediasrv "$@"
