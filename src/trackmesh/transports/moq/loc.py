"""LOC, the Low Overhead Media Container (draft-ietf-moq-loc): one encoded frame per MoQ object.

The object's payload is the frame exactly as WebCodecs' ``EncodedVideoChunk`` /
``EncodedAudioChunk`` holds it (H.264 in Annex B, VP8/VP9 the raw frame, AV1 low-overhead OBUs,
Opus one packet); its metadata rides in the object's extension headers, Key-Value-Pairs whose
even types carry an integer and odd types a length-prefixed byte string (draft-ietf-moq-transport
s1.4.2, delta-coded types in increasing order):

- ``Timestamp`` (0x06): the frame's presentation time in microseconds (the RTP timestamp,
  unwrapped, over the codec clock rate).
- ``Video Config`` (0x0D): codec configuration (an ``avcC`` record...) when the frame cannot be
  decoded without out-of-band data. We send H.264 in Annex B with its parameter sets in band, so
  we never need it; a publisher's is read and kept.

The block here is in draft-16 integers (varints); the relay re-frames it for draft-20 subscribers
(:func:`~.objects.transcode_extensions`). Sans-IO, no state.
"""

from __future__ import annotations

from dataclasses import dataclass

from trackmesh.transports.moq.errors import MoqDecodeError, Truncated
from trackmesh.transports.moq.varint import Reader, encode_varint, encode_vi64

__all__ = ["LOC_TIMESTAMP", "LOC_VIDEO_CONFIG", "LocProperties", "decode_loc_properties", "encode_loc_properties"]

LOC_TIMESTAMP = 0x06
LOC_VIDEO_CONFIG = 0x0D
MAX_CONFIG = 0xFFFF


@dataclass(frozen=True, slots=True)
class LocProperties:
    timestamp_us: int | None = None
    video_config: bytes | None = None


def encode_loc_properties(props: LocProperties, vi64: bool = False) -> bytes:
    """The extension block of one LOC object (types in increasing order, delta-coded)."""
    enc = encode_vi64 if vi64 else encode_varint
    out = bytearray()
    previous = 0
    if props.timestamp_us is not None:
        if props.timestamp_us < 0:
            raise ValueError("a LOC timestamp is not negative")
        out += enc(LOC_TIMESTAMP - previous) + enc(props.timestamp_us)
        previous = LOC_TIMESTAMP
    if props.video_config is not None:
        out += enc(LOC_VIDEO_CONFIG - previous) + enc(len(props.video_config)) + props.video_config
    return bytes(out)


def decode_loc_properties(raw: bytes, vi64: bool = False) -> LocProperties:
    """The LOC properties of an extension block; unknown types are skipped (a receiver ignores
    what it does not know); a block that is not whole Key-Value-Pairs is a MoqDecodeError."""
    r = Reader(raw, vi64=vi64)
    key = 0
    timestamp: int | None = None
    config: bytes | None = None
    try:
        while r.remaining():
            key += r.varint()
            if key & 1:
                value = r.blob(MAX_CONFIG)
                if key == LOC_VIDEO_CONFIG:
                    config = bytes(value)
            else:
                number = r.varint()
                if key == LOC_TIMESTAMP:
                    timestamp = number
    except Truncated:
        raise MoqDecodeError("LOC properties are not whole Key-Value-Pairs") from None
    return LocProperties(timestamp, config)
