"""Rooms over the atm0s SDK protocol with real Chromium pages running the published ``@atm0s-media-sdk/core``.

The page is built at test time: ``tests/e2e/sdk_page`` (app.js on the pinned SDK, esbuild) is installed with
``npm ci`` into a cache directory keyed by its lock file (like tests/transports/sdk/test_protocol.py) and bundled
into one script the static server serves. The app exposes ``window.TM`` (start, attach, config, request,
restartIce, leave, inbound stats, and a log of every SDK event with its time). Runs only inside the private
network namespace (scripts/in-netns.sh); the npm install needs the registry or a primed npm cache (run this
module once outside the namespace, or ``npm ci`` in tests/e2e/sdk_page, to prime it).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import StaticServer, TrackmeshNode
from tests.npm_fixtures import install

PAGE_DIR = Path(__file__).parent / "sdk_page"
INDEX = """<!doctype html><html><head><meta charset=utf-8><title>sdk test</title></head>
<body><script src="app.js"></script></body></html>"""


def sdk_page_modules() -> Path:
    """tests/e2e/sdk_page installed once per lock file (primed by scripts/test.sh outside the
    network namespace; see tests/npm_fixtures.py). A missing install is a failure, not a skip."""
    if shutil.which("npm") is None:
        pytest.skip("npm is not installed: cannot build the SDK test page")
    target = install("sdk_page")
    assert (target / "node_modules" / ".bin" / "esbuild").exists(), target
    assert (target / "node_modules" / "@atm0s-media-sdk").exists(), target
    return target


def build_bundle(entry: Path, out: Path) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: cannot build the SDK test page")
    mods = sdk_page_modules()
    shutil.copyfile(PAGE_DIR / "build.mjs", mods / "build.mjs")
    shutil.copyfile(entry, mods / entry.name)
    proc = subprocess.run(
        [node, "build.mjs", entry.name, str(out)], cwd=mods, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    out = tmp_path_factory.mktemp("sdk-page") / "app.js"
    build_bundle(PAGE_DIR / "app.js", out)
    return out.read_bytes()


@pytest.fixture
def sdk_pages(chromium: Any, static_server: StaticServer, bundle: bytes) -> Iterator[Callable[[int], list[Any]]]:
    static_server.add("app.js", bundle)
    url = static_server.add("index.html", INDEX)
    opened: list[Any] = []

    def open_pages(n: int) -> list[Any]:
        pages = []
        for _ in range(n):
            pg = chromium.new_page()
            pg.on("console", lambda msg: None)
            pg.goto(url)
            pg.wait_for_function("window.TM !== undefined")
            pages.append(pg)
        opened.extend(pages)
        return pages

    yield open_pages
    for pg in opened:
        pg.close()


def start(pg: Any, node: TrackmeshNode, room: str, peer: str, **opts: Any) -> str:
    token = node.token("webrtc", room, peer)
    args = {"gateway": node.base, "token": token, "room": room, "peer": peer, **opts}
    state = pg.evaluate("(o) => TM.start(o)", args)
    assert state == "connected", (state, events(pg), node.log_tail())
    return token


def events(pg: Any, kind: str | None = None) -> list[dict[str, Any]]:
    evs: list[dict[str, Any]] = pg.evaluate("TM.events")
    return [e for e in evs if kind is None or e["type"] == kind]


def inbound(pg: Any) -> dict[str, dict[str, Any]]:
    return dict(pg.evaluate("TM.inbound()"))


# Called with no argument; ``...`` lets callers bind loop variables as lambda defaults (lambda pg=pg: ...).
def wait_until(pred: Callable[..., Any], timeout: float, what: str | Callable[..., str]) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what() if callable(what) else what}")
        time.sleep(0.1)


def frames(pg: Any, name: str) -> int:
    return int(inbound(pg).get(name, {}).get("framesDecoded", 0))


def video_frames_all(pg: Any) -> dict[str, int]:
    return {k: v["framesDecoded"] for k, v in inbound(pg).items() if v["kind"] == "video"}


def test_one_publisher_one_viewer(trackmesh_node: TrackmeshNode, sdk_pages: Any) -> None:
    pub, view = sdk_pages(2)
    start(pub, trackmesh_node, "sdk-one", "alice")
    start(view, trackmesh_node, "sdk-one", "bob", camera=False, mic=False, videoReceivers=1, audioReceivers=1)
    wait_until(lambda: frames(view, "video_0") >= 30, 15, f"30 frames on bob: {inbound(view)} {events(view)}")
    audio = wait_until(lambda: inbound(view).get("audio_1", {}).get("packets", 0) >= 20, 10, "audio at bob")
    assert audio
    kinds = [e["type"] for e in events(view)]
    assert "peer_joined" in kinds and "track_started" in kinds
    states = [e["status"] for e in events(view, "receiver_state") if e["name"] == "video_0"]
    assert 1 in states, states  # ACTIVE
    senders = [e["status"] for e in events(pub, "sender_state")]
    assert 0 in senders, senders  # ACTIVE
    # Receiver stats: rtt/lost/jitter from bob's RTCP reports about what we send it (RFC 3550
    # s6.4.1); they need one of our SRs to reach Chrome and its next report, a few seconds.
    def measured() -> list[dict[str, Any]]:
        return [
            e for e in events(view, "receiver_stats")
            if e["name"] == "video_0" and e["source"].get("rtt", 0) > 0
        ]

    got = wait_until(measured, 10, lambda: f"stats with rtt or jitter: {events(view, 'receiver_stats')[-3:]}")
    src = got[-1]["source"]
    print("receiver stats at bob:", got[-1])
    assert 0 <= src.get("rtt", 0) < 1000 and 0 <= src.get("jitter", 0) < 1000, src
    assert 0 <= src.get("lost", 0) <= 1, src
    assert got[-1]["transmit"].get("bitrateKbps", 0) > 0, got[-1]


def test_three_pages_publish_and_receive(trackmesh_node: TrackmeshNode, sdk_pages: Any) -> None:
    pages = sdk_pages(3)
    names = ["p0", "p1", "p2"]
    for pg, name in zip(pages, names, strict=True):
        start(pg, trackmesh_node, "sdk-three", name, videoReceivers=2, audioReceivers=2)
    for pg, name in zip(pages, names, strict=True):
        wait_until(
            lambda pg=pg: all(n >= 30 for n in video_frames_all(pg).values()) and len(video_frames_all(pg)) == 2,
            20,
            f"30 frames from both others on {name}: {inbound(pg)}",
        )
    decoded = {name: video_frames_all(pg) for pg, name in zip(pages, names, strict=True)}
    print("frames decoded per page:", decoded)
    for pg, name in zip(pages, names, strict=True):
        evs = events(pg)
        for other in names:
            if other == name:
                continue
            joined = [i for i, e in enumerate(evs) if e["type"] == "peer_joined" and e["peer"] == other]
            started = [i for i, e in enumerate(evs) if e["type"] == "track_started" and e["peer"] == other]
            assert joined and len(started) == 2, (name, other, evs)
            assert joined[0] < min(started), (name, other, evs)
    # p2 leaves: the others see its tracks stop, then the peer leave, within 2 s.
    left_at = time.time() * 1000
    pages[2].evaluate("TM.leave()")
    for pg, name in zip(pages[:2], names[:2], strict=True):
        ev = wait_until(lambda pg=pg: [e for e in events(pg, "peer_leaved") if e["peer"] == "p2"], 2.0, "peer_leaved")
        delay = ev[0]["at"] - left_at
        print(f"{name} saw p2 leave after {delay:.0f} ms")
        assert delay < 2000
        evs = events(pg)
        stopped = [i for i, e in enumerate(evs) if e["type"] == "track_stopped" and e["peer"] == "p2"]
        leaved = [i for i, e in enumerate(evs) if e["type"] == "peer_leaved" and e["peer"] == "p2"]
        started = [i for i, e in enumerate(evs) if e["type"] == "track_started" and e["peer"] == "p2"]
        assert max(started) < min(stopped) <= max(stopped) < leaved[0], evs


def test_manual_mode_and_source_switching(trackmesh_node: TrackmeshNode, sdk_pages: Any) -> None:
    a, b, viewer = sdk_pages(3)
    start(a, trackmesh_node, "sdk-manual", "a", mic=False)
    start(b, trackmesh_node, "sdk-manual", "b", mic=False)
    start(viewer, trackmesh_node, "sdk-manual", "v", camera=False, mic=False, manual=True, auto=False, videoReceivers=1)
    time.sleep(1.0)
    assert not [e for e in events(viewer) if e["type"] in ("peer_joined", "track_started")], events(viewer)
    res = viewer.evaluate("TM.request('room', {subscribe: {peer: 'a'}})")
    assert res["ok"], res
    wait_until(lambda: [e for e in events(viewer, "track_started") if e["peer"] == "a"], 3, "a's track in manual mode")
    assert not [e for e in events(viewer) if e.get("peer") == "b"], events(viewer)
    # b's track is attachable even unseen; attach a, then switch to b.
    assert viewer.evaluate("TM.attach('video_0', 'a', 'camera')")["ok"]
    wait_until(lambda: frames(viewer, "video_0") >= 20, 15, "frames from a")
    before = frames(viewer, "video_0")
    assert viewer.evaluate("TM.attach('video_0', 'b', 'camera')")["ok"]
    time.sleep(2.0)
    after = frames(viewer, "video_0")
    assert after - before >= 20, (before, after)
    # A track that does not exist: RpcTrackNameNotFound, and the session stays usable.
    res = viewer.evaluate("TM.attach('video_0', 'nobody', 'camera')")
    assert not res["ok"] and res["error"]["code"] == 0x2003, res
    res = viewer.evaluate("TM.request('room', {subscribe: {peer: 'b'}})")
    assert res["ok"], res


def test_spatial_limit_gets_low_layer(trackmesh_node: TrackmeshNode, sdk_pages: Any) -> None:
    capped, pub = sdk_pages(2)  # the publisher's page opened last: in front, its fake camera is not throttled
    start(pub, trackmesh_node, "sdk-simulcast", "pub", mic=False, simulcast=True, width=1280, height=720)
    start(capped, trackmesh_node, "sdk-simulcast", "capped", camera=False, mic=False, auto=False, videoReceivers=1)

    def layers() -> list[dict[str, Any]]:
        return [x for x in pub.evaluate("TM.outbound()") if x["kind"] == "video" and x["width"]]

    config = {"priority": 1, "maxSpatial": 0, "maxTemporal": 2}
    res = capped.evaluate("(c) => TM.attach('video_0', 'pub', 'camera', c)", config)
    assert res["ok"], res
    wait_until(lambda: frames(capped, "video_0") >= 30, 20, lambda: f"frames at spatial 0: {inbound(capped)}")
    # Chrome adds simulcast layers as its estimate grows: wait for at least two to be sent.
    # (Chrome's target used to stay near 30 kbps here: our transport-cc feedback named media SSRC 0.)
    wait_until(lambda: len(layers()) >= 2, 20, lambda: f"two simulcast layers: {pub.evaluate('TM.outbound()')}")
    time.sleep(1.0)
    low = min(x["width"] for x in layers())
    width = inbound(capped)["video_0"]["width"]
    print("publisher layers:", layers(), "capped viewer width:", width)
    assert width == low < max(x["width"] for x in layers())


def test_a_recorded_simulcast_publisher_is_recorded_at_its_top_layer(
    trackmesh_node: TrackmeshNode, sdk_pages: Any
) -> None:
    """``POST /api/record/start`` on a room whose SDK publisher sends Chrome's simulcast: the
    recorder follows the top layer it sees (a new file when a higher one appears, on its key
    frame); the last file has the top layer's size, and every file decodes without an error."""
    from tests.recording.probe import decode_errors, probe

    node = trackmesh_node
    assert node.record_dir is not None
    room = "sdk-simulcast-rec"
    status, answer = node.proc.json("POST", "/api/record/start", {"room": room}, token=node.secret)
    assert status == 200, answer
    (pub,) = sdk_pages(1)
    start(pub, node, room, "pub", mic=False, simulcast=True, width=1280, height=720)

    def layers() -> list[dict[str, Any]]:
        return [x for x in pub.evaluate("TM.outbound()") if x["kind"] == "video" and x["width"]]

    wait_until(lambda: len(layers()) >= 2, 20, lambda: f"two simulcast layers: {pub.evaluate('TM.outbound()')}")
    time.sleep(2.0)  # the top layer's next key frame (the recorder asks for one) and some media
    top = max(x["width"] for x in layers())
    status, answer = node.proc.json("POST", "/api/record/stop", {"room": room}, token=node.secret)
    assert status == 200, answer
    folder = node.record_dir / "default" / room

    def sidecars() -> list[dict[str, Any]]:
        return [json.loads(p.read_text()) | {"media": p.with_suffix("")} for p in sorted(folder.rglob("*.json"))]

    wait_until(lambda: sidecars() and all(s["status"] == "complete" for s in sidecars()), 10,
               lambda: f"recordings finalised: {sidecars()}")  # fmt: skip
    videos = [s["media"] for s in sidecars() if s["kind"] == "video"]
    assert videos, sidecars()
    widths = [probe(v)["streams"][0]["width"] for v in videos]
    print("simulcast layers:", layers(), "recorded files' widths:", widths)
    assert widths[-1] == top, (widths, layers())
    assert widths == sorted(widths), widths  # only ever up to a higher layer
    for video in videos:
        assert decode_errors(video) == "", video


def test_ice_restart_keeps_media(trackmesh_node: TrackmeshNode, sdk_pages: Any) -> None:
    pub, view = sdk_pages(2)
    start(pub, trackmesh_node, "sdk-restart", "alice", mic=False)
    start(view, trackmesh_node, "sdk-restart", "bob", camera=False, mic=False, videoReceivers=1)
    wait_until(lambda: frames(view, "video_0") >= 20, 15, "frames before the restart")
    conn = view.evaluate("TM.session.conn_id")
    new_conn = view.evaluate("TM.restartIce()")
    assert new_conn == conn
    time.sleep(1.0)
    before = frames(view, "video_0")
    time.sleep(2.0)
    after = frames(view, "video_0")
    assert after - before >= 30, (before, after)
    res = view.evaluate("TM.request('room', {subscribe: {peer: 'x'}})")  # auto mode: an error, still answered
    assert not res["ok"] and res["error"]["code"] == 0x2002, res


def test_room_sample_page_joins(trackmesh_node: TrackmeshNode, chromium: Any) -> None:
    """The generated /samples/room.html (SDK bundled in) joins a room, shows the other participant, chats."""
    pages = []
    for peer in ("s1", "s2"):
        pg = chromium.new_page()
        token = trackmesh_node.token("webrtc", "sdk-sample", peer)
        pg.goto(trackmesh_node.url(f"/samples/room.html?room=sdk-sample&peer={peer}&token={token}"))
        pg.click("#join")
        pg.wait_for_function("document.getElementById('status').textContent.startsWith('in room')", timeout=15000)
        pages.append(pg)
    # Each page shows its own camera plus the other's.
    pages[0].wait_for_function("document.querySelectorAll('#grid video').length >= 2", timeout=10000)
    pages[0].wait_for_function(
        "[...document.querySelectorAll('#grid video')].every((v) => v.videoWidth > 0)", timeout=10000
    )
    # Chat over the room message channel "chat": s1 writes, s2 sees it with s1's name, s1 sees it as "me".
    for pg in pages:
        pg.wait_for_function("!document.getElementById('send').disabled", timeout=10000)
    pages[0].fill("#text", "hello room")
    pages[0].click("#send")
    chat_line = "[...document.querySelectorAll('#messages li')].some((li) => li.textContent === '{}')"
    pages[1].wait_for_function(chat_line.format("s1: hello room"), timeout=5000)
    pages[0].wait_for_function(chat_line.format("me: hello room"), timeout=5000)
    for pg in pages:
        pg.close()


def slot_peers(pg: Any) -> list[str]:
    return [e["peer"] for e in events(pg, "slot_set")]


def test_audio_mixer_follows_the_loudest_speaker(trackmesh_node: TrackmeshNode, sdk_pages: Any) -> None:
    """Three pages with the SDK's audio mixer (auto, one output slot each). Chromium's fake microphone beeps; a
    muted page sends silence, so the slot of each listener goes to whoever is not muted, and never to itself."""
    pages = sdk_pages(3)
    names = ["m0", "m1", "m2"]
    for pg, name in zip(pages, names, strict=True):
        start(pg, trackmesh_node, "sdk-mixer", name, camera=False, mixer=1)
    p0, p1, p2 = pages
    # Only m0 speaks: m1 and m2 get m0 in their slot.
    p1.evaluate("TM.mute(true)")
    p2.evaluate("TM.mute(true)")
    for pg, name in ((p1, "m1"), (p2, "m2")):
        wait_until(lambda pg=pg: "m0" in slot_peers(pg), 10, lambda pg=pg, n=name: f"m0 in {n}'s slot: {events(pg)}")
    # m0 goes quiet, m1 speaks: m2's slot moves to m1, and m0 hears m1.
    p0.evaluate("TM.mute(true)")
    p1.evaluate("TM.mute(false)")
    wait_until(lambda: slot_peers(p2)[-1:] == ["m1"], 10, lambda: f"m1 in m2's slot: {events(p2)}")
    wait_until(lambda: "m1" in slot_peers(p0), 10, lambda: f"m1 in m0's slot: {events(p0)}")
    # m1 goes quiet, m2 speaks: m0's and m1's slots follow.
    p1.evaluate("TM.mute(true)")
    p2.evaluate("TM.mute(false)")
    wait_until(lambda: slot_peers(p0)[-1:] == ["m2"], 10, lambda: f"m2 in m0's slot: {events(p0)}")
    wait_until(lambda: slot_peers(p1)[-1:] == ["m2"], 10, lambda: f"m2 in m1's slot: {events(p1)}")
    for pg, name in zip(pages, names, strict=True):
        seen = slot_peers(pg)
        print(f"{name} slot_set sources: {seen}; voice events: {len(events(pg, 'mixer_voice'))}")
        assert name not in seen, (name, seen)  # mix-minus: never one's own voice
        assert all(e["slot"] == 0 and e["track"] == "mic" for e in events(pg, "slot_set")), events(pg, "slot_set")
    # The slot carries audio (the one mixer receiver is audio_0).
    before = inbound(p0).get("audio_0", {}).get("packets", 0)
    time.sleep(1.0)
    after = inbound(p0).get("audio_0", {}).get("packets", 0)
    print(f"m0's audio_0: {after - before} packets in 1 s")
    assert after - before >= 25, (before, after, events(p0))


def test_message_channel_reaches_the_others(trackmesh_node: TrackmeshNode, sdk_pages: Any) -> None:
    pages = sdk_pages(3)
    names = ["c0", "c1", "c2"]
    for pg, name in zip(pages, names, strict=True):
        start(pg, trackmesh_node, "sdk-chat", name, camera=False, mic=False)
        assert pg.evaluate("TM.openChannel('chat')")
    sent_at = time.time() * 1000
    res = pages[0].evaluate("TM.publish('chat', 'hello from c0')")
    assert res["ok"], res
    for pg, name in zip(pages, names, strict=True):
        got = wait_until(lambda pg=pg: events(pg, "message"), 3, lambda n=name: f"the message at {n}")
        assert [(m["label"], m["peer"], m["message"]) for m in got] == [("chat", "c0", "hello from c0")], (name, got)
        print(f"{name} got the message after {got[0]['at'] - sent_at:.0f} ms")
    # A second sender, and a label nobody else opened.
    assert pages[2].evaluate("TM.publish('chat', 'c2 here')")["ok"]
    wait_until(lambda: [m for m in events(pages[1], "message") if m["peer"] == "c2"], 3, "c2's message at c1")
    assert pages[1].evaluate("TM.openChannel('other')")
    assert pages[1].evaluate("TM.publish('other', 'only me')")["ok"]
    time.sleep(0.5)
    assert not [m for m in events(pages[0], "message") if m["label"] == "other"]
