"""Renegotiation with the published ``@atm0s-media-sdk/core`` in Chromium: senders and receivers added after join
(new m-lines, ``session.sdp``), a sender stopped the SDK way (detach) and by stopping its transceiver (port 0).

Same page and harness as tests/e2e/test_sdk_rooms.py (tests/e2e/sdk_page/app.js, built at test time); runs only
inside the private network namespace (scripts/in-netns.sh).
"""

from __future__ import annotations

import time
from typing import Any

from tests.e2e.conftest import TrackmeshNode
from tests.e2e.test_sdk_rooms import bundle, events, frames, inbound, sdk_pages, start, wait_until

__all__ = ["bundle", "sdk_pages"]  # fixtures used here


def media_sections(sdp: str) -> list[tuple[str, str, str]]:
    """(m= line, mid, direction) of each m-line of an SDP."""
    out: list[tuple[str, str, str]] = []
    for block in sdp.split("\r\nm=")[1:]:
        lines = block.split("\r\n")
        mid = next((x[6:] for x in lines if x.startswith("a=mid:")), "")
        direction = next((x[2:] for x in lines if x[2:] in ("sendonly", "recvonly", "sendrecv", "inactive")), "")
        out.append((lines[0], mid, direction))
    return out


def test_screen_share_added_after_join_and_stopped(trackmesh_node: TrackmeshNode, sdk_pages: Any) -> None:
    view, pub = sdk_pages(2)  # the publisher last: its page is in front, its capture is not throttled
    start(pub, trackmesh_node, "sdk-reneg", "alice")  # camera and mic only
    start(view, trackmesh_node, "sdk-reneg", "bob", camera=False, mic=False, videoReceivers=1, audioReceivers=1,
          grow=True)  # fmt: skip
    wait_until(lambda: frames(view, "video_0") >= 30, 15, lambda: f"camera frames at bob: {inbound(view)}")
    before = media_sections(pub.evaluate("TM.sdp()")["remote"])

    # Alice starts a screen share after join: a new sendonly transceiver, so the SDK sends session.sdp.
    assert pub.evaluate("TM.startScreen('screen')")
    wait_until(
        lambda: [e for e in events(view, "track_started") if e["track"] == "screen"],
        10,
        lambda: f"track_started alice/screen at bob: {events(view)} / alice: {events(pub)}",
    )
    after = media_sections(pub.evaluate("TM.sdp()")["remote"])
    print("alice's answer m-lines before:", before, "after:", after)
    assert after[: len(before)] == before  # existing m-lines unchanged
    assert len(after) == len(before) + 1 and after[-1][2] == "recvonly"
    assert 0 in [e["status"] for e in events(pub, "sender_state") if e["name"] == "screen"]  # ACTIVE
    # Bob had no free video receiver: it added one after join (a second renegotiation) and attached it.
    added = wait_until(lambda: events(view, "receiver_added"), 5, lambda: f"a receiver added at bob: {events(view)}")
    name = added[0]["name"]
    assert name == "video_2", added
    wait_until(lambda: frames(view, name) >= 30, 15, lambda: f"screen frames at bob on {name}: {inbound(view)}")
    shown = inbound(view)[name]
    print(f"bob decoded {shown['framesDecoded']} screen frames ({shown['width']}x{shown['height']}) on {name}")
    # The canvas is 640x360; Chrome's encoder may start it scaled down while its estimate ramps up.
    assert shown["width"] > 0 and shown["width"] * 9 == shown["height"] * 16, shown
    assert not view.evaluate("TM.errors") and not pub.evaluate("TM.errors")

    cam0 = frames(view, "video_0")
    time.sleep(1.0)
    print(f"camera frames at bob in 1 s while the screen is shared: {frames(view, 'video_0') - cam0}")

    # Alice stops sharing (sender.detach): bob sees track_stopped, and the camera keeps flowing.
    res = pub.evaluate("TM.stopScreen('screen')")
    assert res["ok"], res
    wait_until(
        lambda: [e for e in events(view, "track_stopped") if e["track"] == "screen"], 5, "track_stopped alice/screen"
    )
    cam0 = frames(view, "video_0")
    time.sleep(3.0)
    cam1 = frames(view, "video_0")
    print(f"camera frames at bob in the 3 s after the screen share stopped: {cam1 - cam0}")
    assert cam1 - cam0 >= 20, (cam0, cam1)  # still flowing (the fake camera makes 30/s; a loaded box decodes less)
    assert not [e for e in events(view, "track_stopped") if e["track"] == "camera"]


def test_stopped_transceiver_and_recycled_mline(trackmesh_node: TrackmeshNode, sdk_pages: Any) -> None:
    view, pub = sdk_pages(2)
    start(pub, trackmesh_node, "sdk-recycle", "alice", mic=False)
    start(view, trackmesh_node, "sdk-recycle", "bob", camera=False, mic=False, videoReceivers=2, audioReceivers=0)
    wait_until(lambda: frames(view, "video_0") >= 20, 15, lambda: f"camera frames at bob: {inbound(view)}")
    assert pub.evaluate("TM.startScreen('screen')")
    wait_until(lambda: frames(view, "video_1") >= 20, 15, lambda: f"screen frames at bob: {inbound(view)}")

    # The app stops the screen transceiver: the next offer has its m-line at port 0.
    mid = pub.evaluate("TM.stopTransceiver('screen')")
    wait_until(
        lambda: [e for e in events(view, "track_stopped") if e["track"] == "screen"],
        10,
        lambda: f"track_stopped after the transceiver stopped: {events(view)} / {pub.evaluate('TM.sdp()')}",
    )
    sections = media_sections(pub.evaluate("TM.sdp()")["remote"])
    stopped = [s for s in sections if s[1] == mid]
    print("alice's answer after stopping mid", mid, ":", sections)
    assert stopped and stopped[0][0].split()[1] == "0", sections

    # A new sender after that: Chromium recycles the stopped m-line's index with a new mid (or appends one).
    assert pub.evaluate("TM.startScreen('screen2')")
    wait_until(
        lambda: [e for e in events(view, "track_started") if e["track"] == "screen2"],
        10,
        lambda: f"track_started screen2: {events(view)} / {pub.evaluate('TM.sdp()')}",
    )
    sections = media_sections(pub.evaluate("TM.sdp()")["remote"])
    print("alice's answer after screen2:", sections)
    # bob's auto-attach put screen2 on the receiver screen had (detached at its track_stopped).
    wait_until(lambda: frames(view, "video_1") >= 40, 15, lambda: f"screen2 frames at bob: {inbound(view)}")
    cam0 = frames(view, "video_0")
    time.sleep(2.0)
    assert frames(view, "video_0") - cam0 >= 15  # the camera flowed on through both renegotiations
    assert not pub.evaluate("TM.errors")


def test_room_sample_page_shares_screen_after_join(trackmesh_node: TrackmeshNode, chromium: Any) -> None:
    """/samples/room.html (generated from tests/e2e/sdk_page/room.js): "Share screen" creates the screen sender
    after join (renegotiation), the other page shows it as one more tile; stopping removes the tile."""
    pages = []
    for peer in ("s1", "s2"):
        pg = chromium.new_page()
        token = trackmesh_node.token("webrtc", "sdk-share", peer)
        # One receiver of each kind before connecting: s1's screen needs a video receiver added after join.
        pg.goto(trackmesh_node.url(f"/samples/room.html?room=sdk-share&peer={peer}&token={token}&receivers=1"))
        pg.click("#join")
        pg.wait_for_function("document.getElementById('status').textContent.startsWith('in room')", timeout=15000)
        pages.append(pg)
    s1, s2 = pages
    playing = "(n) => { const v = [...document.querySelectorAll('#grid video')]; return v.length === n && v.every((x) => x.videoWidth > 0); }"  # noqa: E501
    s2.wait_for_function(playing, arg=2, timeout=10000)  # its own camera and s1's
    s1.click("#share")
    s1.wait_for_function("document.getElementById('share').textContent === 'Stop sharing'", timeout=10000)
    s2.wait_for_function(playing, arg=3, timeout=15000)  # plus s1's screen, on a receiver added after join
    captions = s2.evaluate("[...document.querySelectorAll('#grid figcaption')].map((c) => c.textContent)")
    print("s2's tiles while s1 shares:", captions)
    assert "s1 screen" in captions, captions
    s1.click("#share")  # stop sharing: s2 sees track_stopped and removes the tile; the camera stays
    s2.wait_for_function("document.querySelectorAll('#grid video').length === 2", timeout=10000)
    s2.wait_for_function(playing, arg=2, timeout=5000)
    # Sharing again reuses the screen sender's m-line (sender.attach).
    s1.click("#share")
    s2.wait_for_function(playing, arg=3, timeout=15000)
    for pg in pages:
        pg.close()
