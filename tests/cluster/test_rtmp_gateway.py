"""RTMP through a zone gateway (gateway/rtmp_splice.py), real processes on loopback: the gateway's
``--rtmp-port`` splices Debian's ffmpeg to the media node that reports an RTMP address, and
``POST /token/rtmp`` through the gateway names the gateway's URL; a refusal's onStatus reaches the
encoder through the splice."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from typing import Any

import pytest

from tests.cluster.test_roles import SECRET, Cluster, free_port, http

FFMPEG = shutil.which("ffmpeg")


def ffmpeg(url: str, seconds: float) -> subprocess.Popen[str]:
    assert FFMPEG is not None
    cmd = [
        FFMPEG, "-hide_banner", "-loglevel", "error", "-re",
        "-f", "lavfi", "-i", "testsrc=size=160x120:rate=15",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
        "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "15",
        "-c:a", "aac", "-t", str(seconds), "-f", "flv", url,
    ]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for(what: str, check: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.skipif(FFMPEG is None, reason="ffmpeg (Debian package) is not installed")
def test_encoders_publish_through_the_gateway_port_to_a_media_node(cluster: Cluster) -> None:
    gw_rtmp, node_rtmp = free_port(), free_port()
    gw = cluster.start("gateway", 1, 1, "--rtmp-port", str(gw_rtmp))
    media = cluster.media(1, 10, "--rtmp-port", str(node_rtmp))
    wait_for("the media node's RTMP address at the gateway",
             lambda: any(n.get("rtmp") == f"127.0.0.1:{node_rtmp}" for n in gw.info()["nodes"]))  # fmt: skip
    auth = {"Content-Type": "application/json", "Authorization": f"Bearer {SECRET}"}
    body = json.dumps({"room": "via-gateway", "peer": "obs", "ttl": 60}).encode()
    status, headers, raw = http("POST", f"{gw.base}/token/rtmp", body, auth)
    assert status == 200, raw
    data = json.loads(raw)["data"]
    assert data["rtmp_url"] == f"rtmp://127.0.0.1:{gw_rtmp}/live", data
    assert data["publish_url"] == f"{data['rtmp_url']}/{data['stream_key']}"
    assert headers["x-trackmesh-served-by"] == "1/10"

    proc = ffmpeg(data["publish_url"], 20)
    try:

        def published() -> list[Any]:
            _, _, raw = http("GET", f"{media.base}/rtmp/conn", headers={"Authorization": f"Bearer {SECRET}"})
            return [c for c in json.loads(raw)["data"]["conns"] if c["counters"].get("video_frames")]

        [conn] = wait_for("frames at the media node", published)
        assert (conn["room"], conn["peer"]) == ("via-gateway", "obs")
    finally:
        proc.kill()
        proc.wait()
    assert gw.info()["counters"]["rtmp_spliced"] == 1
    # A bad key: the media node's onStatus error reaches ffmpeg through the splice.
    bad = ffmpeg(f"rtmp://127.0.0.1:{gw_rtmp}/live/not-a-token", 5)
    _, err = bad.communicate(timeout=15)
    assert bad.returncode != 0 and "stream key refused" in err, err
