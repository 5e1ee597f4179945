"""The HTTP API (FastAPI): node, tokens, metrics, and the transports' routers."""
