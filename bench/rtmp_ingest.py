"""CPU cost of the sans-IO RTMP ingest core (transports/rtmp) for one publisher.

Run with ``python bench/rtmp_ingest.py``. Builds 10 s of a 1080p30 6 Mbit/s H.264 + 128 kbit/s
AAC publish as an encoder sends it (FLV tags, one key frame every 2 s) at chunk size 4096 (OBS)
and 128 (the protocol default), then feeds it in 64 KiB reads to a ServerSession (handshake,
chunk reassembly, AMF, events) and parses every tag with transports/rtmp/flv. Prints the best-of-N
CPU seconds and the share of one core real time costs. AAC->Opus and RTP packetizing are not
included (later layers).
"""

from __future__ import annotations

import time

from trackmesh.transports.rtmp import amf0, flv
from trackmesh.transports.rtmp import messages as m
from trackmesh.transports.rtmp.chunk import ChunkEncoder
from trackmesh.transports.rtmp.events import AudioData, VideoData
from trackmesh.transports.rtmp.handshake import make_c1
from trackmesh.transports.rtmp.session import ServerSession

SECONDS = 10
FPS = 30
VIDEO_BPS = 6_000_000
AUDIO_FRAME = 370  # 128 kbit/s AAC at 44.1 kHz: 1024 samples per frame
READ = 65536
REPEATS = 5


def _command(enc: ChunkEncoder, name: str, tid: float, *args: amf0.AmfValue, stream_id: int = 0) -> bytes:
    return enc.encode(3 if stream_id == 0 else 8, 0, m.COMMAND_AMF0, stream_id, amf0.encode_all(name, tid, *args))


def publish_bytes(chunk_size: int) -> tuple[bytes, bytes]:
    """(everything up to publish, the media): the media part is what is timed."""
    enc = ChunkEncoder()
    c1 = make_c1(bytes(1528), digest=False)
    setup = bytearray(b"\x03" + c1 + bytes(1536))  # C0 C1 C2 (C2 is not checked)
    setup += enc.encode(2, 0, m.SET_CHUNK_SIZE, 0, m.set_chunk_size(chunk_size))
    enc.set_chunk_size(chunk_size)
    setup += _command(enc, "connect", 1, {"app": "live", "tcUrl": "rtmp://127.0.0.1/live"})
    setup += _command(enc, "createStream", 2, None)
    setup += _command(enc, "publish", 3, None, "key", "live", stream_id=1)
    media = bytearray()
    media += enc.encode(6, 0, m.VIDEO, 1, b"\x17\x00\x00\x00\x00" + bytes(40))
    media += enc.encode(4, 0, m.AUDIO, 1, b"\xaf\x00\x12\x10")
    frame_bytes = VIDEO_BPS // 8 // FPS
    audio_t = 0.0
    for i in range(SECONDS * FPS):
        t = i * 1000 // FPS
        key = i % (2 * FPS) == 0
        size = frame_bytes * 4 if key else frame_bytes * (2 * FPS - 4) // (2 * FPS - 1)
        media += enc.encode(6, t, m.VIDEO, 1, (b"\x17" if key else b"\x27") + b"\x01\x00\x00\x00" + bytes(size))
        while audio_t <= t:
            media += enc.encode(4, int(audio_t), m.AUDIO, 1, b"\xaf\x01" + bytes(AUDIO_FRAME))
            audio_t += 1024 / 44.1
    return bytes(setup), bytes(media)


def run_once(setup: bytes, media: bytes) -> tuple[float, int]:
    session = ServerSession(0.0)
    session.receive_data(setup, 0.0)
    session.events()
    session.accept_connect()
    session.events()
    session.accept_publish(1)
    frames = 0
    start = time.process_time()
    for pos in range(0, len(media), READ):
        session.receive_data(media[pos : pos + READ], 0.0)
        for event in session.events():
            if isinstance(event, VideoData):
                frames += len(flv.parse_video(event.payload))
            elif isinstance(event, AudioData):
                flv.parse_audio(event.payload)
        session.data_to_send()
    cpu = time.process_time() - start
    assert not session.closed
    return cpu, frames


def main() -> None:
    for chunk_size in (4096, 128):
        setup, media = publish_bytes(chunk_size)
        best = float("inf")
        frames = 0
        for _ in range(REPEATS):
            cpu, frames = run_once(setup, media)
            best = min(best, cpu)
        print(
            f"chunk size {chunk_size}: {len(media) / 1e6:.1f} MB, {frames} video frames, {SECONDS} s of media: "
            f"best CPU {best * 1000:.0f} ms = {best / SECONDS * 100:.2f} % of one core"
        )


if __name__ == "__main__":
    main()
