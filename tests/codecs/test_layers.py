"""Per-viewer layer state machines: sequence skipping, VP8 temporal layers, VP9 SVC."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from trackmesh.codecs.layers import SeqSkipper, Vp8Layers, Vp9Layers, vp8_descriptor, vp9_descriptor
from trackmesh.codecs.vp8 import parse_vp8_descriptor
from trackmesh.codecs.vp9 import parse_vp9_descriptor
from trackmesh.core.model import MediaCodec, MediaPacket


def test_skipper_removes_holes_and_maps_late_packets_by_their_place() -> None:
    s = SeqSkipper()
    assert s.map(65534) == 65534
    s.drop(65535)
    assert s.map(0) == 65535  # across the wrap
    s.drop(1)
    s.drop(2)
    assert s.map(3) == 0
    # Late packets: before every drop, between drops.
    assert s.map(65533) == 65533
    assert s.map(0) == 65535


@given(st.lists(st.booleans(), min_size=1, max_size=300), st.integers(0, 0xFFFF))
def test_skipper_output_is_contiguous_for_in_order_packets(dropped: list[bool], start: int) -> None:
    s = SeqSkipper()
    out = []
    for i, drop in enumerate(dropped):
        seq = (start + i) & 0xFFFF
        if drop:
            s.drop(seq)
        else:
            out.append(s.map(seq))
    assert out == [(out[0] + i) & 0xFFFF for i in range(len(out))] if out else True


def vp8(tid: int, *, sync: bool = False, start: bool = True, pid: int | None = 10, tl0: int = 3) -> bytes:
    x = (0x80 if pid is not None else 0) | 0x60
    out = bytes([0x90 if start else 0x80, x])
    if pid is not None:
        out += bytes([pid]) if pid < 128 else bytes([0x80 | (pid >> 8), pid & 0xFF])
    return out + bytes([tl0, (tid << 6) | (0x20 if sync else 0), 0x01])


def test_vp8_temporal_switches_one_layer_at_a_time_at_sync_frames() -> None:
    v = Vp8Layers()
    v.set_target(0)
    assert v.process(parse_vp8_descriptor(vp8(0)), True, 0) >= 0 and v.current == 0
    assert v.process(parse_vp8_descriptor(vp8(1, sync=True)), False, 0) == -1
    assert v.process(parse_vp8_descriptor(vp8(1, start=False)), False, 0) == -1  # rest of the frame
    v.set_target(2)
    assert v.process(parse_vp8_descriptor(vp8(2, sync=True)), False, 0) == -1  # TL1 not synced yet
    assert v.process(parse_vp8_descriptor(vp8(1)), False, 0) == -1  # no Y
    assert v.process(parse_vp8_descriptor(vp8(1, sync=True)), False, 0) >= 0 and v.current == 1
    assert v.process(parse_vp8_descriptor(vp8(1, start=False)), False, 0) >= 0
    assert v.process(parse_vp8_descriptor(vp8(2, sync=True)), False, 0) >= 0 and v.current == 2
    v.set_target(0)
    assert v.process(parse_vp8_descriptor(vp8(2, start=False)), False, 0) >= 0  # the frame in progress ends
    assert v.process(parse_vp8_descriptor(vp8(1)), False, 0) == -1 and v.current == 0  # down at the next one
    # Without a TID (no T bit) everything passes.
    assert v.process(parse_vp8_descriptor(b"\x90\x80\x05\x01"), False, 0) >= 0


def test_vp8_picture_ids_keep_each_packets_width_and_skip_dropped_pictures() -> None:
    v = Vp8Layers()
    v.set_target(0)
    sent: list[tuple[int, int]] = []
    for i, (tid, pid) in enumerate([(0, 126), (1, 127), (0, 0), (1, 1), (0, 2)]):
        raw = vp8(tid, pid=pid, tl0=200 + i // 2)
        d = parse_vp8_descriptor(raw)
        r = v.process(d, i == 0, 1)
        if r >= 0:
            buf = bytearray(8) + raw
            if r:
                v.rewrite(buf, 8, d)
            out = parse_vp8_descriptor(buf, 8)
            assert not out.picture_id_long and out.size == d.size
            sent.append((out.picture_id, out.tl0picidx))
    assert sent == [(126, 200), (127, 201), (0, 202)]
    # A switch to a source with 15-bit picture ids continues from the last one sent.
    raw = vp8(0, pid=20000, tl0=7)
    d = parse_vp8_descriptor(raw)
    assert v.process(d, True, 2) == 1
    buf = bytearray(raw)
    v.rewrite(buf, 0, d)
    out = parse_vp8_descriptor(buf)
    assert out.picture_id_long and (out.picture_id, out.tl0picidx) == (1, 203)


def vp9(sid: int, tid: int = 0, *, p: bool = True, b: bool = True, e: bool = True, u: bool = False) -> bytes:
    return bytes(
        [
            0xA0 | (0x40 if p else 0) | (0x08 if b else 0) | (0x04 if e else 0),
            1,
            (tid << 5) | (0x10 if u else 0) | (sid << 1),
            0,
        ]
    )


def test_vp9_temporal_up_at_a_switching_point_whose_layer_is_forwarded() -> None:
    v = Vp9Layers()
    v.target = 0
    v.t_target = 0
    assert v.forward(parse_vp9_descriptor(vp9(0, p=False)), True, 0) == 1
    assert v.forward(parse_vp9_descriptor(vp9(1)), False, 0) == -1  # spatial cap
    assert v.forward(parse_vp9_descriptor(vp9(0, 1, u=True)), False, 1) == -1
    v.t_target = 2
    assert v.forward(parse_vp9_descriptor(vp9(0, 2, u=True)), False, 2) == -1  # TID 2 not forwarded: no switch
    assert v.forward(parse_vp9_descriptor(vp9(0, 1)), False, 3) == -1
    assert v.forward(parse_vp9_descriptor(vp9(0, 0, u=True)), False, 4) == 1 and v.t_current == 2
    assert v.forward(parse_vp9_descriptor(vp9(0, 2)), False, 5) == 1
    v.t_target = 0
    assert v.forward(parse_vp9_descriptor(vp9(0, 1)), False, 6) == -1


def test_vp9_waits_for_a_key_picture() -> None:
    v = Vp9Layers()
    assert v.forward(parse_vp9_descriptor(vp9(0)), False, 0) == -1
    # No scalability structure: the layer count is learned from the layers seen.
    assert v.forward(parse_vp9_descriptor(vp9(0, p=False)), True, 1) == 1
    assert v.forward(parse_vp9_descriptor(vp9(1, p=False)), False, 1) == 1
    assert v.forward(parse_vp9_descriptor(vp9(0, p=False)), True, 2) == 0  # layer 1 will follow
    assert v.forward(parse_vp9_descriptor(vp9(1, p=False)), False, 2) == 1
    assert v.current == 1


def test_vp8_a_late_dropped_picture_does_not_renumber_later_ones() -> None:
    v = Vp8Layers()
    v.set_target(0)
    assert v.process(parse_vp8_descriptor(vp8(0, pid=300)), True, 1) == 0
    assert v.process(parse_vp8_descriptor(vp8(0, pid=302)), False, 1) == 0  # 301 (TL1) not here yet
    assert v.process(parse_vp8_descriptor(vp8(1, pid=301)), False, 1) == -1  # late: no effect
    assert v.process(parse_vp8_descriptor(vp8(0, pid=303)), False, 1) == 0
    assert v.process(parse_vp8_descriptor(vp8(1, pid=304)), False, 1) == -1  # in order: one picture less
    d = parse_vp8_descriptor(vp8(0, pid=305))
    assert v.process(d, False, 1) == 1
    buf = bytearray(vp8(0, pid=305))
    v.rewrite(buf, 0, d)
    assert parse_vp8_descriptor(buf).picture_id == 304


def vp9x(sid: int, tid: int, pid: int, tl0: int, *, p: bool = True, b: bool = True, e: bool = True) -> bytes:
    """A non-flexible VP9 descriptor with a 15-bit picture id (RFC 9628 s4.2) and 2 payload bytes."""
    return bytes(
        [
            0xA0 | (0x40 if p else 0) | (0x08 if b else 0) | (0x04 if e else 0),
            0x80 | (pid >> 8),
            pid & 0xFF,
            (tid << 5) | (sid << 1),
            tl0,
            0xAB,
            0xCD,
        ]
    )


def vp9_sent(v: Vp9Layers, pkt: bytes, keyframe: bool, ts: int, key: int = 0) -> tuple[int, int] | None:
    """Forward one packet through ``v``; the (picture id, TL0PICIDX) the viewer gets, or None."""
    d = parse_vp9_descriptor(pkt)
    if v.forward(d, keyframe, ts, key) < 0:
        return None
    buf = bytearray(pkt)
    if v.renumber:
        v.rewrite(buf, 0, d)
    assert buf[5:] == pkt[5:]  # the payload is untouched
    out = parse_vp9_descriptor(buf)
    return out.picture_id, out.tl0picidx


def test_vp9_dropped_pictures_keep_their_picture_ids() -> None:
    """P_DIFF (flexible mode) and the picture group (non-flexible) name references by picture
    id: the viewer must see the source's numbers, gaps included (a TL0 picture's reference is
    the previous TL0 picture, 4 ids back in an L1T3 group)."""
    v = Vp9Layers()
    v.t_target = 0
    tids = [0, 2, 1, 2] * 3
    sent = []
    for i, tid in enumerate(tids):
        pid = 0x7FFC + i  # wraps through 0x7FFF
        r = vp9_sent(v, vp9x(0, tid, pid & 0x7FFF, 9 + i // 4, p=i > 0), i == 0, 3000 * i)
        if r is not None:
            sent.append(r)
    assert sent == [(0x7FFC, 9), (0, 10), (4, 11)]
    assert not v.renumber  # one source from the start: nothing to rewrite


def test_vp9_spatial_layers_of_one_picture_share_its_renumbered_id() -> None:
    v = Vp9Layers()
    v.t_target = 0
    out = []
    for pic in range(4):
        tid = [0, 1, 0, 1][pic]
        for sid in range(2):
            r = vp9_sent(v, vp9x(sid, tid, 500 + pic, 3 + pic // 2, p=pic > 0 and sid == 0), pic == 0, 3000 * pic)
            out.append(r)
    assert out == [(500, 3), (500, 3), None, None, (502, 4), (502, 4), None, None]


def test_vp9_a_source_switch_continues_picture_ids_and_tl0picidx() -> None:
    v = Vp9Layers()
    assert vp9_sent(v, vp9x(0, 0, 1000, 50, p=False), True, 0, key=1) == (1000, 50)
    assert vp9_sent(v, vp9x(0, 0, 1001, 51), False, 3000, key=1) == (1001, 51)
    # Another source (a switch), numbered anywhere: the viewer sees the next numbers.
    assert vp9_sent(v, vp9x(0, 0, 20000, 200, p=False), True, 90000, key=2) == (1002, 52)
    assert vp9_sent(v, vp9x(0, 0, 20001, 201), False, 93000, key=2) == (1003, 53)
    # Dropped pictures keep their place in the new numbering too.
    v.t_target = 0
    assert vp9_sent(v, vp9x(0, 1, 20003, 201), False, 99000, key=2) is None
    assert vp9_sent(v, vp9x(0, 1, 20002, 201), False, 96000, key=2) is None  # late
    assert vp9_sent(v, vp9x(0, 0, 20004, 202), False, 102000, key=2) == (1006, 54)
    # Back to the first source, at a key picture: numbers continue from the last one sent.
    assert vp9_sent(v, vp9x(0, 0, 1010, 60, p=False), True, 105000, key=1) == (1007, 55)


@given(
    st.lists(st.tuples(st.integers(0, 0x7FFF), st.integers(1, 40), st.integers(0, 2)), min_size=1, max_size=8),
    st.integers(0, 2),
)
def test_vp9_picture_ids_are_monotonic_across_switches_and_keep_gaps(
    sources: list[tuple[int, int, int]], cap: int
) -> None:
    """Each (first picture id, pictures, TID pattern seed) is one source switched to at a key
    picture: within a source the viewer's ids differ as the source's do, and every switch
    continues one past the last id sent."""
    v = Vp9Layers()
    v.t_target = cap
    sent: list[tuple[int, int]] = []  # (source index, id seen)
    src_ids: list[int] = []
    ts = 0
    for n, (first, count, seed) in enumerate(sources):
        for i in range(count):
            tid = 0 if i == 0 else (i + seed) % 3
            pid = (first + i) & 0x7FFF
            ts += 3000
            r = vp9_sent(v, vp9x(0, tid, pid, 0, p=i > 0), i == 0, ts, key=n)
            if r is not None:
                sent.append((n, r[0]))
                src_ids.append(pid)
    for (na, a), (nb, b), sa, sb in zip(sent, sent[1:], src_ids, src_ids[1:], strict=False):
        step = (b - a) & 0x7FFF
        assert step == (1 if na != nb else (sb - sa) & 0x7FFF)


def test_a_descriptor_is_parsed_once_per_packet_and_kept_on_it() -> None:
    pkt = MediaPacket(MediaCodec.VP8, 96, 1, 0, True, False, vp8(1, sync=True))
    d = vp8_descriptor(pkt)
    assert d is not None and d.temporal_id == 1 and pkt.meta is d
    assert vp8_descriptor(pkt) is d  # the next viewer reads the packet's
    other = MediaPacket(MediaCodec.VP8, 96, 2, 0, True, False, vp8(2))
    assert vp8_descriptor(other) is not d  # no state outside the packet
    bad = MediaPacket(MediaCodec.VP9, 98, 1, 0, True, False, b"")
    assert vp9_descriptor(bad) is None and bad.meta is not None  # malformed: remembered, not parsed again
    assert vp9_descriptor(bad) is None
