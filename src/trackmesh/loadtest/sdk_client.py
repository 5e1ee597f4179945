"""The load generator's atm0s SDK client (docs/sdk-protocol.md), for S2/S3 against trackmesh.

A WHEP viewer follows only the first live track of each kind in a room, so a meeting participant
that must receive five peers, or a listener that must receive ten speakers, speaks the SDK protocol:

1. ``POST /token/webrtc`` (app secret) -> webrtc token for (room, peer).
2. ``POST /webrtc/connect`` with a protobuf ``ConnectRequest``: the join (auto mode: peers and tracks
   announced), the declared ``Tracks`` (senders first, then receivers ``audio_0``, ``video_1``...,
   one index across kinds, as the SDK names them) and an SDP offer with the senders' ``sendonly``
   m-lines, the receivers' ``recvonly`` m-lines (same order, per kind, see transports/sdk/naming.py)
   and an ``m=application`` line for the data channel.
3. ICE (trackmesh is ICE-lite: we nominate) and DTLS as client, as for WHIP/WHEP
   (:class:`trackmesh.loadtest.client.Transport`).
4. The server starts SCTP (it sends INIT); the negotiated channel ``"data"`` (stream 0, no DCEP)
   opens with the association. Our own sans-IO :class:`DataChannelManager` over
   :class:`SctpAssociation` runs the client side here, fed with DTLS application records.
5. On each ``room.track_started {peer, track, kind}`` of another peer the client sends
   ``receiver.attach {source: {peer, track}}`` on a free receiver of that kind (what the SDK does
   when an app attaches a remote track), and counts the responses.

The SDK's request/response rules are kept: ``ClientEvent.seq`` and ``Request.req_id`` count from 1,
one protobuf message per data-channel message. Every loop here is bounded by its caller.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

from trackmesh.errors import ProtocolError
from trackmesh.loadtest.client import Transport
from trackmesh.loadtest.media import AUDIO_PT, EXT_MID, VIDEO_PT
from trackmesh.loadtest.signalling import MID_URI, HttpError, ServerUrl, session_head
from trackmesh.transports.sdk.protocol import (
    DATA_CHANNEL_ID,
    DATA_CHANNEL_LABEL,
    HTTP_CONTENT_TYPE,
    gateway_pb2,
    session_pb2,
    shared_pb2,
)
from trackmesh.transports.webrtc.sctp.association import SctpAssociation
from trackmesh.transports.webrtc.sctp.datachannel import ChannelOpened, DataChannelManager, Message

__all__ = ["SdkClient", "SdkPlan", "TrackmeshSdk", "sdk_offer"]

SENDER_NAMES = ("audio_main", "video_main")


@dataclass(frozen=True)
class SdkPlan:
    """What one SDK connection declares: its senders and how many receivers of each kind."""

    audio_sender: bool = True
    video_sender: bool = True
    audio_receivers: int = 0
    video_receivers: int = 0

    def receivers(self) -> list[tuple[str, int]]:
        """(name, kind) in declaration order: audio first, then video, one index across kinds."""
        out: list[tuple[str, int]] = []
        for kind, count in ((shared_pb2.AUDIO, self.audio_receivers), (shared_pb2.VIDEO, self.video_receivers)):
            for _ in range(count):
                out.append((f"{'audio' if kind == shared_pb2.AUDIO else 'video'}_{len(out)}", kind))
        return out


def sdk_offer(tr: Transport, plan: SdkPlan, ssrcs: tuple[int, int]) -> tuple[str, tuple[str, str]]:
    """The offer and the mids of our (audio, video) senders ("" when absent)."""
    lines: list[str] = []
    mids: list[str] = []
    sender_mids = ["", ""]

    def m_audio(direction: str, ssrc: int | None) -> None:
        mid = str(len(mids))
        mids.append(mid)
        text = (
            f"m=audio 9 UDP/TLS/RTP/SAVPF {AUDIO_PT}\r\nc=IN IP4 0.0.0.0\r\n"
            + tr.transport_lines("actpass", candidate=True)
            + f"a=mid:{mid}\r\na={direction}\r\na=extmap:{EXT_MID} {MID_URI}\r\n"
            f"a=rtpmap:{AUDIO_PT} opus/48000/2\r\na=fmtp:{AUDIO_PT} minptime=10;useinbandfec=1\r\n"
        )
        if ssrc is not None:
            text += f"a=msid:bench a{mid}\r\na=ssrc:{ssrc} cname:bench\r\na=ssrc:{ssrc} msid:bench a{mid}\r\n"
        lines.append(text)

    def m_video(direction: str, ssrc: int | None) -> None:
        mid = str(len(mids))
        mids.append(mid)
        text = (
            f"m=video 9 UDP/TLS/RTP/SAVPF {VIDEO_PT}\r\nc=IN IP4 0.0.0.0\r\n"
            + tr.transport_lines("actpass", candidate=True)
            + f"a=mid:{mid}\r\na={direction}\r\na=extmap:{EXT_MID} {MID_URI}\r\n"
            f"a=rtpmap:{VIDEO_PT} VP8/90000\r\n"
            f"a=rtcp-fb:{VIDEO_PT} nack\r\na=rtcp-fb:{VIDEO_PT} nack pli\r\n"
        )
        if ssrc is not None:
            text += f"a=msid:bench v{mid}\r\na=ssrc:{ssrc} cname:bench\r\na=ssrc:{ssrc} msid:bench v{mid}\r\n"
        lines.append(text)

    # The SDK adds its transceivers senders first, then receivers (transports/sdk/naming.py).
    if plan.audio_sender:
        sender_mids[0] = str(len(mids))
        m_audio("sendonly", ssrcs[0])
    if plan.video_sender:
        sender_mids[1] = str(len(mids))
        m_video("sendonly", ssrcs[1])
    for _name, kind in plan.receivers():
        (m_audio if kind == shared_pb2.AUDIO else m_video)("recvonly", None)
    app_mid = str(len(mids))
    mids.append(app_mid)
    lines.append(
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\n"
        + tr.transport_lines("actpass", candidate=True)
        + f"a=mid:{app_mid}\r\na=sctp-port:5000\r\na=max-message-size:262144\r\n"
    )
    head = "\r\n".join([*session_head(), f"a=group:BUNDLE {' '.join(mids)}", "a=msid-semantic: WMS bench"])
    return head + "\r\n" + "".join(lines), (sender_mids[0], sender_mids[1])


def connect_request(room: str, peer: str, plan: SdkPlan, sdp: str) -> bytes:
    tracks = shared_pb2.Tracks()
    for i, (has, kind) in enumerate(((plan.audio_sender, shared_pb2.AUDIO), (plan.video_sender, shared_pb2.VIDEO))):
        if has:
            s = tracks.senders.add(name=SENDER_NAMES[i], kind=kind)
            s.state.source.id = f"{peer}-{SENDER_NAMES[i]}"
            s.state.config.priority = 1
    for name, rkind in plan.receivers():
        r = tracks.receivers.add(name=name, kind=rkind)
        r.state.config.priority = 1
        r.state.config.max_spatial = 2
        r.state.config.max_temporal = 2
    join = session_pb2.RoomJoin(
        room=room,
        peer=peer,
        publish=shared_pb2.RoomInfoPublish(peer=True, tracks=True),
        subscribe=shared_pb2.RoomInfoSubscribe(peers=True, tracks=True),
    )
    return gateway_pb2.ConnectRequest(version="trackmesh-bench", join=join, tracks=tracks, sdp=sdp).SerializeToString()


@dataclass
class SdkClient:
    """The data-channel side of one SDK connection: SCTP client role, auto-attach of receivers."""

    tr: Transport
    peer: str
    plan: SdkPlan
    conn_id: str = ""
    dcm: DataChannelManager = field(init=False)
    opened: asyncio.Future[float] = field(init=False)
    free: dict[int, list[str]] = field(init=False)
    attached: dict[str, tuple[str, str]] = field(init=False)
    pending: dict[int, str] = field(init=False)
    errors: list[str] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("events", "responses", "attach_ok", "attach_err", "undecodable", "tracks_ignored"), 0))
    _seq: int = 0
    _timer: asyncio.TimerHandle | None = None
    #: Join phases (``time.monotonic()``, loadtest/join_trace.py): token and answer received, each remote
    #: track announced (``(peer, track)`` -> first ``track_started``), each receiver's attach answered.
    token_at: float | None = None
    answer_at: float | None = None
    announced_at: dict[tuple[str, str], float] = field(default_factory=dict)
    attached_at: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.dcm = DataChannelManager(SctpAssociation(cookie_key=os.urandom(32)), dtls_role="client")
        self.dcm.open(DATA_CHANNEL_LABEL, negotiated_id=DATA_CHANNEL_ID)
        self.opened = self.tr.loop.create_future()
        self.free = {shared_pb2.AUDIO: [], shared_pb2.VIDEO: []}
        for name, kind in self.plan.receivers():
            self.free[kind].append(name)
        self.attached = {}
        self.pending = {}
        self.tr.on_app_data = self._on_record

    # -- SCTP driver ---------------------------------------------------------------------------

    def _on_record(self, now: float, data: bytes) -> None:
        try:
            self.dcm.handle_data(now, data)
        except ProtocolError as exc:
            self.errors.append(f"sctp: {exc}")
            return
        self._pump(now)

    def _pump(self, now: float) -> None:
        while (pkt := self.dcm.poll_transmit(now)) is not None:
            self.tr.send_app_data(pkt)
        while (ev := self.dcm.poll_event()) is not None:
            if isinstance(ev, ChannelOpened) and ev.channel_id == DATA_CHANNEL_ID and not self.opened.done():
                self.opened.set_result(time.monotonic())
            elif isinstance(ev, Message) and ev.channel_id == DATA_CHANNEL_ID:
                self._on_server_event(ev.data)
        while (pkt := self.dcm.poll_transmit(now)) is not None:
            self.tr.send_app_data(pkt)
        self._arm(now)

    def _arm(self, now: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self.dcm.next_deadline()
        if deadline is not None and not self.tr.closed:
            self._timer = self.tr.loop.call_later(max(0.001, deadline - now), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self.tr.closed:
            return
        now = time.monotonic()
        self.dcm.handle_timeout(now)
        self._pump(now)

    # -- session protocol ----------------------------------------------------------------------

    def request(self, req: session_pb2.Request) -> int:
        self._seq += 1
        req.req_id = self._seq
        now = time.monotonic()
        self.dcm.send(now, DATA_CHANNEL_ID, session_pb2.ClientEvent(seq=self._seq, request=req).SerializeToString())
        self._pump(now)
        return self._seq

    def _on_server_event(self, data: bytes) -> None:
        try:
            ev = session_pb2.ServerEvent.FromString(data)
        except Exception:
            self.counters["undecodable"] += 1
            return
        self.counters["events"] += 1
        if ev.HasField("room") and ev.room.HasField("track_started"):
            ts = ev.room.track_started
            if ts.peer == self.peer:
                return
            self.announced_at.setdefault((ts.peer, ts.track), time.monotonic())
            names = self.free.get(ts.kind)
            if not names:
                self.counters["tracks_ignored"] += 1  # more remote tracks than declared receivers
                return
            name = names.pop(0)
            self.attached[name] = (ts.peer, ts.track)
            req = session_pb2.Request()
            req.receiver.name = name
            req.receiver.attach.source.peer = ts.peer
            req.receiver.attach.source.track = ts.track
            req.receiver.attach.config.priority = 1
            req.receiver.attach.config.max_spatial = 2
            req.receiver.attach.config.max_temporal = 2
            self.pending[self.request(req)] = name
        elif ev.HasField("response"):
            self.counters["responses"] += 1
            name = self.pending.pop(ev.response.req_id, "")
            if ev.response.HasField("error"):
                self.counters["attach_err"] += 1
                self.errors.append(f"{name}: {ev.response.error.code:#x} {ev.response.error.message}")
            elif name:
                self.counters["attach_ok"] += 1
                self.attached_at.setdefault(name, time.monotonic())

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class TrackmeshSdk:
    """trackmesh over the SDK protocol: ``POST /token/webrtc`` then ``POST /webrtc/connect``."""

    name = "trackmesh"
    controlling = True  # trackmesh is ICE-lite

    def __init__(self, server: ServerUrl, secret: str, *, room_prefix: str = "") -> None:
        self.server = server
        self.secret = secret
        #: Prepended to every room name (``--url``: keeps the bench's rooms apart from the deployment's own).
        self.room_prefix = room_prefix

    async def token(self, room: str, peer: str) -> str:
        body: dict[str, Any] = {"room": room, "peer": peer, "ttl": 7200}
        status, _, raw = await self.server.request(
            "POST", "/token/webrtc", json.dumps(body).encode(),
            {"Content-Type": "application/json", "Authorization": f"Bearer {self.secret}"},
        )
        if status != 200:
            raise HttpError(f"token webrtc: {status} {raw[:200]!r}")
        return str(json.loads(raw)["data"]["token"])

    async def connect(
        self, tr: Transport, room: str, peer: str, plan: SdkPlan, ssrcs: tuple[int, int]
    ) -> tuple[SdkClient, tuple[str, str]]:
        """Connect and start ICE/DTLS; returns the data-channel client and our senders' mids."""
        room = self.room_prefix + room
        token = await self.token(room, peer)
        offer, mids = sdk_offer(tr, plan, ssrcs)
        client = SdkClient(tr, peer, plan)
        client.token_at = time.monotonic()
        status, _, raw = await self.server.request(
            "POST", "/webrtc/connect", connect_request(room, peer, plan, offer),
            {"Content-Type": HTTP_CONTENT_TYPE, "Authorization": f"Bearer {token}"},
        )
        if status != 200:
            raise HttpError(f"webrtc connect: {status} {raw[:300]!r}")
        client.answer_at = time.monotonic()
        resp = gateway_pb2.ConnectResponse.FromString(raw)
        client.conn_id = resp.conn_id
        tr.start(resp.sdp, controlling=True)
        return client, mids

    async def setup(self) -> None:
        pass

    async def close(self) -> None:
        pass
