"""Resident memory of one connected DtlsEndpoint: 200 in-memory client/server handshakes, RSS delta / 400.

Run with ``python bench/dtls_memory.py``; it explains part of trackmesh-bench's RSS per idle peer.
"""

from __future__ import annotations

import gc
from datetime import UTC, datetime

from trackmesh.transports.webrtc.dtls.certificate import DtlsCertificate
from trackmesh.transports.webrtc.dtls.endpoint import DtlsEndpoint

NOT_BEFORE = datetime(2026, 1, 1, tzinfo=UTC)


def rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1])
    return 0


def connected_pair(cs: DtlsCertificate, cc: DtlsCertificate) -> tuple[DtlsEndpoint, DtlsEndpoint]:
    server = DtlsEndpoint("server", cs, [("sha-256", cc.fingerprint_sha256())])
    client = DtlsEndpoint("client", cc, [("sha-256", cs.fingerprint_sha256())])
    now = 1.0
    client.start(now)
    for _ in range(20):
        moved = False
        while (d := client.poll_transmit()) is not None:
            server.handle_datagram(now, d)
            moved = True
        while (d := server.poll_transmit()) is not None:
            client.handle_datagram(now, d)
            moved = True
        if not moved:
            break
    assert server.state.value == "connected", server.state
    return server, client


def main() -> None:
    cs, cc = DtlsCertificate.generate(NOT_BEFORE), DtlsCertificate.generate(NOT_BEFORE)
    connected_pair(cs, cc)
    gc.collect()
    before = rss_kb()
    keep = [connected_pair(cs, cc) for _ in range(200)]
    gc.collect()
    after = rss_kb()
    print(f"RSS per connected DTLS endpoint ({len(keep)} pairs): {(after - before) / (2 * len(keep)):.1f} KB")


if __name__ == "__main__":
    main()
