"""Opus over RTP (RFC 7587) and the packet's TOC (RFC 6716 s3.1).

One RTP payload is one Opus packet (s4.2), the timestamp runs at 48 kHz whatever the coded
bandwidth (s4.1), and the marker bit only flags the first packet after DTX. The depacketizer
hands on every non-empty payload as a frame; :func:`opus_packet_samples` tells recording and
the SIP bridge how many 48 kHz samples a packet covers, from the TOC octet alone.
"""

from __future__ import annotations

from typing import Final

from trackmesh.codecs.payload import AudioDepacketizer, Buffer, PayloadError, check_mtu

__all__ = ["OpusDepacketizer", "OpusPacketizer", "opus_frame_count", "opus_packet_samples"]

# RFC 6716 s3.1 table 2: frame size of each TOC config, in 48 kHz samples (2.5, 5, 10, 20, 40, 60 ms).
_CONFIG_SAMPLES: Final = (
    (480, 960, 1920, 2880) * 3  # SILK NB/MB/WB: 10, 20, 40, 60 ms
    + (480, 960) * 2  # Hybrid SWB/FB: 10, 20 ms
    + (120, 240, 480, 960) * 4  # CELT NB/WB/SWB/FB: 2.5, 5, 10, 20 ms
)
_MAX_SAMPLES: Final = 5760  # s3.2.5: a packet covers at most 120 ms


def opus_frame_count(packet: Buffer) -> int:
    """Frames in the packet from the TOC's code c (s3.2): 1, 2, 2, or code 3's frame count."""
    if not packet:
        raise PayloadError("empty Opus packet")
    code = packet[0] & 0x03
    if code == 0:
        return 1
    if code in (1, 2):
        return 2
    if len(packet) < 2:
        raise PayloadError("Opus code 3 packet without its frame count octet")
    count = packet[1] & 0x3F
    if count == 0:
        raise PayloadError("Opus code 3 packet with zero frames")
    return count


def opus_packet_samples(packet: Buffer) -> int:
    """48 kHz samples the packet decodes to; PayloadError past 120 ms (s3.2.5, R5)."""
    frames = opus_frame_count(packet)
    samples = _CONFIG_SAMPLES[packet[0] >> 3] * frames
    if samples > _MAX_SAMPLES:
        raise PayloadError(f"Opus packet of {samples} samples exceeds 120 ms")
    return samples


class OpusPacketizer:
    """One Opus packet -> one payload (RFC 7587 s4.2: never split or aggregated)."""

    __slots__ = ()

    def packetize(self, frame: Buffer, mtu: int) -> list[bytes]:
        check_mtu(mtu, 1)
        if not frame:
            raise PayloadError("empty Opus packet")
        if len(frame) > mtu:
            raise PayloadError(f"Opus packet of {len(frame)} bytes exceeds the MTU {mtu}")
        return [bytes(frame)]


class OpusDepacketizer(AudioDepacketizer):
    """Payload -> Opus packet; empty payloads are counted as bad."""

    __slots__ = ()
