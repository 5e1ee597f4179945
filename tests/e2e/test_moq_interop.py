"""Media over QUIC against real clients: aiomoqt's interop suite (the moq-interop-runner's test
client, 12 cases) against a trackmesh node in anonymous mode, over raw QUIC and over WebTransport,
at draft-16, draft-20 (the WG's interop target) and draft-22; and an aioquic client checking ALPN
refusal and the pinned certificate (loopback only, in the private namespace)."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import json
import re
import socket
import ssl
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from aioquic.asyncio.client import connect
from aioquic.quic.configuration import QuicConfiguration
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.e2e.conftest import TrackmeshNode
from tests.moq_fixtures import PYTHON, MoqFixtureError, interop_client

pytestmark = pytest.mark.e2e

CASES = (
    "setup-only",
    "announce-only",
    "publish-namespace-done",
    "subscribe-error",
    "rendezvous-timeout",
    "announce-subscribe",
    "subscribe-before-announce",
    "data-subgroup-basic",
    "subscribe-namespace-lifecycle",
    "namespace-discovery",
    "publish-track-only",
    "publish-track-subscribe",
)
#: Cases the client itself skips at a draft (it needs a later one), with the reason it gives.
CLIENT_SKIPS = {16: {"rendezvous-timeout": "RENDEZVOUS_TIMEOUT is draft-18"}}
TAP_LINE = re.compile(r"^(ok|not ok) \d+ - (\S+)(?: # SKIP (.*))?$")


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def moq_node(netns_guard: None) -> Iterator[tuple[TrackmeshNode, int]]:
    port = free_udp_port()
    node = TrackmeshNode("--moq-port", str(port), "--moq-anonymous")
    try:
        yield node, port
    finally:
        rc = node.stop()
        tail = node.log_tail(200)
        assert "Traceback" not in "\n".join(node.lines), tail
        assert rc == 0, f"trackmesh exited {rc}:\n{tail}"


def run_suite(url: str, draft: int) -> tuple[dict[str, tuple[str, str]], str]:
    try:
        client = interop_client()
    except MoqFixtureError as exc:
        pytest.fail(str(exc))
    proc = subprocess.run(
        [str(client), "-r", url, "--tls-disable-verify", "--draft", str(draft)],
        capture_output=True,
        text=True,
        timeout=150,
    )
    results: dict[str, tuple[str, str]] = {}
    for line in proc.stdout.splitlines():
        match = TAP_LINE.match(line.strip())
        if match:
            results[match.group(2)] = (match.group(1), match.group(3) or "")
    return results, proc.stdout + proc.stderr


@pytest.mark.parametrize("transport", ["quic", "webtransport"])
@pytest.mark.parametrize("draft", [16, 20, 22])
def test_interop_suite(moq_node: tuple[TrackmeshNode, int], draft: int, transport: str) -> None:
    node, port = moq_node
    # Raw QUIC picks the version by ALPN; WebTransport (HTTP/3 extended CONNECT at /) by wt-protocol.
    url = f"moqt://127.0.0.1:{port}" if transport == "quic" else f"https://127.0.0.1:{port}/"
    results, output = run_suite(url, draft)
    assert set(results) == set(CASES), output
    failed = [name for name, (status, _) in results.items() if status != "ok"]
    assert not failed, f"failed at draft-{draft}: {failed}\n{output}"
    skipped = {name: reason for name, (_, reason) in results.items() if reason}
    allowed = CLIENT_SKIPS.get(draft, {})
    assert set(skipped) <= set(allowed), f"unexpected skips at draft-{draft}: {skipped}"
    for name, reason in skipped.items():
        assert allowed[name] in reason
    assert "Traceback" not in "\n".join(node.lines), node.log_tail()


@pytest.mark.parametrize("draft", [16, 20])
def test_fetch_and_join_cases(moq_node: tuple[TrackmeshNode, int], draft: int) -> None:
    """The client's two history cases (outside its default 12): a standalone FETCH of a group the
    relay forwarded, and a joining FETCH (draft-20: a SUBSCRIBE with FILL_PARAMETERS)."""
    _, port = moq_node
    client = interop_client()
    for case in ("fetch", "join"):
        proc = subprocess.run(
            [str(client), "-r", f"moqt://127.0.0.1:{port}", "--tls-disable-verify", "--draft", str(draft), "-t", case],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert f"ok 1 - {case}" in proc.stdout and "not ok" not in proc.stdout, proc.stdout + proc.stderr


async def _handshake(port: int, alpn: str) -> bytes:
    config = QuicConfiguration(is_client=True, alpn_protocols=[alpn], verify_mode=ssl.CERT_NONE)
    async with connect("127.0.0.1", port, configuration=config, wait_connected=True) as client:
        cert = client._quic.tls._peer_certificate
        assert cert is not None
        return bytes(cert.public_bytes(serialization.Encoding.DER))


def test_certificate_is_pinnable_and_unknown_versions_are_refused(moq_node: tuple[TrackmeshNode, int]) -> None:
    node, port = moq_node
    with urllib.request.urlopen(node.url("/moq/certificate.sha256"), timeout=5) as resp:
        published = resp.read().decode().strip()
    der = asyncio.run(asyncio.wait_for(_handshake(port, "moqt-16"), 10))
    assert hashlib.sha256(der).hexdigest() == published
    cert = x509.load_der_x509_certificate(der)
    # WebTransport's serverCertificateHashes accepts ECDSA certificates valid for at most 14 days.
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime <= datetime.timedelta(days=14)
    # No common ALPN: the TLS handshake fails, no session starts.
    with pytest.raises((ConnectionError, TimeoutError)):
        asyncio.run(asyncio.wait_for(_handshake(port, "moqt-99"), 5))
    assert any("ANONYMOUS" in line for line in node.lines), "--moq-anonymous must be logged loudly"


@pytest.mark.parametrize("transport", ["quic", "webtransport"])
def test_moq_rs_publishes_and_subscribes_through_trackmesh(moq_node: tuple[TrackmeshNode, int], transport: str) -> None:
    """moq-rs 0.5.1 (moq-dev's Rust stack) on both ends: it negotiates draft-20, pins our
    certificate by its SHA-256, announces, and a second moq-rs session receives its frames."""
    node, port = moq_node
    try:
        interop_client()
    except MoqFixtureError as exc:
        pytest.fail(str(exc))
    with urllib.request.urlopen(node.url("/moq/certificate.sha256"), timeout=5) as resp:
        fingerprint = resp.read().decode().strip()
    url = f"moqt://127.0.0.1:{port}" if transport == "quic" else f"https://127.0.0.1:{port}/"
    script = str(Path(__file__).parent / "clients" / "moq_rs_pubsub.py")
    proc = subprocess.run([str(PYTHON), script, url, fingerprint], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    frames = json.loads(proc.stdout.strip().splitlines()[-1])["frames"]
    # Frames of the live track (one per group), in order, starting at the then-current group.
    numbers = [int(f.split("-")[1]) for f in frames]
    assert len(numbers) == 3 and numbers == sorted(set(numbers)), frames


@pytest.fixture(scope="module")
def moq_token_node(netns_guard: None) -> Iterator[tuple[TrackmeshNode, int]]:
    port = free_udp_port()
    node = TrackmeshNode("--moq-port", str(port))
    try:
        yield node, port
    finally:
        assert node.stop() == 0, node.log_tail()


def test_moq_rs_with_a_room_token(moq_token_node: tuple[TrackmeshNode, int]) -> None:
    """Without --moq-anonymous: a moq token for room r1 (POST /token/moq, given as ?jwt= on the
    WebTransport URL) lets moq-rs publish and subscribe under trackmesh/r1; no token, no session."""
    node, port = moq_token_node
    status, resp = node.proc.json("POST", "/token/moq", {"room": "r1", "peer": "alice", "ttl": 60}, token=node.secret)
    assert status == 200, resp
    jwt = resp["data"]["token"]
    with urllib.request.urlopen(node.url("/moq/certificate.sha256"), timeout=5) as r:
        fingerprint = r.read().decode().strip()
    script = str(Path(__file__).parent / "clients" / "moq_rs_pubsub.py")
    url = f"https://127.0.0.1:{port}/?jwt={jwt}"
    proc = subprocess.run(
        [str(PYTHON), script, url, fingerprint, "trackmesh/r1"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    assert len(json.loads(proc.stdout.strip().splitlines()[-1])["frames"]) == 3
    refused = subprocess.run(
        [str(PYTHON), script, f"https://127.0.0.1:{port}/", fingerprint, "trackmesh/r1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 1, refused.stdout
    assert any("moq session closed: a moq token is needed" in line for line in node.lines), node.log_tail()


def moq_metrics(node: TrackmeshNode) -> dict[str, float]:
    with urllib.request.urlopen(node.url("/metrics"), timeout=5) as resp:
        text = resp.read().decode()
    pattern = r'^trackmesh_moq\{what="([a-z_]+)"\} (\S+)$'
    return {m.group(1): float(m.group(2)) for m in re.finditer(pattern, text, re.M)}


def test_metrics_count_the_sessions_and_objects(moq_node: tuple[TrackmeshNode, int]) -> None:
    node, port = moq_node
    before = moq_metrics(node)
    client = interop_client()
    proc = subprocess.run(
        [
            str(client),
            "-r",
            f"https://127.0.0.1:{port}/",
            "--tls-disable-verify",
            "--draft",
            "20",
            "-t",
            "data-subgroup-basic",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "ok 1 - data-subgroup-basic" in proc.stdout, proc.stdout + proc.stderr
    after = moq_metrics(node)
    delta = {k: after[k] - before.get(k, 0) for k in after}
    # Two WebTransport sessions (publisher, subscriber), 15 objects in and relayed to one subscriber.
    assert delta["sessions_started_total"] == 2 and delta["webtransport_sessions_total"] == 2, delta
    assert delta["objects_in_total"] == 15 and delta["objects_out_total"] == 15, delta
    assert delta["streams_out_total"] == 3, delta  # one stream per group, as the publisher sent them
