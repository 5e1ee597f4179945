"""Layers inside one stream with real Chromium pages on the published ``@atm0s-media-sdk/core``:
VP8 temporal layers (scalabilityMode L1T3) and VP9 SVC (L3T3_KEY), a viewer capped by its
receiver config (max spatial / temporal) and then uncapped.

The page (tests/e2e/sdk_page/app.js) asks Chrome for the codec and scalability mode on the
transceiver the SDK adds (W3C webrtc-svc ``scalabilityMode`` in ``sendEncodings``); what the
encoder really does is read back from getStats (outbound-rtp ``scalabilityMode``). A capped
viewer must keep decoding: ``framesDecoded`` grows at about the share of the frame rate its
temporal layer carries (TL0 of L1T3/L3T3 is every 4th frame) and Chrome counts no new freezes
(getStats ``freezeCount``). Frame rates are compared with the publisher's own encoded frame
rate over the same window, never with wall-clock expectations. Private netns only.
"""

from __future__ import annotations

import time
from typing import Any

from tests.e2e.conftest import TrackmeshNode
from tests.e2e.test_sdk_rooms import bundle, events, frames, inbound, sdk_pages, start, wait_until

__all__ = ["bundle", "sdk_pages"]  # the fixtures, shared with test_sdk_rooms


def video_out(pg: Any) -> dict[str, Any]:
    outs = [x for x in pg.evaluate("TM.outbound()") if x["kind"] == "video"]
    assert outs, "no video sender"
    return dict(outs[0])


def window(pub: Any, view: Any, seconds: float) -> dict[str, float]:
    """Frames the publisher encoded and the viewer decoded over ``seconds``, and the viewer's new
    freezes (Chrome's freeze: a frame interval over max(3 x average, average + 150 ms))."""
    enc0, in0 = video_out(pub)["frames"], inbound(view)["video_0"]
    time.sleep(seconds)
    enc1, in1 = video_out(pub)["frames"], inbound(view)["video_0"]
    return {
        "encoded": enc1 - enc0,
        "decoded": in1["framesDecoded"] - in0["framesDecoded"],
        "freezes": in1["freezes"] - in0["freezes"],
        "freeze_seconds": in1["freezeSeconds"] - in0["freezeSeconds"],
        "dropped": in1["dropped"] - in0["dropped"],
        "width": in1["width"],
        "height": in1["height"],
    }


def transmit(view: Any) -> dict[str, int]:
    """The spatial/temporal layer the server last said it forwards (receiver stats event)."""
    stats = [e for e in events(view, "receiver_stats") if e["name"] == "video_0"]
    return dict(stats[-1]["transmit"]) if stats else {}


def uncap(view: Any, spatial: int) -> None:
    """Lift the receiver's caps and wait until the server forwards every temporal layer (and
    ``spatial``): the viewer's estimate, held near what a capped viewer gets, grows by probing
    one layer at a time (sdk/temporal.py, OutboundTrack.reselect), so this takes seconds."""
    res = view.evaluate("(c) => TM.config('video_0', c)", {"priority": 1, "maxSpatial": 2, "maxTemporal": 2})
    assert res["ok"], res
    wait_until(
        lambda: transmit(view).get("temporal", 0) == 2 and transmit(view).get("spatial", 0) >= spatial,
        45,
        lambda: f"all layers forwarded: {transmit(view)} {inbound(view)['video_0']}",
    )
    time.sleep(1.0)


def open_pair(
    sdk_pages: Any, node: TrackmeshNode, room: str, codec: str, mode: str, config: dict[str, int], **pub_opts: Any
) -> tuple[Any, Any]:
    view, pub = sdk_pages(2)  # the publisher's page opened last: in front, its fake camera is not throttled
    start(pub, node, room, "pub", mic=False, codec=codec, scalabilityMode=mode, **pub_opts)
    start(view, node, room, "view", camera=False, mic=False, auto=False, videoReceivers=1)
    res = view.evaluate("(c) => TM.attach('video_0', 'pub', 'camera', c)", config)
    assert res["ok"], res
    wait_until(lambda: frames(view, "video_0") >= 10, 20, lambda: f"frames at the viewer: {inbound(view)}")

    # libwebrtc turns off upper spatial layers its target bitrate cannot carry (L3T3_KEY is
    # then reported as L2T3_KEY or L1T3): the temporal structure is what must hold.
    def same(m: str) -> bool:
        return m == mode if mode[1] == "1" else m[2:] == mode[2:] and m[:2] in ("L1", "L2", "L3")

    out = wait_until(lambda: (o := video_out(pub))["mode"] and same(o["mode"]) and o, 10, lambda: f"{video_out(pub)}")
    assert out["codec"].lower() == f"video/{codec.lower()}", out
    return pub, view


def test_vp8_l1t3_viewer_capped_at_temporal_0_gets_a_quarter_of_the_frames(
    trackmesh_node: TrackmeshNode, sdk_pages: Any
) -> None:
    pub, view = open_pair(
        sdk_pages, trackmesh_node, "layers-vp8", "VP8", "L1T3", {"priority": 1, "maxSpatial": 2, "maxTemporal": 0}
    )
    time.sleep(1.0)
    capped = window(pub, view, 4.0)
    print("VP8 L1T3, capped at TL0:", capped, inbound(view)["video_0"])
    assert capped["encoded"] >= 20, capped
    assert capped["freezes"] == 0 and capped["dropped"] == 0, capped

    uncap(view, 0)
    full = window(pub, view, 4.0)
    print("VP8 L1T3, uncapped:", full)
    assert full["decoded"] / full["encoded"] >= 0.8, full
    assert full["freeze_seconds"] < 1.0, full  # no long freeze while it switches up
    assert 0.15 <= capped["decoded"] / full["decoded"] <= 0.4, (capped, full)  # TL0: every 4th frame


def test_vp9_svc_viewer_capped_at_s0_t0_decodes_the_low_layer_then_goes_up(
    trackmesh_node: TrackmeshNode, sdk_pages: Any
) -> None:
    pub, view = open_pair(
        sdk_pages,
        trackmesh_node,
        "layers-vp9",
        "VP9",
        "L3T3_KEY",
        {"priority": 1, "maxSpatial": 0, "maxTemporal": 0},
        width=1280,
        height=720,
    )
    time.sleep(1.0)
    capped = window(pub, view, 4.0)
    print("VP9 L3T3_KEY, capped at S0/T0:", capped, video_out(pub), inbound(view)["video_0"])
    assert capped["decoded"] >= 5, capped
    assert capped["freezes"] == 0 and capped["dropped"] == 0, capped
    low_width = capped["width"]
    assert 0 < low_width <= 1280 // 4, capped  # S0 of L3 is a quarter of the width

    uncap(view, 1)
    full = window(pub, view, 4.0)
    print("VP9 L3T3_KEY, uncapped:", full, video_out(pub))
    print("stats:", [(round(e["t"]), e["transmit"], e["source"]) for e in events(view, "receiver_stats")])
    assert full["width"] > low_width, full
    # No long freeze once up (on a loaded machine Chrome may count a short one, ~0.25 s).
    assert full["decoded"] > capped["decoded"] and full["freeze_seconds"] < 1.0, full
    assert 0.15 <= capped["decoded"] / full["decoded"] <= 0.4, (capped, full)  # TL0: every 4th picture
