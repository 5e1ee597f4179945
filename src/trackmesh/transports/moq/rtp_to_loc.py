"""RTP packets of one room track -> LOC objects in MoQ groups, sans-IO (docs/moq.md, "Rooms").

Fed each RTP packet of the track (``push``: payload, sequence number, timestamp, marker, codec,
``now``), drained of :class:`LocObject` with ``poll``. The codec's depacketizer
(:mod:`trackmesh.codecs`) reassembles whole frames; each frame is one object:

- **Video**: a group per key frame (draft-ietf-moq-transport s2.3: a group is a join point), the
  key frame its object 0 and the frames that follow it objects 1, 2... Nothing is sent before the
  first key frame. A loss (sequence numbers skipped, or a frame the depacketizer dropped) makes the
  track wait for the next key frame: the frames after a loss reference what was lost.
  :attr:`keyframe_wanted` is set when the bridge waits (at the start and after a loss); the
  caller asks the publisher for one (PLI) and clears it with :meth:`take_keyframe_request`.
- **Audio**: every frame is an object; a group spans about :data:`AUDIO_GROUP_SECONDS` of media
  time (any audio frame is a join point, so groups only bound what a new subscriber replays).
- A codec change (a new payload type) restarts the depacketizer and, for video, waits for a key
  frame; group numbers keep increasing for the track's life.

Each object carries the LOC Timestamp (:mod:`.loc`): the RTP timestamp unwrapped to 64 bits,
in microseconds of the codec clock. The bridge never reads a clock; ``now`` only times key-frame
requests (at most one per :data:`KEYFRAME_RETRY` while waiting).
"""

from __future__ import annotations

from collections import deque
from typing import Final

from trackmesh.codecs.h264 import START_CODE, split_annexb
from trackmesh.codecs.h264_sps import avc1_codec_string, sps_picture_size
from trackmesh.codecs.payload import Buffer, Depacketizer, PayloadError
from trackmesh.codecs.registry import depacketizer
from trackmesh.codecs.vp9 import vp9_frame_size
from trackmesh.errors import LocalProtocolError

from .loc import LocProperties, encode_loc_properties

__all__ = ["AUDIO_GROUP_SECONDS", "KEYFRAME_RETRY", "LocObject", "RtpToLoc", "clock_rate"]

AUDIO_GROUP_SECONDS: Final = 1.0
KEYFRAME_RETRY: Final = 1.0  # seconds between key-frame requests while waiting for one
_RATES: Final = {"opus": 48_000, "pcmu": 8_000, "pcma": 8_000}
_VIDEO_RATE: Final = 90_000
_VP8_START: Final = b"\x9d\x01\x2a"


def clock_rate(codec: str) -> int:
    return _RATES.get(codec, _VIDEO_RATE)


class LocObject:
    """One object to publish: ``group``/``object_id`` (object 0 starts a group), the frame, and
    its LOC extension block (draft-16 integers)."""

    __slots__ = ("extensions", "group", "keyframe", "object_id", "payload", "timestamp_us")

    def __init__(self, group: int, object_id: int, payload: bytes, timestamp_us: int, keyframe: bool) -> None:
        self.group = group
        self.object_id = object_id
        self.payload = payload
        self.timestamp_us = timestamp_us
        self.keyframe = keyframe
        self.extensions = encode_loc_properties(LocProperties(timestamp_us))

    def __repr__(self) -> str:
        return f"LocObject({self.group}/{self.object_id}, key={self.keyframe}, {len(self.payload)} bytes)"


def _video_size(codec: str, frame: bytes) -> tuple[int, int] | None:
    """A key frame's (width, height) where its header says it (VP8 RFC 6386 s9.1, VP9 s6.2)."""
    try:
        if codec == "vp8" and len(frame) >= 10 and frame[3:6] == _VP8_START:
            return (frame[6] | frame[7] << 8) & 0x3FFF, (frame[8] | frame[9] << 8) & 0x3FFF
        if codec == "vp9":
            return vp9_frame_size(frame)
    except PayloadError:
        pass
    return None


class RtpToLoc:
    """Counters: ``objects`` made, ``skipped_frames`` (waiting for a key frame), ``keyframe_requests``;
    the depacketizer's own (``lost_packets``, ``dropped_frames``...) are summed in :meth:`counters`."""

    def __init__(self, video: bool) -> None:
        self.video = video
        self.codec = ""
        self.width = 0
        self.height = 0
        self.channels = 0
        self.codec_string = ""  # H.264: avc1.PPCCLL from its SPS ("" until one is seen)
        self._param_sets: dict[int, bytes] = {}  # H.264 nal_unit_type 7 (SPS), 8 (PPS) -> the latest
        self.group = -1  # the current group (-1: none yet)
        self._next_object = 0
        self._group_start_us = 0
        self._depack: Depacketizer | None = None
        self._losses = 0  # the depacketizer's lost_packets + dropped_frames when last looked at
        self._waiting = video  # video waits for a key frame
        self.keyframe_wanted = video
        self._last_request = float("-inf")
        self._ts_ext = -1  # the newest RTP timestamp, extended (-1: none yet)
        self._out: deque[LocObject] = deque()
        self._retired: dict[str, int] = {}
        self.objects = 0
        self.skipped_frames = 0
        self.keyframe_requests = 0

    # -- input -------------------------------------------------------------------------------

    def push(self, payload: Buffer, seq: int, timestamp: int, marker: bool, codec: str, now: float) -> None:
        if codec != self.codec:
            self._switch(codec)
        depack = self._depack
        if depack is None:
            return
        depack.push(payload, seq, timestamp, marker)
        self._check_loss(depack, now)
        while (frame := depack.poll_frame()) is not None:
            self._frame(frame.data, frame.timestamp, frame.keyframe, now)
        self._check_loss(depack, now)

    def _switch(self, codec: str) -> None:
        old = self._depack
        if old is not None:
            for name, value in _depack_counters(old).items():
                self._retired[name] = self._retired.get(name, 0) + value
        self.codec = codec
        try:
            self._depack = depacketizer(codec)
        except LocalProtocolError:  # no payload format for it: its packets are ignored
            self._depack = None
        self._losses = 0
        self._ts_ext = -1
        if self.video:
            self._waiting = True
            self.keyframe_wanted = True

    def _check_loss(self, depack: Depacketizer, now: float) -> None:
        losses = depack.lost_packets + depack.dropped_frames
        if losses != self._losses:
            self._losses = losses
            if self.video and not self._waiting:
                self._waiting = True
                self._want_keyframe(now)

    def _want_keyframe(self, now: float) -> None:
        self.keyframe_wanted = True
        self._last_request = min(self._last_request, now - KEYFRAME_RETRY)

    def _unwrap(self, ts: int) -> int:
        """The RTP timestamp extended past its 2^32 wrap (RFC 3550 s5.1), from the newest seen."""
        if self._ts_ext < 0:
            self._ts_ext = ts
            return ts
        delta = (ts - self._ts_ext) & 0xFFFFFFFF
        if delta >= 0x80000000:
            delta -= 1 << 32
        full = self._ts_ext + delta
        if delta > 0:
            self._ts_ext = full
        return max(full, 0)

    def _frame(self, data: bytes, ts: int, keyframe: bool, now: float) -> None:
        us = self._unwrap(ts) * 1_000_000 // clock_rate(self.codec)
        if self.video:
            if not keyframe and self._waiting:
                self.skipped_frames += 1
                self._want_keyframe(now)
                return
            if self.codec == "h264":
                data = self._h264(data, keyframe)
            if keyframe:
                self._waiting = False
                self.keyframe_wanted = False
                size = _video_size(self.codec, data)
                if size is not None:
                    self.width, self.height = size
                self._new_group(us)
        else:
            if self.codec == "opus" and data:
                self.channels = 2 if data[0] & 0x04 else 1  # the TOC's stereo bit (RFC 6716 s3.1)
            elif not self.channels:
                self.channels = 1
            span = us - self._group_start_us
            if self.group < 0 or not 0 <= span < AUDIO_GROUP_SECONDS * 1_000_000:
                self._new_group(us)
        self._out.append(LocObject(self.group, self._next_object, data, us, self._next_object == 0))
        self._next_object += 1
        self.objects += 1

    def _h264(self, data: bytes, keyframe: bool) -> bytes:
        """Remember the SPS/PPS (the size and codec string come from the SPS) and put the latest
        in front of a key frame that lacks them: a subscriber starting on that group decodes it
        (WebCodecs' Annex B format carries them in band; publishers do not always repeat them)."""
        own: dict[int, bytes] = {}
        for unit in split_annexb(data):
            kind = unit[0] & 0x1F
            if kind in (7, 8):
                own[kind] = bytes(unit)
        sps = own.get(7)
        if sps is not None:
            size = sps_picture_size(sps)
            if size is not None:
                self.width, self.height = size
            self.codec_string = avc1_codec_string(sps) or self.codec_string
        self._param_sets.update(own)
        missing = [k for k in (7, 8) if k not in own]
        if keyframe and missing and all(k in self._param_sets for k in missing):
            return b"".join(START_CODE + self._param_sets[k] for k in missing) + data
        return data

    def _new_group(self, us: int) -> None:
        self.group += 1
        self._next_object = 0
        self._group_start_us = us

    # -- output ------------------------------------------------------------------------------

    def poll(self) -> LocObject | None:
        return self._out.popleft() if self._out else None

    def take_keyframe_request(self, now: float) -> bool:
        """Whether to ask the publisher for a key frame now (at most once per KEYFRAME_RETRY while
        waiting); a new subscriber's request goes through :meth:`request_keyframe`."""
        if not self.keyframe_wanted or now - self._last_request < KEYFRAME_RETRY:
            return False
        self._last_request = now
        self.keyframe_requests += 1
        return True

    def request_keyframe(self, now: float) -> None:
        """A new subscriber: ask for a key frame at once (whatever was asked just before), so it
        starts on a fresh group; the publisher's track merges and paces the requests."""
        if self.video:
            self.keyframe_wanted = True
            self._last_request = float("-inf")

    def counters(self) -> dict[str, int]:
        out = dict(self._retired)
        if self._depack is not None:
            for name, value in _depack_counters(self._depack).items():
                out[name] = out.get(name, 0) + value
        out["objects"] = self.objects
        out["skipped_frames"] = self.skipped_frames
        out["keyframe_requests"] = self.keyframe_requests
        return out


def _depack_counters(d: Depacketizer) -> dict[str, int]:
    return {
        "frames": d.frames,
        "dropped_frames": d.dropped_frames,
        "lost_packets": d.lost_packets,
        "bad_payloads": d.bad_payloads,
        "late_packets": d.late_packets,
    }
