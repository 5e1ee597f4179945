# The native helper (_sendmmsg.c), built by setup.py when a C compiler is there; see udp_send.py.
from collections.abc import Sequence

BATCH: int

def sendmmsg(
    fd: int, datagrams: Sequence[tuple[bytes | bytearray | memoryview, tuple[str, int]]], start: int = 0, /
) -> int: ...
