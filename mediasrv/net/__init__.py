"""Network transports below Twisted's ``ITransport`` (imports only Twisted; nothing else of mediasrv)."""
