#!/usr/bin/python3
"""WHIP publisher / WHEP player built on GStreamer 1.22 ``webrtcbin``, for end-to-end tests.

Run it with the SYSTEM python (``/usr/bin/python3``, which has python3-gi and the Gst typelibs),
never with the project venv. Always run it inside a private network namespace
(``scripts/in-netns.sh``): libnice also does UPnP/SSDP multicast discovery, which we cannot disable.

Modes (all print exactly one JSON summary line on stdout; exit 0 on success, non-zero with the
reason on stderr on failure):

  whip URL [--token T] [--codec vp8|h264] [--duration S]
      Publish videotestsrc + audiotestsrc (VP8+Opus or H264+Opus). Non-trickle: create the offer,
      wait for ICE gathering to complete, POST application/sdp (Bearer token), expect 201 + answer,
      stream for S seconds, then DELETE the Location resource.
      Summary: {"mode": "whip", "status": 201, "location": ..., "video_buffers": n, "audio_buffers": n,
                "ice_state": ..., "connection_state": ...}

  whep URL [--token T] [--codec vp8|h264|h265|any] [--duration S] [--frames N] [--min-frames N]
      Two recvonly transceivers (video, audio); POST the offer, set the answer, decode everything with
      decodebin into fakesinks. Counts decoded video frames and audio buffers.
      Summary: {"mode": "whep", "frames": n, "width": w, "height": h, "audio_buffers": n,
                "rtp": {"video": {"received": n, "expected": n, "first_s": t, "last_s": t}, "audio": {...}}, ...}
      ("rtp" counts the RTP packets webrtcbin hands out, by their sequence numbers: ``expected`` is
      the span from the first to the highest, so a packet the server never forwarded is missing.)
      Exits 1 if fewer than --min-frames (default 1) video frames were decoded.

  loopback [--codec vp8|h264] [--duration S] [--min-frames N]
      No server: a publishing webrtcbin and an answering webrtcbin in one pipeline, signalled
      in-process (same offer/answer and candidate handling as above). Self-test of this tool.
      Summary has the "whep" shape plus "video_buffers"/"audio_buffers" sent.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstSdp", "1.0")
gi.require_version("GstWebRTC", "1.0")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC  # noqa: E402

LOOPBACK = "127.0.0.1"

VIDEO_CAPS = {
    "vp8": "application/x-rtp,media=video,encoding-name=VP8,payload=96,clock-rate=90000",
    "h264": (
        "application/x-rtp,media=video,encoding-name=H264,payload=102,clock-rate=90000,"
        "packetization-mode=(string)1,profile-level-id=(string)42e01f,level-asymmetry-allowed=(string)1"
    ),
    # RFC 7798 (whep only): rtph265depay + avdec_h265 decode it; browsers mostly cannot.
    "h265": "application/x-rtp,media=video,encoding-name=H265,payload=49,clock-rate=90000,profile-id=(string)1",
}
# The publisher's capsfilter must not pin profile-level-id: rtph264pay derives it from the SPS
# (x264enc constrained-baseline at 640x480 gives 42c01e) and a mismatch is "not-negotiated".
PUBLISH_VIDEO_CAPS = {
    "vp8": VIDEO_CAPS["vp8"],
    "h264": "application/x-rtp,media=video,encoding-name=H264,payload=102,clock-rate=90000",
}
AUDIO_CAPS = "application/x-rtp,media=audio,encoding-name=OPUS,payload=111,clock-rate=48000,encoding-params=(string)2"


def publisher_description(codec: str, width: int, height: int, fps: int, name: str, pattern: str = "ball") -> str:
    if codec == "vp8":
        venc = (
            "vp8enc deadline=1 cpu-used=8 target-bitrate=1500000 keyframe-max-dist=60 error-resilient=partitions"
            " ! rtpvp8pay pt=96 mtu=1200 picture-id-mode=15-bit"
        )
    elif codec == "h264":
        venc = (
            "x264enc tune=zerolatency speed-preset=ultrafast bitrate=1500 key-int-max=60"
            " ! video/x-h264,profile=constrained-baseline ! h264parse"
            " ! rtph264pay pt=102 mtu=1200 config-interval=-1 aggregate-mode=zero-latency"
        )
    else:
        raise ValueError(f"unknown codec {codec!r}")
    return (
        f"webrtcbin name={name} bundle-policy=max-bundle "
        f"videotestsrc is-live=true pattern={pattern} ! video/x-raw,width={width},height={height},framerate={fps}/1"
        f" ! videoconvert ! queue ! {venc} ! identity name={name}_vcount silent=true"
        f" ! {PUBLISH_VIDEO_CAPS[codec]} ! {name}. "
        "audiotestsrc is-live=true wave=sine freq=440 ! audioconvert ! audioresample ! queue"
        f" ! opusenc ! rtpopuspay pt=111 ! identity name={name}_acount silent=true ! {AUDIO_CAPS} ! {name}. "
    )


def filter_candidates(sdp: str) -> str:
    """Keep only a=candidate lines whose connection address is 127.0.0.1."""
    out = []
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            parts = line.split()
            if len(parts) < 5 or parts[4] != LOOPBACK:
                continue
        out.append(line)
    return "\r\n".join(out) + "\r\n"


def inject_candidates(sdp: str, candidates: dict[int, list[str]]) -> str:
    """Add gathered candidates into their m-sections if webrtcbin did not put them in the SDP."""
    if "a=candidate:" in sdp or not candidates:
        return sdp
    out: list[str] = []
    mline = -1

    def flush() -> None:
        if mline >= 0:
            out.extend("a=" + c for c in candidates.get(mline, []))

    for line in sdp.splitlines():
        if line.startswith("m="):
            flush()
            mline += 1
        if line:
            out.append(line)
    flush()
    return "\r\n".join(out) + "\r\n"


class Failure(Exception):
    pass


class RtpCount:
    """RTP packets of one stream as received: unique sequence numbers (extended, RFC 3550 A.1)."""

    def __init__(self, now: float) -> None:
        self.seen: set[int] = set()
        self.highest = -1
        self.lowest = -1
        self.first_s = now
        self.last_s = now

    def add(self, seq: int, now: float) -> None:
        if self.highest < 0:
            ext = seq + (1 << 16)
            self.lowest = ext
        else:
            delta = (seq - self.highest) & 0xFFFF
            ext = self.highest + (delta - (1 << 16) if delta >= 0x8000 else delta)
        self.highest = max(self.highest, ext)
        self.lowest = min(self.lowest, ext)
        self.seen.add(ext)
        self.last_s = now

    def summary(self) -> dict[str, int | float]:
        return {
            "received": len(self.seen),
            "expected": self.highest - self.lowest + 1 if self.highest >= 0 else 0,
            "first_s": round(self.first_s, 3),
            "last_s": round(self.last_s, 3),
        }


class Peer:
    """One webrtcbin plus the non-trickle offer/answer plumbing around it."""

    def __init__(self, app: App, webrtc: Gst.Element) -> None:
        self.app = app
        self.webrtc = webrtc
        # Keep a Python reference to the ICE agent for the whole run: emitting on a temporary
        # object crashed (refcount bug in 1.22 bindings).
        self.ice_agent = webrtc.get_property("ice-agent")
        # libnice skips loopback interfaces; without this, nothing is gathered in a lo-only netns.
        self.ice_agent.emit("add-local-ip-address", LOOPBACK)
        self.candidates: dict[int, list[str]] = {}
        self._gathered_cbs: list[Callable[[], None]] = []
        self._gathered = False
        webrtc.connect("on-ice-candidate", self._on_candidate)
        webrtc.connect("notify::ice-gathering-state", self._on_gathering)
        webrtc.connect("notify::ice-connection-state", self._on_ice_state)

    # -- state ---------------------------------------------------------------------------------
    def ice_state(self) -> str:
        state: str = self.webrtc.get_property("ice-connection-state").value_nick
        return state

    def connection_state(self) -> str:
        state: str = self.webrtc.get_property("connection-state").value_nick
        return state

    def _on_ice_state(self, *_a: object) -> None:
        state = self.ice_state()
        self.app.log(f"{self.webrtc.get_name()}: ice-connection-state {state}")
        if state == "failed":
            self.app.fail(f"{self.webrtc.get_name()}: ICE failed")

    def _on_candidate(self, _wb: Gst.Element, mline: int, candidate: str) -> None:
        self.candidates.setdefault(mline, []).append(candidate)

    def _on_gathering(self, *_a: object) -> None:
        if self.webrtc.get_property("ice-gathering-state") == GstWebRTC.WebRTCICEGatheringState.COMPLETE:
            GLib.idle_add(self._fire_gathered)

    def _fire_gathered(self) -> bool:
        if not self._gathered:
            self._gathered = True
            cbs, self._gathered_cbs = self._gathered_cbs, []
            for cb in cbs:
                cb()
        return False

    def when_gathered(self, cb: Callable[[], None], timeout_s: float = 5.0) -> None:
        if self._gathered:

            def fire() -> bool:
                cb()
                return False  # run once

            GLib.idle_add(fire)
            return
        self._gathered_cbs.append(cb)

        def on_timeout() -> bool:
            if not self._gathered:
                if not any(c for c in self.candidates.values()):
                    self.app.fail(f"{self.webrtc.get_name()}: ICE gathering produced no candidate")
                    return False
                self.app.log("ICE gathering did not report COMPLETE; using the candidates gathered so far")
                self._fire_gathered()
            return False

        GLib.timeout_add(int(timeout_s * 1000), on_timeout)

    def local_sdp(self) -> str:
        desc = self.webrtc.get_property("local-description")
        sdp = inject_candidates(desc.sdp.as_text(), self.candidates)
        sdp = filter_candidates(sdp)
        if "a=candidate:" not in sdp:
            raise Failure("no 127.0.0.1 candidate in the local description")
        return sdp

    # -- offer/answer --------------------------------------------------------------------------
    def create_offer(self, cb: Callable[[], None]) -> None:
        def done(promise: Gst.Promise, _data: object) -> None:
            reply = promise.get_reply()
            offer = reply.get_value("offer") if reply is not None else None
            if offer is None:
                GLib.idle_add(self.app.fail, f"create-offer failed: {reply.to_string() if reply else None}")
                return
            self.webrtc.emit("set-local-description", offer, Gst.Promise.new())
            self.when_gathered(cb)

        self.webrtc.emit("create-offer", None, Gst.Promise.new_with_change_func(done, None))

    def create_answer(self, cb: Callable[[], None]) -> None:
        def done(promise: Gst.Promise, _data: object) -> None:
            reply = promise.get_reply()
            answer = reply.get_value("answer") if reply is not None else None
            if answer is None:
                GLib.idle_add(self.app.fail, f"create-answer failed: {reply.to_string() if reply else None}")
                return
            self.webrtc.emit("set-local-description", answer, Gst.Promise.new())
            self.when_gathered(cb)

        self.webrtc.emit("create-answer", None, Gst.Promise.new_with_change_func(done, None))

    def set_remote(self, sdp_text: str, kind: GstWebRTC.WebRTCSDPType, then: Callable[[], None] | None = None) -> None:
        res, msg = GstSdp.SDPMessage.new_from_text(sdp_text)
        if res != GstSdp.SDPResult.OK:
            raise Failure(f"could not parse remote SDP ({res})")
        desc = GstWebRTC.WebRTCSessionDescription.new(kind, msg)

        def done(promise: Gst.Promise, _data: object) -> None:
            reply = promise.get_reply()
            if reply is not None and reply.has_field("error"):
                GLib.idle_add(self.app.fail, f"set-remote-description failed: {reply.get_value('error')}")
                return
            if then is not None:
                GLib.idle_add(lambda: (then(), False)[1])

        self.webrtc.emit("set-remote-description", desc, Gst.Promise.new_with_change_func(done, None))


class App:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.loop = GLib.MainLoop()
        self.error: str | None = None
        # Wall clock at ``started``: other processes' times (a publisher's end) compare with ours.
        self.summary: dict[str, object] = {"mode": args.mode, "t0_unix": round(time.time(), 3)}
        self.pipeline: Gst.Pipeline | None = None
        self.location: str | None = None
        self.frames = 0
        self.width = 0
        self.height = 0
        self.audio_buffers = 0
        self.video_sent = 0
        self.audio_sent = 0
        self.first_frame_at: float | None = None
        self.rtp: dict[str, RtpCount] = {}
        self.windows: dict[str, list[float]] = {}  # counter -> [first, last] seconds since start
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._stopping = False

    # -- utilities -----------------------------------------------------------------------------
    def log(self, msg: str) -> None:
        if self.args.verbose:
            print(f"[gst-client {time.monotonic() - self.started:6.2f}s] {msg}", file=sys.stderr, flush=True)

    def fail(self, reason: str) -> bool:
        if self.error is None:
            self.error = reason
            self.log(f"FAIL: {reason}")
        self.loop.quit()
        return False

    def http(self, method: str, url: str, body: str | None = None) -> tuple[int, dict[str, str], str]:
        headers: dict[str, str] = {}
        if body is not None:
            headers["Content-Type"] = "application/sdp"
        if self.args.token:
            headers["Authorization"] = f"Bearer {self.args.token}"
        req = urllib.request.Request(
            url, data=body.encode() if body is not None else None, method=method, headers=headers
        )
        # Never use an environment proxy: everything here is 127.0.0.1.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(req, timeout=self.args.http_timeout) as resp:
                return resp.status, dict(resp.headers.items()), resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers.items()), exc.read().decode(errors="replace")

    def on_bus(self, _bus: Gst.Bus, msg: Gst.Message) -> None:
        if msg.type == Gst.MessageType.ERROR:
            err, dbg = msg.parse_error()
            self.fail(f"pipeline error from {msg.src.get_name()}: {err.message} ({dbg})")
        elif msg.type == Gst.MessageType.EOS:
            self.loop.quit()

    def count_probe(self, pad: Gst.Pad, attr: str) -> None:
        def probe(_pad: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
            now = time.monotonic() - self.started
            with self._lock:
                setattr(self, attr, getattr(self, attr) + 1)
                window = self.windows.setdefault(attr, [now, now])
                window[1] = now
            return Gst.PadProbeReturn.OK

        pad.add_probe(Gst.PadProbeType.BUFFER, probe)

    def count_rtp(self, pad: Gst.Pad) -> None:
        found: list[str] = []

        def probe(pad: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
            if not found:
                # The caps may not be set yet when the pad is added: look at the first buffer's.
                caps = pad.get_current_caps()
                media = caps.get_structure(0).get_string("media") if caps is not None else None
                if media is None:
                    return Gst.PadProbeReturn.OK
                found.append(media)
            media = found[0]
            buf = info.get_buffer()
            ok, mapped = buf.map(Gst.MapFlags.READ)
            if ok:
                data = bytes(mapped.data[:4])
                buf.unmap(mapped)
                if len(data) == 4:
                    now = time.monotonic() - self.started
                    with self._lock:
                        count = self.rtp.get(media)
                        if count is None:
                            count = self.rtp[media] = RtpCount(now)
                        count.add(int.from_bytes(data[2:4], "big"), now)
            return Gst.PadProbeReturn.OK

        pad.add_probe(Gst.PadProbeType.BUFFER, probe)

    # -- receive side: decode into fakesinks ---------------------------------------------------
    def attach_decoder(self, webrtc: Gst.Element) -> None:
        def on_pad(_wb: Gst.Element, pad: Gst.Pad) -> None:
            if pad.get_direction() != Gst.PadDirection.SRC:
                return
            self.log(f"incoming stream {pad.get_current_caps()}")
            self.count_rtp(pad)
            pipeline = self.pipeline
            assert pipeline is not None, "the pipeline is built before webrtcbin adds pads"
            if self.args.no_decode:
                sink = Gst.ElementFactory.make("fakesink")
                sink.set_property("sync", False)
                sink.set_property("async", False)
                pipeline.add(sink)
                sink.sync_state_with_parent()
                pad.link(sink.get_static_pad("sink"))
                return
            decode = Gst.ElementFactory.make("decodebin")
            decode.connect("pad-added", self._on_decoded_pad)
            pipeline.add(decode)
            decode.sync_state_with_parent()
            pad.link(decode.get_static_pad("sink"))

        webrtc.connect("pad-added", on_pad)

    def _on_decoded_pad(self, _decode: Gst.Element, pad: Gst.Pad) -> None:
        caps = pad.get_current_caps() or pad.query_caps(None)
        name = caps.get_structure(0).get_name()
        queue = Gst.ElementFactory.make("queue")
        sink = Gst.ElementFactory.make("fakesink")
        sink.set_property("sync", False)
        sink.set_property("async", False)
        pipeline = self.pipeline
        assert pipeline is not None, "the pipeline is built before decodebin adds pads"
        pipeline.add(queue)
        pipeline.add(sink)
        queue.link(sink)
        queue.sync_state_with_parent()
        sink.sync_state_with_parent()
        pad.link(queue.get_static_pad("sink"))
        sinkpad = sink.get_static_pad("sink")
        if name.startswith("video"):
            s = caps.get_structure(0)
            self.width = s.get_value("width") or 0
            self.height = s.get_value("height") or 0

            def vprobe(p: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
                with self._lock:
                    self.frames += 1
                    if self.first_frame_at is None:
                        self.first_frame_at = time.monotonic() - self.started
                    cur = p.get_current_caps()
                    if cur is not None:
                        st = cur.get_structure(0)
                        self.width = st.get_value("width") or self.width
                        self.height = st.get_value("height") or self.height
                    done = self.args.frames and self.frames >= self.args.frames
                if done:
                    GLib.idle_add(self.stop)
                return Gst.PadProbeReturn.OK

            sinkpad.add_probe(Gst.PadProbeType.BUFFER, vprobe)
        elif name.startswith("audio"):
            self.count_probe(sinkpad, "audio_buffers")

    # -- modes ---------------------------------------------------------------------------------
    def build_publisher(self, name: str) -> Peer:
        a = self.args
        desc = publisher_description(a.codec, a.width, a.height, a.fps, name, a.pattern)
        if self.pipeline is None:
            self.pipeline = Gst.parse_launch(desc)
        else:
            bin_ = Gst.parse_bin_from_description(desc, False)
            self.pipeline.add(bin_)
        wb = self.pipeline.get_by_name(name)
        self.count_probe(self.pipeline.get_by_name(f"{name}_vcount").get_static_pad("src"), "video_sent")
        self.count_probe(self.pipeline.get_by_name(f"{name}_acount").get_static_pad("src"), "audio_sent")
        return Peer(self, wb)

    def make_sendonly(self, peer: Peer) -> None:
        for i in range(8):
            tr = peer.webrtc.emit("get-transceiver", i)
            if tr is None:
                break
            tr.set_property("direction", GstWebRTC.WebRTCRTPTransceiverDirection.SENDONLY)

    def start_pipeline(self) -> None:
        pipeline = self.pipeline
        assert pipeline is not None, "a run_* mode builds the pipeline before starting it"
        bus = pipeline.get_bus()
        bus.add_signal_watch()
        bus.connect("message", self.on_bus)
        if pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
            raise Failure("pipeline refused to go to PLAYING")
        GLib.timeout_add(int(self.args.timeout * 1000), self._on_overall_timeout)

    def _on_overall_timeout(self) -> bool:
        self.fail(f"timed out after {self.args.timeout}s")
        return False

    def schedule_stop(self) -> None:
        self.log(f"media flowing; stopping in {self.args.duration}s")
        GLib.timeout_add(int(self.args.duration * 1000), self.stop)

    def stop(self) -> bool:
        if not self._stopping:
            self._stopping = True
            self.summary["stop_s"] = round(time.monotonic() - self.started, 3)
            self.loop.quit()
        return False

    def post_offer(self, peer: Peer) -> None:
        try:
            offer = peer.local_sdp()
            self.log(f"POST offer ({len(offer)} bytes) to {self.args.url}")
            status, headers, body = self.http("POST", self.args.url, offer)
        except Failure as exc:
            self.fail(str(exc))
            return
        except (OSError, urllib.error.URLError) as exc:
            self.fail(f"POST {self.args.url} failed: {exc}")
            return
        self.summary["status"] = status
        dump = os.environ.get("GST_CLIENT_SDP_DUMP")
        if dump:  # a path prefix: <prefix>.offer.sdp and <prefix>.answer.sdp, for diagnosing negotiation
            with open(dump + ".offer.sdp", "w") as f:
                f.write(offer)
            with open(dump + ".answer.sdp", "w") as f:
                f.write(body if isinstance(body, str) else body.decode("utf-8", "replace"))
        if status != 201:
            self.fail(f"POST {self.args.url} returned {status}, expected 201: {body[:300]!r}")
            return
        ctype = {k.lower(): v for k, v in headers.items()}.get("content-type", "")
        if not ctype.startswith("application/sdp"):
            self.fail(f"201 answer has Content-Type {ctype!r}, expected application/sdp")
            return
        loc = {k.lower(): v for k, v in headers.items()}.get("location")
        if loc:
            self.location = urllib.parse.urljoin(self.args.url, loc)
            self.summary["location"] = self.location
        try:
            peer.set_remote(body, GstWebRTC.WebRTCSDPType.ANSWER, then=self.schedule_stop)
        except Failure as exc:
            self.fail(str(exc))

    def run_whip(self) -> None:
        peer = self.build_publisher("wb")
        self.peer = peer

        def on_negotiation_needed(_wb: Gst.Element) -> None:
            self.make_sendonly(peer)
            peer.create_offer(lambda: self.post_offer(peer))

        peer.webrtc.connect("on-negotiation-needed", on_negotiation_needed)
        self.start_pipeline()

    def run_whep(self) -> None:
        self.pipeline = Gst.Pipeline.new("whep")
        wb = Gst.ElementFactory.make("webrtcbin", "wb")
        wb.set_property("bundle-policy", GstWebRTC.WebRTCBundlePolicy.MAX_BUNDLE)
        self.pipeline.add(wb)
        peer = Peer(self, wb)
        self.peer = peer
        codecs = ["vp8", "h264"] if self.args.codec == "any" else [self.args.codec]
        vcaps = Gst.Caps.from_string("; ".join(VIDEO_CAPS[c] for c in codecs))
        recv = GstWebRTC.WebRTCRTPTransceiverDirection.RECVONLY
        wb.emit("add-transceiver", recv, vcaps)
        wb.emit("add-transceiver", recv, Gst.Caps.from_string(AUDIO_CAPS))
        self.attach_decoder(wb)

        def on_negotiation_needed(_wb: Gst.Element) -> None:
            peer.create_offer(lambda: self.post_offer(peer))

        wb.connect("on-negotiation-needed", on_negotiation_needed)
        self.start_pipeline()

    def run_loopback(self) -> None:
        tx = self.build_publisher("tx")
        rx_el = Gst.ElementFactory.make("webrtcbin", "rx")
        rx_el.set_property("bundle-policy", GstWebRTC.WebRTCBundlePolicy.MAX_BUNDLE)
        assert self.pipeline is not None, "build_publisher created the pipeline"
        self.pipeline.add(rx_el)
        rx = Peer(self, rx_el)
        self.peer = rx
        self.tx = tx
        self.attach_decoder(rx_el)

        def offer_ready() -> None:
            try:
                offer = tx.local_sdp()
                self.summary["offer_candidates"] = offer.count("a=candidate:")
                rx.set_remote(offer, GstWebRTC.WebRTCSDPType.OFFER, then=lambda: rx.create_answer(answer_ready))
            except Failure as exc:
                self.fail(str(exc))

        def answer_ready() -> None:
            try:
                answer = rx.local_sdp()
                self.summary["answer_candidates"] = answer.count("a=candidate:")
                tx.set_remote(answer, GstWebRTC.WebRTCSDPType.ANSWER, then=self.schedule_stop)
            except Failure as exc:
                self.fail(str(exc))

        def on_negotiation_needed(_wb: Gst.Element) -> None:
            self.make_sendonly(tx)
            tx.create_offer(offer_ready)

        tx.webrtc.connect("on-negotiation-needed", on_negotiation_needed)
        self.start_pipeline()

    def run(self) -> int:
        Gst.init(None)
        try:
            {"whip": self.run_whip, "whep": self.run_whep, "loopback": self.run_loopback}[self.args.mode]()
        except (Failure, GLib.Error) as exc:
            self.error = str(exc)
        if self.error is None:
            self.loop.run()
        peer = getattr(self, "peer", None)
        if peer is not None:
            self.summary["ice_state"] = peer.ice_state()
            self.summary["connection_state"] = peer.connection_state()
        if self.pipeline is not None:
            self.pipeline.set_state(Gst.State.NULL)
        if self.location:
            try:
                status, _h, _b = self.http("DELETE", self.location)
                self.summary["delete_status"] = status
                if status not in (200, 204) and self.error is None:
                    self.error = f"DELETE {self.location} returned {status}"
            except (OSError, urllib.error.URLError) as exc:
                self.summary["delete_status"] = None
                if self.error is None:
                    self.error = f"DELETE {self.location} failed: {exc}"
        with self._lock:
            if self.args.mode in ("whep", "loopback"):
                self.summary.update(
                    frames=self.frames,
                    width=self.width,
                    height=self.height,
                    audio_buffers=self.audio_buffers,
                    first_frame_s=round(self.first_frame_at, 3) if self.first_frame_at is not None else None,
                    rtp={media: count.summary() for media, count in self.rtp.items()},
                )
                if self.error is None and self.frames < self.args.min_frames:
                    self.error = f"decoded {self.frames} video frames, expected at least {self.args.min_frames}"
            if self.args.mode in ("whip", "loopback"):
                self.summary.update(video_buffers=self.video_sent, audio_buffers_sent=self.audio_sent)
                self.summary["sent_windows_s"] = {k: [round(t, 3) for t in v] for k, v in self.windows.items()}
        self.summary["elapsed_s"] = round(time.monotonic() - self.started, 3)
        self.summary["ok"] = self.error is None
        if self.error is not None:
            self.summary["error"] = self.error
        print(json.dumps(self.summary), flush=True)
        if self.error is not None:
            print(f"gst_webrtc_client: {self.error}", file=sys.stderr, flush=True)
            return 1
        return 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["whip", "whep", "loopback"])
    p.add_argument("url", nargs="?", help="WHIP or WHEP endpoint URL (not used by loopback)")
    p.add_argument("--token", default=os.environ.get("TRACKMESH_TOKEN"), help="Bearer token")
    p.add_argument("--codec", default="vp8", choices=["vp8", "h264", "h265", "any"])
    p.add_argument("--duration", type=float, default=5.0, help="seconds to stream after the answer")
    p.add_argument("--frames", type=int, default=0, help="stop early after decoding this many frames")
    p.add_argument("--min-frames", type=int, default=1, help="whep/loopback: fail below this many frames")
    p.add_argument("--timeout", type=float, default=30.0, help="overall deadline in seconds")
    p.add_argument("--http-timeout", type=float, default=10.0)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--fps", type=int, default=30)
    p.add_argument("--pattern", default="ball", help="whip/loopback: videotestsrc pattern (snow: ~4 RTP packets/frame)")
    p.add_argument("--no-decode", action="store_true", help="whep: only count RTP packets (no decoding)")
    p.add_argument("-v", "--verbose", action="store_true")
    a = p.parse_args(argv)
    if a.mode in ("whip", "whep") and not a.url:
        p.error(f"{a.mode} needs a URL")
    if a.mode in ("whip", "loopback") and a.codec in ("any", "h265"):
        p.error("a publisher needs one codec: vp8 or h264")
    return a


def main(argv: list[str] | None = None) -> int:
    app = App(parse_args(sys.argv[1:] if argv is None else argv))
    return app.run()


if __name__ == "__main__":
    rc = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: the 1.22 bindings emit GObject criticals when the ICE agent
    # is finalised at exit (see the refcount note in Peer.__init__).
    os._exit(rc)
