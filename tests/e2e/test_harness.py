"""Proof that the e2e client harness works, without a trackmesh server.

Run: scripts/in-netns.sh .venv/bin/pytest tests/e2e/test_harness.py
"""

from __future__ import annotations

import asyncio
import subprocess
from typing import TYPE_CHECKING, Any

import pytest

from tests.e2e.conftest import SYSTEM_PYTHON, only_loopback

if TYPE_CHECKING:  # imported in the fixture: aiortc is optional
    from tests.e2e.clients.aiortc_endpoint import ReferenceEndpoint

pytestmark = pytest.mark.e2e


def test_namespace_has_only_loopback() -> None:
    ok, seen = only_loopback()
    assert ok, seen
    with open("/proc/net/route") as f:
        routes = f.readlines()[1:]
    # No default route, nothing but lo.
    assert all(r.split()[0] == "lo" for r in routes), routes


# -- (a) Chromium -----------------------------------------------------------------------------------


def test_chromium_pc_loopback_decodes_fake_camera(page: Any, get_stats: Any) -> None:
    from tests.e2e.clients import browser

    s = browser.loopback(page, min_frames=30)
    v = s["video"]
    assert v["framesDecoded"] >= 30
    assert (v["frameWidth"], v["frameHeight"]) == (640, 480)
    assert s["audio"]["packetsReceived"] > 0
    assert s["offerCandidates"] and set(s["offerCandidates"]) == {"127.0.0.1"}
    assert s["answerCandidates"] and set(s["answerCandidates"]) == {"127.0.0.1"}
    assert s["pair"] and s["pair"].startswith("127.0.0.1:") and "-> 127.0.0.1:" in s["pair"]

    # Freeze detection over a short window on the same connection.
    samples = browser.collect_inbound(page, "lb_rx", 1.5, 0.25)
    a = browser.analyse_inbound(samples)
    assert a["frames_in_window"] >= 10, a
    assert a["max_stall_s"] < 1.0, a
    assert a["audio_packets_in_window"] > 0, a

    reports = get_stats(page, "lb_rx")
    assert any(r["type"] == "inbound-rtp" and r["kind"] == "video" for r in reports)
    print("chromium loopback:", {k: s[k] for k in ("pair",)}, v["codec"], v["decoderImplementation"], a)


# -- (b) GStreamer ----------------------------------------------------------------------------------

GST_ELEMENTS = [
    "webrtcbin", "nicesrc", "nicesink", "dtlssrtpenc", "srtpenc", "rtpbin",
    "vp8enc", "vp8dec", "x264enc", "avdec_h264", "h264parse", "opusenc", "opusdec",
    "rtpvp8pay", "rtpvp8depay", "rtph264pay", "rtph264depay", "rtpopuspay", "rtpopusdepay",
    "videotestsrc", "audiotestsrc", "videoconvert", "audioconvert", "audioresample", "decodebin", "fakesink",
]  # fmt: skip


def test_gstreamer_elements_present(gst_client: Any) -> None:
    code = (
        "import gi, sys\n"
        "for ns in ('Gst', 'GstWebRTC', 'GstSdp'): gi.require_version(ns, '1.0')\n"
        "from gi.repository import Gst, GstWebRTC, GstSdp\n"
        "Gst.init(None)\n"
        "missing = [e for e in sys.argv[1:] if Gst.ElementFactory.find(e) is None]\n"
        "print(Gst.version_string()); print(' '.join(missing))\n"
    )
    out = subprocess.run([SYSTEM_PYTHON, "-c", code, *GST_ELEMENTS], capture_output=True, text=True, check=True)
    version, missing = [*out.stdout.splitlines(), ""][:2]
    assert version.startswith("GStreamer 1."), out.stdout
    assert missing.strip() == "", f"missing GStreamer elements: {missing}"


@pytest.mark.parametrize("codec", ["vp8", "h264"])
def test_gstreamer_webrtcbin_loopback(gst_client: Any, codec: str) -> None:
    rc, s, err = gst_client("loopback", "--codec", codec, "--duration", "2")
    assert rc == 0, (s, err[-2000:])
    assert s["ok"] is True
    assert s["offer_candidates"] >= 1 and s["answer_candidates"] >= 1
    assert s["frames"] >= 30, s
    assert (s["width"], s["height"]) == (640, 480)
    assert s["audio_buffers"] >= 50, s
    assert s["connection_state"] == "connected"


# -- (c) aiortc -------------------------------------------------------------------------------------


def test_aiortc_loopback_in_process() -> None:
    pytest.importorskip("aiortc")
    from tests.e2e.clients import aiortc_client

    s = asyncio.run(aiortc_client.loopback(codec="vp8", duration=2.0, min_frames=30))
    assert s["ok"] is True, s
    assert s["offer_sdp_addresses"] == ["127.0.0.1"]
    assert s["frames"] >= 30, s
    assert (s["width"], s["height"]) == (640, 480)
    assert s["audio_buffers"] >= 50, s


# -- the clients over real WHIP/WHEP signalling, against a reference aiortc endpoint --------------

TOKEN = "harness-token"


@pytest.fixture
def ref_endpoint() -> Any:
    pytest.importorskip("aiortc")
    from tests.e2e.clients.aiortc_endpoint import ReferenceEndpoint

    with ReferenceEndpoint(token=TOKEN) as ep:
        yield ep


def _only(ep: ReferenceEndpoint, kind: str) -> dict[str, Any]:
    sessions = ep.summaries(kind)
    assert len(sessions) == 1, sessions
    return sessions[0]


def test_gst_whip_publish(gst_client: Any, ref_endpoint: Any) -> None:
    rc, s, err = gst_client("whip", ref_endpoint.url("/whip/room1"), "--token", TOKEN, "--duration", "2")
    assert rc == 0, (s, err[-2000:])
    assert s["status"] == 201 and s["delete_status"] == 204
    assert s["location"] == ref_endpoint.url("/resource/1")
    assert s["video_buffers"] > 30
    got = _only(ref_endpoint, "whip")
    assert got["deleted"] is True
    assert got["frames"] >= 30, got
    assert (got["width"], got["height"]) == (640, 480)
    assert got["audio_buffers"] >= 50, got


def test_gst_whip_wrong_token_fails(gst_client: Any, ref_endpoint: Any) -> None:
    rc, s, err = gst_client("whip", ref_endpoint.url("/whip/room1"), "--token", "wrong", "--duration", "1")
    assert rc == 1
    assert s["status"] == 401 and s["ok"] is False
    assert "401" in err
    assert ref_endpoint.sessions == {}


def test_gst_whep_play(gst_client: Any, ref_endpoint: Any) -> None:
    rc, s, err = gst_client(
        "whep", ref_endpoint.url("/whep/room1"), "--token", TOKEN, "--codec", "any", "--frames", "30", "--duration", "8"
    )
    assert rc == 0, (s, err[-2000:])
    assert s["status"] == 201 and s["delete_status"] == 204
    assert s["frames"] >= 30, s
    assert (s["width"], s["height"]) == (640, 480)
    assert s["audio_buffers"] >= 20, s
    assert _only(ref_endpoint, "whep")["video_sent"] >= 30


def test_aiortc_client_whip_and_whep(aiortc_client: Any, ref_endpoint: Any) -> None:
    rc, s, err = aiortc_client("whip", ref_endpoint.url("/whip/a"), "--token", TOKEN, "--duration", "2")
    assert rc == 0, (s, err[-2000:])
    assert s["status"] == 201 and s["delete_status"] == 204
    got = _only(ref_endpoint, "whip")
    assert got["frames"] >= 30 and (got["width"], got["height"]) == (640, 480), got

    rc, s, err = aiortc_client(
        "whep", ref_endpoint.url("/whep/a"), "--token", TOKEN, "--frames", "30", "--duration", "8"
    )
    assert rc == 0, (s, err[-2000:])
    assert s["status"] == 201 and s["delete_status"] == 204
    assert s["frames"] >= 30 and (s["width"], s["height"]) == (640, 480), s
    assert s["audio_buffers"] >= 20, s


def test_browser_whip_and_whep(page: Any, ref_endpoint: Any) -> None:
    from tests.e2e.clients import browser

    pub = browser.publish_whip(page, ref_endpoint.url("/whip/b"), TOKEN)
    assert pub["status"] == 201 and pub["connectionState"] == "connected", pub
    assert pub["location"] == ref_endpoint.url("/resource/1")

    play = browser.play_whep(page, ref_endpoint.url("/whep/b"), TOKEN)
    assert play["status"] == 201 and play["connectionState"] == "connected", play
    browser.wait_frames(page, "whep", 10)
    a = browser.analyse_inbound(browser.collect_inbound(page, "whep", 1.5, 0.25))
    assert a["frames_in_window"] >= 20 and (a["width"], a["height"]) == (640, 480), a
    assert a["max_stall_s"] < 1.0 and a["audio_packets_in_window"] > 0, a
    assert a["pair"].startswith("127.0.0.1:"), a

    assert browser.stop(page, "whep") == 204
    assert browser.stop(page, "whip") == 204
    got = _only(ref_endpoint, "whip")
    assert got["frames"] >= 30 and (got["width"], got["height"]) == (640, 480), got
    print("browser whep:", a)
