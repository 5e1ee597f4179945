"""trackmesh: a decentralized, low-latency media server."""

__version__ = "0.1.0"
