"""Audio between a phone's codec and the room's Opus: decode, mix, encode (PyAV's libopus).

- Uplink (phone -> room): G.711 octets -> 16-bit PCM at 8 kHz (``codecs/g711.py``) -> Opus at
  8 kHz input, 20 ms frames (libopus encodes from 8 kHz natively; the RTP clock stays 48 kHz,
  RFC 7587 s4.1). An Opus phone is passed through, decoded only to measure its level.
  Every packet carries its RFC 6464 level, which the room's mixer ranks by.
- Downlink (room -> phone): each mixer slot's Opus packets are decoded as they arrive (48 kHz,
  resampled to the phone's rate) into a short per-slot queue; every 20 ms one frame of each slot
  is summed with clipping (mix-minus: the mixer never gives a listener its own voice) and encoded
  to the phone's codec; a silent room is sent as silence (RTP keeps flowing, as phones expect).
  A slot without a frame adds silence; a queue past
  :data:`MAX_QUEUED` frames drops its oldest (a source faster than our clock).

No clock, no socket: the call's driver feeds packets and calls :meth:`Downlink.mix` every ptime.
"""

from __future__ import annotations

from array import array
from collections import deque
from typing import Any

import av

from trackmesh.codecs.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode

__all__ = ["MAX_QUEUED", "Downlink", "OpusDecoder", "OpusEncoder", "SharedDecoders", "Uplink", "mix_frames"]

MAX_QUEUED = 5  # frames (100 ms) of a slot waiting to be mixed
OPUS_BITRATE = 32000


class OpusEncoder:
    """16-bit mono PCM at ``rate`` -> Opus packets of 20 ms (libopus, VoIP application)."""

    def __init__(self, rate: int, channels: int = 1) -> None:
        ctx: Any = av.CodecContext.create("libopus", "w")
        ctx.sample_rate = rate
        ctx.layout = "mono" if channels == 1 else "stereo"
        ctx.format = "s16"
        ctx.bit_rate = OPUS_BITRATE
        ctx.options = {"application": "voip", "frame_duration": "20"}
        ctx.open()
        self._ctx = ctx
        self.rate = rate
        self.channels = channels
        self.frame_samples = rate // 50
        self._pts = 0

    def encode(self, pcm: bytes) -> list[bytes]:
        """One 20 ms frame of interleaved s16 PCM -> the packets libopus emits (normally one)."""
        frame: Any = av.AudioFrame(format="s16", layout="mono" if self.channels == 1 else "stereo",
                                   samples=self.frame_samples)  # fmt: skip
        frame.planes[0].update(pcm)
        frame.sample_rate = self.rate
        frame.pts = self._pts
        self._pts += self.frame_samples
        return [bytes(p) for p in self._ctx.encode(frame)]


class OpusDecoder:
    """Opus packets -> 16-bit mono PCM at ``rate`` (libopus decodes at 48 kHz; resampled here)."""

    def __init__(self, rate: int) -> None:
        ctx: Any = av.CodecContext.create("libopus", "r")
        ctx.sample_rate = 48000
        ctx.layout = "mono"
        ctx.open()
        self._ctx = ctx
        self.rate = rate
        self._resampler: Any = av.AudioResampler(format="s16", layout="mono", rate=rate)
        self.errors = 0

    def decode(self, packet: bytes) -> bytes:
        """The PCM of one packet (empty if the decoder refused it: counted in ``errors``)."""
        try:
            frames = self._ctx.decode(av.Packet(packet))
            out = b""
            for frame in frames:
                for f in self._resampler.resample(frame):
                    out += bytes(f.planes[0])[: f.samples * 2]
            return out
        except (av.error.FFmpegError, ValueError):
            self.errors += 1
            return b""


class _Shared:
    __slots__ = ("decoder", "last", "pcm", "used")

    def __init__(self, decoder: OpusDecoder) -> None:
        self.decoder = decoder
        self.last: object = None
        self.pcm = b""
        self.used = 0.0


class SharedDecoders:
    """One Opus decoder per (source channel, output rate) for every call of a worker.

    A room's voice heard by many phones is decoded once per packet, not once per phone: every sink
    of a source receives the same packet object (the core's contract), so the first call to ask
    decodes it and the others get the same PCM. The decoder sees each packet of the source once, in
    order, exactly as a per-call decoder would. Entries unused for ``idle`` seconds are dropped by
    :meth:`sweep`.
    """

    def __init__(self, idle: float = 5.0) -> None:
        self._by: dict[tuple[int, int], _Shared] = {}
        self.idle = idle
        self.decoded = 0
        self.shared = 0

    def __len__(self) -> int:
        return len(self._by)

    def decode(self, channel: int, rate: int, packet: object, payload: bytes, now: float) -> bytes:
        key = (channel, rate)
        entry = self._by.get(key)
        if entry is None:
            entry = self._by[key] = _Shared(OpusDecoder(rate))
        entry.used = now
        if entry.last is packet:
            self.shared += 1
            return entry.pcm
        entry.last = packet
        entry.pcm = entry.decoder.decode(payload)
        self.decoded += 1
        return entry.pcm

    def sweep(self, now: float) -> None:
        for key in [k for k, e in self._by.items() if now - e.used > self.idle]:
            del self._by[key]


class G722:
    """G.722 (RFC 3551 s4.5.2: 16 kHz audio, an 8 kHz RTP clock) through FFmpeg's ADPCM codec: one
    stateful encoder and decoder per call; 20 ms = 320 samples = 160 octets."""

    RATE = 16000

    def __init__(self) -> None:
        enc: Any = av.CodecContext.create("g722", "w")
        enc.sample_rate = self.RATE
        enc.layout = "mono"
        enc.format = "s16"
        enc.open()
        dec: Any = av.CodecContext.create("g722", "r")
        dec.sample_rate = self.RATE
        dec.layout = "mono"
        dec.open()
        self._enc = enc
        self._dec = dec
        self._pts = 0
        self.errors = 0

    def encode(self, pcm: bytes) -> bytes:
        samples = len(pcm) // 2
        frame: Any = av.AudioFrame(format="s16", layout="mono", samples=samples)
        frame.planes[0].update(pcm)
        frame.sample_rate = self.RATE
        frame.pts = self._pts
        self._pts += samples
        return b"".join(bytes(p) for p in self._enc.encode(frame))

    def decode(self, payload: bytes) -> bytes:
        try:
            return b"".join(bytes(f.planes[0])[: 2 * f.samples] for f in self._dec.decode(av.Packet(payload)))
        except (av.error.FFmpegError, ValueError):
            self.errors += 1
            return b""


#: The PCM rate each phone codec is mixed and encoded at.
PCM_RATE = {"opus": 48000, "G722": G722.RATE, "PCMU": 8000, "PCMA": 8000}


def _pcm_decoder(codec: str) -> Any:
    return ulaw_decode if codec == "PCMU" else alaw_decode


def mix_frames(frames: list[bytes], samples: int) -> bytes:
    """Sum 16-bit PCM frames sample by sample, clipped to the 16-bit range; silence when none."""
    if not frames:
        return bytes(2 * samples)
    if len(frames) == 1:
        return frames[0]
    parts = []
    for frame in frames:
        a = array("h")
        a.frombytes(frame)
        parts.append(a)
    out = array("h", [max(-32768, min(32767, sum(v))) for v in zip(*parts, strict=True)])
    return out.tobytes()


class Uplink:
    """The phone's audio -> Opus packets for the room, each with its level."""

    def __init__(self, codec: str) -> None:
        self.codec = codec
        self.passthrough = codec == "opus"
        if codec == "G722":
            self._decode: Any = G722().decode
        else:
            self._decode = _pcm_decoder(codec) if codec in ("PCMU", "PCMA") else None
        self.rate = PCM_RATE.get(codec, 8000) if not self.passthrough else 8000
        self._opus_in = OpusDecoder(8000) if self.passthrough else None
        # libopus takes 8 and 16 kHz input natively (RFC 7587: the RTP clock stays 48 kHz).
        self._encoder = None if self.passthrough else OpusEncoder(self.rate)
        self._pending = b""
        self._last = b""  # the last packet's PCM (loss concealment repeats it once)

    def feed(self, payload: bytes) -> list[tuple[bytes, bytes]]:
        """One RTP payload of the phone -> [(Opus packet, its PCM for the level)]."""
        if self.passthrough:
            assert self._opus_in is not None
            return [(payload, self._opus_in.decode(payload))]
        if self._decode is None:
            return []
        return self._encode_pcm(self._decode(payload))

    def conceal(self, samples: int) -> list[tuple[bytes, bytes]]:
        """``samples`` (at :attr:`rate`) the phone never delivered (lost packets): the last packet's sound once
        at half level, then silence, so the encoder's stream stays continuous. An Opus phone's loss
        is left to the room's decoders (the caller skips sequence numbers)."""
        if self.passthrough or self._decode is None or samples <= 0:
            return []
        last = array("h")
        last.frombytes(self._last[: 2 * samples])
        fill = array("h", [v // 2 for v in last]).tobytes()
        return self._encode_pcm(fill + bytes(2 * samples - len(fill)))

    def _encode_pcm(self, decoded: bytes) -> list[tuple[bytes, bytes]]:
        self._last = decoded
        pcm = self._pending + decoded
        out: list[tuple[bytes, bytes]] = []
        assert self._encoder is not None
        frame_bytes = 2 * self._encoder.frame_samples
        while len(pcm) >= frame_bytes:
            frame, pcm = pcm[:frame_bytes], pcm[frame_bytes:]
            out.extend((packet, frame) for packet in self._encoder.encode(frame))
        self._pending = pcm
        return out


class Downlink:
    """The room's mixer slots -> one stream in the phone's codec, every ptime."""

    def __init__(self, codec: str, slots: int, ptime_ms: int = 20) -> None:
        self.codec = codec
        self.rate = PCM_RATE.get(codec, 8000)
        self.samples = self.rate * ptime_ms // 1000
        self._queues: list[deque[bytes]] = [deque() for _ in range(slots)]
        self._decoders = [OpusDecoder(self.rate) for _ in range(slots)]
        self._encoder = OpusEncoder(48000) if codec == "opus" else None
        self._encode: Any = G722().encode if codec == "G722" else ulaw_encode if codec == "PCMU" else alaw_encode
        # G.711 silence is one constant payload; Opus and G.722 (ADPCM) encode theirs to keep their state.
        stateless = self._encoder is None and codec != "G722"
        self._silence = self._encode(bytes(2 * self.samples)) if stateless else None
        self._carry: list[bytes] = [b"" for _ in range(slots)]
        self.dropped = 0

    def on_slot_packet(self, slot: int, payload: bytes) -> None:
        """An Opus packet of the source in ``slot``: decoded now (by this slot's decoder), mixed at the next tick."""
        self.on_slot_pcm(slot, self._decoders[slot].decode(payload))

    def on_slot_pcm(self, slot: int, decoded: bytes) -> None:
        """The PCM of the source in ``slot`` at this downlink's rate (a :class:`SharedDecoders` decoded it)."""
        pcm = self._carry[slot] + decoded
        step = 2 * self.samples
        queue = self._queues[slot]
        while len(pcm) >= step:
            queue.append(pcm[:step])
            pcm = pcm[step:]
            if len(queue) > MAX_QUEUED:
                queue.popleft()
                self.dropped += 1
        self._carry[slot] = pcm

    def clear_slot(self, slot: int) -> None:
        self._queues[slot].clear()
        self._carry[slot] = b""

    def mix(self) -> bytes | None:
        """One ptime of the mix in the phone's codec (silence when no slot has a frame: phones and PBXs
        hang up on calls without RTP); None only if the encoder held the frame back."""
        frames = [q.popleft() for q in self._queues if q]
        if not frames and self._silence is not None:
            return self._silence  # G.711 only; the others encode the zeros below
        pcm = mix_frames(frames, self.samples)
        if self._encoder is not None:
            packets = self._encoder.encode(pcm)
            return packets[0] if packets else None
        encoded: bytes = self._encode(pcm)
        return encoded
