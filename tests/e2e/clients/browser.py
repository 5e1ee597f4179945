"""Helpers that drive RTCPeerConnection in a Playwright (sync API) page.

The page must be a secure context (http://127.0.0.1:PORT/... or http://localhost is fine). All state
lives in ``window.__tm`` so several helpers can be combined on one page:

    publish_whip(page, url, token)          -> {"status": 201, "location": ..., ...}   (name "whip")
    play_whep(page, url, token)             -> {"status": 201, "location": ..., ...}   (name "whep")
    collect_inbound(page, "whep", 5.0)      -> list of samples (see below) for freeze detection
    analyse_inbound(samples)                -> {"frames": ..., "max_stall_s": ..., ...}
    stop(page, name)                        -> DELETEs the resource and closes the peer connection
    read_stats(page, name)                  -> raw getStats() reports as a list of dicts
    loopback(page, min_frames=30)           -> two peer connections in one page, no server

Signalling is non-trickle: we wait for ``iceGatheringState == "complete"`` and then drop every
``a=candidate`` line whose address is not 127.0.0.1 before POSTing the offer.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from playwright.sync_api import Page

# Shared JS, injected once per page (idempotent).
_PRELUDE = r"""
(() => {
  if (window.__tm) return;
  const tm = { pcs: {}, locations: {}, tokens: {}, videos: {} };
  tm.filterSdp = (sdp) => sdp.split(/\r?\n/).filter((l) => {
    if (!l.startsWith("a=candidate:")) return true;
    return l.split(" ")[4] === "127.0.0.1";
  }).join("\r\n");
  tm.gathered = (pc, timeoutMs) => new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") return resolve(true);
    const t = setTimeout(() => resolve(false), timeoutMs);
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") { clearTimeout(t); resolve(true); }
    });
  });
  tm.connected = (pc, timeoutMs) => new Promise((resolve, reject) => {
    const check = () => {
      if (pc.connectionState === "connected") { clearTimeout(t); resolve(); }
      else if (pc.connectionState === "failed" || pc.connectionState === "closed") {
        clearTimeout(t); reject(new Error("connectionState " + pc.connectionState));
      }
    };
    const t = setTimeout(() => reject(new Error("not connected after " + timeoutMs + " ms: " +
                                                  pc.connectionState)), timeoutMs);
    pc.addEventListener("connectionstatechange", check);
    check();
  });
  tm.headers = (token) => {
    const h = { "Content-Type": "application/sdp" };
    if (token) h["Authorization"] = "Bearer " + token;
    return h;
  };
  tm.stripTwcc = (sdp) => sdp.split("\r\n").filter((l) =>
    !l.includes("transport-wide-cc") && !/^a=rtcp-fb:\d+ transport-cc/.test(l)).join("\r\n");
  tm.negotiate = async (name, pc, url, token, gatherMs, stripTwcc) => {
    await pc.setLocalDescription(await pc.createOffer());
    const complete = await tm.gathered(pc, gatherMs);
    let offer = tm.filterSdp(pc.localDescription.sdp);
    if (stripTwcc) offer = tm.stripTwcc(offer);
    if (!offer.includes("a=candidate:")) throw new Error("no 127.0.0.1 candidate in the offer");
    const resp = await fetch(url, { method: "POST", headers: tm.headers(token), body: offer });
    const body = await resp.text();
    const out = { status: resp.status, gatheringComplete: complete,
                  contentType: resp.headers.get("Content-Type"),
                  offerCandidates: offer.split("a=candidate:").length - 1 };
    if (resp.status !== 201) { out.error = "POST returned " + resp.status + ": " + body.slice(0, 300); return out; }
    const loc = resp.headers.get("Location");
    if (loc) { out.location = new URL(loc, url).href; tm.locations[name] = out.location; }
    tm.tokens[name] = token;
    await pc.setRemoteDescription({ type: "answer", sdp: body });
    return out;
  };
  tm.attachVideo = (name, stream) => {
    let v = tm.videos[name];
    if (!v) {
      v = document.createElement("video");
      v.muted = true; v.autoplay = true; v.playsInline = true; v.id = "tm-" + name;
      document.body.appendChild(v);
      tm.videos[name] = v;
    }
    if (v.srcObject !== stream) { v.srcObject = stream; v.play().catch(() => {}); }
  };
  tm.inbound = async (pc) => {
    const stats = await pc.getStats();
    const out = { t: performance.now() / 1000, video: null, audio: null, pair: null };
    stats.forEach((r) => {
      if (r.type === "inbound-rtp" && r.kind === "video") {
        out.video = { framesDecoded: r.framesDecoded || 0, framesReceived: r.framesReceived || 0,
                      framesDropped: r.framesDropped || 0, frameWidth: r.frameWidth || 0,
                      frameHeight: r.frameHeight || 0, freezeCount: r.freezeCount || 0,
                      totalFreezesDuration: r.totalFreezesDuration || 0,
                      pauseCount: r.pauseCount || 0, packetsReceived: r.packetsReceived || 0,
                      packetsLost: r.packetsLost || 0, nackCount: r.nackCount || 0,
                      pliCount: r.pliCount || 0, keyFramesDecoded: r.keyFramesDecoded || 0,
                      jitter: r.jitter || 0, decoderImplementation: r.decoderImplementation || null,
                      codecId: r.codecId || null };
      } else if (r.type === "inbound-rtp" && r.kind === "audio") {
        out.audio = { packetsReceived: r.packetsReceived || 0, packetsLost: r.packetsLost || 0,
                      concealedSamples: r.concealedSamples || 0, totalSamplesReceived: r.totalSamplesReceived || 0,
                      jitter: r.jitter || 0 };
      } else if (r.type === "candidate-pair" && r.nominated && r.state === "succeeded") {
        const l = stats.get(r.localCandidateId), rm = stats.get(r.remoteCandidateId);
        out.pair = (l ? l.address + ":" + l.port : "?") + " -> " + (rm ? rm.address + ":" + rm.port : "?");
      }
    });
    if (out.video && out.video.codecId && stats.get(out.video.codecId)) {
      out.video.codec = stats.get(out.video.codecId).mimeType;
    }
    return out;
  };
  window.__tm = tm;
})();
"""


def _prelude(page: Page) -> None:
    page.evaluate(_PRELUDE)


def publish_whip(
    page: Page,
    url: str,
    token: str | None = None,
    *,
    name: str = "whip",
    video: bool = True,
    audio: bool = True,
    video_codec: str | None = None,
    width: int = 640,
    height: int = 480,
    fps: int = 30,
    gather_timeout_s: float = 5.0,
    connect_timeout_s: float = 10.0,
    simulcast: bool = False,
    strip_transport_cc: bool = False,
) -> dict[str, Any]:
    """getUserMedia (fake camera/mic) -> sendonly transceivers -> WHIP POST -> wait for connected.

    ``video_codec`` (e.g. "video/H264") moves that codec to the front of the offer.
    ``simulcast`` sends three layers (rids q/h/f at 1/4, 1/2, 1/1 scale, as whip.html does).
    ``strip_transport_cc`` removes transport-cc from the offer, so Chrome's send-side estimate
    relies on RTCP RR loss only.
    Returns the POST outcome; ``error`` is set if the status was not 201.
    """
    _prelude(page)
    result: dict[str, Any] = page.evaluate(
        """async ([name, url, token, video, audio, codec, w, h, fps, gatherMs, connectMs, simulcast, strip]) => {
          const tm = window.__tm;
          const stream = await navigator.mediaDevices.getUserMedia({
            video: video ? { width: w, height: h, frameRate: fps } : false, audio });
          const pc = new RTCPeerConnection({ iceServers: [], bundlePolicy: "max-bundle" });
          tm.pcs[name] = pc;
          const layers = [{ rid: "q", scaleResolutionDownBy: 4, maxBitrate: 150000 },
                          { rid: "h", scaleResolutionDownBy: 2, maxBitrate: 500000 },
                          { rid: "f", maxBitrate: 1500000 }];
          for (const track of stream.getTracks()) {
            const init = { direction: "sendonly", streams: [stream] };
            if (simulcast && track.kind === "video") init.sendEncodings = layers;
            const tr = pc.addTransceiver(track, init);
            if (track.kind === "video" && codec) {
              const caps = RTCRtpSender.getCapabilities("video").codecs;
              const first = caps.filter((c) => c.mimeType.toLowerCase() === codec.toLowerCase());
              tr.setCodecPreferences(first.concat(caps.filter((c) => !first.includes(c))));
            }
          }
          const out = await tm.negotiate(name, pc, url, token, gatherMs, strip);
          if (out.status === 201) { await tm.connected(pc, connectMs); out.connectionState = pc.connectionState; }
          return out;
        }""",
        [
            name,
            url,
            token,
            video,
            audio,
            video_codec,
            width,
            height,
            fps,
            int(gather_timeout_s * 1000),
            int(connect_timeout_s * 1000),
            simulcast,
            strip_transport_cc,
        ],
    )
    return result


def play_whep(
    page: Page,
    url: str,
    token: str | None = None,
    *,
    name: str = "whep",
    video: bool = True,
    audio: bool = True,
    gather_timeout_s: float = 5.0,
    connect_timeout_s: float = 10.0,
) -> dict[str, Any]:
    """recvonly transceivers -> WHEP POST -> wait for connected; remote tracks play in a muted <video>."""
    _prelude(page)
    result: dict[str, Any] = page.evaluate(
        """async ([name, url, token, video, audio, gatherMs, connectMs]) => {
          const tm = window.__tm;
          const pc = new RTCPeerConnection({ iceServers: [], bundlePolicy: "max-bundle" });
          tm.pcs[name] = pc;
          const stream = new MediaStream();
          pc.ontrack = (ev) => { stream.addTrack(ev.track); tm.attachVideo(name, stream); };
          if (video) pc.addTransceiver("video", { direction: "recvonly" });
          if (audio) pc.addTransceiver("audio", { direction: "recvonly" });
          const out = await tm.negotiate(name, pc, url, token, gatherMs);
          if (out.status === 201) { await tm.connected(pc, connectMs); out.connectionState = pc.connectionState; }
          return out;
        }""",
        [name, url, token, video, audio, int(gather_timeout_s * 1000), int(connect_timeout_s * 1000)],
    )
    return result


def read_stats(page: Page, name: str) -> list[dict[str, Any]]:
    """All getStats() reports of peer connection ``name`` as plain dicts."""
    _prelude(page)
    result: list[dict[str, Any]] = page.evaluate(
        "async (name) => { const s = await window.__tm.pcs[name].getStats(); return [...s.values()]; }", name
    )
    return result


def inbound_sample(page: Page, name: str) -> dict[str, Any]:
    """One snapshot of the inbound video/audio counters and the selected candidate pair."""
    _prelude(page)
    result: dict[str, Any] = page.evaluate("(name) => window.__tm.inbound(window.__tm.pcs[name])", name)
    return result


def collect_inbound(page: Page, name: str, duration_s: float, interval_s: float = 0.25) -> list[dict[str, Any]]:
    """Sample inbound-rtp stats every ``interval_s`` for ``duration_s`` (runs in the page)."""
    _prelude(page)
    result: list[dict[str, Any]] = page.evaluate(
        """async ([name, durMs, stepMs]) => {
          const tm = window.__tm, pc = tm.pcs[name], samples = [];
          const end = performance.now() + durMs;
          while (true) {
            samples.push(await tm.inbound(pc));
            if (performance.now() >= end) break;
            await new Promise((r) => setTimeout(r, stepMs));
          }
          return samples;
        }""",
        [name, int(duration_s * 1000), int(interval_s * 1000)],
    )
    return result


def wait_frames(page: Page, name: str, frames: int, timeout_s: float = 15.0) -> dict[str, Any]:
    """Poll until ``framesDecoded >= frames``; returns the last sample (raises on timeout)."""
    _prelude(page)
    result: dict[str, Any] = page.evaluate(
        """async ([name, frames, timeoutMs]) => {
          const tm = window.__tm, pc = tm.pcs[name], end = performance.now() + timeoutMs;
          let s;
          while (true) {
            s = await tm.inbound(pc);
            if (s.video && s.video.framesDecoded >= frames) return s;
            if (performance.now() > end)
              throw new Error("only " + (s.video ? s.video.framesDecoded : 0) + " frames decoded");
            await new Promise((r) => setTimeout(r, 100));
          }
        }""",
        [name, frames, int(timeout_s * 1000)],
    )
    return result


def analyse_inbound(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Summarise samples from ``collect_inbound``: progress, resolution, and freezes.

    ``max_stall_s`` is the longest span between consecutive samples with no new decoded frame
    (our own freeze measure, independent of the browser's ``freezeCount``).
    """
    vids = [(s["t"], s["video"]) for s in samples if s.get("video")]
    auds = [s["audio"] for s in samples if s.get("audio")]
    out: dict[str, Any] = {"samples": len(samples)}
    if vids:
        first, last = vids[0][1], vids[-1][1]
        span = vids[-1][0] - vids[0][0]
        stall, max_stall = 0.0, 0.0
        for (t0, v0), (t1, v1) in itertools.pairwise(vids):
            if v1["framesDecoded"] <= v0["framesDecoded"]:
                stall += t1 - t0
                max_stall = max(max_stall, stall)
            else:
                stall = 0.0
        decoded = last["framesDecoded"] - first["framesDecoded"]
        out.update(
            frames=last["framesDecoded"],
            frames_in_window=decoded,
            fps=round(decoded / span, 2) if span > 0 else 0.0,
            width=last["frameWidth"],
            height=last["frameHeight"],
            freeze_count=last["freezeCount"] - first["freezeCount"],
            freeze_s=round(last["totalFreezesDuration"] - first["totalFreezesDuration"], 3),
            max_stall_s=round(max_stall, 3),
            codec=last.get("codec"),
            decoder=last.get("decoderImplementation"),
        )
    if auds:
        out.update(
            audio_packets=auds[-1]["packetsReceived"],
            audio_packets_in_window=auds[-1]["packetsReceived"] - auds[0]["packetsReceived"],
        )
    pairs = [s["pair"] for s in samples if s.get("pair")]
    out["pair"] = pairs[-1] if pairs else None
    return out


def stop(page: Page, name: str) -> int | None:
    """DELETE the WHIP/WHEP resource (if any) and close the peer connection; returns the DELETE status."""
    _prelude(page)
    result: int | None = page.evaluate(
        """async (name) => {
          const tm = window.__tm;
          let status = null;
          const loc = tm.locations[name];
          if (loc) {
            const headers = tm.tokens[name] ? { "Authorization": "Bearer " + tm.tokens[name] } : {};
            status = (await fetch(loc, { method: "DELETE", headers })).status;
            delete tm.locations[name];
          }
          if (tm.pcs[name]) { tm.pcs[name].close(); delete tm.pcs[name]; }
          return status;
        }""",
        name,
    )
    return result


def loopback(
    page: Page, *, min_frames: int = 30, width: int = 640, height: int = 480, timeout_s: float = 20.0
) -> dict[str, Any]:
    """Fake camera+mic -> pc "lb_tx" -> pc "lb_rx" in the same page (offer/answer in-page, non-trickle,
    127.0.0.1 candidates only). Waits for ``min_frames`` decoded frames; returns the last inbound sample
    of "lb_rx" plus the candidate counts."""
    _prelude(page)
    result: dict[str, Any] = page.evaluate(
        """async ([w, h, minFrames, timeoutMs]) => {
          const tm = window.__tm;
          const stream = await navigator.mediaDevices.getUserMedia({
            video: { width: w, height: h, frameRate: 30 }, audio: true });
          const tx = new RTCPeerConnection({ iceServers: [] });
          const rx = new RTCPeerConnection({ iceServers: [] });
          tm.pcs.lb_tx = tx; tm.pcs.lb_rx = rx;
          const remote = new MediaStream();
          rx.ontrack = (ev) => { remote.addTrack(ev.track); tm.attachVideo("lb_rx", remote); };
          for (const t of stream.getTracks()) tx.addTransceiver(t, { direction: "sendonly" });
          await tx.setLocalDescription(await tx.createOffer());
          await tm.gathered(tx, 5000);
          const offer = tm.filterSdp(tx.localDescription.sdp);
          await rx.setRemoteDescription({ type: "offer", sdp: offer });
          await rx.setLocalDescription(await rx.createAnswer());
          await tm.gathered(rx, 5000);
          const answer = tm.filterSdp(rx.localDescription.sdp);
          await tx.setRemoteDescription({ type: "answer", sdp: answer });
          await tm.connected(rx, timeoutMs);
          const end = performance.now() + timeoutMs;
          let s;
          while (true) {
            s = await tm.inbound(rx);
            if (s.video && s.video.framesDecoded >= minFrames) break;
            if (performance.now() > end) throw new Error("only " + (s.video ? s.video.framesDecoded : 0) +
                                                         " frames decoded");
            await new Promise((r) => setTimeout(r, 100));
          }
          const cand = (sdp) => sdp.split(/\\r?\\n/).filter((l) => l.startsWith("a=candidate:"))
                                   .map((l) => l.split(" ")[4]);
          s.offerCandidates = cand(offer);
          s.answerCandidates = cand(answer);
          s.rawOfferCandidates = cand(tx.localDescription.sdp);
          return s;
        }""",
        [width, height, min_frames, int(timeout_s * 1000)],
    )
    return result
