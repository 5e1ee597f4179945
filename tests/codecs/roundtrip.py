"""Packetize -> (lossy) transport -> depacketize, and the checks every codec's round trip shares."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from trackmesh.codecs.payload import Depacketizer, Frame, Packetizer

TS_STEP = 3000
#: Round trips move kilobytes through many small packets: no per-example deadline.
ROUNDTRIP = settings(deadline=None, max_examples=80, suppress_health_check=[HealthCheck.too_slow])
SEQ0 = 65530  # so every run crosses the 16-bit wrap


@dataclass
class Sent:
    expected: bytes
    keyframe: bool
    timestamp: int
    packets: int
    lost: int
    last_delivered: bool
    provable: bool


#: (input, expected output, key frame, whether its start is provable after loss)
TestFrame = tuple[bytes, bytes, bool, bool]


def transmit(
    packetizer: Packetizer, depack: Depacketizer, frames: list[TestFrame], mtu: int, lost: set[int]
) -> tuple[list[Sent], list[Frame]]:
    """``lost``: indices of packets not delivered, counted from the second frame (the first
    packet a depacketizer sees is taken as a start on weaker evidence; see payload.py)."""
    sent: list[Sent] = []
    seq = SEQ0
    index = 0
    for i, (data, expected, key, provable) in enumerate(frames):
        ts = (1000 + i * TS_STEP) & 0xFFFFFFFF
        payloads = packetizer.packetize(data, mtu)
        assert payloads and all(0 < len(p) <= mtu for p in payloads)
        n_lost = 0
        delivered = False
        for j, p in enumerate(payloads):
            delivered = i == 0 or index not in lost
            if delivered:
                depack.push(p, seq & 0xFFFF, ts, j == len(payloads) - 1)
            else:
                n_lost += 1
            seq += 1
            index += 1 if i else 0
        sent.append(Sent(expected, key, ts, len(payloads), n_lost, delivered, provable))
    depack.flush()
    out = []
    while (frame := depack.poll_frame()) is not None:
        out.append(frame)
    return sent, out


def check(sent: list[Sent], out: list[Frame], depack: Depacketizer) -> None:
    """No frame is corrupt; frames hit by loss are dropped and counted; every frame that lost
    nothing comes out unless loss right before it hid where it starts and the codec could not
    prove it (``provable``)."""
    by_ts = {s.timestamp: s for s in sent}
    for frame in out:
        s = by_ts[frame.timestamp]
        assert s.lost == 0
        assert frame.data == s.expected
        assert frame.keyframe == s.keyframe
    assert len({f.timestamp for f in out}) == len(out)
    seen = sum(1 for s in sent if s.lost < s.packets)
    assert depack.dropped_frames == seen - len(out)
    assert depack.frames == len(out)
    expected = [
        s.timestamp for i, s in enumerate(sent) if s.lost == 0 and (i == 0 or sent[i - 1].last_delivered or s.provable)
    ]
    assert [f.timestamp for f in out] == expected
    if not any(s.lost for s in sent):
        assert len(out) == len(sent)


def nonzero(min_size: int, max_size: int) -> st.SearchStrategy[bytes]:
    """Bytes without 0x00, so no start code or emulation-prevention pattern appears inside a NAL."""
    return st.binary(min_size=min_size, max_size=max_size).map(lambda b: bytes(x or 1 for x in b))


def lost_packets() -> st.SearchStrategy[set[int]]:
    return st.sets(st.integers(0, 60), max_size=6)


def garbage_run(depack: Depacketizer, payloads: list[bytes], markers: list[bool]) -> None:
    """Random payloads in order: push never raises, counters stay consistent."""
    for i, p in enumerate(payloads):
        depack.push(p, i, 90 * (i // 3), markers[i % len(markers)] if markers else False)
    depack.flush()
    n = 0
    while depack.poll_frame() is not None:
        n += 1
    assert n == depack.frames
