"""RTSP server: sans-IO framing, digest auth, RTP mux/ingest, and the Twisted adapter."""
