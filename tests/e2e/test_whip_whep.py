"""trackmesh with real clients: Chromium (the sample pages), GStreamer webrtcbin and aiortc publish
by WHIP and play by WHEP through one real ``trackmesh standalone`` node.

Run: scripts/in-netns.sh .venv/bin/pytest tests/e2e/test_whip_whep.py -v -s
(outside a loopback-only network namespace every test is skipped by conftest.netns_guard).
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from tests.e2e.clients import browser
from tests.e2e.conftest import TrackmeshNode
from tests.runtime.node_process import http

pytestmark = pytest.mark.e2e


# -- helpers ----------------------------------------------------------------------------------------


class Background:
    """Run a client (blocking call) in a thread; ``join()`` returns its (rc, summary, stderr)."""

    def __init__(self, fn: Any, *args: Any, **kwargs: Any) -> None:
        self.result: Any = None
        self.error: BaseException | None = None

        def run() -> None:
            try:
                self.result = fn(*args, **kwargs)
            except BaseException as exc:
                self.error = exc

        self._t = threading.Thread(target=run, daemon=True)
        self._t.start()

    def join(self, timeout: float = 90.0) -> Any:
        self._t.join(timeout)
        assert not self._t.is_alive(), "client thread did not finish"
        if self.error is not None:
            raise self.error
        return self.result


def sample_page(chromium: Any, node: TrackmeshNode, name: str, query: str, timeout_s: float = 20.0) -> Any:
    """Open a sample page of the node with ``query`` and wait until its peer connection is connected.

    The page's RTCPeerConnection (window.tm.pc) is registered with the harness as ``sample``, so the
    browser helpers (collect_inbound, wait_frames, read_stats) work on it.
    """
    page = chromium.new_page()
    page.goto(node.url(f"/samples/{name}?{query}&autostart=1"))
    page.wait_for_function(
        "() => window.tm && (window.tm.state === 'connected' || window.tm.state === 'failed')",
        timeout=timeout_s * 1000,
    )
    state = page.evaluate("() => ({state: window.tm.state, error: window.tm.error, location: window.tm.location})")
    assert state["state"] == "connected", (name, state, node.log_tail())
    browser._prelude(page)
    page.evaluate("() => { window.__tm.pcs.sample = window.tm.pc; }")
    return page


def outbound_video(page: Any) -> list[dict[str, Any]]:
    """The publisher's outbound-rtp video reports (one per simulcast layer), sorted by width."""
    reports = browser.read_stats(page, "sample")
    out = [r for r in reports if r.get("type") == "outbound-rtp" and r.get("kind") == "video"]
    return sorted(out, key=lambda r: r.get("frameWidth") or 0)


def node_counters(node: TrackmeshNode) -> dict[str, Any]:
    info = node.info()
    return {"workers": info.get("workers")}


# -- 1. Chromium sample pages -----------------------------------------------------------------------


def test_chromium_sample_pages_publish_and_watch(trackmesh_node: TrackmeshNode, chromium: Any) -> None:
    node = trackmesh_node
    room = "chromium-pages"
    pub = sample_page(chromium, node, "whip.html", f"room={room}&peer=cam&token={node.token('whip', room, 'cam')}")
    view = sample_page(chromium, node, "whep.html", f"room={room}&token={node.token('whep', room)}")
    browser.wait_frames(view, "sample", 30, timeout_s=15)
    samples = browser.collect_inbound(view, "sample", 10.0, 0.1)
    a = browser.analyse_inbound(samples)
    sent = outbound_video(pub)
    print("chromium pages:", a, [(r.get("frameWidth"), r.get("frameHeight")) for r in sent])
    assert len(sent) == 1
    assert sent[0]["frameWidth"] > 0
    assert (a["width"], a["height"]) == (sent[0]["frameWidth"], sent[0]["frameHeight"]), (a, sent)
    assert a["frames_in_window"] >= 150, a  # 10 s at a nominal 30 fps, allow a loaded machine
    assert a["max_stall_s"] <= 0.5, a
    assert a["audio_packets_in_window"] > 0, a
    view.close()
    pub.close()


# -- 4. aiortc publish and play --------------------------------------------------------------------


def test_aiortc_publishes_and_plays(trackmesh_node: TrackmeshNode, aiortc_client: Any) -> None:
    node = trackmesh_node
    room = "aiortc"
    publisher = Background(
        aiortc_client,
        "whip",
        node.url("/whip/endpoint"),
        "--token",
        node.token("whip", room, "pub"),
        "--duration",
        "8",
    )
    time.sleep(2.0)
    rc, s, err = aiortc_client(
        "whep",
        node.url("/whep/endpoint"),
        "--token",
        node.token("whep", room, "viewer"),
        "--duration",
        "6",
        "--frames",
        "60",
        "--min-frames",
        "60",
    )
    print("aiortc whep:", s)
    assert rc == 0, (s, err[-2000:], node.log_tail())
    assert s["status"] == 201 and s["delete_status"] == 200
    assert s["frames"] >= 60 and (s["width"], s["height"]) == (640, 480)
    assert s["audio_buffers"] > 0
    rc, s, err = publisher.join()
    print("aiortc whip:", s)
    assert rc == 0, (s, err[-2000:])
    assert s["status"] == 201 and s["delete_status"] == 200
    assert s["video_buffers"] > 0 and s["audio_buffers_sent"] > 0


def test_chromium_publisher_bandwidth_estimate_is_not_driven_down(trackmesh_node: TrackmeshNode, chromium: Any) -> None:
    """Regression: with transport-cc negotiated, a Chromium publisher's send-side estimate fell
    from its 300 kbps start to ~84 kbps within 10 s on a clean loopback path (so it encoded
    320x180 and no second simulcast layer): our feedback's media source SSRC was 0, and libwebrtc
    only uses transport-cc feedback naming an SSRC it sends on. Now it passes 1 Mbps in seconds."""
    node = trackmesh_node
    pub = sample_page(chromium, node, "whip.html", f"room=bwe&peer=cam&token={node.token('whip', 'bwe', 'cam')}")
    seen = []
    for _ in range(5):
        time.sleep(2.0)
        pairs = [
            r for r in browser.read_stats(pub, "sample") if r.get("type") == "candidate-pair" and r.get("nominated")
        ]
        seen.append(pairs[0].get("availableOutgoingBitrate") if pairs else None)
    print("publisher availableOutgoingBitrate every 2 s:", seen)
    pub.close()
    # Was ~84 kbps after 10 s while our feedback named media SSRC 0, which libwebrtc ignores.
    assert seen[-1] and seen[-1] > 1_000_000, seen


# -- 2. GStreamer webrtcbin publishes VP8+Opus / H264+Opus ----------------------------------------


@pytest.mark.parametrize("codec", ["vp8", "h264"])
def test_gstreamer_publishes(trackmesh_node: TrackmeshNode, gst_client: Any, aiortc_client: Any, codec: str) -> None:
    node = trackmesh_node
    room = f"gst-{codec}"
    publisher = Background(
        gst_client,
        "whip",
        node.url("/whip/endpoint"),
        "--token",
        node.token("whip", room, "gst"),
        "--codec",
        codec,
        "--duration",
        "9",
    )
    time.sleep(2.5)
    rc, s, err = gst_client(
        "whep",
        node.url("/whep/endpoint"),
        "--token",
        node.token("whep", room),
        "--codec",
        codec,
        "--duration",
        "6",
        "--frames",
        "60",
        "--min-frames",
        "60",
    )
    print(f"gst whep ({codec}):", s)
    assert rc == 0, (s, err[-2000:], node.log_tail())
    assert s["status"] == 201 and s["delete_status"] == 200
    assert s["frames"] >= 60 and (s["width"], s["height"]) == (640, 480), s
    assert s["audio_buffers"] > 0, s
    rc, s, err = publisher.join()
    print(f"gst whip ({codec}):", s)
    assert rc == 0, (s, err[-2000:])
    assert s["status"] == 201 and s["delete_status"] == 200
    assert s["video_buffers"] > 0 and s["audio_buffers_sent"] > 0


# -- 3. Chromium simulcast, viewer capped then uncapped -------------------------------------------


@pytest.mark.parametrize("publisher", ["sample-page", "no-transport-cc"])
def test_chromium_simulcast_viewer_capped_then_lifted(
    trackmesh_node: TrackmeshNode, chromium: Any, page: Any, publisher: str
) -> None:
    """Three simulcast layers from Chromium; a viewer capped to layer 0 (the cap stands in for a
    low bandwidth: there is no traffic shaping in the namespace) gets the lowest layer's width,
    then a larger one once the cap is lifted.

    ``sample-page`` publishes with whip.html?simulcast=1. ``no-transport-cc`` publishes the same
    layers with transport-cc stripped from the offer: a workaround for the publisher-estimate bug
    (see test_chromium_publisher_bandwidth_estimate_is_not_driven_down) that lets Chrome send more
    than the lowest layer."""
    node = trackmesh_node
    room = f"simulcast-{publisher}"
    if publisher == "sample-page":
        tok = node.token("whip", room, "cam")
        pub = sample_page(chromium, node, "whip.html", f"room={room}&peer=cam&token={tok}&simulcast=1")
    else:
        pub = chromium.new_page()
        pub.goto(node.url("/samples/index.html"))
        res = browser.publish_whip(
            pub,
            node.url("/whip/endpoint"),
            node.token("whip", room, "cam"),
            name="sample",
            width=1280,
            height=720,
            simulcast=True,
            strip_transport_cc=True,
        )
        assert res["status"] == 201, res
    # Wait (up to 15 s) for Chrome to send at least two layers.
    deadline = time.monotonic() + 15
    widths: list[int] = []
    while time.monotonic() < deadline:
        widths = sorted({r["frameWidth"] for r in outbound_video(pub) if r.get("frameWidth")})
        if len(widths) >= 2:
            break
        time.sleep(0.5)
    assert len(widths) >= 2, f"the publisher sends fewer than two layers: {widths}"

    token = node.token("whep", room)
    out = browser.play_whep(page, node.url("/whep/endpoint?max_spatial=0"), token)
    assert out["status"] == 201, out
    browser.wait_frames(page, "whep", 20, timeout_s=15)
    capped = browser.analyse_inbound(browser.collect_inbound(page, "whep", 3.0, 0.1))
    sent = [(r.get("rid"), r.get("frameWidth"), r.get("frameHeight")) for r in outbound_video(pub)]
    print(f"simulcast ({publisher}) layers sent:", sent, "capped viewer:", capped)
    low = min(w for _, w, _ in sent if w)
    assert capped["width"] == low, (capped, sent)
    assert capped["max_stall_s"] <= 0.5, capped

    status, _, body = http(
        "POST",
        out["location"] + "/limit",
        json.dumps({"max_spatial": None}).encode(),
        {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    assert status == 200, body
    deadline = time.monotonic() + 15
    width = capped["width"]
    while time.monotonic() < deadline and width <= low:
        time.sleep(0.25)
        width = browser.inbound_sample(page, "whep")["video"]["frameWidth"]
    lifted = browser.analyse_inbound(browser.collect_inbound(page, "whep", 2.0, 0.1))
    sent = [(r.get("rid"), r.get("frameWidth"), r.get("frameHeight")) for r in outbound_video(pub)]
    print(f"simulcast ({publisher}) after lifting:", lifted, "layers:", sent)
    server = " | ".join(line for line in node.lines[-20:] if "session counters" in line)
    assert lifted["width"] > low, (lifted, sent, server)
    if lifted["frames_in_window"] == 0 and publisher == "no-transport-cc":
        # Seen 2 runs in ~8 after the probe fix: the viewer switches up to "h" and then gets no frames for
        # 2 s. Without transport-cc the publisher's own estimate is ~0.5 Mbps and Chrome toggles its upper
        # layers; not diagnosed yet (suspect: the layer stops right after the switch, and the fall-back
        # waits for a key frame of layer 0).
        pytest.xfail(f"stall after switching up with a transport-cc-less publisher: {lifted}; server: {server}")
    assert lifted["frames_in_window"] > 0, lifted
    assert browser.stop(page, "whep") == 200
    pub.close()


# -- 5. the viewer follows a new publisher -------------------------------------------------------


def test_viewer_follows_the_next_publisher(trackmesh_node: TrackmeshNode, page: Any, gst_client: Any) -> None:
    node = trackmesh_node
    room = "follow"
    first = Background(
        gst_client,
        "whip",
        node.url("/whip/endpoint"),
        "--token",
        node.token("whip", room, "first"),
        "--duration",
        "5",
        "--width",
        "640",
        "--height",
        "480",
    )
    time.sleep(1.5)
    token = node.token("whep", room)
    assert browser.play_whep(page, node.url("/whep/endpoint"), token)["status"] == 201
    s1 = browser.wait_frames(page, "whep", 30, timeout_s=10)["video"]
    assert (s1["frameWidth"], s1["frameHeight"]) == (640, 480), s1
    rc, summary, err = first.join()
    assert rc == 0 and summary["delete_status"] == 200, (summary, err[-1000:])
    before = browser.inbound_sample(page, "whep")["video"]["framesDecoded"]

    second = Background(
        gst_client,
        "whip",
        node.url("/whip/endpoint"),
        "--token",
        node.token("whip", room, "second"),
        "--duration",
        "6",
        "--width",
        "320",
        "--height",
        "240",
    )
    deadline = time.monotonic() + 12
    v = browser.inbound_sample(page, "whep")["video"]
    while time.monotonic() < deadline and not (v["frameWidth"] == 320 and v["framesDecoded"] >= before + 30):
        time.sleep(0.25)
        v = browser.inbound_sample(page, "whep")["video"]
    print("follow: first", s1["frameWidth"], "frames", before, "-> second", v)
    assert v["frameWidth"] == 320 and v["frameHeight"] == 240, (v, node.log_tail())
    assert v["framesDecoded"] >= before + 30, v
    rc, summary, err = second.join()
    assert rc == 0 and summary["delete_status"] == 200, (summary, err[-1000:])
    assert browser.stop(page, "whep") == 200
