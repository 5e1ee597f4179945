"""GStreamer side of the codec interop tests; runs under the system python (python3-gi).

No sockets: buffers cross appsrc/appsink and this process's stdin/stdout as records
``kind(1) length(4, big endian) data``. Modes:

- ``pay CODEC FRAMES MTU``: encode FRAMES test frames, write each encoded frame ('F'), each
  RTP packet from GStreamer's payloader ('R') and, for G.711, the raw PCM ('P').
- ``depay CODEC``: read RTP packets ('R') from stdin, depayload and decode them with GStreamer,
  write one 'D' record per decoded buffer.
- ``encode CODEC FRAMES``: only the encoded frames ('F'), for codecs whose payloader is missing.
- ``decode CODEC``: read encoded frames ('F') from stdin and decode them (AV1 here, which has no
  GStreamer payloader in this distribution).

Exits 3 when an element is missing (the test skips with that reason), 1 on a pipeline error.
"""

from __future__ import annotations

import struct
import sys

import gi

gi.require_version("Gst", "1.0")
from gi.repository import Gst  # noqa: E402

VIDEO = "videotestsrc num-buffers={n} pattern=ball ! video/x-raw,width=320,height=240,framerate=30/1"
AUDIO48 = "audiotestsrc num-buffers={n} samplesperbuffer=960 ! audio/x-raw,rate=48000,channels=1"
AUDIO8 = "audiotestsrc num-buffers={n} samplesperbuffer=160 wave=ticks ! audio/x-raw,format=S16LE,rate=8000,channels=1"

# codec: (source, encoder + caps, payloader, RTP caps, depayloader ! decoder)
CODECS = {
    "h264": (
        VIDEO,
        "x264enc key-int-max=5 bframes=0 speed-preset=ultrafast tune=zerolatency aud=false"
        " ! video/x-h264,stream-format=byte-stream,alignment=au,profile=constrained-baseline",
        "rtph264pay aggregate-mode=zero-latency",
        "application/x-rtp,media=video,clock-rate=90000,encoding-name=H264,payload=96",
        "rtph264depay ! h264parse ! avdec_h264",
    ),
    "h265": (
        VIDEO,
        "x265enc key-int-max=5 speed-preset=ultrafast tune=zerolatency"
        " ! video/x-h265,stream-format=byte-stream,alignment=au",
        "rtph265pay aggregate-mode=zero-latency",
        "application/x-rtp,media=video,clock-rate=90000,encoding-name=H265,payload=96",
        "rtph265depay ! h265parse ! avdec_h265",
    ),
    "vp8": (
        VIDEO,
        "vp8enc deadline=1 keyframe-max-dist=5 lag-in-frames=0",
        "rtpvp8pay picture-id-mode=15-bit",
        "application/x-rtp,media=video,clock-rate=90000,encoding-name=VP8,payload=96",
        "rtpvp8depay ! vp8dec",
    ),
    "vp9": (
        VIDEO,
        "vp9enc deadline=1 keyframe-max-dist=5 lag-in-frames=0",
        "rtpvp9pay picture-id-mode=15-bit",
        "application/x-rtp,media=video,clock-rate=90000,encoding-name=VP9,payload=96",
        "rtpvp9depay ! vp9dec",
    ),
    "av1": (
        VIDEO,
        "av1enc usage-profile=realtime cpu-used=10 keyframe-max-dist=5 lag-in-frames=0"
        " ! video/x-av1,stream-format=obu-stream,alignment=tu",
        "rtpav1pay",
        "video/x-av1,stream-format=obu-stream,alignment=tu",
        "av1parse ! av1dec",
    ),
    "opus": (
        AUDIO48,
        "opusenc frame-size=20",
        "rtpopuspay",
        "application/x-rtp,media=audio,clock-rate=48000,encoding-name=OPUS,payload=111",
        "rtpopusdepay ! opusdec",
    ),
    "pcmu": (
        AUDIO8,
        "mulawenc",
        "rtppcmupay",
        "application/x-rtp,media=audio,clock-rate=8000,encoding-name=PCMU,payload=0",
        "rtppcmudepay ! mulawdec",
    ),
    "pcma": (
        AUDIO8,
        "alawenc",
        "rtppcmapay",
        "application/x-rtp,media=audio,clock-rate=8000,encoding-name=PCMA,payload=8",
        "rtppcmadepay ! alawdec",
    ),
}


def write(kind: bytes, data: bytes) -> None:
    sys.stdout.buffer.write(kind + struct.pack("!I", len(data)) + data)


def read_records() -> list[tuple[bytes, bytes]]:
    raw = sys.stdin.buffer.read()
    out = []
    pos = 0
    while pos < len(raw):
        kind, size = raw[pos : pos + 1], struct.unpack_from("!I", raw, pos + 1)[0]
        out.append((kind, raw[pos + 5 : pos + 5 + size]))
        pos += 5 + size
    return out


def need(description: str) -> None:
    for part in description.split("!"):
        name = part.split()[0]
        if "/" not in name and Gst.ElementFactory.find(name) is None:
            print(f"GStreamer element {name} is not installed", file=sys.stderr)
            sys.exit(3)


def drain(sink: Gst.Element, kind: bytes) -> None:
    while True:
        sample = sink.emit("pull-sample")
        if sample is None:
            return
        buf = sample.get_buffer()
        write(kind, buf.extract_dup(0, buf.get_size()))


def finish(pipeline: Gst.Pipeline) -> None:
    msg = pipeline.get_bus().timed_pop_filtered(10 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
    pipeline.set_state(Gst.State.NULL)
    if msg is None or msg.type == Gst.MessageType.ERROR:
        detail = msg.parse_error() if msg is not None else "timeout"
        print(f"pipeline failed: {detail}", file=sys.stderr)
        sys.exit(1)


def pay(codec: str, frames: int, mtu: int) -> None:
    source, encoder, payloader, _, _ = CODECS[codec]
    if mtu:
        need(f"{encoder} ! {payloader}")
        rtp = f"t. ! queue ! {payloader} mtu={mtu} ! appsink name=rtp sync=false"
    else:
        need(encoder)
        rtp = ""
    raw = "t0. ! queue ! appsink name=pcm sync=false " if codec in ("pcmu", "pcma") else ""
    desc = (
        f"{source.format(n=frames)} ! tee name=t0 {raw}t0. ! queue ! {encoder} ! tee name=t "
        f"t. ! queue ! appsink name=frames sync=false {rtp}"
    )
    pipeline = Gst.parse_launch(desc)
    pipeline.set_state(Gst.State.PLAYING)
    drain(pipeline.get_by_name("frames"), b"F")
    if rtp:
        drain(pipeline.get_by_name("rtp"), b"R")
    if raw:
        drain(pipeline.get_by_name("pcm"), b"P")
    finish(pipeline)


def depay(codec: str, mode: str) -> None:
    _, _, _, caps_str, decoder = CODECS[codec]
    need(decoder)
    wanted = b"R" if mode == "depay" else b"F"
    pipeline = Gst.parse_launch(
        f'appsrc name=src format=time do-timestamp=true caps="{caps_str}" ! {decoder} ! appsink name=out sync=false'
    )
    src, out = pipeline.get_by_name("src"), pipeline.get_by_name("out")
    pipeline.set_state(Gst.State.PLAYING)
    for kind, data in read_records():
        if kind == wanted:
            src.emit("push-buffer", Gst.Buffer.new_wrapped(data))
    src.emit("end-of-stream")
    drain(out, b"D")
    finish(pipeline)


def main() -> None:
    Gst.init(None)
    mode, codec = sys.argv[1], sys.argv[2]
    if mode == "pay":
        pay(codec, int(sys.argv[3]), int(sys.argv[4]))
    elif mode == "encode":
        pay(codec, int(sys.argv[3]), 0)
    else:
        depay(codec, mode)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
