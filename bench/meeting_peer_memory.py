"""Memory per active meeting participant (S2), in memory, and where it goes (issue 19).

Rooms of 6 SDK connections, as ``trackmesh-bench s2`` makes them (``loadtest/sdk_client.py``: the
same offer, ``ConnectRequest`` and tracks; senders ``audio_main`` + ``video_main``, 5 audio and 5
video receivers; the data channel's SCTP client role; ``receiver.attach`` on every
``room.track_started`` of another peer), connected to one MediaWorker through the tests'
in-memory network (real ICE, DTLS, SRTP and SCTP, ``tests/transports/webrtc/peer_client.py``) on
a virtual clock. Every participant then replays the S1/S2 recording (VP8 1 Mbps 30 fps + Opus
32 kbps, ``bench/data/recording.tmrec``) for a few virtual seconds, each from its own point in
the loop, and receives the other 5's audio and video. The clients are then dropped, so that only
the server's side stays, and the bytes malloc'd per participant are reported as the worker holds
them at that moment: Python objects (``tracemalloc``, by module and by allocation site) and the
rest (native: OpenSSL's DTLS connections, libsrtp, ``cryptography``), with ``PYTHONMALLOC=malloc``
and glibc's ``mallinfo2`` as in ``bench/idle_peer_memory.py`` (no allocator fragmentation, which
RSS adds). It does not depend on the box's load.

    taskset -c 1 .venv/bin/python bench/meeting_peer_memory.py [rooms] [seconds] [--keep-dtls]

(``--keep-dtls``: the server keeps OpenSSL's DTLS connection of every peer, as before issue 19's
release of SDK peers' connections.)

It also checks that retransmission still works where a viewer may ask for it: a NACK for a video
packet sent about half a second earlier is answered (RTX), one for a packet older than the
window is not. docs/benchmarks.md has the runs.
"""

from __future__ import annotations

import gc
import os
import sys
import tracemalloc
from pathlib import Path
from typing import cast

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.idle_peer_memory import malloced
from tests.transports.webrtc import peer_client
from tests.transports.webrtc.peer_client import Client, Net

from trackmesh.core.ids import SessionId
from trackmesh.loadtest.client import Transport
from trackmesh.loadtest.media import AUDIO_PT, EXT_MID, VIDEO_PT
from trackmesh.loadtest.recording import AUDIO, Recording, load
from trackmesh.loadtest.sdk_client import SdkPlan, connect_request, sdk_offer
from trackmesh.net import Address
from trackmesh.rtp.packet import build_rtp_packet
from trackmesh.transports.sdk.naming import assign_mlines
from trackmesh.transports.sdk.protocol import DATA_CHANNEL_ID, DATA_CHANNEL_LABEL, gateway_pb2, session_pb2
from trackmesh.transports.sdk.session import SdkSession, TokenClaims
from trackmesh.transports.webrtc.answer import AnswerPolicy, LocalParams, answer_offer
from trackmesh.transports.webrtc.demux import PacketKind, classify, is_rtcp
from trackmesh.transports.webrtc.dtls.endpoint import DtlsApplicationData, DtlsConnected
from trackmesh.transports.webrtc.dtls.keying import srtp_sessions_from_dtls
from trackmesh.transports.webrtc.events import ApplicationData, Connected, Disconnected, IceSelected
from trackmesh.transports.webrtc.ice.agent import IceLiteAgent
from trackmesh.transports.webrtc.peer import WebRtcPeer
from trackmesh.transports.webrtc.sctp.association import SctpAssociation
from trackmesh.transports.webrtc.sctp.datachannel import DataChannelManager, Message

ROOM_SIZE = 6
TICK = 0.005  # the clock moves in 5 ms steps; packets due within a step go out together
PLAN = SdkPlan(audio_receivers=ROOM_SIZE - 1, video_receivers=ROOM_SIZE - 1)


class _OfferLines:
    """What ``loadtest.sdk_client.sdk_offer`` asks of its transport: the ICE/DTLS lines of an m-line."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def transport_lines(self, setup: str, *, candidate: bool, lite: bool = False) -> str:
        c = self.client
        lines = [
            f"a=ice-ufrag:{c.creds.ufrag}", f"a=ice-pwd:{c.creds.pwd}",
            f"a=fingerprint:sha-256 {c.cert.fingerprint_sha256()}", f"a=setup:{setup}", "a=rtcp-mux",
        ]  # fmt: skip
        if candidate:
            lines += [f"a=candidate:1 1 udp 2130706431 {c.addr[0]} {c.addr[1]} typ host", "a=end-of-candidates"]
        return "\r\n".join(lines) + "\r\n"


class Participant(Client):
    """One meeting participant's client: ICE, DTLS, SRTP (peer_client.Client), the SDK data channel
    (SCTP client role, auto-attach), a publisher replaying the recording; received media is counted."""

    def __init__(self, net: MeetingNet, addr: Address, peer: str, index: int) -> None:
        super().__init__(net, addr, "view")
        self.peer = peer
        self.ssrcs = (0x10000 + 2 * index, 0x10001 + 2 * index)
        self.offer, self.mids = sdk_offer(cast(Transport, _OfferLines(self)), PLAN, self.ssrcs)
        self.dcm = DataChannelManager(SctpAssociation(cookie_key=os.urandom(32)), dtls_role="client")
        self.dcm.open(DATA_CHANNEL_LABEL, negotiated_id=DATA_CHANNEL_ID)
        self.free: dict[int, list[str]] = {}
        for name, kind in PLAN.receivers():
            self.free.setdefault(kind, []).append(name)
        self.server_peer: WebRtcPeer | None = None
        self.req_id = 0
        self.attached = 0
        self.received = 0
        self.seq = [1000, 2000]
        self.ts_base = [1234, 5678]
        self.position = 0  # index of the next packet of the recording
        self.cycle = 0
        self.started = 0.0

    # -- the wire --------------------------------------------------------------------------------

    def receive(self, data: bytes) -> None:
        kind = classify(data[0])
        if kind is PacketKind.RTP and not is_rtcp(data):
            self.received += 1  # media: counted, not decrypted (the server's memory is what is measured)
            return
        if kind is PacketKind.RTP:
            return  # RTCP from the server (SR, PLI): not acted on, as the S2 generator without key frames
        super().receive(data)

    def _flush_dtls(self) -> None:
        assert self.dtls is not None
        while (d := self.dtls.poll_transmit()) is not None:
            self.out.append(d)
        while (ev := self.dtls.poll_event()) is not None:
            if isinstance(ev, DtlsConnected):
                self.srtp = srtp_sessions_from_dtls(ev, "client")
            elif isinstance(ev, DtlsApplicationData):
                self.dcm.handle_data(self.net.now, ev.data)
        self.pump()

    def pump(self) -> None:
        now = self.net.now
        while (ev := self.dcm.poll_event()) is not None:
            if isinstance(ev, Message) and ev.channel_id == DATA_CHANNEL_ID:
                self._on_server_event(session_pb2.ServerEvent.FromString(ev.data))
        assert self.dtls is not None
        while (pkt := self.dcm.poll_transmit(now)) is not None:
            self.dtls.send_application_data(pkt)
            while (d := self.dtls.poll_transmit()) is not None:
                self.out.append(d)

    def _on_server_event(self, ev: session_pb2.ServerEvent) -> None:
        if not (ev.HasField("room") and ev.room.HasField("track_started")):
            return
        ts = ev.room.track_started
        names = self.free.get(ts.kind)
        if ts.peer == self.peer or not names:
            return
        req = session_pb2.Request()
        req.receiver.name = names.pop(0)
        req.receiver.attach.source.peer = ts.peer
        req.receiver.attach.source.track = ts.track
        req.receiver.attach.config.priority = 1
        req.receiver.attach.config.max_spatial = 2
        req.receiver.attach.config.max_temporal = 2
        self.req_id += 1
        req.req_id = self.req_id
        self.dcm.send(
            self.net.now, DATA_CHANNEL_ID, session_pb2.ClientEvent(seq=self.req_id, request=req).SerializeToString()
        )
        self.attached += 1

    # -- publishing --------------------------------------------------------------------------------

    def publish_until(self, rec: Recording, end: float) -> None:
        """Send every packet of the recording due by ``end`` (the loop replayed from ``start``)."""
        assert self.srtp is not None
        packets = rec.packets
        while True:
            p = packets[self.position]
            due = self.started + self.cycle * rec.loop + p.offset
            if due > end:
                return
            k = p.kind
            clock = 48000 if k == AUDIO else 90000
            ts = (self.ts_base[k] + self.cycle * int(rec.loop * clock) + p.ts_offset) & 0xFFFFFFFF
            seq = self.seq[k] & 0xFFFF
            pkt = build_rtp_packet(
                AUDIO_PT if k == AUDIO else VIDEO_PT, seq, ts, self.ssrcs[k], p.payload, marker=p.marker,
                extensions={EXT_MID: self.mids[k].encode()},
            )  # fmt: skip
            self.seq[k] += 1
            self.out.append(self.srtp.protect_rtp(pkt))
            self.position += 1
            if self.position == len(packets):
                self.position = 0
                self.cycle += 1


class MeetingNet(Net):
    """peer_client.Net with SDK sessions instead of WHIP/WHEP ones, driven as runtime/sdk_worker.py
    and runtime/conn_table.py drive them."""

    def __init__(self, *, release_dtls: bool = True) -> None:
        super().__init__()
        self.sdks: dict[SessionId, SdkSession] = {}
        self.release_dtls = release_dtls  # as runtime/sdk_worker.py does

    def join(self, room: str, index: int) -> Participant:
        n = next(self._addrs)
        addr: Address = (f"198.51.100.{n % 250 + 1}", 20000 + n)
        peer = f"p{index}"
        client = Participant(self, addr, peer, index)
        req = gateway_pb2.ConnectRequest.FromString(connect_request(room, peer, PLAN, client.offer))
        ice = IceLiteAgent()
        creds = ice.local_credentials
        local = LocalParams(creds.ufrag, creds.pwd, self.cert.fingerprint_sha256(), "192.0.2.1", 4443)
        answer = answer_offer(req.sdp, local, AnswerPolicy.sdk())
        names = assign_mlines(req.tracks, answer.media)
        endpoint = self.worker.create_endpoint()
        peer_obj = WebRtcPeer(
            self.now, endpoint, answer, ice, self.cert, self.outbox, wallclock=self.wallclock,
            remote_names=lambda media: names.senders, release_dtls=self.release_dtls,
        )  # fmt: skip
        sdk = SdkSession(
            self.now, peer_obj, names, req.tracks, TokenClaims(room, peer), lambda raw: None, local,
            cookie_key=os.urandom(32),
        )  # fmt: skip
        failure = sdk.join_at_connect(self.now, req.join)
        assert failure is None, failure
        self.peers[endpoint.session] = peer_obj
        self.sdks[endpoint.session] = sdk
        self.demux.register(creds.ufrag, endpoint.session)
        self.clients[addr] = client
        client.server_peer = peer_obj
        self.after_input()
        client.start(answer, self.cert.fingerprint_sha256())
        self.flush()
        return client

    def after_input(self) -> None:
        for _ in range(100):
            ready = self.worker.take_ready()
            pending = False
            for ep in ready:
                sdk = self.sdks.get(ep.session)
                if sdk is not None:
                    sdk.on_core_events(self.now)
            for session, peer in list(self.peers.items()):
                sdk = self.sdks[session]
                while (ev := peer.poll_event()) is not None:
                    pending = True
                    if isinstance(ev, IceSelected):
                        self.demux.bind(ev.addr, session)
                    elif isinstance(ev, ApplicationData):
                        sdk.on_application_data(self.now, ev.data)
                    elif isinstance(ev, Connected):
                        sdk.on_connected(self.now)
                    elif isinstance(ev, Disconnected):
                        raise AssertionError(f"{session} disconnected: {ev.reason}")
            if not ready and not pending:
                return
        raise AssertionError("events never settle")

    def run(self, rec: Recording, seconds: float, publishers: list[Participant]) -> None:
        """Everyone publishes for ``seconds``; every deadline fires in order, in TICK steps."""
        end = self.now + seconds
        next_keepalive = self.now + 1.0
        while self.now < end:
            self.now = min(self.now + TICK, end)
            for p in publishers:
                p.publish_until(rec, self.now)
            if self.now >= next_keepalive:
                next_keepalive += 1.0
                for c in self.clients.values():
                    c.send_check()
            self.flush()
            self.worker.handle_timeout(self.now)
            for sdk in list(self.sdks.values()):
                d = sdk.next_deadline()
                if d is not None and d <= self.now:
                    sdk.handle_timeout(self.now)
            for c in self.clients.values():
                assert isinstance(c, Participant)
                d = c.dcm.next_deadline()
                if d is not None and d <= self.now:
                    c.dcm.handle_timeout(self.now)
                c.pump()
            self.after_input()
            self.flush()


def meeting(rec: Recording, rooms: int, seconds: float, release_dtls: bool) -> tuple[MeetingNet, list[Participant]]:
    net = MeetingNet(release_dtls=release_dtls)
    everyone: list[Participant] = []
    for r in range(rooms):
        for _ in range(ROOM_SIZE):
            everyone.append(net.join(f"room{r}", len(everyone)))
    for i, p in enumerate(everyone):
        # Each from its own point of the recording, as the S2 publishers (start_loop_offset).
        p.started = net.now - (i * rec.loop / len(everyone))
        p.position = next(j for j, pkt in enumerate(rec.packets) if pkt.offset >= (i * rec.loop / len(everyone)))
    net.run(rec, seconds, everyone)
    return net, everyone


def check(net: MeetingNet, everyone: list[Participant]) -> str:
    """Every receiver attached and fed; a NACK inside the window answered, one beyond it not."""
    attached = sum(p.attached for p in everyone)
    expected = len(everyone) * 2 * (ROOM_SIZE - 1)
    fed = sum(1 for peer in net.peers.values() for out in peer.outbound.values() if out.packets > 0)
    assert attached == expected, (attached, expected)
    assert fed == expected, (fed, expected)
    # A viewer's NACK: RFC 4585 s6.2.1 generic NACK from the first participant for its first video receiver.
    peer = everyone[0].server_peer
    assert peer is not None
    out = next(o for o in peer.outbound.values() if o.video and o.packets > 0)
    hits = out.counters["nack_hits"]
    misses = out.counters["nack_misses"]
    last = out.rewriter.last_seq
    assert last is not None
    recent = (last - 40) & 0xFFFF  # about 0.35 s ago at 115 packets/s
    old = (last - 400) & 0xFFFF  # about 3.5 s ago: beyond the 1 s window
    out.on_nack(net.now, [recent, old])
    assert out.counters["nack_hits"] == hits + 1, "a NACK inside the window was not answered"
    assert out.counters["nack_misses"] == misses + 1, "a NACK beyond the window was answered"
    received = sum(p.received for p in everyone)
    return f"{attached} receivers attached and fed, {received} media packets delivered; NACK inside the window answered"


def main() -> None:
    if os.environ.get("PYTHONMALLOC") != "malloc":
        # Python's small-object arenas are mmap'd past malloc: let malloc see every object.
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "PYTHONMALLOC": "malloc"})
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    release = "--keep-dtls" not in sys.argv  # compare with the OpenSSL connections kept
    rooms = int(args[0]) if args else 3
    seconds = float(args[1]) if len(args) > 1 else 3.0
    rec = load()
    n = rooms * ROOM_SIZE
    meeting(rec, 1, 1.0, release)  # warm up: certificates, shared DTLS contexts, caches, imports

    def server_side(net: MeetingNet) -> None:
        net.clients = {}  # only the server's side stays
        net.events.clear()
        net.outbox.clear()
        peer_client._CERTS.clear()

    before = malloced()
    net, everyone = meeting(rec, rooms, seconds, release)
    summary = check(net, everyone)
    released = sum(p.dtls.connection_released for p in net.peers.values())
    del everyone
    server_side(net)
    total = malloced() - before
    del net
    tracemalloc.start(1)
    before_py = tracemalloc.take_snapshot()
    net, everyone = meeting(rec, rooms, seconds, release)
    del everyone
    server_side(net)
    gc.collect()
    after_py = tracemalloc.take_snapshot()
    tracemalloc.stop()
    by_file = after_py.compare_to(before_py, "filename")
    python = sum(s.size_diff for s in by_file)
    print(f"{rooms} rooms of {ROOM_SIZE}, {seconds:g} s of media: {summary}")
    print(f"{released} of {n} DTLS connections released")
    print(
        f"per participant: {total / n / 1024:.1f} KB malloc'd; Python objects {python / n / 1024:.1f} KB; "
        f"native (OpenSSL, libsrtp, cryptography) {(total - python) / n / 1024:.1f} KB"
    )
    print("Python, by module (KB per participant):")
    for s in by_file[:15]:
        name = s.traceback[0].filename.split("src/trackmesh/")[-1].split("site-packages/")[-1]
        print(f"  {s.size_diff / n / 1024:7.1f}  {name}")
    print("Python, by allocation site (KB per participant):")
    for s in after_py.compare_to(before_py, "lineno")[:25]:
        frame = s.traceback[0]
        name = frame.filename.split("src/trackmesh/")[-1].split("site-packages/")[-1]
        print(f"  {s.size_diff / n / 1024:7.1f}  {name}:{frame.lineno}")


if __name__ == "__main__":
    main()
