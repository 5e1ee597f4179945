"""The pre-encoded media the load generator replays: VP8 + Opus RTP payloads with send offsets.

The recording is made once with GStreamer (``gst-launch-1.0``: videotestsrc zone-plate ->
vp8enc 1 Mbps CBR, 30 fps, 640x360, key frame every 60 frames -> rtpvp8pay mtu 1200; pink
noise -> opusenc 32 kbps 20 ms -> rtpopuspay) and stored in a compact file of our own:

    b"TMREC1\\n" then records of  kind:u8 (0 audio, 1 video)  marker:u8  offset_us:u32
                                   rtp_ts_offset:u32  length:u16  payload

``offset_us`` is the send time relative to the start of the loop (from the RTP timestamp), so
replaying at wall-clock pace needs no encoder. Nothing here decodes media.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "LOOP_SECONDS", "Packet", "Recording", "default_path", "load", "make", "payload_key", "vp8_descriptor_length",
]

MAGIC = b"TMREC1\n"
_REC = struct.Struct("!BBIIH")
LOOP_SECONDS = 10.0
AUDIO, VIDEO = 0, 1

_VIDEO_PIPE = (
    "videotestsrc num-buffers={frames} pattern=zone-plate kx2=20 ky2=20 kt=1 kxt=3 "
    "! video/x-raw,width=640,height=360,framerate=30/1 "
    "! vp8enc target-bitrate=1000000 end-usage=cbr keyframe-max-dist=60 deadline=1 cpu-used=4 threads=1 "
    "! rtpvp8pay mtu=1200 pt=96 picture-id-mode=15-bit ! rtpstreampay ! filesink location={out}"
)
_AUDIO_PIPE = (
    "audiotestsrc num-buffers={buffers} samplesperbuffer=960 wave=pink-noise volume=0.3 "
    "! audio/x-raw,rate=48000,channels=1,format=S16LE ! opusenc bitrate=32000 bitrate-type=cbr frame-size=20 "
    "! rtpopuspay pt=111 mtu=1200 ! rtpstreampay ! filesink location={out}"
)


@dataclass(frozen=True, slots=True)
class Packet:
    kind: int  # AUDIO or VIDEO
    marker: bool
    offset: float  # seconds from the loop start
    ts_offset: int  # RTP timestamp offset from the loop start (90 kHz video, 48 kHz audio)
    payload: bytes
    key: bytes  # payload_key(kind, payload)
    keyframe: bool


@dataclass(frozen=True, slots=True)
class Recording:
    packets: tuple[Packet, ...]  # sorted by offset
    loop: float

    def rate(self, kind: int) -> float:
        return sum(1 for p in self.packets if p.kind == kind) / self.loop

    def bitrate(self, kind: int) -> float:
        return sum(len(p.payload) + 12 for p in self.packets if p.kind == kind) * 8 / self.loop


def vp8_descriptor_length(payload: bytes | memoryview) -> int:
    """Length of the VP8 payload descriptor (RFC 7741 s4.2); 0 if it is truncated."""
    n = len(payload)
    if n < 1:
        return 0
    off = 1
    if payload[0] & 0x80:
        if n < 2:
            return 0
        b1 = payload[1]
        off = 2
        if b1 & 0x80:
            if n <= off:
                return 0
            off += 2 if payload[off] & 0x80 else 1
        if b1 & 0x40:
            off += 1
        if b1 & 0x30:
            off += 1
    return off if off <= n else 0


def payload_key(kind: int, payload: bytes | memoryview) -> bytes:
    """What subscribers and publisher match on: a hash of the payload after the VP8 descriptor.

    SFUs may rewrite the descriptor (picture id, TL0PICIDX), SSRC and sequence numbers, never
    the coded bytes; Opus payloads are hashed whole. 8 bytes of BLAKE2b: collisions among the
    ~1.5 k packets of a loop are negligible (and checked by :func:`load`).
    """
    if kind == VIDEO:
        payload = payload[vp8_descriptor_length(payload) :]
    return hashlib.blake2b(payload, digest_size=8, person=b"tm" if kind == VIDEO else b"ta").digest()


def _is_keyframe(payload: bytes) -> bool:
    d = vp8_descriptor_length(payload)
    return bool(d and payload[0] & 0x10 and (payload[0] & 0x07) == 0 and len(payload) > d and not payload[d] & 1)


def _read_stream(path: Path) -> list[bytes]:
    data = path.read_bytes()
    out, i = [], 0
    while i + 2 <= len(data):
        (n,) = struct.unpack_from("!H", data, i)
        out.append(data[i + 2 : i + 2 + n])
        i += 2 + n
    return out


def make(out: Path, loop: float = LOOP_SECONDS) -> Path:
    """Encode the recording with GStreamer (about 2 s of CPU) and write it to ``out``."""
    gst = shutil.which("gst-launch-1.0")
    if gst is None:
        raise RuntimeError("gst-launch-1.0 not found: apt-get install gstreamer1.0-tools gstreamer1.0-plugins-good")
    records: list[tuple[int, int, int, int, bytes]] = []
    with tempfile.TemporaryDirectory() as tmp:
        vfile, afile = Path(tmp) / "v", Path(tmp) / "a"
        frames = int(loop * 30)
        pipes = (_VIDEO_PIPE.format(frames=frames, out=vfile), _AUDIO_PIPE.format(buffers=int(loop * 100), out=afile))
        for pipe in pipes:
            subprocess.run([gst, "-q", *pipe.split()], check=True, timeout=120)
        for kind, path, clock in ((VIDEO, vfile, 90000), (AUDIO, afile, 48000)):
            pkts = _read_stream(path)
            ts0 = struct.unpack_from("!I", pkts[0], 4)[0]
            for p in pkts:
                ts_off = (struct.unpack_from("!I", p, 4)[0] - ts0) & 0xFFFFFFFF
                if ts_off >= loop * clock:
                    continue
                cc = p[0] & 0x0F
                records.append((kind, p[1] >> 7, int(ts_off * 1_000_000 / clock), ts_off, p[12 + 4 * cc :]))
    records.sort(key=lambda r: (r[2], r[0]))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_suffix(".tmp")
    with tmp_out.open("wb") as f:
        f.write(MAGIC)
        for kind, marker, off_us, ts_off, payload in records:
            f.write(_REC.pack(kind, marker, off_us, ts_off, len(payload)) + payload)
    os.replace(tmp_out, out)
    return out


def default_path() -> Path:
    """bench/data/recording.tmrec in a source checkout, else a per-user cache file."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "bench" / "data" / "recording.tmrec"
        if candidate.exists() or (parent / "pyproject.toml").exists():
            return candidate
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "trackmesh" / "recording.tmrec"


def load(path: Path | None = None) -> Recording:
    """Read the recording (making it first if it does not exist yet)."""
    path = path or default_path()
    if not path.exists():
        make(path)
    data = path.read_bytes()
    if not data.startswith(MAGIC):
        raise ValueError(f"{path}: not a trackmesh recording")
    i = len(MAGIC)
    packets = []
    while i < len(data):
        kind, marker, off_us, ts_off, n = _REC.unpack_from(data, i)
        i += _REC.size
        payload = data[i : i + n]
        i += n
        packets.append(
            Packet(kind, bool(marker), off_us / 1e6, ts_off, payload, payload_key(kind, payload),
                   kind == VIDEO and _is_keyframe(payload))
        )
    keys = {p.key for p in packets}
    if len(keys) != len(packets):
        raise ValueError(f"{path}: {len(packets) - len(keys)} payloads repeat within a loop; hashes would be ambiguous")
    return Recording(tuple(packets), LOOP_SECONDS)


if __name__ == "__main__":
    import sys

    target = Path(sys.argv[1]) if len(sys.argv) > 1 else default_path()
    make(target)
    rec = load(target)
    print(f"{target}: {len(rec.packets)} packets, "
          f"video {rec.rate(VIDEO):.0f} pkt/s {rec.bitrate(VIDEO) / 1e3:.0f} kbps, "
          f"audio {rec.rate(AUDIO):.0f} pkt/s {rec.bitrate(AUDIO) / 1e3:.0f} kbps, "
          f"{sum(p.keyframe for p in rec.packets)} key-frame packets")
