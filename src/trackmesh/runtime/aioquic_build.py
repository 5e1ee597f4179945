"""Which aioquic the MoQ relay runs: as pip installs it (pure Python) or with its per-packet modules
compiled (``scripts/build-fast-aioquic.sh``, docs/moq.md "Speed"), and a self-check of either.

``python -m trackmesh.runtime.aioquic_build`` prints the build; ``--check`` also runs
:func:`self_check` and exits non-zero when it fails (the build script runs it after installing).
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import importlib.metadata
import ssl
import sys

#: The aioquic modules scripts/fast_aioquic_setup.py compiles that every QUIC packet goes through;
#: the first one decides what :func:`describe` says.
HOT_MODULES = (
    "aioquic.quic.connection",
    "aioquic.quic.packet_builder",
    "aioquic.quic.recovery",
    "aioquic.quic.stream",
)


def compiled_modules() -> list[str]:
    """The modules of :data:`HOT_MODULES` that load as native code (a ``.so`` next to the ``.py``)."""
    native = []
    for name in HOT_MODULES:
        path = getattr(importlib.import_module(name), "__file__", None) or ""
        if path.endswith((".so", ".pyd")):
            native.append(name)
    return native


def describe() -> str:
    """``aioquic 1.7.2, compiled`` or ``aioquic 1.7.2, pure Python`` (the node's banner and log)."""
    try:
        version = importlib.metadata.version("aioquic")
    except importlib.metadata.PackageNotFoundError:
        version = "(unknown version)"
    return f"aioquic {version}, {'compiled' if HOT_MODULES[0] in compiled_modules() else 'pure Python'}"


def self_check(payload_size: int = 300_000) -> None:
    """A QUIC handshake and ``payload_size`` bytes on a stream each way between two aioquic
    connections in memory (no sockets), with a loss every 7th datagram so that ACK ranges, loss
    detection and retransmission run too. Raises AssertionError when the bytes do not arrive whole."""
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.connection import QuicConnection
    from aioquic.quic.events import HandshakeCompleted, StreamDataReceived
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    start = datetime.datetime.now(datetime.UTC)
    server_config = QuicConfiguration(is_client=False, alpn_protocols=["check"])
    server_config.private_key = key
    server_config.certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - datetime.timedelta(minutes=5))
        .not_valid_after(start + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    client_config = QuicConfiguration(is_client=True, alpn_protocols=["check"], server_name="localhost")
    client_config.verify_mode = ssl.CERT_NONE  # the certificate was made just above
    client = QuicConnection(configuration=client_config)
    server = QuicConnection(
        configuration=server_config, original_destination_connection_id=client.original_destination_connection_id
    )
    client_addr, server_addr = ("127.0.0.1", 5001), ("127.0.0.1", 5002)
    payload = bytes(range(256)) * (payload_size // 256) + bytes(payload_size % 256)
    now = 1000.0  # the connections' own clock: time moves only when both wait for a timer
    client.connect(server_addr, now=now)
    received = {id(client): bytearray(), id(server): bytearray()}
    ended = {id(client): False, id(server): False}
    connected = sent = False
    datagrams = 0
    for _ in range(100_000):
        moved = False
        for src, dst, dst_addr in ((client, server, client_addr), (server, client, server_addr)):
            for data, _addr in src.datagrams_to_send(now=now):
                datagrams += 1
                moved = True
                if datagrams % 7:  # every 7th datagram is lost
                    dst.receive_datagram(data, dst_addr, now=now)
        for conn in (client, server):
            while (event := conn.next_event()) is not None:
                if isinstance(event, HandshakeCompleted) and conn is client:
                    connected = True
                elif isinstance(event, StreamDataReceived):
                    received[id(conn)] += event.data
                    ended[id(conn)] |= event.end_stream
        if connected and not sent:
            sent = True
            for conn in (client, server):
                conn.send_stream_data(conn.get_next_available_stream_id(), payload, end_stream=True)
        if all(ended.values()):
            break
        if not moved:
            timers = [t for t in (client.get_timer(), server.get_timer()) if t is not None]
            assert timers, "stalled: nothing to send and no timer"
            now = max(now, min(timers))
            for conn in (client, server):
                timer = conn.get_timer()
                if timer is not None and timer <= now:
                    conn.handle_timer(now=now)
    assert connected, "no handshake"
    for conn, name in ((server, "client -> server"), (client, "server -> client")):
        got = bytes(received[id(conn)])
        assert ended[id(conn)] and got == payload, f"{name}: {len(got)} of {len(payload)} bytes arrived"


def main() -> None:
    parser = argparse.ArgumentParser(description="Which aioquic runs (pure Python or compiled), and a self-check.")
    parser.add_argument("--check", action="store_true", help="also exchange data over QUIC in memory")
    parser.add_argument("--expect-compiled", action="store_true", help="fail unless the hot modules are compiled")
    args = parser.parse_args()
    print(describe())
    if args.expect_compiled and compiled_modules() != list(HOT_MODULES):
        sys.exit(f"not compiled: {sorted(set(HOT_MODULES) - set(compiled_modules()))}")
    if args.check:
        self_check()
        print("self-check passed: handshake and 2 x 300 KB over QUIC in memory, 1 in 7 datagrams lost")


if __name__ == "__main__":
    main()
