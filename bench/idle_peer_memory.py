"""Memory per idle WHEP peer, in memory, and where it goes (issue 19: under 100 KB).

N WHEP viewers connect to one MediaWorker through the in-memory network of the tests (real ICE,
DTLS and SRTP, see tests/transports/webrtc/peer_client.py), the clock moves 3 s with consent
checks and no media, then the clients are dropped so that only the server's side stays. Prints,
per peer: the bytes malloc'd and still in use (glibc ``mallinfo2``, with ``PYTHONMALLOC=malloc``:
Python objects and the native memory of OpenSSL, libsrtp and ``cryptography``, without the
allocator's fragmentation that RSS adds), as the worker runs them (OpenSSL's DTLS connection freed
once connected, see ``DtlsEndpoint.release_connection``) and with the connection kept (what a peer
with a data channel keeps), the Python part (tracemalloc) and its top modules and allocation sites.

    taskset -c 1 .venv/bin/python bench/idle_peer_memory.py [peers]

The node's RSS per idle peer (``trackmesh-bench``) is the figure the issue's target names; this
explains it. docs/benchmarks.md has the runs.
"""

from __future__ import annotations

import ctypes
import gc
import os
import sys
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.transports.webrtc import peer_client
from tests.transports.webrtc.peer_client import Net

from trackmesh.transports.webrtc.peer import WebRtcPeer
from trackmesh.transports.whip_whep.session import PeerMode


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


_LIBC = ctypes.CDLL("libc.so.6")
_LIBC.mallinfo2.restype = _MallInfo2


def malloced() -> int:
    """Bytes handed out by malloc and not freed (small blocks plus mmap'd ones)."""
    gc.collect()
    info = _LIBC.mallinfo2()
    return int(info.uordblks + info.hblkhd)


def idle_peers(n: int, *, release: bool = True) -> tuple[Net, list[WebRtcPeer]]:
    net = Net()
    peers = [net.connect(PeerMode.WHEP, release_dtls=release)[1] for _ in range(n)]
    net.advance(3.0)  # consent checks, RTCP timers: an idle session as it stays
    net.clients = {}  # only the server's side stays
    net.events.clear()
    peer_client._CERTS.clear()
    return net, peers


def main() -> None:
    if os.environ.get("PYTHONMALLOC") != "malloc":
        # Python's small-object arenas are mmap'd past malloc: let malloc see every object.
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "PYTHONMALLOC": "malloc"})
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    idle_peers(3)  # warm up: certificates, shared DTLS contexts, caches
    idle_peers(3, release=False)
    before = malloced()
    kept = idle_peers(n, release=False)
    with_connection = malloced() - before
    del kept
    before = malloced()
    kept = idle_peers(n)
    after = malloced()
    released = sum(p.dtls.connection_released for p in kept[1])
    del kept
    tracemalloc.start(8)
    before_py = tracemalloc.take_snapshot()
    kept = idle_peers(n)
    after_py = tracemalloc.take_snapshot()
    tracemalloc.stop()
    del kept
    by_file = after_py.compare_to(before_py, "filename")
    python = sum(s.size_diff for s in by_file)
    print(
        f"{n} idle WHEP peers ({released} released their DTLS connection), per peer: "
        f"{(after - before) / n / 1024:.1f} KB malloc'd; with the OpenSSL DTLS connection kept "
        f"{with_connection / n / 1024:.1f} KB; Python objects {python / n / 1024:.1f} KB"
    )
    print("Python, by module (bytes per peer):")
    for s in by_file[:12]:
        name = s.traceback[0].filename.split("src/trackmesh/")[-1]
        print(f"  {s.size_diff / n:7.0f}  {name}")
    print("Python, by allocation site (bytes per peer):")
    for s in after_py.compare_to(before_py, "lineno")[:12]:
        frame = s.traceback[0]
        print(f"  {s.size_diff / n:7.0f}  {frame.filename.split('src/trackmesh/')[-1]}:{frame.lineno}")


if __name__ == "__main__":
    main()
