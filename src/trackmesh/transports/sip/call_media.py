"""The media side of one phone call in a room: the caller is a peer like any other.

- On :meth:`CallMedia.start` the call's endpoint joins the room as ``peer``, publishes
  ``audio_main`` (the phone's voice as Opus, :mod:`.audio`) and turns on an AUTO audio mixer with
  :data:`SLOTS` output slots (``audio_0``..): the room's loudest voices, never the caller's own
  (mix-minus, docs/mixer.md). The slots' packets are decoded as they come and mixed every ptime;
  a silent room is sent as silence.
- DTMF from the phone (RFC 4733) is published on the room's message channel :data:`DTMF_LABEL`
  as JSON ``{"peer", "digit", "duration_ms"}`` and kept in :attr:`CallMedia.digits`.
- The phone's packets go through a reorder buffer (:mod:`.jitter`); lost ones are concealed
  (G.711: the last sound once at half level, then silence) or, for Opus, left to the room's
  decoders by a gap in our sequence numbers.
- Hold (RFC 3264 s8.4): while the phone does not want our media (``a=sendonly``/``inactive``
  from it, or ``c=0.0.0.0``) we send nothing but keep the call, the peer and its track.
- A call that receives no RTP for :data:`MEDIA_TIMEOUT` seconds while not on hold is ended by
  the driver (:meth:`CallMedia.dead`): a phone that vanished without BYE. A dial-out
  (``end_when_alone``) also ends :data:`ALONE_GRACE` seconds after the last other peer left.

Sans-IO: fed datagrams and ``now``; RTP to send is drained from :attr:`CallMedia.leg`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from trackmesh.core.controls import (
    Control,
    CreateLocalTrack,
    Join,
    MessageChannelPub,
    MessageChannelStartPub,
    MixerConfig,
    MixerMode,
    Publish,
    UpdatePeer,
)
from trackmesh.core.endpoint import Endpoint
from trackmesh.core.events import LocalTrackStateChanged, PeerJoined, PeerLeft
from trackmesh.core.model import JoinOptions, MediaCodec, MediaPacket, TrackKind
from trackmesh.core.tracks import MediaSink
from trackmesh.net import Address

from .audio import Downlink, SharedDecoders, Uplink
from .jitter import Lost, ReorderBuffer
from .offer_answer import Negotiated
from .rtp_leg import DtmfDigit, RtpLeg, level_of_pcm

__all__ = ["DTMF_LABEL", "MEDIA_TIMEOUT", "SLOTS", "TRACK", "CallMedia", "CallSetupError"]

TRACK = "audio_main"
SLOTS = 3
DTMF_LABEL = "sip-dtmf"
MEDIA_TIMEOUT = 30.0
ALONE_GRACE = 2.0  # a dial-out whose room emptied ends after this (a browser reloading comes back in time)
OPUS_PT = 111  # the payload type of the Opus packets inside the room (any value; viewers rewrite it)
OPUS_SAMPLES = 960  # 20 ms at Opus' 48 kHz RTP clock


class CallSetupError(Exception):
    """The endpoint could not join or publish (bad room/peer name, the peer exists...)."""


@dataclass(slots=True)
class CallStats:
    uplink_packets: int = 0
    downlink_packets: int = 0
    dtmf_digits: int = 0


class CallMedia:
    """One call's endpoint, RTP leg and transcoders."""

    def __init__(
        self,
        endpoint: Endpoint,
        room: str,
        peer: str,
        negotiated: Negotiated,
        now: float,
        decoders: SharedDecoders | None = None,
    ) -> None:
        """``decoders``: the worker's shared Opus decoders (a voice heard by many phones is decoded
        once); without it each slot decodes for itself."""
        self.endpoint = endpoint
        self.room = room
        self.peer = peer
        self.negotiated = negotiated
        self.leg = RtpLeg(
            (negotiated.remote_address, negotiated.remote_port),
            negotiated.payload_type,
            negotiated.clock_rate,
            negotiated.dtmf_payload_type,
            negotiated.ptime,
        )
        codec = "opus" if negotiated.codec.lower() == "opus" else negotiated.codec.upper()
        self.uplink = Uplink(codec)
        self.downlink = Downlink(codec, SLOTS, 20)
        self.decoders = decoders
        self.jitter = ReorderBuffer()
        self.end_when_alone = False
        self.media_timeout = MEDIA_TIMEOUT  # the RTPengine-style API's calls wait 180 s (atm0s #482)
        self.started = False  # joined the room (an RTPengine-style call joins on its first packet)
        self.others: set[str] = set()  # the other peers of the room
        self._alone_since: float | None = None
        self.digits: list[str] = []
        self.stats = CallStats()
        self.last_rtp = now
        self.outputs = tuple(f"audio_{i}" for i in range(SLOTS))
        self._seq = 0
        self._ts = 0
        self._next_tick = now

    def start(self, now: float) -> None:
        ep = self.endpoint
        # A dial-out is in the room already while it rings ("connecting", runtime/sip_media.py): now
        # it is connected.
        joined = ep.room == self.room
        metadata = json.dumps({"sip": True, "state": "connected"})
        steps: list[Control] = [
            UpdatePeer(metadata) if joined else Join(self.room, self.peer, JoinOptions(metadata=metadata)),
            Publish(TRACK, TrackKind.AUDIO),
            *(CreateLocalTrack(name, TrackKind.AUDIO) for name in self.outputs),
            MixerConfig(MixerMode.AUTO, self.outputs),
            MessageChannelStartPub(DTMF_LABEL),
        ]
        for ctl in steps:
            err = ep.control(now, ctl)
            if err is not None:
                raise CallSetupError(f"{type(ctl).__name__}: {err.message}")
        for slot, name in enumerate(self.outputs):
            track = ep.local_track(name)
            assert track is not None
            track.sink = self._slot_sink(slot)
        self.started = True

    def _slot_sink(self, slot: int) -> MediaSink:
        downlink = self.downlink
        decoders = self.decoders
        track = self.endpoint.local_track(self.outputs[slot])
        assert track is not None
        rate = downlink.rate

        def sink(pkt: MediaPacket) -> None:
            channel = track.channel
            if decoders is None or channel is None:
                downlink.on_slot_packet(slot, bytes(pkt.payload))
            else:
                downlink.on_slot_pcm(slot, decoders.decode(channel, rate, pkt, bytes(pkt.payload), pkt.arrival))

        return sink

    @property
    def on_hold(self) -> bool:
        return self.negotiated.on_hold

    @property
    def receives(self) -> bool:
        """The phone sends us media (it is not the side that holds with ``inactive``/``recvonly``)."""
        return self.negotiated.direction in ("sendrecv", "recvonly")

    def renegotiate(self, negotiated: Negotiated, now: float) -> None:
        """A re-INVITE or UPDATE was answered: hold, resume, a new address. The codec stays the one
        of the first answer (``answer_offer`` is given only that codec on a re-offer)."""
        self.negotiated = negotiated
        self.leg.renegotiate(
            (negotiated.remote_address, negotiated.remote_port),
            negotiated.payload_type,
            negotiated.clock_rate,
            negotiated.dtmf_payload_type,
        )
        self.last_rtp = now  # a resumed call gets a fresh media timeout

    # ---- inputs --------------------------------------------------------------------------------

    def handle_rtp(self, now: float, data: bytes, source: Address) -> None:
        got = self.leg.handle_rtp(data, source)
        if got is None:
            return
        self.last_rtp = now
        if isinstance(got, DtmfDigit):
            self._dtmf(now, got)
            return
        header, payload = got
        for item in self.jitter.push(header.sequence_number, payload):
            if isinstance(item, Lost):
                samples = item.count * self.uplink.rate * self.negotiated.ptime // 1000
                if self.uplink.passthrough:
                    # Our sequence numbers and timestamps skip too: the room's decoders conceal.
                    self._seq = (self._seq + item.count) & 0xFFFF
                    self._ts = (self._ts + item.count * OPUS_SAMPLES) & 0xFFFFFFFF
                else:
                    self._publish(now, self.uplink.conceal(samples))
            else:
                self._publish(now, self.uplink.feed(item))

    def _publish(self, now: float, packets: list[tuple[bytes, bytes]]) -> None:
        track = self.endpoint.remote_track(TRACK)
        if track is None:
            return
        for packet, pcm in packets:
            self._seq = (self._seq + 1) & 0xFFFF
            self._ts = (self._ts + OPUS_SAMPLES) & 0xFFFFFFFF
            self.stats.uplink_packets += 1
            level = level_of_pcm(pcm)
            pkt = MediaPacket(MediaCodec.OPUS, OPUS_PT, self._seq, self._ts, False, False, packet, audio_level=level)
            pkt.arrival = now
            track.on_packet(pkt)

    def handle_rtcp(self, now: float, data: bytes, source: Address) -> None:
        self.leg.handle_rtcp(data, source)

    def _dtmf(self, now: float, digit: DtmfDigit) -> None:
        self.digits.append(digit.digit)
        self.stats.dtmf_digits += 1
        body = json.dumps({"peer": self.peer, "digit": digit.digit, "duration_ms": digit.duration_ms})
        self.endpoint.control(now, MessageChannelPub(DTMF_LABEL, body.encode()))

    def send_dtmf(self, digits: str) -> int:
        """Queue RFC 4733 events toward the phone; how many digits were understood."""
        sent = 0
        for digit in digits.upper():
            if self.negotiated.dtmf_payload_type is not None and digit in "0123456789*#ABCD":
                self.leg.send_dtmf(digit)
                sent += 1
        return sent

    def on_core_events(self, now: float) -> None:
        """Drain the endpoint's events: a slot that changes source starts from an empty queue."""
        while (event := self.endpoint.poll_event()) is not None:
            if isinstance(event, LocalTrackStateChanged) and event.local_track in self.outputs:
                self.downlink.clear_slot(self.outputs.index(event.local_track))
            elif isinstance(event, PeerJoined) and event.info.peer != self.peer:
                self.others.add(event.info.peer)
                self._alone_since = None
            elif isinstance(event, PeerLeft) and event.peer in self.others:
                self.others.discard(event.peer)
                if not self.others:
                    self._alone_since = now

    # ---- time ----------------------------------------------------------------------------------

    def next_deadline(self) -> float:
        return self._next_tick

    def tick(self, now: float, wallclock: float) -> None:
        """Every ptime: one frame of the mix toward the phone (unless it holds), RTCP when due."""
        if now < self._next_tick:
            return
        ptime = self.negotiated.ptime / 1000.0
        # Catch up after a late timer without bursting more than a few frames.
        missed = min(int((now - self._next_tick) / ptime), 5)
        for _ in range(missed + 1):
            payload = self.downlink.mix()
            if payload is None or self.on_hold:
                self.leg.skip()
            else:
                self.leg.send(payload)
                self.stats.downlink_packets += 1
        self._next_tick += (missed + 1) * ptime
        if self._next_tick < now:
            self._next_tick = now + ptime
        self.leg.handle_timeout(now, wallclock)

    def dead(self, now: float) -> str | None:
        """Why the call should end now, if it should: no RTP for ``media_timeout`` while the phone should
        be sending (it is gone), or a dial-out whose room has had no other peer for ALONE_GRACE."""
        if self.receives and now - self.last_rtp > self.media_timeout:
            return "no RTP from the phone"
        if self.end_when_alone and self._alone_since is not None and now - self._alone_since > ALONE_GRACE:
            return "every other peer left the room"
        return None
