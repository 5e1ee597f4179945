"""Transports: protocol plugins on the protocol-neutral media core (see trackmesh.core)."""
