"""RTMP ingest into a room, with real clients on loopback: Debian's ffmpeg publishes H.264 + AAC
with a ``POST /token/rtmp`` stream key; an aiortc WHEP viewer decodes the video and the Opus
audio transcoded from the AAC. Then a reconnect with the same key takes the stream over, an
operator's ``DELETE /rtmp/conn/<id>`` ends it, and a bad key is refused with a reason.

Run: scripts/in-netns.sh .venv/bin/pytest tests/e2e/test_rtmp.py -v -s
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import TrackmeshNode
from tests.e2e.test_console import Console
from tests.runtime.node_process import free_port, http

pytestmark = pytest.mark.e2e

FFMPEG = shutil.which("ffmpeg")


@pytest.fixture(scope="module")
def record_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("rtmp-rec")


@pytest.fixture(scope="module")
def rtmp_node(netns_guard: None, record_dir: Path) -> Iterator[TrackmeshNode]:
    if FFMPEG is None:
        pytest.skip("ffmpeg (Debian package) is not installed")
    node = TrackmeshNode("--rtmp-port", str(free_port()), "--record-dir", str(record_dir))
    try:
        yield node
    finally:
        rc = node.stop()
        tail = node.log_tail(200)
        assert "Traceback" not in "\n".join(node.lines), tail
        assert rc == 0, f"trackmesh exited {rc}:\n{tail}"


def rtmp_token(node: TrackmeshNode, room: str, peer: str, record: bool = False) -> dict[str, Any]:
    body = {"room": room, "peer": peer, "ttl": 600, "record": record}
    status, resp = node.proc.json("POST", "/token/rtmp", body, token=node.secret)
    assert status == 200 and resp["status"], (status, resp)
    return dict(resp["data"])


def publish(url: str, seconds: float, tone: int = 440, bframes: bool = False) -> subprocess.Popen[str]:
    """ffmpeg 5.1 as a user would run it: lavfi test pattern and tone, x264 zerolatency (or, with
    ``bframes``, libx264's defaults: B-frames on), AAC."""
    assert FFMPEG is not None
    x264 = ["-preset", "veryfast", "-bf", "2"] if bframes else ["-preset", "ultrafast", "-tune", "zerolatency"]
    cmd = [
        FFMPEG, "-hide_banner", "-loglevel", "error", "-re",
        "-f", "lavfi", "-i", "testsrc=size=320x240:rate=30",
        "-f", "lavfi", "-i", f"sine=frequency={tone}:sample_rate=44100",
        "-c:v", "libx264", *x264, "-g", "30",
        "-c:a", "aac", "-ac", "2", "-b:a", "96k", "-t", str(seconds), "-f", "flv", url,
    ]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def conns(node: TrackmeshNode, room: str) -> list[dict[str, Any]]:
    """The node's RTMP publishers in ``room`` (a killed encoder of an earlier test lingers 5 s)."""
    status, resp = node.proc.json("GET", "/rtmp/conn", token=node.secret)
    assert status == 200, (status, resp)
    return [c for c in resp["data"]["conns"] if c["room"] == room]


def wait_for(what: str, check: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def worker_counters(node: TrackmeshNode) -> dict[str, int]:
    return dict(node.info()["workers"][0]["counters"])


def test_ffmpeg_publishes_h264_aac_and_a_whep_viewer_gets_video_and_opus_audio_then_takeover_and_delete(
    rtmp_node: TrackmeshNode, aiortc_client: Any
) -> None:
    node = rtmp_node
    room = "rtmp-e2e"
    token = rtmp_token(node, room, "obs")
    assert token["publish_url"] == f"{token['rtmp_url']}/{token['stream_key']}"
    assert token["rtmp_url"].startswith("rtmp://127.0.0.1:") and token["rtmp_url"].endswith("/live")
    first = publish(token["publish_url"], 30)
    try:
        wait_for("the publisher in GET /rtmp/conn", lambda: conns(node, room))
        rc, s, err = aiortc_client(
            "whep", node.url("/whep/endpoint"), "--token", node.token("whep", room), "--frames", "45", "--duration", "8"
        )
        print("whep viewer:", s)
        assert rc == 0, (s, err[-2000:], node.log_tail())
        assert s["frames"] >= 45 and (s["width"], s["height"]) == (320, 240), s
        assert s["audio_buffers"] >= 20, s
        assert s["audio_peak"] > 1000, s  # the 440 Hz tone, not silence
        [conn] = conns(node, room)
        assert (conn["room"], conn["peer"], conn["connected"]) == (room, "obs", True)
        assert conn["counters"]["opus_packets"] > 0 and conn["counters"]["keyframes"] > 0, conn
        # The console's rooms view lists the RTMP publisher in its room, with its tracks.
        [listed] = Console(node).peers(room)
        assert (listed["peer"], listed["transport"], listed["connected"]) == ("obs", "rtmp", True), listed
        assert {t["kind"] for t in listed["tracks"] if t["direction"] == "publish"} == {"audio", "video"}, listed

        # The same key again: the new connection takes over, the old encoder is cut off.
        second = publish(token["publish_url"], 30, tone=660)
        try:
            first.wait(timeout=10)
            assert worker_counters(node)["rtmp_takeovers"] == 1
            live = wait_for("the new connection's media", lambda: [c for c in conns(node, room) if c["connected"]])
            [after] = live
            assert after["conn_id"] == conn["conn_id"]  # the same peer in the room: no leave/join
            rc, s, err = aiortc_client(
                "whep", node.url("/whep/endpoint"), "--token", node.token("whep", room), "--frames", "15",
                "--duration", "6",
            )  # fmt: skip
            assert rc == 0 and s["frames"] >= 15, (s, err[-2000:])

            # The operator ends it.
            status, _ = node.proc.json("DELETE", f"/rtmp/conn/{conn['conn_id']}", token=node.secret)
            assert status == 204
            second.wait(timeout=10)
            assert conns(node, room) == []
            status, _ = node.proc.json("DELETE", f"/rtmp/conn/{conn['conn_id']}", token=node.secret)
            assert status == 404
        finally:
            second.kill()
            second.wait()
    finally:
        first.kill()
        first.wait()
    log = "\n".join(node.lines)
    assert "rtmp takeover" in log and "deleted by the operator" in log


def test_the_console_mutes_kicks_and_ends_the_room_of_ffmpeg_publishers(rtmp_node: TrackmeshNode) -> None:
    """Mute stops forwarding the track (its packets still counted); a kick ends the publish and closes
    the TCP connection (ffmpeg exits); ending the room does the same to every RTMP publisher in it."""
    node = rtmp_node
    console = Console(node)
    kicked, ended = (publish(rtmp_token(node, room, "enc")["publish_url"], 30) for room in ("rtmp-kick", "rtmp-end"))
    try:
        def tracks() -> dict[str, Any]:
            peers = console.peers("rtmp-kick")
            found = {t["kind"]: t for p in peers for t in p["tracks"]}
            return {**found, "session": peers[0]["session"]} if {"audio", "video"} <= set(found) else {}

        found = wait_for("the RTMP publisher's tracks in the console", tracks)
        session, video = found["session"], found["video"]["name"]
        mute = f"/api/console/sessions/{session}/tracks/{video}/mute"
        assert console.post(mute) == (200, {"status": True, "data": {"muted": True, "changed": True}})
        wait_for("the muted video still counted", lambda: [
            t for p in console.peers("rtmp-kick") for t in p["tracks"] if t["name"] == video and t["muted"]
            and t["packets"] > found["video"]["packets"]])  # fmt: skip
        # Kick: ffmpeg's connection is closed by the server, so it exits before its 30 s.
        assert console.post(f"/api/console/sessions/{session}/kick") == (200, {"status": True, "data": {"kicked": 1}})
        kicked.wait(timeout=10)
        assert conns(node, "rtmp-kick") == [] and console.peers("rtmp-kick") == []
        assert console.post(f"/api/console/sessions/{session}/kick")[0] == 404
        # End the room: its RTMP publisher goes too.
        wait_for("the second publisher", lambda: console.peers("rtmp-end"))
        assert console.post("/api/console/rooms/rtmp-end/end") == (200, {"status": True, "data": {"kicked": 1}})
        ended.wait(timeout=10)
        assert conns(node, "rtmp-end") == []
    finally:
        for proc in (kicked, ended):
            proc.kill()
            proc.wait()
    assert "kicked by the operator (console)" in "\n".join(node.lines)


def test_an_encoder_killed_and_restarted_with_its_key_resumes_for_the_same_viewer(
    rtmp_node: TrackmeshNode, aiortc_client: Any
) -> None:
    node = rtmp_node
    room = "rtmp-restart"
    url = rtmp_token(node, room, "obs")["publish_url"]
    first = publish(url, 30)
    result: dict[str, Any] = {}
    try:
        wait_for("the publisher", lambda: conns(node, room))
        whep = node.token("whep", room)

        def watch() -> None:
            result["out"] = aiortc_client("whep", node.url("/whep/endpoint"), "--token", whep, "--duration", "7")

        viewer = threading.Thread(target=watch, daemon=True)
        viewer.start()
        time.sleep(2.5)
        killed_at = time.monotonic()
        first.send_signal(signal.SIGKILL)  # no FCUnpublish, no FIN from ffmpeg: the kernel closes it
        first.wait()
        waiting = wait_for("the peer waiting", lambda: [c for c in conns(node, room) if not c["connected"]])
        [lingering] = waiting
        time.sleep(0.5)
        relaunched_at = time.monotonic()
        second = publish(url, 30)
        try:
            [back] = wait_for("the reconnect", lambda: [c for c in conns(node, room) if c["connected"]])
            reconnected_at = time.monotonic()  # at most one 0.1 s poll after the node took it
            assert back["conn_id"] == lingering["conn_id"]  # the same peer: no leave/join
            viewer.join(30)
            rc, s, err = result["out"]
        finally:
            second.kill()
            second.wait()
    finally:
        first.kill()
        first.wait()
    print("viewer across the restart:", s)
    assert rc == 0, (s, err[-2000:])
    # About 2.5 s before the kill and 3.5 s after the reconnect at 30 fps: without the resume it
    # would stop near 75 frames.
    assert s["frames"] >= 120, s
    assert s["audio_peak"] > 1000, s
    # The viewer's video stopped at the kill and came back within 2 s of the new connect (the
    # client's times are CLOCK_MONOTONIC, as ours).
    stopped, resumed = s["longest_gap"]
    print(f"video stopped {stopped - killed_at:+.2f} s from the kill, resumed {resumed - reconnected_at:+.2f} s "
          "from the reconnect")  # fmt: skip
    assert stopped <= killed_at + 0.5 and relaunched_at < resumed <= reconnected_at + 2.0, s


# The loudest sample of the received audio track over 1 s, through WebAudio (Chromium's own stats
# report no level for a track no device plays out).
PEAK_JS = """async () => {
  const pc = window.__tm.pcs.whep;
  const track = pc.getReceivers().map((r) => r.track).find((t) => t.kind === "audio");
  const ctx = new AudioContext();
  await ctx.resume();
  const analyser = ctx.createAnalyser();
  ctx.createMediaStreamSource(new MediaStream([track])).connect(analyser);
  const buf = new Float32Array(analyser.fftSize);
  let peak = 0;
  for (let i = 0; i < 20; i++) {
    await new Promise((r) => setTimeout(r, 50));
    analyser.getFloatTimeDomainData(buf);
    for (const v of buf) peak = Math.max(peak, Math.abs(v));
  }
  return { peak, state: ctx.state };
}"""


@pytest.mark.parametrize("bframes", [False, True], ids=["zerolatency", "x264-defaults"])
def test_chromium_plays_ffmpeg_h264_aac_with_sound(rtmp_node: TrackmeshNode, page: Any, bframes: bool) -> None:
    """What a user sees: ffmpeg 5.1's x264 with ``-tune zerolatency`` (forwarded as sent), then x264's
    defaults (High profile, B-frames: what OBS sends unless told; re-encoded by the node), watched in
    Chromium over WHEP, with the sound."""
    from tests.e2e.clients import browser

    node = rtmp_node
    room = f"rtmp-chromium-{'bframes' if bframes else 'zl'}"
    proc = publish(rtmp_token(node, room, "obs")["publish_url"], 30, bframes=bframes)
    try:
        wait_for("the publisher", lambda: conns(node, room))
        out = browser.play_whep(page, node.url("/whep/endpoint"), node.token("whep", room))
        assert out["status"] == 201 and out["connectionState"] == "connected", out
        browser.wait_frames(page, "whep", 20, timeout_s=15)
        a = browser.analyse_inbound(browser.collect_inbound(page, "whep", 2.0, 0.1))
        stats = browser.read_stats(page, "whep")
        audio = [r for r in stats if r.get("type") == "inbound-rtp" and r.get("kind") == "audio"]
        peak = page.evaluate(PEAK_JS)
        [conn] = conns(node, room)
    finally:
        proc.kill()
        proc.wait()
    print("chromium:", a, peak)
    assert (a["width"], a["height"]) == (320, 240), a
    assert a["frames_in_window"] >= 30 and a["max_stall_s"] <= 0.5, a  # 2 s at 30 fps, no freeze
    assert a["audio_packets_in_window"] >= 50, a  # 20 ms Opus frames
    assert audio and audio[0]["totalSamplesReceived"] > 48000, audio  # > 1 s of decoded Opus
    assert peak["peak"] > 0.03, peak  # ffmpeg's sine is at 1/8 full scale (0.09 measured): not silence
    counters = conn["counters"]
    if bframes:  # re-encoded away by the node (the default --rtmp-bframes transcode), and said so
        assert counters["bframes"] > 0 and counters["video_transcoded"] >= 30, counters
        assert "re-encoding this stream's video" in "\n".join(node.lines)
    else:  # zerolatency has no B-frames: forwarded as sent, nothing re-encoded
        assert counters["video_frames"] >= 60 and not counters.get("bframes"), counters
        assert not counters.get("video_transcoded"), counters


@pytest.mark.parametrize(
    ("encoder", "mime"),
    [("libsvtav1", "video/AV1"), ("libvpx-vp9", "video/VP9"), ("libx265", "video/H264")],
    ids=["av1", "vp9", "hevc-transcoded"],
)
def test_chromium_plays_av1_vp9_and_hevc_from_enhanced_rtmp(
    rtmp_node: TrackmeshNode, page: Any, encoder: str, mime: str
) -> None:
    """PyAV's FFmpeg 8.1 publishes Enhanced RTMP AV1 (``av01``), VP9 (``vp09``) or HEVC (``hvc1``)
    + Opus. Chromium negotiates AV1 and VP9 over WHEP and decodes them (forwarded as sent, no
    transcode); it has no HEVC decoder on Linux, so it asks for the alternate rendition: one H.264
    transcode for the stream, shared by a second Chromium viewer, stopped when both have left."""
    import sys
    from pathlib import Path

    from tests.e2e.clients import browser

    node = rtmp_node
    room = f"rtmp-{encoder}"
    url = rtmp_token(node, room, "phone")["publish_url"]
    script = Path(__file__).parents[1] / "transports" / "rtmp" / "pyav_publish.py"
    proc = subprocess.Popen([sys.executable, str(script), url, encoder, "live", "20"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        wait_for(
            f"the {encoder} publisher", lambda: [c for c in conns(node, room) if c["counters"].get("video_frames")]
        )
        out = browser.play_whep(page, node.url("/whep/endpoint"), node.token("whep", room))
        assert out["status"] == 201 and out["connectionState"] == "connected", out
        browser.wait_frames(page, "whep", 20, timeout_s=15)
        if encoder == "libx265":  # a second viewer without HEVC shares the one transcode
            out2 = browser.play_whep(page, node.url("/whep/endpoint"), node.token("whep", room), name="whep2")
            assert out2["status"] == 201 and out2["connectionState"] == "connected", out2
            second = browser.wait_frames(page, "whep2", 20, timeout_s=15)
        a = browser.analyse_inbound(browser.collect_inbound(page, "whep", 1.5, 0.1))
        stats = browser.read_stats(page, "whep")
        peak = page.evaluate(PEAK_JS)
        if encoder == "libx265":
            running = worker_counters(node)["rtmp_video_transcodes_running"]
            [conn] = conns(node, room)
            browser.stop(page, "whep")
            browser.stop(page, "whep2")
            # Nobody asks for the alternate any more: it stops (the request's TTL is 5 s).
            wait_for("the transcode to stop", lambda: worker_counters(node)["rtmp_video_transcodes_running"] == 0, 9)
            print("hevc transcode:", running, second, conn["counters"])
            assert running == 1, running  # two viewers, one stream: one transcode
            counters = conn["counters"]
            assert counters["alternate_frames"] >= 30, counters
            # One job per source frame however many viewers (not one per viewer): video_frames
            # counts the HEVC frames forwarded and the H.264 frames made from them.
            originals = counters["video_frames"] - counters["alternate_frames"]
            assert counters["video_to_alternate"] <= originals, counters
            assert "a viewer cannot decode H265: transcoding" in "\n".join(node.lines)
    finally:
        proc.kill()
        _, err = proc.communicate()
    codecs = {r["id"]: r.get("mimeType") for r in stats if r.get("type") == "codec"}
    video = [r for r in stats if r.get("type") == "inbound-rtp" and r.get("kind") == "video"]
    print(f"chromium {encoder}:", a, [codecs.get(v.get("codecId")) for v in video], peak)
    assert video and codecs.get(video[0]["codecId"]) == mime, (codecs, err[-1000:])
    assert (a["width"], a["height"]) == (320, 240) and a["frames_in_window"] >= 20, a
    assert peak["peak"] > 0.03, peak  # Opus forwarded as sent: the tone


def test_gstreamer_webrtcbin_decodes_hevc_from_enhanced_rtmp(rtmp_node: TrackmeshNode, gst_client: Any) -> None:
    """PyAV's FFmpeg 8.1 publishes Enhanced RTMP HEVC (x265, hvc1) + Opus; a GStreamer webrtcbin
    WHEP viewer that offers only H265 (RFC 7798) depayloads it with rtph265depay and decodes it
    with avdec_h265 (Chromium on Linux has no H.265 WebRTC decoder without hardware)."""
    import sys

    node = rtmp_node
    room = "rtmp-hevc"
    url = rtmp_token(node, room, "phone")["publish_url"]
    script = Path(__file__).parents[1] / "transports" / "rtmp" / "pyav_publish.py"
    proc = subprocess.Popen([sys.executable, str(script), url, "libx265", "live", "15"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        wait_for("the HEVC publisher", lambda: [c for c in conns(node, room) if c["counters"].get("video_frames")])
        rc, s, err = gst_client(
            "whep", node.url("/whep/endpoint"), "--token", node.token("whep", room),
            "--codec", "h265", "--duration", "4", "--min-frames", "60",
        )  # fmt: skip
    finally:
        proc.kill()
        _, perr = proc.communicate()
    print("gstreamer h265 viewer:", s)
    assert rc == 0, (s, err[-2000:], perr[-1000:], node.log_tail())
    [conn] = conns(node, room)
    assert not conn["counters"].get("alternate_frames"), conn  # it took HEVC: nothing transcoded
    assert s["frames"] >= 60 and (s["width"], s["height"]) == (320, 240), s
    assert s["audio_buffers"] >= 50, s  # the Opus, forwarded as sent
    video = s["rtp"]["video"]
    assert video["received"] >= video["expected"] - 2, video  # every RTP packet the node sent arrived


def test_a_record_true_stream_key_records_h264_and_the_transcoded_opus(
    rtmp_node: TrackmeshNode, record_dir: Path
) -> None:
    from tests.recording.probe import decode_errors, probe

    node = rtmp_node
    room = "rtmp-record"
    proc = publish(rtmp_token(node, room, "obs", record=True)["publish_url"], 3)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err  # ffmpeg ended cleanly: FCUnpublish, the peer left, the files end

    def complete() -> list[dict[str, Any]]:
        found = []
        for side in sorted((record_dir).rglob("*.json")):
            info = json.loads(side.read_text())
            if info.get("room") == room and info.get("status") == "complete":
                info["media"] = side.with_name(side.name.removesuffix(".json"))
                found.append(info)
        return found if len(found) == 2 else []

    files = {f["kind"]: f for f in wait_for("both recordings finalised", complete)}
    for kind, codec in (("video", "h264"), ("audio", "opus")):
        meta = probe(files[kind]["media"])
        (stream,) = meta["streams"]
        assert stream["codec_name"] == codec, meta
        assert 2.0 <= float(meta["format"]["duration"]) <= 4.0, meta["format"]
        assert decode_errors(files[kind]["media"]) == "", kind
    assert files["video"]["peer"] == "obs"


def test_a_bad_stream_key_is_refused_with_the_reason(rtmp_node: TrackmeshNode) -> None:
    node = rtmp_node
    url = rtmp_token(node, "rtmp-bad", "obs")["rtmp_url"]
    before = worker_counters(node)
    proc = publish(f"{url}/not-a-token", 5)
    _, err = proc.communicate(timeout=15)
    assert proc.returncode != 0
    assert "stream key refused" in err, err
    counters = worker_counters(node)
    assert counters["rtmp_refused"] == before["rtmp_refused"] + 1
    # The refused encoder's handshake and publish command were read (and counted) before the refusal.
    assert counters["rtmp_bytes_received"] > before["rtmp_bytes_received"]
    assert counters["rtmp_publishes"] == before["rtmp_publishes"]  # a refused key publishes nothing
    status, _, raw = http("GET", node.url("/metrics"))
    assert status == 200 and b'trackmesh_rtmp_refused_total{worker="0"}' in raw
    status, resp = node.proc.json("DELETE", "/rtmp/conn/whatever", token="wrong-secret-123456")
    assert status == 401, resp


def test_multitrack_renditions_are_simulcast_layers_a_capped_chromium_viewer_gets_the_low_one_then_goes_up(
    rtmp_node: TrackmeshNode, page: Any
) -> None:
    """PyAV's FFmpeg 8.1 publishes three H.264 renditions as Enhanced RTMP multitrack (240x180 as
    track 0, 320x240, 160x120); they become simulcast layers of ``video_main`` (no transcode).
    Chromium over WHEP capped with ``max_spatial=0`` decodes the 160x120 one; uncapped, it switches
    up to a bigger one at that layer's next key frame and keeps decoding."""
    import sys

    from tests.e2e.clients import browser

    node = rtmp_node
    room = "rtmp-multitrack"
    url = rtmp_token(node, room, "encoder")["publish_url"]
    script = Path(__file__).parents[1] / "transports" / "rtmp" / "pyav_publish.py"
    proc = subprocess.Popen([sys.executable, str(script), url, "multitrack", "live", "20"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        wait_for("three renditions", lambda: [c for c in conns(node, room) if c["counters"].get("renditions") == 3])
        token = node.token("whep", room)
        out = browser.play_whep(page, node.url("/whep/endpoint?max_spatial=0"), token)
        assert out["status"] == 201 and out["connectionState"] == "connected", out
        browser.wait_frames(page, "whep", 20, timeout_s=15)
        capped = browser.analyse_inbound(browser.collect_inbound(page, "whep", 1.5, 0.1))
        status, _, body = http(
            "POST",
            out["location"] + "/limit",
            json.dumps({"max_spatial": None}).encode(),
            {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        assert status == 200, body
        width = capped["width"]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and width <= 160:
            time.sleep(0.25)
            width = browser.inbound_sample(page, "whep")["video"]["frameWidth"]
        lifted = browser.analyse_inbound(browser.collect_inbound(page, "whep", 1.5, 0.1))
        [conn] = conns(node, room)
    finally:
        proc.kill()
        _, err = proc.communicate()
    print("multitrack: capped", capped, "lifted", lifted, conn["counters"])
    assert (capped["width"], capped["height"]) == (160, 120), (capped, err[-1000:])
    assert capped["frames_in_window"] >= 30 and capped["max_stall_s"] <= 0.5, capped  # 1.5 s at 30 fps
    assert lifted["width"] in (240, 320) and lifted["frames_in_window"] >= 30, lifted
    assert lifted["max_stall_s"] <= 0.5, lifted
    assert conn["counters"]["renditions"] == 3 and not conn["counters"].get("video_transcoded"), conn


NGINX = Path("/usr/sbin/nginx")
NGINX_RTMP = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")


def test_nginx_rtmp_reference_relays_the_same_ffmpeg_commands(netns_guard: None, tmp_path: Path) -> None:
    """The reference a user compares against: Debian's nginx with libnginx-mod-rtmp (``live on``)
    takes the same two ffmpeg 5.1 commands the tests above publish to trackmesh (x264 zerolatency,
    and x264's defaults with B-frames) and an RTMP player (ffmpeg) reads H.264 + AAC back from it.
    nginx relays RTMP as is (B-frames, AAC): what trackmesh re-encodes and transcodes for browsers."""
    if FFMPEG is None or not NGINX.exists() or not NGINX_RTMP.exists():
        pytest.skip("nginx with libnginx-mod-rtmp (Debian packages nginx-light, libnginx-mod-rtmp) is not installed")
    port = free_port()
    (tmp_path / "nginx.conf").write_text(
        f"load_module {NGINX_RTMP};\ndaemon off;\nmaster_process off;\nworker_processes 1;\n"
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log warn;\nevents {{ worker_connections 64; }}\n"
        f"rtmp {{ server {{ listen 127.0.0.1:{port}; application live {{ live on; record off; }} }} }}\n"
    )
    server = subprocess.Popen([str(NGINX), "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")])
    procs: list[subprocess.Popen[str]] = []
    try:
        wait_for("nginx listening", lambda: server.poll() is None and (tmp_path / "nginx.pid").exists(), 5)
        urls = {bf: f"rtmp://127.0.0.1:{port}/live/{'bframes' if bf else 'zerolatency'}" for bf in (False, True)}
        procs += [publish(url, 6, bframes=bf) for bf, url in urls.items()]
        time.sleep(1.0)
        play = [FFMPEG, "-hide_banner", "-loglevel", "error", "-nostats", "-progress", "pipe:1", "-t", "2", "-i"]
        players = {
            bf: subprocess.Popen([*play, url, "-c", "copy", "-f", "null", "-"], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
            for bf, url in urls.items()
        }  # fmt: skip
        procs += players.values()
        probe = [FFMPEG.replace("ffmpeg", "ffprobe"), "-v", "error", "-show_entries", "stream=codec_name,has_b_frames",
                 "-of", "json", "-rw_timeout", "5000000"]  # fmt: skip
        probes = {
            bf: subprocess.Popen([*probe, url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for bf, url in urls.items()
        }
        procs += probes.values()
        streams = {bf: json.loads(p.communicate(timeout=20)[0])["streams"] for bf, p in probes.items()}
        frames = {}
        for bf, player in players.items():
            out, err = player.communicate(timeout=20)
            counts = [int(line[6:]) for line in out.splitlines() if line.startswith("frame=")]
            frames[bf] = (counts[-1] if counts else 0, err[-500:])
    finally:
        for p in procs:
            p.kill()
            p.wait()
        server.terminate()
        server.wait(timeout=10)
    print("nginx-rtmp reference:", frames, streams)
    for bf in (False, True):
        assert frames[bf][0] >= 30, frames  # over 1 s of video in the 2 s the RTMP player reads (45-57 seen)
        assert sorted(s["codec_name"] for s in streams[bf]) == ["aac", "h264"], streams
    video = {bf: next(s for s in streams[bf] if s["codec_name"] == "h264") for bf in (False, True)}
    assert video[True]["has_b_frames"] > 0 and video[False]["has_b_frames"] == 0, video  # relayed as sent
