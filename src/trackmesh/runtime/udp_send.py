"""How a worker's outbox reaches the kernel: one ``sendmmsg(2)`` per batch when the native helper is built.

The helper (``_sendmmsg.c``) is compiled by ``setup.py`` beside the mypyc modules during
``pip install .`` on Linux with a C compiler. Where it is missing (an editable install, no
compiler, ``TRACKMESH_PURE_PYTHON=1``, another OS) :data:`sendmmsg` is None and the worker sends
each datagram with ``socket.sendto``, as before: same datagrams, same order, same counters, one
syscall per datagram (docs/benchmarks.md, "sendmmsg against sendto", has the difference).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

__all__ = ["BATCH", "SendBatch", "sendmmsg"]

#: ``sendmmsg(fd, datagrams, start) -> sent``: sends ``datagrams[start:start + BATCH]`` (pairs of
#: payload and ``(host, port)``) in one syscall on a non-blocking UDP socket and returns how many the
#: kernel took; it stops before the first datagram it cannot encode or the kernel refuses and never
#: raises a send error: the caller sends that one and the rest with ``socket.sendto``.
SendBatch = Callable[[int, Sequence[tuple[bytes, tuple[str, int]]], int], int]

sendmmsg: SendBatch | None
try:
    from trackmesh.runtime._sendmmsg import BATCH
    from trackmesh.runtime._sendmmsg import sendmmsg as _native
except ImportError:  # not built: the worker falls back to socket.sendto per datagram
    sendmmsg = None
    #: Datagrams per sendmmsg call (the helper's batch; UIO_MAXIOV allows 1024).
    BATCH = 64
else:
    sendmmsg = _native
