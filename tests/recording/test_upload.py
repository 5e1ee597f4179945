"""Uploads to S3 through a store that fails 30 % of requests: moto_server on 127.0.0.1 behind a
flaky proxy in the test. Every part arrives, the objects are the files byte for byte (and play),
the local copies go only after the store confirmed them, and an interrupted upload resumes."""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.recording.media import encode_opus, encode_video, packetize
from tests.recording.probe import decode_errors, needs_ffmpeg, probe
from tests.recording.s3 import MOTO, FlakyProxy, moto_server, s3_client
from tests.recording.test_writer import packets
from trackmesh.core.model import MediaCodec
from trackmesh.recording.layout import list_recordings, write_sidecar
from trackmesh.recording.upload import S3Error, S3Target, Uploader, backoff, parse_s3_url
from trackmesh.recording.writer import RecordingWriter, TrackMeta

boto3 = pytest.importorskip("boto3")
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def moto() -> Iterator[str]:
    if not Path(MOTO).exists():
        pytest.skip("moto_server is not installed (pip install 'moto[server]')")
    with moto_server() as url:
        yield url


def wait_idle(up: Uploader, timeout: float) -> float:
    began = time.monotonic()
    while not up.idle():
        assert time.monotonic() - began < timeout, "uploads did not finish"
        time.sleep(0.05)
    return time.monotonic() - began


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def big_file(root: Path, name: str, size: int) -> Path:
    media = root / "default" / "big" / "s1" / "p" / name
    media.parent.mkdir(parents=True, exist_ok=True)
    media.write_bytes(os.urandom(size))
    write_sidecar(media, {"room": "big", "peer": "p", "track": name, "session": "s1", "status": "complete"})
    return media


@needs_ffmpeg
def test_every_part_arrives_through_a_store_failing_30_percent(moto: str, tmp_path: Path) -> None:
    direct = s3_client(moto)
    direct.create_bucket(Bucket="rec")
    proxy = FlakyProxy(moto, 0.3, seed=13)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test")
    counters: dict[str, int] = {}
    try:
        target = S3Target("rec", "recordings/node1", proxy.url, "us-east-1")
        up = Uploader(tmp_path, target, counters, part_size=5 * MIB, seed=1, retry_base=0.1)
        # A real recording (VP8 + Opus, finalised by the writer, handed over as it completes)...
        now = time.monotonic()
        writer = RecordingWriter(tmp_path, 3600.0, counters, time.time() - time.monotonic(), on_file_done=up.submit)
        vp8 = encode_video("vp8", 60, gop=30)
        opus = encode_opus(100)
        writer.open_track("v", TrackMeta("", "room", "s1", "alice", "video", True))
        writer.open_track("a", TrackMeta("", "room", "s1", "alice", "audio", False))
        for pkt in packets(MediaCodec.VP8, packetize("vp8", [d for d, _ in vp8], 3000, mtu=1000), now, 1 / 30):
            writer.packet("v", pkt)
        for pkt in packets(MediaCodec.OPUS, packetize("opus", opus, 960), now, 0.02):
            writer.packet("a", pkt)
        local = {}
        writer.close_track("v", "left")
        writer.close_track("a", "left")
        writer.stop(10)
        for info in list_recordings(tmp_path, "", "room"):
            local[info["path"]] = (tmp_path / info["path"]).read_bytes() if (tmp_path / info["path"]).exists() else None
        # ... and a 12 MiB file: three parts.
        big = big_file(tmp_path, "big-000.webm", 12 * MIB + 123)
        big_bytes = big.read_bytes()
        up.submit(big)
        took = wait_idle(up, 120)
        up.stop(5)
    finally:
        proxy.close()
    assert proxy.failed > 0 and counters["recording_upload_failures"] > 0, (proxy.failed, counters)
    assert counters["recording_uploads"] == 3 and counters["recording_upload_queue"] == 0, counters
    print(f"uploads took {took:.1f} s through {proxy.requests} requests, {proxy.failed} failed")
    # The objects are the files, byte for byte; the local media is gone, the sidecars say where.
    got = direct.get_object(Bucket="rec", Key="recordings/node1/default/big/s1/p/big-000.webm")["Body"].read()
    assert sha(got) == sha(big_bytes) and not big.exists()
    listed = list_recordings(tmp_path, "", "room")
    assert len(listed) == 2 and all(i["uploaded"] and i["status"] == "complete" for i in listed), listed
    for info in listed:
        key = info["s3_key"]
        assert key == "recordings/node1/" + info["path"]
        obj = direct.get_object(Bucket="rec", Key=key)["Body"].read()
        assert not (tmp_path / info["path"]).exists()
        copy = tmp_path / ("copy-" + Path(info["path"]).name)
        copy.write_bytes(obj)
        (stream,) = probe(copy)["streams"]
        assert stream["codec_name"] == ("vp8" if info["kind"] == "video" else "opus")
        assert decode_errors(copy) == ""
        side = direct.get_object(Bucket="rec", Key=key + ".json")["Body"].read()
        assert b'"room": "room"' in side
    assert local  # the files existed locally until their upload was confirmed


def test_an_interrupted_upload_resumes_where_it_stopped(moto: str, tmp_path: Path) -> None:
    direct = s3_client(moto)
    direct.create_bucket(Bucket="resume")
    media = big_file(tmp_path, "v-000.webm", 11 * MIB)
    data = media.read_bytes()
    target = S3Target("resume", "", moto, "us-east-1")
    # A previous run created the upload and stored part 1, then died (kill -9) before part 2.
    key = "default/big/s1/p/v-000.webm"
    created = direct.create_multipart_upload(Bucket="resume", Key=key)
    part1 = direct.upload_part(
        Bucket="resume", Key=key, UploadId=created["UploadId"], PartNumber=1, Body=data[: 5 * MIB]
    )
    state = {"key": key, "size": len(data), "upload_id": created["UploadId"], "parts": {"1": part1["ETag"]}}
    media.with_name(media.name + ".upload.json").write_text(json.dumps(state))
    # And a file a crash cut: its sidecar still says recording.
    cut = big_file(tmp_path, "a-000.webm", 1000)
    write_sidecar(cut, {"room": "big", "peer": "p", "track": "a", "session": "s1", "status": "recording"})
    counters: dict[str, int] = {}
    up = Uploader(tmp_path, target, counters, client=s3_client(moto), part_size=5 * MIB)
    assert up.resume_pending() == 2
    wait_idle(up, 60)
    up.stop(5)
    got = direct.get_object(Bucket="resume", Key=key)["Body"].read()
    assert sha(got) == sha(data) and not media.exists()
    assert counters["recording_upload_bytes"] == len(data) - 5 * MIB + 1000  # part 1 was not sent again
    assert counters["recording_uploads"] == 2 and counters["recording_upload_failures"] == 0
    cut_info = next(i for i in list_recordings(tmp_path, "", "big") if i["track"] == "a")
    assert cut_info["status"] == "interrupted" and cut_info["uploaded"]
    assert not list(tmp_path.rglob("*.upload.json"))


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    rng = random.Random(3)
    for attempt in range(1, 30):
        delay = backoff(attempt, rng, base=0.5, cap=60)
        assert 0.25 <= delay <= min(60, 0.5 * 2 ** (attempt - 1))


def test_s3_urls() -> None:
    assert parse_s3_url("s3://bucket/a/b/") == ("bucket", "a/b")
    assert parse_s3_url("s3://bucket") == ("bucket", "")
    for bad in ("http://x/y", "s3:///nobucket", "bucket/prefix"):
        with pytest.raises(S3Error):
            parse_s3_url(bad)
