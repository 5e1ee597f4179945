"""CPU and memory of recording one 1 Mbit/s VP8 video track and its Opus audio (no transcode).

Run with ``python bench/recording_track.py``. Builds 20 s of a synthetic 30 fps VP8 stream at
1 Mbit/s (a key frame every 2 s, 5x the size of a delta frame; frames carry valid VP8 frame tags,
so they pass the recorder's checks, and random bytes the muxer does not look into) and 20 ms Opus
packets at 32 kbit/s, packetized by our packetizers at MTU 1200. Then, best of 3:

- **worker side**: what a recorded packet costs the media worker: the tap's one queue append
  (``RecordingWriter.packet``), per packet;
- **recording thread**: the whole recording (reorder, depacketize, checks, WebM muxing through
  PyAV, file writes to a temporary directory) of the 20 s, as CPU seconds of the process (every
  thread) and as a share of one core in real time;
- **memory**: the Python heap's peak while recording (tracemalloc) and the process RSS growth.

The issue's target: under 2 % of one core per recorded 1 Mbit/s video track.
"""

from __future__ import annotations

import os
import resource
import tempfile
import time
import tracemalloc
from pathlib import Path

from trackmesh.codecs.registry import packetizer
from trackmesh.core.model import MediaCodec, MediaPacket
from trackmesh.recording.writer import RecordingWriter, TrackMeta

SECONDS = 20
FPS = 30
VIDEO_BPS = 1_000_000
OPUS_BYTES = 80  # 32 kbit/s at 20 ms
REPEATS = 3


def vp8_frame(size: int, key: bool) -> bytes:
    """A VP8 frame of ``size`` bytes with a valid frame tag (RFC 6386 s9.1); key frames also with
    the start code and 640x480."""
    header = 10 if key else 3
    first = min(size - header, 0x7FFFF) // 4
    tag = (0 if key else 1) | (1 << 4) | (first << 5)  # show_frame, first partition size
    out = bytearray(tag.to_bytes(3, "little"))
    if key:
        out += b"\x9d\x01\x2a" + (640).to_bytes(2, "little") + (480).to_bytes(2, "little")
    out += os.urandom(size - len(out))
    return bytes(out)


def build() -> tuple[list[MediaPacket], list[MediaPacket]]:
    per_frame = VIDEO_BPS // 8 // FPS
    delta = per_frame * FPS * 2 // (FPS * 2 + 4)  # so that one 5x key frame per 2 s keeps the rate
    video: list[MediaPacket] = []
    p = packetizer("vp8")
    seq = 0
    for i in range(SECONDS * FPS):
        key = i % (2 * FPS) == 0
        payloads = p.packetize(vp8_frame(delta * 5 if key else delta, key), 1200)
        for j, payload in enumerate(payloads):
            video.append(
                MediaPacket(
                    MediaCodec.VP8, 96, seq & 0xFFFF, i * 3000, j == len(payloads) - 1, key, payload, arrival=i / FPS
                )
            )
            seq += 1
    audio = [
        MediaPacket(
            MediaCodec.OPUS,
            111,
            i & 0xFFFF,
            i * 960,
            True,
            True,
            b"\x78" + os.urandom(OPUS_BYTES - 1),
            arrival=i * 0.02,
        )
        for i in range(SECONDS * 50)
    ]
    return video, audio


def run_once(video: list[MediaPacket], audio: list[MediaPacket], trace: bool) -> tuple[float, float, int, int]:
    """(worker-side seconds per packet, recording CPU seconds, Python heap peak, RSS growth in KiB);
    with ``trace`` the heap is traced (which slows everything: its times are not reported)."""
    with tempfile.TemporaryDirectory() as tmp:
        counters: dict[str, int] = {}
        writer = RecordingWriter(Path(tmp), 3600.0, counters, wall_offset=time.time())
        writer.open_track("v", TrackMeta("", "bench", "s", "p", "video", True))
        writer.open_track("a", TrackMeta("", "bench", "s", "p", "audio", False))
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if trace:
            tracemalloc.start()
        cpu0 = time.process_time()
        append0 = time.perf_counter()
        for pkt in video:
            writer.packet("v", pkt)
        for pkt in audio:
            writer.packet("a", pkt)
        append = (time.perf_counter() - append0) / (len(video) + len(audio))
        writer.close_track("v", "done")
        writer.close_track("a", "done")
        writer.stop(60.0)
        cpu = time.process_time() - cpu0
        peak = 0
        if trace:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0
        assert counters["recording_failures"] == 0 and counters["recording_files"] == 2, counters
        # Every frame was written (payload bytes less the VP8 payload descriptors).
        sent = sum(len(p.payload) for p in video) + sum(len(p.payload) for p in audio)
        assert 0.99 * sent < counters["recording_bytes"] <= sent, (counters, sent)
        return append, cpu, peak, rss


def main() -> None:
    video, audio = build()
    size = sum(len(p.payload) for p in video)
    print(f"{SECONDS} s: VP8 {len(video)} packets ({size * 8 / SECONDS / 1e6:.2f} Mbit/s), Opus {len(audio)} packets")
    traced = run_once(video, audio, trace=True)
    runs = [run_once(video, audio, trace=False) for _ in range(REPEATS)]
    append = min(r[0] for r in runs)
    cpu = min(r[1] for r in runs)
    peak, rss = traced[2], traced[3]
    print(f"worker side (queue append): {append * 1e6:.2f} us per packet")
    print(f"recording thread: {cpu:.3f} CPU s for {SECONDS} s of media = {100 * cpu / SECONDS:.2f} % of one core")
    print(f"memory: Python heap peak {peak / 1024:.0f} KiB (tracemalloc; the whole 20 s was queued at once), "
          f"RSS growth of the first run {rss} KiB (PyAV/FFmpeg state included)")  # fmt: skip


if __name__ == "__main__":
    main()
