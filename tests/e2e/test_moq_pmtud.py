"""Path MTU discovery on real QUIC (runtime/moq_pmtud.py, transports/moq/pmtud.py).

Loopback's MTU is 64 KB, so each case runs in a nested network namespace of its own (``unshare -n``
from the private one the e2e tests run in; only ``lo``, its MTU set there) and reports back as JSON.
A MoqListener with ``loopback_datagram_size=1200`` (the loopback shortcut off, so path MTU discovery
runs for loopback peers too), an aioquic publisher and subscriber: once the searches are done the
publisher sends one 300 KB object.

- lo MTU 1500: the relay's packets to the subscriber grow above 1200 and stay at or below 1472 (1500
  less the IPv4 and UDP headers), the object arrives intact, one probe per connection, acknowledged.
- lo MTU 1280: every probe (1472, then 1322: nothing smaller is tried) is refused by the kernel
  (EMSGSIZE) and counts as lost; the size stays 1200, the object arrives intact, and the congestion
  window was not cut (a probe's loss is no congestion signal).
- The same on a dual-stack socket (``::``): IPv6 peers get 1452 (1500 less 48), IPv4-mapped ones
  1472, and DF holds for both (1280: 1200).

A router that silently drops what is too large (no EMSGSIZE, the probe just never arrives) is played
in process, in the private namespace: the relay's socket and its probe socket drop every datagram
above a limit. Probes are then declared lost by QUIC's own loss detection while objects flow.

- Limit 1392 (a WireGuard link): 1472 is lost three times, the search climbs 1322 ... 1392, 1422 is
  lost three times: 1392.
- Then the limit drops to 1300 under the connection (a route change): the 1392-byte packets vanish,
  the black hole is detected (RFC 8899 s4.3), the size falls back to 1200, and the object still
  arrives intact.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import QuicEvent, StreamDataReceived

from tests.e2e.test_moq_datagram_size import Session
from trackmesh.runtime.moq_listener import MoqListener
from trackmesh.transports.moq import messages as m
from trackmesh.transports.moq.objects import SubgroupHeader, encode_object, encode_subgroup_header
from trackmesh.transports.moq.pmtud import PmtuState

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
NS = (b"moq-test", b"pmtud")
PAYLOAD = bytes(i * 7 % 251 for i in range(300_000))


class Recorder(Session):
    """A session that also keeps the bytes of its data streams."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.streams: dict[int, bytearray] = {}

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamDataReceived) and event.stream_id != 0:
            self.streams.setdefault(event.stream_id, bytearray()).extend(event.data)
        super().quic_event_received(event)


async def open_recorder(port: int, host: str = "127.0.0.1") -> Recorder:
    config = QuicConfiguration(is_client=True, alpn_protocols=["moqt-16"], verify_mode=ssl.CERT_NONE)
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_datagram_endpoint(
        lambda: Recorder(QuicConnection(configuration=config)), local_addr=(host, 0)
    )
    session: Recorder = protocol
    # aioquic matches the peer's address as the socket reports it: 4 fields for IPv6
    session.connect((host, port, 0, 0) if ":" in host else (host, port))
    await asyncio.wait_for(session.wait_connected(), 10)
    session.send(m.ClientSetup({m.SETUP_MAX_REQUEST_ID: 10}))
    await session.wait_for(lambda: session.messages)
    return session


async def subscribe(pub: Recorder, sub: Recorder) -> None:
    """``pub`` announces NS, ``sub`` subscribes to its track ``video`` through the relay, ``pub`` accepts."""
    pub.send(m.PublishNamespace(0, NS))
    await pub.wait_for(lambda: len(pub.messages) >= 2)
    sub.send(m.Subscribe(0, NS, b"video", {m.PARAM_FORWARD: 1}))
    await pub.wait_for(lambda: any(isinstance(x, m.Subscribe) for x in pub.messages))
    upstream = next(x for x in pub.messages if isinstance(x, m.Subscribe))
    pub.send(m.SubscribeOk(upstream.request_id, 1, {m.PARAM_EXPIRES: 0}))
    await sub.wait_for(lambda: any(isinstance(x, m.SubscribeOk) for x in sub.messages))


def send_object(pub: Recorder, payload: bytes, group: int = 0) -> None:
    """One object on a subgroup stream of its own (track alias 1), ended, sent now."""
    stream = pub._quic.get_next_available_stream_id(is_unidirectional=True)
    head = encode_subgroup_header(SubgroupHeader(1, group, 0, 128))
    pub._quic.send_stream_data(stream, head + encode_object(0, None, payload), end_stream=True)
    pub.transmit()


async def scenario(listen: str = "127.0.0.1", client: str = "127.0.0.1", loopback: str = "1200") -> dict[str, Any]:
    """Run in the nested namespace: the searches, then one large object; what was seen."""
    listener = MoqListener(listen, 0, anonymous=True, loopback_datagram_size=int(loopback))
    await listener.start()
    sessions: list[Recorder] = []
    try:
        pub = await open_recorder(listener.port, client)
        sub = await open_recorder(listener.port, client)
        sessions += [pub, sub]
        async with asyncio.timeout(20):  # both searches over (the listener starts them on its 250 ms tick)
            while len(listener.sessions) < 2 or any(
                c.pmtud is None or c.pmtud.search.state is not PmtuState.SEARCH_COMPLETE for c in listener.sessions
            ):
                if int(loopback) > 1200:  # the loopback shortcut: no search
                    break
                await asyncio.sleep(0.05)
        await subscribe(pub, sub)
        before = len(sub.sizes)
        started = time.monotonic()
        send_object(pub, PAYLOAD)
        await sub.wait_for(lambda: sub.data_bytes >= len(PAYLOAD), 30)
        took = time.monotonic() - started
        assert sub._transport is not None
        port = sub._transport.get_extra_info("sockname")[1]
        to_sub = next(c for c in listener.sessions if c._quic._network_paths[0].addr[1] == port)
        received = b"".join(bytes(b) for b in sub.streams.values())
        return {
            "sizes": sub.sizes[before:],
            "all_sizes": sub.sizes,
            "intact": PAYLOAD in received,
            "seconds": took,
            "cwnd": to_sub._quic._loss.congestion_window,
            "datagram_size": to_sub._quic._max_datagram_size,
            "metrics": {
                k: v for k, v in listener.metrics().items() if k.startswith(("pmtud", "loopback_large"))
            },
        }
    finally:
        for session in sessions:
            session._quic.close()
            session.transmit()
        listener.close()


class LossyPath:
    """Drops every datagram the relay sends above ``limit`` bytes, as a router with a smaller MTU
    that sends no ICMP would (both the relay's own sends and its probes)."""

    def __init__(self, listener: MoqListener, limit: int) -> None:
        self.limit = limit
        self.dropped = 0
        assert listener._server is not None and listener._server._transport is not None
        assert listener.probe_socket is not None
        transport: Any = listener._server._transport
        real_sendto, real_probe = transport.sendto, listener.probe_socket
        listener.probe_socket = self  # type: ignore[assignment]
        self._probe = real_probe

        def sendto(data: bytes, addr: Any = None) -> None:
            if len(data) > self.limit:
                self.dropped += 1
                return
            real_sendto(data, addr)

        transport.sendto = sendto
        for conn in listener.sessions:
            if conn.pmtud is not None:
                conn.pmtud._send_sock = self

    def sendto(self, data: bytes, addr: Any) -> int:
        if len(data) > self.limit:
            self.dropped += 1
            return len(data)
        return int(self._probe.sendto(data, addr))

    def close(self) -> None:
        self._probe.close()


async def lossy_scenario() -> dict[str, Any]:
    listener = MoqListener("127.0.0.1", 0, anonymous=True, loopback_datagram_size=1200)
    await listener.start()
    sessions: list[Recorder] = []
    out: dict[str, Any] = {}
    try:
        path = LossyPath(listener, 1392)
        pub = await open_recorder(listener.port)
        sub = await open_recorder(listener.port)
        sessions += [pub, sub]
        for conn in listener.sessions:
            if conn.pmtud is not None:
                conn.pmtud._send_sock = path
        await subscribe(pub, sub)
        assert sub._transport is not None
        port = sub._transport.get_extra_info("sockname")[1]
        to_sub = next(c for c in listener.sessions if c._quic._network_paths[0].addr[1] == port)
        groups = iter(range(1, 1 << 30))

        async def flow_until(done: Any, timeout: float) -> None:
            """3.5 KB objects every 20 ms (a video track) until ``done()``."""
            async with asyncio.timeout(timeout):
                while not done():
                    send_object(pub, bytes(3500), next(groups))
                    await asyncio.sleep(0.02)

        assert to_sub.pmtud is not None
        search = to_sub.pmtud.search
        await flow_until(lambda: search.state is PmtuState.SEARCH_COMPLETE, 30)
        out["searched"] = {"plpmtu": search.plpmtu, "size": to_sub._quic._max_datagram_size, "dropped": path.dropped}
        out["searched_metrics"] = {k: v for k, v in listener.metrics().items() if k.startswith("pmtud")}
        path.limit = 1300  # the route changes under the connection
        await flow_until(lambda: search.black_holes > 0 and search.state is PmtuState.SEARCH_COMPLETE, 60)
        send_object(pub, PAYLOAD, next(groups))
        await sub.wait_for(lambda: max(len(b) for b in sub.streams.values()) >= len(PAYLOAD), 30)
        received = max(sub.streams.values(), key=len)
        out |= {
            "intact": PAYLOAD in received,
            "size": to_sub._quic._max_datagram_size,
            "plpmtu": search.plpmtu,
            "cwnd": to_sub._quic._loss.congestion_window,
            "metrics": {k: v for k, v in listener.metrics().items() if k.startswith("pmtud")},
            "largest": max(sub.sizes),
        }
        return out
    finally:
        for session in sessions:
            session._quic.close()
            session.transmit()
        listener.close()


def test_silently_dropped_probes_and_a_black_hole() -> None:
    r = asyncio.run(lossy_scenario())
    print(r)
    assert r["searched"]["plpmtu"] == 1392 and r["searched"]["size"] == 1392
    searched = r["searched_metrics"]
    assert searched["pmtud_probes_lost_total"] >= 6  # 1472 and 1422, three times each (subscriber)
    assert r["largest"] <= 1392  # nothing larger got through
    assert r["intact"]
    assert r["size"] == 1200 and r["plpmtu"] == 1200
    assert r["metrics"]["pmtud_black_holes_total"] >= 1


def test_aioquic_internals_moved_leave_1200(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """If aioquic's private packet-size attributes move, the probe's ACK (handled inside aioquic's own ACK
    processing) must not break the connection: one warning, 1200-byte packets, the object delivered."""

    def moved(quic: Any, size: int) -> None:
        raise AttributeError("QuicConnection._max_datagram_size")

    monkeypatch.setattr("trackmesh.runtime.moq_pmtud.set_datagram_size", moved)
    monkeypatch.setattr("trackmesh.runtime.moq_listener.set_datagram_size", moved)

    async def run() -> tuple[int, bool, list[int], dict[str, int]]:
        listener = MoqListener("127.0.0.1", 0, anonymous=True, loopback_datagram_size=1200)
        await listener.start()
        sessions: list[Recorder] = []
        try:
            pub = await open_recorder(listener.port)
            sub = await open_recorder(listener.port)
            sessions += [pub, sub]
            async with asyncio.timeout(10):
                while len(listener.sessions) < 2 or any(c.pmtud is not None for c in listener.sessions):
                    await asyncio.sleep(0.05)
            await subscribe(pub, sub)
            before = len(sub.sizes)
            send_object(pub, PAYLOAD)
            await sub.wait_for(lambda: max((len(b) for b in sub.streams.values()), default=0) >= len(PAYLOAD), 30)
            intact = PAYLOAD in max(sub.streams.values(), key=len)
            sizes = sub.sizes[before:]
            return len(listener.sessions), intact, sizes, listener.metrics()
        finally:
            for session in sessions:
                session._quic.close()
                session.transmit()
            listener.close()

    live, intact, sizes, metrics = asyncio.run(run())
    assert live == 2 and intact
    assert max(sizes) <= 1200
    assert metrics["internal_errors_total"] == 0
    assert metrics["pmtud_probes_acked_total"] >= 1  # the probes went out and were acknowledged
    warnings = [r for r in caplog.records if "unsupported by this aioquic" in r.getMessage()]
    assert len(warnings) == 1, warnings


def run_nested(mtu: int, listen: str = "127.0.0.1", client: str = "127.0.0.1", loopback: int = 1200) -> dict[str, Any]:
    """The scenario in a new network namespace whose ``lo`` has ``mtu``."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs unshare and ip (util-linux, iproute2)")
    child = f"{sys.executable} -m tests.e2e.test_moq_pmtud {listen} {client} {loopback}"
    script = f"ip link set lo mtu {mtu} up && exec {child}"
    done = subprocess.run(
        ["unshare", "-n", "sh", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_pmtud_raises_packets_to_the_path_mtu() -> None:
    r = run_nested(1500)
    sizes, metrics = r["sizes"], r["metrics"]
    print("1500:", {k: v for k, v in r.items() if "sizes" not in k}, "largest", max(sizes))
    assert r["intact"]
    assert r["datagram_size"] == 1472
    assert max(r["all_sizes"]) <= 1472
    assert sum(1 for s in sizes if 1200 < s <= 1472) > 100  # the object went in 1472-byte packets
    assert metrics["pmtud_probes_sent_total"] == 2  # one per connection (publisher, subscriber): 1472 at once
    assert metrics["pmtud_probes_acked_total"] == 2
    assert metrics["pmtud_probes_lost_total"] == 0 and metrics["pmtud_black_holes_total"] == 0
    assert metrics["pmtud_sessions_1472"] == 2 and metrics["pmtud_last_plpmtu"] == 1472


def test_pmtud_probes_refused_by_a_1280_link_leave_1200() -> None:
    r = run_nested(1280)
    sizes, metrics = r["sizes"], r["metrics"]
    print("1280:", {k: v for k, v in r.items() if "sizes" not in k}, "largest", max(sizes))
    assert r["intact"]
    assert r["datagram_size"] == 1200 and max(r["all_sizes"]) <= 1200
    # 3 probes of 1472, then 3 of 1322 (1350 - 28, the smallest tried), per connection: all EMSGSIZE
    assert metrics["pmtud_probes_sent_total"] == 12
    assert metrics["pmtud_probes_lost_total"] == 12 and metrics["pmtud_probes_acked_total"] == 0
    assert metrics["pmtud_black_holes_total"] == 0 and metrics["pmtud_sessions_1200"] == 2
    assert r["cwnd"] >= 10 * 1200, r["cwnd"]  # no congestion response to the lost probes


def test_loopback_shortcut_fits_a_smaller_loopback_mtu() -> None:
    """With DF on the socket, the loopback shortcut (16 KB) must fit the loopback interface's MTU, or the
    kernel would refuse every large packet: capped at 1500 - 28 here."""
    r = run_nested(1500, loopback=16384)
    assert r["intact"] and r["datagram_size"] == 1472 and max(r["all_sizes"]) <= 1472
    assert r["metrics"]["loopback_large_datagram_sessions_total"] == 2
    assert r["metrics"]["pmtud_probes_sent_total"] == 0


@pytest.mark.parametrize(
    ("mtu", "listen", "client", "size"),
    [
        (1500, "::", "::1", 1452),
        (1500, "::", "127.0.0.1", 1472),
        (1280, "::", "::1", 1200),
        (1280, "::", "127.0.0.1", 1200),
    ],
)
def test_pmtud_ipv6_and_dual_stack(mtu: int, listen: str, client: str, size: int) -> None:
    """A dual-stack socket: IPv6 peers get 1452 (1500 less 48), IPv4-mapped ones 1472; DF holds for both."""
    r = run_nested(mtu, listen, client)
    assert r["intact"] and r["datagram_size"] == size and max(r["all_sizes"]) <= size, r["metrics"]
    assert r["metrics"][f"pmtud_sessions_{size}"] == 2


if __name__ == "__main__":
    print(json.dumps(asyncio.run(scenario(*sys.argv[1:4]))))
