"""Per-viewer layer selection inside one codec stream, sans-IO and cheap per packet.

- :class:`Vp8Layers`: VP8 temporal layers (RFC 7741 s4.2: TID, Y) and the picture id /
  TL0PICIDX rewriting that keeps them continuous for the viewer across simulcast layer and
  source switches and across the pictures it does not get (decoders detect loss from gaps in
  picture ids, s4.2).
- :class:`Vp9Layers`: VP9 SVC (RFC 9628 s4.2): every spatial layer on one SSRC; forward
  only spatial layers <= the target and temporal layers <= the target, set the marker on the
  last packet of the highest forwarded layer frame, move up at pictures that allow it;
  picture ids / TL0PICIDX continued across source switches (gaps of dropped pictures kept:
  VP9 references name picture ids).
- :class:`SeqSkipper`: outgoing sequence numbers without holes where packets were dropped.

Every source's packet is shared by all its viewers, so a descriptor is parsed once per packet:
:func:`vp8_descriptor`, :func:`vp9_descriptor` keep it on the packet (``MediaPacket.meta``), where the
receiving side may already have put it.
"""

from __future__ import annotations

from collections import deque
from typing import Final

from trackmesh.codecs.vp8 import Vp8Descriptor, parse_vp8_descriptor
from trackmesh.codecs.vp9 import Vp9Descriptor, parse_vp9_descriptor
from trackmesh.core.model import MediaPacket
from trackmesh.errors import RemoteProtocolError

__all__ = [
    "MAX_TEMPORAL",
    "SeqSkipper",
    "Vp8Layers",
    "Vp9Layers",
    "vp8_descriptor",
    "vp9_descriptor",
    "vp9_numbers_end",
]

#: Highest temporal layer id the descriptors can carry (VP8: 2 bits, VP9: 3 bits).
MAX_TEMPORAL: Final = 7
_SKIP_HISTORY: Final = 64


#: ``MediaPacket.meta`` of a packet whose descriptor did not parse: the next viewer does not try again.
_MALFORMED: Final = object()


def vp8_descriptor(pkt: MediaPacket) -> Vp8Descriptor | None:
    """The packet's VP8 descriptor, or None when it is malformed."""
    desc = pkt.meta
    if desc is None:
        try:
            desc = parse_vp8_descriptor(pkt.payload)
        except RemoteProtocolError:
            desc = _MALFORMED
        pkt.meta = desc
    return desc if isinstance(desc, Vp8Descriptor) else None


def vp9_descriptor(pkt: MediaPacket) -> Vp9Descriptor | None:
    """The packet's VP9 descriptor, or None when it is malformed."""
    desc = pkt.meta
    if desc is None:
        try:
            desc = parse_vp9_descriptor(pkt.payload)
        except RemoteProtocolError:
            desc = _MALFORMED
        pkt.meta = desc
    return desc if isinstance(desc, Vp9Descriptor) else None


def vp9_numbers_end(d: Vp9Descriptor) -> int:
    """Where the fields :meth:`Vp9Layers.rewrite` changes end (picture id, then TL0PICIDX,
    s4.2): only that much of the descriptor needs copying."""
    if d.tl0picidx_offset >= 0:
        return d.tl0picidx_offset + 1
    if d.picture_id_offset >= 0:
        return d.picture_id_offset + (2 if d.picture_id_long else 1)
    return 0


class SeqSkipper:
    """Removes dropped packets from an outgoing sequence space.

    The caller maps every packet of its selected source (forwarded or not) through its
    :class:`~trackmesh.rtp.rewrite.SeqTsRewriter` first, then reports drops
    with :meth:`drop` and maps the kept ones with :meth:`map`: a kept packet moves down by the
    number of drops before it, so the viewer sees no hole (and sends no NACK) where a layer
    was filtered. Late packets older than recent drops are mapped with the count at their
    place (a short history of drop points).
    """

    __slots__ = ("_drops", "skipped")

    def __init__(self) -> None:
        self.skipped = 0
        # 16-bit rewritten seqs dropped; made on the first drop (an empty deque is 760 bytes, and most
        # viewers never filter a layer: one per video and audio stream a meeting participant receives).
        self._drops: deque[int] | None = None

    def drop(self, seq: int) -> None:
        self.skipped += 1
        drops = self._drops
        if drops is None:
            drops = self._drops = deque(maxlen=_SKIP_HISTORY)
        drops.append(seq)

    def map(self, seq: int) -> int:
        skipped = self.skipped
        drops = self._drops
        if not skipped or drops is None:
            return seq
        if ((seq - drops[-1]) & 0xFFFF) < 0x8000:
            return (seq - skipped) & 0xFFFF
        # Older than the last drop: only the drops before it count.
        for d in reversed(drops):
            if ((seq - d) & 0xFFFF) < 0x8000:
                break
            skipped -= 1
        return (seq - skipped) & 0xFFFF


def _newer(pid: int, than: int, long: bool) -> bool:
    """Whether picture id ``pid`` follows ``than`` (serial arithmetic in 15 or 7 bits)."""
    if long:
        return 0 < ((pid - than) & 0x7FFF) < 0x4000
    return 0 < ((pid - than) & 0x7F) < 0x40


class Vp8Layers:
    """One viewer's VP8 temporal filter and picture id / TL0PICIDX rewriter.

    Temporal layers: ``target`` is the highest layer wanted, ``current`` the highest being
    forwarded. Going down happens at the next frame; going up only where the decoder can
    follow: at a key frame (to the target), or one layer at a time at a frame of layer
    ``current + 1`` with the layer-sync bit Y (it depends only on TL0 frames, s4.2; later
    frames of higher layers may reference that layer's frames, hence one step at a time).

    Picture ids: per source (``key``, the rewriter's source key) a constant offset, reset on
    a switch so the first picture follows the last one sent, and lowered by one for each
    picture dropped here; written back with each packet's own 7/15-bit width. While both
    offsets are 0 (a viewer's first source, nothing dropped) packets pass unchanged.
    """

    __slots__ = (
        "current",
        "idle",
        "key",
        "last",
        "last_pid_off",
        "last_tl0_off",
        "pid_off",
        "target",
        "tid_seen",
        "tl0_off",
    )

    def __init__(self) -> None:
        self.target = MAX_TEMPORAL
        self.current = MAX_TEMPORAL
        self.tid_seen = -1  # the highest temporal layer id seen
        self.key = -1
        self.pid_off = 0
        self.tl0_off = 0
        # The last packet forwarded and the offsets it was sent with.
        self.last: Vp8Descriptor | None = None
        self.last_pid_off = 0
        self.last_tl0_off = 0
        # Nothing to filter or renumber for this source: the caller may skip :meth:`process`
        # for packets of ``key`` and only record ``last`` (and ``tid_seen``).
        self.idle = False

    def set_target(self, target: int) -> None:
        self.target = target
        self.idle = False

    def process(self, d: Vp8Descriptor, keyframe: bool, key: int) -> int:
        """One packet of source ``key`` (a new key is a switch: numbering continues from the
        last packet sent), in order: -1 to drop it, 1 to forward it renumbered by
        :meth:`rewrite`, 0 to forward it as it is."""
        tid = d.temporal_id
        cur = self.current
        if d.start_of_partition and d.partition_id == 0:
            # First packet of a frame: the only place the forwarded layers change.
            if tid > self.tid_seen:
                self.tid_seen = tid
            target = self.target
            if target != cur:
                if keyframe or target < cur:
                    self.current = cur = target
                elif tid == cur + 1 and tid <= target and d.layer_sync:
                    self.current = cur = tid
            if tid > cur:
                pid = d.picture_id
                last = self.last
                if pid >= 0 and (
                    last is None or last.picture_id < 0 or _newer(pid, last.picture_id, d.picture_id_long)
                ):
                    self.pid_off -= 1  # one picture the viewer will not see (unless it came late)
                self.idle = False
                return -1
        elif tid > cur:
            return -1
        if key != self.key:
            self.key = key
            last = self.last
            pid = d.picture_id
            tl0 = d.tl0picidx
            self.pid_off = self.tl0_off = 0
            if last is not None:
                if pid >= 0 and last.picture_id >= 0:
                    self.pid_off = ((last.picture_id + self.last_pid_off) & 0x7FFF) + 1 - pid
                if tl0 >= 0 and last.tl0picidx >= 0:
                    # A switch happens on a key frame, a new TL0 picture.
                    self.tl0_off = ((last.tl0picidx + self.last_tl0_off) & 0xFF) + 1 - tl0
        self.last = d
        pid_off = self.last_pid_off = self.pid_off
        tl0_off = self.last_tl0_off = self.tl0_off
        if pid_off or tl0_off:
            self.idle = False
            return 1
        self.idle = cur >= MAX_TEMPORAL and self.target >= MAX_TEMPORAL
        return 0

    def rewrite(self, buf: bytearray, base: int, d: Vp8Descriptor) -> None:
        """Renumber the descriptor copied to ``buf[base:]`` (after :meth:`process` said 1)."""
        rewrite_picture_ids(buf, base, d, self.pid_off, self.tl0_off)


class Vp9Layers:
    """One viewer's VP9 SVC filter and picture id / TL0PICIDX rewriter.

    Spatial: ``target`` is the highest spatial layer wanted, ``current`` the highest being
    forwarded (-1 before the first key frame). Down: at the next picture. Up: one layer at a
    time, at a layer frame of ``current + 1`` that is not predicted from earlier pictures
    (P=0; it then depends only on the lower layers of the same picture, which the viewer got):
    every upper layer of a key picture, or a layer switch point of the encoder.

    Temporal (``t_target``, ``t_current``): down at the next picture; up at a key picture, or
    at a picture with the switching-up bit U whose TID is already forwarded (RFC 9628 s4.2:
    later pictures of higher layers do not depend on pictures of those layers before it).

    The marker bit (RTP s4.1: last packet of the picture) is set on the last packet (E) of
    the highest forwarded layer frame, since the packets that carried it are dropped.

    Picture ids and TL0PICIDX (RFC 9628 s4.2) are renumbered per source ``key``: a constant
    offset set on a switch, so the new source's first picture follows the last one sent and
    numbers stay monotonic for the viewer. Unlike VP8 (:class:`Vp8Layers`), pictures dropped
    by the temporal filter keep their numbers (the viewer sees gaps): a VP9 picture names its
    references by picture id, explicitly (P_DIFF, flexible mode) or through the scalability
    structure's picture group (non-flexible mode, where the receiver also derives a picture's
    place in the group from its id), so closing the gaps would point references at the wrong
    pictures. Measured with Chromium (tests/e2e/test_sdk_layers.py): with gaps closed, a viewer
    capped at TL0 of an L3T3_KEY stream dropped 30 of 53 received frames as undecodable; with
    the gaps kept, none. The receiver knows from the TID and the picture group that the
    missing pictures are not needed. TL0PICIDX counts TID 0 pictures, which the filter never
    drops. ``renumber`` says whether :meth:`rewrite` has anything to do for the packet just
    forwarded.
    """

    __slots__ = (
        "_key_pic",
        "_layers",
        "_ts",
        "current",
        "key",
        "last_pid",
        "last_tl0",
        "pid_off",
        "renumber",
        "t_current",
        "t_target",
        "target",
        "tl0_off",
    )

    def __init__(self) -> None:
        self.target = MAX_TEMPORAL
        self.current = -1
        self.t_target = MAX_TEMPORAL
        self.t_current = MAX_TEMPORAL
        self._ts = -1
        self._key_pic = False
        self._layers = 0  # spatial layers: from the last scalability structure, else the most seen
        self.key = -1
        self.pid_off = 0
        self.tl0_off = 0
        # The last picture id and TL0PICIDX sent (after renumbering; -1: none yet) and whether
        # the packet just forwarded needs :meth:`rewrite`.
        self.last_pid = -1
        self.last_tl0 = -1
        self.renumber = False

    def forward(self, d: Vp9Descriptor, keyframe: bool, ts: int, key: int = 0) -> int:
        """-1 to drop the packet, else the marker bit to send it with (0 or 1). ``key`` names
        the source (a new key is a switch: numbering continues from the last packet sent)."""
        sid = d.spatial_id
        if ts != self._ts:
            # First packet seen of a new picture.
            self._ts = ts
            self._key_pic = keyframe
            if self.target < self.current:
                self.current = self.target
            if keyframe:
                if self.current < 0:
                    self.current = 0
                self.t_current = self.t_target
            elif self.t_target < self.t_current or (d.switch_up and d.temporal_id <= self.t_current):
                self.t_current = self.t_target
        if d.ss_layers:
            self._layers = d.ss_layers
        elif sid >= self._layers:
            self._layers = sid + 1
        cur = self.current
        if d.begin and sid == cur + 1 and sid <= self.target and not d.inter_picture and cur >= 0:
            self.current = cur = sid
            self._key_pic = True  # the layers above are likely switch points too
        if cur < 0 or sid > cur or d.temporal_id > self.t_current:
            return -1
        self._number(d, key)
        if not d.end or sid != cur:
            return 0
        # The last packet of the highest layer frame forwarded so far. In a key picture (or
        # once a layer switched up in this picture) upper layers are expected to follow, so
        # the marker waits for the top one (wanted and announced); in an inter picture the
        # first layer that switches up is seen only after this packet, whose marker is then
        # early (once per switch).
        if self._key_pic and sid < min(self.target, self._layers - 1):
            return 0
        return 1

    def _number(self, d: Vp9Descriptor, key: int) -> None:
        """Offsets for a packet about to be forwarded; remembers what it will carry."""
        pid = d.picture_id
        tl0 = d.tl0picidx
        if key != self.key:
            self.key = key
            self.pid_off = self.tl0_off = 0
            if pid >= 0 and self.last_pid >= 0:
                # A 7-bit source continues a 15-bit numbering modulo its own width.
                self.pid_off = self.last_pid + 1 - pid
            if tl0 >= 0 and self.last_tl0 >= 0:
                # A switch happens on a key picture, a TL0 picture: the next TL0PICIDX.
                self.tl0_off = self.last_tl0 + 1 - tl0
        if pid >= 0:
            long = d.picture_id_long
            out = (pid + self.pid_off) & (0x7FFF if long else 0x7F)
            if self.last_pid < 0 or _newer(out, self.last_pid, long):
                self.last_pid = out
        if tl0 >= 0:
            self.last_tl0 = (tl0 + self.tl0_off) & 0xFF
        self.renumber = bool((self.pid_off and pid >= 0) or (self.tl0_off and tl0 >= 0))

    def rewrite(self, buf: bytearray, base: int, d: Vp9Descriptor) -> None:
        """Renumber the descriptor copied to ``buf[base:]`` (when ``renumber`` is set)."""
        rewrite_picture_ids(buf, base, d, self.pid_off, self.tl0_off)


def rewrite_picture_ids(
    buf: bytearray, base: int, d: Vp8Descriptor | Vp9Descriptor, pid_off: int, tl0_off: int
) -> None:
    """Write ``d``'s picture id (7 or 15 bits, same width as received) and TL0PICIDX, shifted by the viewer's offsets,
    into the descriptor copied to ``buf[base:]``. VP8 (RFC 7741 s4.2) and VP9 (RFC 9628 s4.2) lay both out alike."""
    if d.picture_id >= 0:
        out = (d.picture_id + pid_off) & 0x7FFF
        pos = base + d.picture_id_offset
        if d.picture_id_long:
            buf[pos] = 0x80 | (out >> 8)
            buf[pos + 1] = out & 0xFF
        else:
            buf[pos] = out & 0x7F
    if d.tl0picidx >= 0:
        buf[base + d.tl0picidx_offset] = (d.tl0picidx + tl0_off) & 0xFF
