"""The plain RTP leg of one call (RFC 3550 over RTP/AVP, no SRTP): what the phone sends, what we send it.

- Symmetric RTP (RFC 4961): we send to the address the phone sends from once its first valid
  packet arrived (latching, for phones behind NAT); until then to the SDP's ``c=``/``m=`` address.
  After latching, packets from any other source are dropped and counted (``foreign``).
- Inbound packets are classified by payload type: the negotiated audio codec, telephone-event
  (RFC 4733) or something else (dropped and counted). A telephone-event is reported once per event
  (s2.5.1.3: the events of one key press share the RTP timestamp; the end packet is sent three times).
- Outbound: one SSRC, a sequence number and a timestamp that advance by the payload's samples;
  the marker bit on the first packet (RFC 3551 s4.1: first packet of a talkspurt).
- RTCP (RFC 3550 s6): a sender report every 5 s on the RTP port + 1, counted inbound reports.

Sans-IO: fed datagrams and ``now``; :meth:`RtpLeg.poll_transmit` drains what to send.
"""

from __future__ import annotations

import math
import secrets
import struct
from array import array
from collections import deque
from dataclasses import dataclass

from trackmesh.net import Address
from trackmesh.rtp.packet import RtpError, RtpHeader

__all__ = ["DTMF_EVENTS", "DtmfDigit", "RtpLeg", "RtpLegStats", "level_of_pcm"]

#: RFC 4733 s3.2 events 0-15.
DTMF_EVENTS = "0123456789*#ABCD"
RTCP_INTERVAL = 5.0  # RFC 3550 s6.2: the minimum interval for a small session
_NTP_EPOCH_OFFSET = 2208988800


@dataclass(frozen=True, slots=True)
class DtmfDigit:
    """One key press reported by the phone (RFC 4733): ``digit`` is one of :data:`DTMF_EVENTS`."""

    digit: str
    duration_ms: int


class RtpLegStats:
    __slots__ = ("bad", "dtmf", "foreign", "other_pt", "received", "rtcp_received", "sent")

    def __init__(self) -> None:
        self.received = 0  # audio packets of the negotiated codec
        self.sent = 0
        self.bad = 0  # not RTP, truncated
        self.foreign = 0  # from another source after latching
        self.other_pt = 0  # a payload type not negotiated
        self.dtmf = 0  # telephone-event packets
        self.rtcp_received = 0


def level_of_pcm(pcm: bytes) -> int:
    """RFC 6464 audio level of signed 16-bit PCM: -dBov, 0 (loudest) .. 127 (silence)."""
    samples = array("h")
    samples.frombytes(pcm[: len(pcm) & ~1])
    if not samples:
        return 127
    energy = sum(s * s for s in samples) / len(samples)
    if energy <= 0:
        return 127
    dbov = 10.0 * math.log10(energy / (32768.0 * 32768.0))
    return max(0, min(127, round(-dbov)))


class RtpLeg:
    """Plain RTP toward one phone: latching, classification, sequence/timestamp of what we send."""

    __slots__ = (
        "_dtmf_ts",
        "_last_rtcp",
        "_octets",
        "_out",
        "_seq",
        "_ts",
        "audio_pt",
        "clock_rate",
        "dtmf_pt",
        "latched",
        "remote",
        "samples_per_packet",
        "ssrc",
        "stats",
    )

    def __init__(
        self, remote: Address, audio_pt: int, clock_rate: int, dtmf_pt: int | None, ptime_ms: int = 20
    ) -> None:
        self.remote = remote
        self.latched = False
        self.audio_pt = audio_pt
        self.clock_rate = clock_rate
        self.dtmf_pt = dtmf_pt
        # Opus' RTP clock is 48 kHz whatever it codes (RFC 7587 s4.1); G.711 and G.722 tick at 8 kHz.
        self.samples_per_packet = clock_rate * ptime_ms // 1000
        self.ssrc = secrets.randbits(32)
        self.stats = RtpLegStats()
        self._seq = secrets.randbits(16)
        self._ts = secrets.randbits(32)
        self._out: deque[tuple[bytes, Address, bool]] = deque()  # (datagram, destination, is_rtcp)
        self._dtmf_ts: int | None = None
        self._last_rtcp = -math.inf
        self._octets = 0

    def renegotiate(self, remote: Address, audio_pt: int, clock_rate: int, dtmf_pt: int | None) -> None:
        """A re-INVITE/UPDATE changed the stream: new address (unless latched), codec or DTMF type."""
        if not self.latched:
            self.remote = remote
        self.audio_pt = audio_pt
        self.dtmf_pt = dtmf_pt
        if clock_rate != self.clock_rate:
            self.samples_per_packet = self.samples_per_packet * clock_rate // self.clock_rate
            self.clock_rate = clock_rate

    # ---- inbound -------------------------------------------------------------------------------

    def handle_rtp(self, data: bytes, source: Address) -> tuple[RtpHeader, bytes] | DtmfDigit | None:
        """An RTP datagram from the phone: (header, payload) of audio, a new DTMF digit, or None (dropped)."""
        if self.latched and source != self.remote:
            self.stats.foreign += 1
            return None
        try:
            header = RtpHeader.parse(data)
        except RtpError:
            self.stats.bad += 1
            return None
        if not self.latched:
            self.latched = True  # RFC 4961: send where the phone sends from
            self.remote = source
        pt = header.payload_type
        payload = data[header.payload_offset : header.payload_offset + header.payload_length]
        if pt == self.audio_pt:
            if not payload:
                self.stats.bad += 1
                return None
            self.stats.received += 1
            return header, payload
        if pt == self.dtmf_pt and self.dtmf_pt is not None:
            self.stats.dtmf += 1
            return self._dtmf(header, payload)
        self.stats.other_pt += 1
        return None

    def _dtmf(self, header: RtpHeader, payload: bytes) -> DtmfDigit | None:
        # RFC 4733 s2.3: event (8), E R volume (8), duration (16). One report per event: the first
        # packet of a new timestamp (later ones, and the three end packets, share it).
        if len(payload) < 4:
            self.stats.bad += 1
            return None
        event, _flags, duration = struct.unpack_from("!BBH", payload)
        if event >= len(DTMF_EVENTS) or header.timestamp == self._dtmf_ts:
            return None
        self._dtmf_ts = header.timestamp
        return DtmfDigit(DTMF_EVENTS[event], duration * 1000 // max(1, self.clock_rate))

    def handle_rtcp(self, data: bytes, source: Address) -> None:
        if len(data) >= 8 and data[0] >> 6 == 2 and 200 <= data[1] <= 204:
            self.stats.rtcp_received += 1
        else:
            self.stats.bad += 1

    # ---- outbound ------------------------------------------------------------------------------

    def send(self, payload: bytes, *, marker: bool = False, samples: int | None = None) -> None:
        """Queue one audio packet; the timestamp then advances by ``samples`` (default: one ptime)."""
        self._seq = (self._seq + 1) & 0xFFFF
        header = struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | self.audio_pt, self._seq, self._ts, self.ssrc)
        self._out.append((header + payload, self.remote, False))
        self._ts = (self._ts + (samples if samples is not None else self.samples_per_packet)) & 0xFFFFFFFF
        self.stats.sent += 1
        self._octets += len(payload)

    def skip(self, samples: int | None = None) -> None:
        """Nothing sent for one packet time (on hold, silence): the timestamp still advances (RFC 3550 s5.1)."""
        self._ts = (self._ts + (samples if samples is not None else self.samples_per_packet)) & 0xFFFFFFFF

    def send_dtmf(self, digit: str, duration_ms: int = 100) -> None:
        """One RFC 4733 event: a start packet (marker), then three end packets (s2.5.1.4)."""
        if self.dtmf_pt is None or digit not in DTMF_EVENTS:
            return
        event = DTMF_EVENTS.index(digit)
        duration = self.clock_rate * duration_ms // 1000
        ts = self._ts
        steps = ((False, self.samples_per_packet), (True, duration), (True, duration), (True, duration))
        for i, (end, dur) in enumerate(steps):
            self._seq = (self._seq + 1) & 0xFFFF
            b1 = (0x80 if i == 0 else 0) | self.dtmf_pt
            body = struct.pack("!BBH", event, (0x80 if end else 0) | 10, min(dur, 0xFFFF))
            self._out.append((struct.pack("!BBHII", 0x80, b1, self._seq, ts, self.ssrc) + body, self.remote, False))
            self.stats.sent += 1
        self._ts = (ts + duration) & 0xFFFFFFFF

    def handle_timeout(self, now: float, wallclock: float) -> None:
        """A sender report (RFC 3550 s6.4.1) every :data:`RTCP_INTERVAL` while we send."""
        if now < self._last_rtcp + RTCP_INTERVAL or self.stats.sent == 0:
            return
        self._last_rtcp = now
        ntp = wallclock + _NTP_EPOCH_OFFSET
        sec = int(ntp)
        frac = int((ntp - sec) * (1 << 32)) & 0xFFFFFFFF
        sr = struct.pack(
            "!BBHIIIIII", 0x80, 200, 6, self.ssrc, sec & 0xFFFFFFFF, frac, self._ts, self.stats.sent, self._octets
        )
        host, port = self.remote
        self._out.append((sr, (host, port + 1), True))

    def poll_transmit(self) -> tuple[bytes, Address, bool] | None:
        """(datagram, destination, is_rtcp) or None."""
        return self._out.popleft() if self._out else None
