"""A media node's recordings for the console role (runtime/console_query.py node_op): listing, chunked
reads, and refusals of anything that is not a recorded file of the asking app. Plain files, no node."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trackmesh.recording.layout import recorded_file, write_sidecar
from trackmesh.rpc import RpcError
from trackmesh.runtime.console_query import RECORDING_CHUNK, node_op, parse_query


def recorded(root: Path, app: str, name: str, data: bytes) -> str:
    media = root / app / "room" / "session" / "peer" / name
    media.parent.mkdir(parents=True, exist_ok=True)
    media.write_bytes(data)
    write_sidecar(media, {"room": "room", "peer": "peer", "session": "session", "status": "complete"})
    return str(media.relative_to(root))


def test_a_file_is_read_in_chunks_and_the_last_one_is_short(tmp_path: Path) -> None:
    data = bytes(range(256)) * (RECORDING_CHUNK // 256 * 2 + 3)  # two whole chunks and a bit
    path = recorded(tmp_path, "default", "video-0.webm", data)
    listed = json.loads(node_op(tmp_path, "node.recordings", {"app": ""}))
    assert [f["path"] for f in listed[0]["ok"]] == [path]
    got, offset = b"", 0
    while True:
        chunk = node_op(tmp_path, "node.recording_chunk", {"app": "", "path": path, "offset": str(offset)})
        got += chunk
        offset += len(chunk)
        if len(chunk) < RECORDING_CHUNK:
            break
    assert got == data and offset == 2 * RECORDING_CHUNK + 768


def test_only_the_apps_recorded_files_are_served(tmp_path: Path) -> None:
    mine = recorded(tmp_path, "default", "audio-0.ogg", b"mine")
    theirs = recorded(tmp_path, "other", "audio-0.ogg", b"theirs")
    (tmp_path / "default" / "loose.bin").write_bytes(b"no sidecar")
    outside = tmp_path.parent / "outside.webm"
    outside.write_bytes(b"x")
    (outside.parent / "outside.webm.json").write_text("{}")
    (tmp_path / "default" / "link.webm").symlink_to(outside)
    (tmp_path / "default" / "link.webm.json").write_text("{}")
    assert node_op(tmp_path, "node.recording_chunk", {"app": "", "path": mine}) == b"mine"
    for path in (theirs, mine + ".json", "default/loose.bin", "default/../other/" + theirs.split("/", 1)[1],
                 "../outside.webm", "default/link.webm", str(outside), "", "default/\0x"):  # fmt: skip
        with pytest.raises(RpcError) as err:
            node_op(tmp_path, "node.recording_chunk", {"app": "", "path": path})
        assert err.value.status == 404, path
    assert recorded_file(tmp_path, "other", theirs) == (tmp_path / theirs).resolve()
    for offset in ("-1", "x"):
        with pytest.raises(RpcError):
            node_op(tmp_path, "node.recording_chunk", {"app": "", "path": mine, "offset": offset})
    with pytest.raises(RpcError):
        node_op(None, "node.recording_chunk", {"app": "", "path": mine})  # a node without recordings
    assert json.loads(node_op(None, "node.recordings", {"app": ""})) == [{"ok": []}]


def test_the_recording_ops_parse_from_a_console_query() -> None:
    method, params = parse_query(json.dumps({"op": "recording_chunk", "app": "a", "path": "p", "offset": 5}).encode())
    assert (method, params) == ("node.recording_chunk", {"app": "a", "path": "p", "offset": "5"})
