"""Datagram-level types shared by every transport and the runtime.

Imports nothing from trackmesh: transports, the runtime and the shared media layers may all
import it.
"""

from __future__ import annotations

__all__ = ["Address"]

#: A UDP transport address as the runtime hands it over: ``(host, port)``. IPv6 4-tuples
#: from asyncio must be normalised to 2-tuples by the caller.
Address = tuple[str, int]
