"""Media for the load generator: the paced publisher, the subscriber sink and the send log.

The publisher replays :mod:`trackmesh.loadtest.recording` at wall-clock pace and records, for each
packet, (send time, global index) under its payload key. A subscriber sink hashes every
decrypted payload the same way and looks it up: one-way latency is arrival minus send time
(one process, one wall clock; arrivals are kernel SO_TIMESTAMPNS stamps),
loss is the share of indices sent in a window that never
arrived, and it counts duplicated, reordered and unmatched (corrupted) payloads. SSRC and
sequence rewriting by the SFU does not matter.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from array import array

from trackmesh.loadtest.client import Transport
from trackmesh.loadtest.keyframes import KeyframeResponder, keyframe_requests
from trackmesh.loadtest.recording import AUDIO, VIDEO, Recording, payload_key
from trackmesh.loadtest.streams import StreamLog, rtp_payload_bounds, stream_id, tag_payload
from trackmesh.rtp.packet import build_rtp_packet

__all__ = ["EXT_MID", "Publisher", "SendLog", "Sink"]

EXT_MID = 4  # a=extmap id of urn:ietf:params:rtp-hdrext:sdes:mid in our offers
AUDIO_PT, VIDEO_PT = 111, 96


class SendLog:
    """Every packet any publisher sent: key -> (send time, index); times/kinds by index."""

    def __init__(self) -> None:
        self.by_key: dict[bytes, tuple[float, int]] = {}
        self.times = array("d")
        self.kinds = bytearray()

    def record(self, key: bytes, kind: int, t: float) -> None:
        idx = len(self.times)
        self.by_key[key] = (t, idx)
        self.times.append(t)
        self.kinds.append(kind)

    def index_at(self, t: float) -> int:
        """First index sent at or after ``t`` (binary search)."""
        times = self.times
        lo, hi = 0, len(times)
        while lo < hi:
            mid = (lo + hi) // 2
            if times[mid] < t:
                lo = mid + 1
            else:
                hi = mid
        return lo


class Publisher:
    """Replays the recording over one transport; ``audio_only`` skips the video packets."""

    def __init__(
        self,
        transport: Transport,
        rec: Recording,
        log: SendLog,
        *,
        ssrcs: tuple[int, int],
        mids: tuple[str, str] = ("0", "1"),
        audio_only: bool = False,
        start_loop_offset: float = 0.0,
        pacing_bps: float = 2.5e6,
        tag: int | None = None,
        stream_log: StreamLog | None = None,
        keyframe_interval: float | None = None,
    ) -> None:
        self.transport = transport
        self.rec = rec
        self.log = log
        self.ssrcs = ssrcs
        self.mids = mids
        self.audio_only = audio_only
        self.offset = start_loop_offset  # start this far into the loop (distinct payloads per speaker)
        # Like libwebrtc's pacer (2.5 x the 1 Mbps target): a 60-packet key frame leaves over
        # ~230 ms instead of in one burst; audio is not held behind it. 0 sends every frame as a burst.
        self.pacing_bps = pacing_bps
        #: S2/S3: payloads tagged with this publisher id and logged per stream in ``stream_log``
        #: (streams.tag_payload) so that many publishers of the same recording stay apart.
        self.tag = tag
        self.stream_log = stream_log
        self.sent = 0
        self.late = 0.0  # worst lateness against the schedule (generator health)
        #: Optional reference path: every packet also goes, unencrypted, straight to this local
        #: socket address (no server), giving the generator's own delivery latency to subtract.
        self.reference: tuple[object, tuple[str, int]] | None = None
        self._task: asyncio.Task[None] | None = None
        #: Answer PLI/FIR like an encoder (keyframes.py), at most once per ``keyframe_interval`` s; None:
        #: ignore them (a fixed 2 s GOP). Like an encoder's first frame, the first frame sent is a key frame.
        self.keyframes: KeyframeResponder | None = None
        self._fir_seq: int | None = None
        if keyframe_interval is not None and not audio_only:
            self.keyframes = KeyframeResponder([p for p in rec.packets if p.kind == VIDEO], keyframe_interval)
            self.keyframes.pending = True

    def start(self, until: float) -> None:
        if self.keyframes is not None:
            self.transport.on_rtcp = self.on_rtcp
        self._task = asyncio.get_running_loop().create_task(self._run(until))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def on_rtcp(self, plain: bytes, now: float) -> None:
        """Decrypted RTCP from the server: PLI/FIR for our video SSRC ask the "encoder" for a key frame."""
        kf = self.keyframes
        if kf is None:
            return
        n, self._fir_seq = keyframe_requests(plain, self.ssrcs[VIDEO], self._fir_seq)
        for _ in range(n):
            kf.request(now)

    async def _run(self, until: float) -> None:
        rec, log, tr = self.rec, self.log, self.transport
        by_kind = [[p for p in rec.packets if p.kind == k] for k in (AUDIO, VIDEO)]
        if self.audio_only:
            by_kind[VIDEO] = []
        kinds = [k for k in (AUDIO, VIDEO) if by_kind[k]]
        # Each kind starts at ``offset`` into the loop (a kind with nothing after it: the next loop).
        pos = [next((i for i, p in enumerate(ps) if p.offset >= self.offset), len(ps)) for ps in by_kind]
        cyc = [0, 0]
        for k in kinds:
            if pos[k] == len(by_kind[k]):
                pos[k], cyc[k] = 0, 1
        # Recording content skipped to answer key-frame requests (video only): subtracted from the
        # schedule and the RTP timestamps so that both stay continuous, as an encoder's would.
        shift = [0.0, 0.0]
        shift_ticks = [0, 0]
        kf = self.keyframes
        seq = [1000, 2000]
        ts_base = [1234, 5678]
        clock = {AUDIO: 48000, VIDEO: 90000}
        loop_s = rec.loop
        loop_ticks = {k: int(loop_s * c) for k, c in clock.items()}
        mid_ext = [{EXT_MID: self.mids[0].encode()}, {EXT_MID: self.mids[1].encode()}]
        pts = (AUDIO_PT, VIDEO_PT)
        t0 = time.monotonic() + 0.05 - self.offset
        pace = self.pacing_bps
        next_free = 0.0
        video = by_kind[VIDEO]
        while True:
            if kf is not None and kf.pending:
                jump = kf.next_index(pos[VIDEO])
                if jump is not None:
                    j, wrapped = jump
                    i, c = pos[VIDEO], cyc[VIDEO]
                    shift[VIDEO] += wrapped * loop_s + video[j].offset - video[i].offset
                    shift_ticks[VIDEO] += wrapped * loop_ticks[VIDEO] + video[j].ts_offset - video[i].ts_offset
                    pos[VIDEO], cyc[VIDEO] = j, c + wrapped
            # The earlier of the two kinds' next packets (audio first on a tie, as recorded). Video waits
            # for the pacer; audio does not: libwebrtc's pacer sends audio first (it is never queued behind
            # a paced key frame), and its bytes only push the video queue back.
            k = kinds[0]
            target = t0 + cyc[k] * loop_s + by_kind[k][pos[k]].offset - shift[k]
            if pace and k == VIDEO:
                target = max(target, next_free)
            for k2 in kinds[1:]:
                t2 = t0 + cyc[k2] * loop_s + by_kind[k2][pos[k2]].offset - shift[k2]
                if pace and k2 == VIDEO:
                    t2 = max(t2, next_free)
                if t2 < target:
                    k, target = k2, t2
            p = by_kind[k][pos[k]]
            cycle = cyc[k]
            if pace:
                next_free = max(next_free, target) + (len(p.payload) + 40) * 8 / pace
            now = time.monotonic()
            if now >= until:
                return
            if target > now:
                await asyncio.sleep(target - now)
                now = time.monotonic()
            else:
                self.late = max(self.late, now - target)
            payload, key = p.payload, p.key
            slog = self.stream_log
            if self.tag is not None and slog is not None:
                tagged = tag_payload(payload, self.tag, cycle, k)
                if len(tagged) != len(payload):
                    slog.lengthened += 1
                payload = tagged
                key = payload_key(k, payload)
            pkt = build_rtp_packet(
                pts[k],
                seq[k] & 0xFFFF,
                (ts_base[k] + cycle * loop_ticks[k] + p.ts_offset - shift_ticks[k]) & 0xFFFFFFFF,
                self.ssrcs[k],
                payload,
                marker=p.marker,
                extensions=mid_ext[k],
            )
            seq[k] += 1
            if slog is not None and self.tag is not None:
                slog.record(key, stream_id(self.tag, k), time.time())
            else:
                log.record(key, k, time.time())  # wall clock: subscribers use kernel receive stamps
            tr.send_srtp(pkt)
            if self.reference is not None:
                ref_sock, ref_addr = self.reference
                with contextlib.suppress(OSError):
                    ref_sock.sendto(pkt, ref_addr)  # type: ignore[attr-defined]
            self.sent += 1
            pos[k] += 1
            if pos[k] == len(by_kind[k]):
                pos[k] = 0
                cyc[k] += 1


class Sink:
    """What one subscriber received, checked against the send log."""

    __slots__ = (
        "by_key",
        "corrupted",
        "duplicated",
        "first_arrival",
        "first_index",
        "last_idx",
        "last_video",
        "lat",
        "max_gap",
        "other_pt",
        "pt_kind",
        "received",
        "reordered",
        "seen",
    )

    def __init__(self, log: SendLog, pt_kind: dict[int, int]) -> None:
        self.by_key = log.by_key
        self.pt_kind = pt_kind
        self.seen = bytearray(1 << 16)
        self.received = 0
        self.duplicated = 0
        self.reordered = 0
        self.corrupted = 0
        self.other_pt = 0
        self.first_arrival: float | None = None
        self.first_index = -1
        self.last_idx = [-1, -1]
        self.last_video = 0.0
        self.max_gap = 0.0
        self.lat = array("f")

    def open_window(self, now: float) -> None:
        self.lat = array("f")
        self.last_video = max(self.last_video, now)
        self.max_gap = 0.0

    def close_window(self, now: float) -> None:
        if self.first_arrival is not None:
            self.max_gap = max(self.max_gap, now - self.last_video)

    def on_rtp(self, plain: bytes, now: float) -> None:
        off, end = rtp_payload_bounds(plain)
        kind = self.pt_kind.get(plain[1] & 0x7F)
        if kind is None:
            self.other_pt += 1  # RTX, padding probes, FEC: not media we sent
            return
        if off >= end:
            self.corrupted += 1
            return
        entry = self.by_key.get(payload_key(kind, memoryview(plain)[off:end]))
        if entry is None:
            self.corrupted += 1  # decrypted fine but matches nothing any publisher sent
            return
        sent_at, idx = entry
        seen = self.seen
        if idx >= len(seen):
            seen.extend(bytes(max(1 << 16, idx + 1 - len(seen))))
        if seen[idx]:
            self.duplicated += 1
            return
        seen[idx] = 1
        if self.first_arrival is None:
            self.first_arrival = now
            self.first_index = idx
        if idx < self.last_idx[kind]:
            self.reordered += 1
        else:
            self.last_idx[kind] = idx
        self.received += 1
        self.lat.append(now - sent_at)
        if kind == VIDEO:
            gap = now - self.last_video
            if gap > self.max_gap:
                self.max_gap = gap
            self.last_video = now

    def received_between(self, i0: int, i1: int) -> int:
        i0 = max(i0, self.first_index)
        if i1 <= i0:
            return 0
        return self.seen[i0:i1].count(1)
