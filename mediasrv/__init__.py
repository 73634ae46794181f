"""mediasrv: a live-media server on Twisted whose business logic lives in the operator's web service."""

__version__ = "0.1.0"
