"""Wire compatibility of our SDK protocol messages with the codec shipped in ``@atm0s-media-sdk/core``.

The npm package pinned in ``sdk_package/package.json`` is installed (``npm ci``, reused from a cache directory once
installed) and its own bundled codec (``dist/lib.js``, the code browsers run) is driven by a small Node script:

- SDK -> us: the SDK builds every sample from its protobuf-JSON form and encodes it; we decode the bytes with our
  classes and compare every field (and the bytes we would write for it).
- us -> SDK: we encode every sample; the SDK decodes our bytes and prints its JSON form, compared field by field.

The samples cover every request, response and event kind, and every field of every message of the five proto files
is set to a non-default value in at least one sample (checked). The test skips only when ``node`` is missing.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message
from google.protobuf.unknown_fields import UnknownFieldSet

from tests.npm_fixtures import install
from trackmesh.transports.sdk import protocol
from trackmesh.transports.sdk.protocol import (
    features_mixer_pb2,
    features_pb2,
    gateway_pb2,
    session_pb2,
    shared_pb2,
)

PACKAGE_DIR = Path(__file__).parent / "sdk_package"
SDK_NAME = "@atm0s-media-sdk/core"

MESSAGE_TYPES: dict[str, type[Message]] = {
    "ClientEvent": session_pb2.ClientEvent,
    "ServerEvent": session_pb2.ServerEvent,
    "ConnectRequest": gateway_pb2.ConnectRequest,
    "ConnectResponse": gateway_pb2.ConnectResponse,
    "RemoteIceRequest": gateway_pb2.RemoteIceRequest,
    "RemoteIceResponse": gateway_pb2.RemoteIceResponse,
}

# Loads the SDK's CommonJS bundle with its module-private codecs exported, then runs the samples both ways.
NODE_HARNESS = r"""
const fs = require("fs");
const path = require("path");
const Module = require("module");

const [coreDir, samplesPath] = process.argv.slice(2);
const file = path.join(coreDir, "dist", "lib.js");
let src = fs.readFileSync(file, "utf8");
const names = [...src.matchAll(/^var (\w+) = \{\n  encode\(message, writer/gm)].map((m) => m[1]);
src += "\nmodule.exports.__codecs = {" + names.map((n) => `${n}: ${n}`).join(", ") + "};\n";
const mod = new Module(file, null);
mod.filename = file;
mod.paths = Module._nodeModulePaths(path.dirname(file));
mod._compile(src, file);
const all = mod.exports.__codecs;

// The bundle renames clashing names (Request2, ServerEvent3, ...): pick the session ones by their shape.
function pick(base, key) {
  const found = Object.keys(all).filter((n) => n.replace(/\d+$/, "") === base && key in all[n].fromPartial({}));
  if (found.length !== 1) throw new Error(`cannot identify ${base}: ${found}`);
  return all[found[0]];
}
const codecs = {
  ClientEvent: all.ClientEvent,
  ServerEvent: pick("ServerEvent", "seq"),
  ConnectRequest: all.ConnectRequest,
  ConnectResponse: all.ConnectResponse,
  RemoteIceRequest: all.RemoteIceRequest,
  RemoteIceResponse: all.RemoteIceResponse,
};

const samples = JSON.parse(fs.readFileSync(samplesPath, "utf8"));
const out = samples.map((s) => {
  const codec = codecs[s.type];
  const sdkBytes = codec.encode(codec.fromJSON(s.json)).finish();
  const decoded = codec.decode(Buffer.from(s.ours, "base64"));
  return { id: s.id, sdk: Buffer.from(sdkBytes).toString("base64"), sdk_decoded: codec.toJSON(decoded) };
});
process.stdout.write(JSON.stringify({ version: require(path.join(coreDir, "package.json")).version, out }));
"""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


RECEIVER_CONFIG = {"priority": 3, "maxSpatial": 2, "maxTemporal": 1, "minSpatial": 0, "minTemporal": 1}
SENDER_CONFIG = {"priority": 2, "bitrate": "MAX_BITRATE"}
SOURCE = {"peer": "alice", "track": "video_main"}
TRACKS = {
    "receivers": [
        {"kind": "VIDEO", "name": "video_0", "state": {"config": RECEIVER_CONFIG, "source": SOURCE}},
        {"name": "audio_1", "state": {"config": {"priority": 1, "maxSpatial": 2, "maxTemporal": 2}}},
    ],
    "senders": [
        {
            "kind": "VIDEO",
            "name": "camera",
            "state": {"config": SENDER_CONFIG, "source": {"id": "trk-1", "screen": True, "metadata": '{"a":1}'}},
        },
        {"name": "mic", "state": {"config": {"priority": 1}}},
    ],
}
ROOM_JOIN = {
    "room": "room-1",
    "peer": "bob",
    "publish": {"peer": True, "tracks": True},
    "subscribe": {"peers": True, "tracks": True},
    "features": {"mixer": {"mode": "MANUAL", "outputs": ["audio_0", "audio_1", "audio_2"], "sources": [SOURCE]}},
    "metadata": "bob's metadata",
}


def _req(seq: int, req_id: int, **request: Any) -> dict[str, Any]:
    return {"seq": seq, "request": {"reqId": req_id, **request}}


def _res(seq: int, req_id: int, **response: Any) -> dict[str, Any]:
    return {"seq": seq, "response": {"reqId": req_id, **response}}


SAMPLES: dict[str, tuple[str, dict[str, Any]]] = {
    # --- HTTP bodies ---
    "connect": (
        "ConnectRequest",
        {"version": "pure-ts@1.0.0-alpha.7", "join": ROOM_JOIN, "tracks": TRACKS, "sdp": "v=0\r\n"},
    ),
    "connect_lazy_join": ("ConnectRequest", {"version": "x", "tracks": {}, "sdp": "v=0\r\n"}),
    "connect_response": ("ConnectResponse", {"connId": "conn-1.sig", "sdp": "v=0\r\nanswer\r\n", "iceLite": True}),
    "remote_ice": ("RemoteIceRequest", {"candidates": ["candidate:1 1 udp 2122260223 10.0.0.1 5000 typ host", "c2"]}),
    "remote_ice_response": ("RemoteIceResponse", {"added": 2}),
    # --- requests ---
    "session.join": ("ClientEvent", _req(1, 1, session={"join": {"info": ROOM_JOIN, "token": "jwt"}})),
    "session.leave": ("ClientEvent", _req(2, 2, session={"leave": {}})),
    "session.sdp": ("ClientEvent", _req(3, 3, session={"sdp": {"tracks": TRACKS, "sdp": "v=0\r\noffer\r\n"}})),
    "session.disconnect": ("ClientEvent", _req(4, 4, session={"disconnect": {}})),
    "room.subscribe": ("ClientEvent", _req(5, 5, room={"subscribe": {"peer": "alice"}})),
    "room.unsubscribe": ("ClientEvent", _req(6, 6, room={"unsubscribe": {"peer": "alice"}})),
    "sender.attach": (
        "ClientEvent",
        _req(
            7, 7, sender={"name": "camera", "attach": {"source": {"id": "t", "screen": True}, "config": SENDER_CONFIG}}
        ),
    ),
    "sender.detach": ("ClientEvent", _req(8, 8, sender={"name": "camera", "detach": {}})),
    "sender.config": ("ClientEvent", _req(9, 9, sender={"name": "camera", "config": SENDER_CONFIG})),
    "receiver.attach": (
        "ClientEvent",
        _req(10, 10, receiver={"name": "video_0", "attach": {"source": SOURCE, "config": RECEIVER_CONFIG}}),
    ),
    "receiver.detach": ("ClientEvent", _req(11, 11, receiver={"name": "video_0", "detach": {}})),
    "receiver.config": ("ClientEvent", _req(12, 12, receiver={"name": "video_0", "config": RECEIVER_CONFIG})),
    "mixer.attach": ("ClientEvent", _req(13, 13, features={"mixer": {"attach": {"sources": [SOURCE, SOURCE]}}})),
    "mixer.detach": ("ClientEvent", _req(14, 14, features={"mixer": {"detach": {"sources": [SOURCE]}}})),
    "msg.start_pub": ("ClientEvent", _req(15, 15, messageChannel={"label": "chat", "startPub": {}})),
    "msg.stop_pub": ("ClientEvent", _req(16, 16, messageChannel={"label": "chat", "stopPub": {}})),
    "msg.sub": ("ClientEvent", _req(17, 17, messageChannel={"label": "chat", "sub": {}})),
    "msg.unsub": ("ClientEvent", _req(18, 18, messageChannel={"label": "chat", "unsub": {}})),
    "msg.pub": (
        "ClientEvent",
        _req(19, 4294967295, messageChannel={"label": "chat", "pub": {"data": _b64(b"hi\x00\xff")}}),
    ),
    # --- responses ---
    "res.error": ("ServerEvent", _res(1, 1, error={"code": 0x2008, "message": "RPC_TOKEN_ROOM_PEER_NOT_MATCH"})),
    "res.session.join": ("ServerEvent", _res(2, 1, session={"join": {}})),
    "res.session.leave": ("ServerEvent", _res(3, 2, session={"leave": {}})),
    "res.session.sdp": ("ServerEvent", _res(4, 3, session={"sdp": {"sdp": "v=0\r\nanswer\r\n"}})),
    "res.session.disconnect": ("ServerEvent", _res(5, 4, session={"disconnect": {}})),
    "res.room.subscribe": ("ServerEvent", _res(6, 5, room={"subscribe": {}})),
    "res.room.unsubscribe": ("ServerEvent", _res(7, 6, room={"unsubscribe": {}})),
    "res.sender.attach": ("ServerEvent", _res(8, 7, sender={"attach": {}})),
    "res.sender.detach": ("ServerEvent", _res(9, 8, sender={"detach": {}})),
    "res.sender.config": ("ServerEvent", _res(10, 9, sender={"config": {}})),
    "res.receiver.attach": ("ServerEvent", _res(11, 10, receiver={"attach": {}})),
    "res.receiver.detach": ("ServerEvent", _res(12, 11, receiver={"detach": {}})),
    "res.receiver.config": ("ServerEvent", _res(13, 12, receiver={"config": {}})),
    "res.mixer.attach": ("ServerEvent", _res(14, 13, features={"mixer": {"attach": {}}})),
    "res.mixer.detach": ("ServerEvent", _res(15, 14, features={"mixer": {"detach": {}}})),
    "res.msg.start_pub": ("ServerEvent", _res(16, 15, messageChannel={"label": "chat", "startPub": {}})),
    "res.msg.stop_pub": ("ServerEvent", _res(17, 16, messageChannel={"label": "chat", "stopPub": {}})),
    "res.msg.sub": ("ServerEvent", _res(18, 17, messageChannel={"label": "chat", "sub": {}})),
    "res.msg.unsub": ("ServerEvent", _res(19, 18, messageChannel={"label": "chat", "unsub": {}})),
    "res.msg.pub": ("ServerEvent", _res(20, 19, messageChannel={"label": "chat", "pub": {}})),
    # --- events ---
    "ev.session.connected": ("ServerEvent", {"seq": 21, "session": {"connected": {}}}),
    "ev.session.joined": ("ServerEvent", {"seq": 22, "session": {"joined": {"room": "room-1", "peer": "bob"}}}),
    "ev.session.leaved": ("ServerEvent", {"seq": 23, "session": {"leaved": {"room": "room-1", "peer": "bob"}}}),
    "ev.session.disconnected": ("ServerEvent", {"seq": 24, "session": {"disconnected": {"reason": "bye"}}}),
    "ev.session.goaway": ("ServerEvent", {"seq": 25, "session": {"goway": {"reason": "drain", "remainSeconds": 30}}}),
    "ev.room.peer_joined": (
        "ServerEvent",
        {"seq": 26, "room": {"peerJoined": {"peer": "alice", "metadata": "m", "extraData": "x"}}},
    ),
    "ev.room.peer_updated": ("ServerEvent", {"seq": 27, "room": {"peerUpdated": {"peer": "alice", "metadata": ""}}}),
    "ev.room.peer_leaved": ("ServerEvent", {"seq": 28, "room": {"peerLeaved": {"peer": "alice"}}}),
    "ev.room.track_started": (
        "ServerEvent",
        {"seq": 29, "room": {"trackStarted": {"peer": "alice", "track": "cam", "kind": "VIDEO", "metadata": "m"}}},
    ),
    "ev.room.track_updated": (
        "ServerEvent",
        {"seq": 30, "room": {"trackUpdated": {"peer": "alice", "track": "cam", "kind": "VIDEO", "metadata": "n"}}},
    ),
    "ev.room.track_stopped": (
        "ServerEvent",
        {"seq": 31, "room": {"trackStopped": {"peer": "alice", "track": "cam", "kind": "VIDEO"}}},
    ),
    "ev.sender.state": ("ServerEvent", {"seq": 32, "sender": {"name": "camera", "state": {"status": "INACTIVE"}}}),
    "ev.receiver.state": ("ServerEvent", {"seq": 33, "receiver": {"name": "video_0", "state": {"status": "INACTIVE"}}}),
    "ev.receiver.stats": (
        "ServerEvent",
        {
            "seq": 34,
            "receiver": {
                "name": "video_0",
                "stats": {
                    "source": {"bitrateKbps": 1500, "rtt": 12.5, "lost": 0.25, "jitter": 3.0},
                    "transmit": {"spatial": 2, "temporal": 1, "bitrateKbps": 800},
                },
            },
        },
    ),
    "ev.receiver.voice_activity": (
        "ServerEvent",
        {"seq": 35, "receiver": {"name": "audio_0", "voiceActivity": {"audioLevel": -40}}},
    ),
    "ev.mixer.slot_set": (
        "ServerEvent",
        {"seq": 36, "features": {"mixer": {"slotSet": {"slot": 2, "source": SOURCE}}}},
    ),
    "ev.mixer.slot_unset": ("ServerEvent", {"seq": 37, "features": {"mixer": {"slotUnset": {"slot": 1}}}}),
    "ev.msg.message": (
        "ServerEvent",
        {"seq": 38, "messageChannel": {"label": "chat", "message": {"peer": "alice", "message": _b64(b"\x01hello")}}},
    ),
}


def _to_json(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message)


def _norm(value: Any) -> Any:
    """JSON round trip, so that 3 and 3.0 or tuples and lists compare equal."""
    return json.loads(json.dumps(value))


def _node_modules_dir(node: str) -> Path:
    """The pinned SDK, installed once per lock file (see tests/npm_fixtures.py)."""
    core = install("sdk_package") / "node_modules" / SDK_NAME
    assert (core / "dist" / "lib.js").exists(), f"the SDK fixture has no dist/lib.js: {core}"
    return core


@pytest.fixture(scope="module")
def sdk_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: cannot check wire compatibility against the npm SDK")
    core = _node_modules_dir(node)
    work = tmp_path_factory.mktemp("sdk-wire")
    samples = []
    for sample_id, (type_name, as_json) in SAMPLES.items():
        ours = json_format.ParseDict(as_json, MESSAGE_TYPES[type_name]()).SerializeToString()
        samples.append({"id": sample_id, "type": type_name, "json": as_json, "ours": _b64(ours)})
    (work / "samples.json").write_text(json.dumps(samples))
    (work / "harness.js").write_text(NODE_HARNESS)
    proc = subprocess.run(
        [node, str(work / "harness.js"), str(core), str(work / "samples.json")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, f"node harness failed:\n{proc.stderr}"
    result: dict[str, Any] = json.loads(proc.stdout)
    result["by_id"] = {row["id"]: row for row in result["out"]}
    return result


def test_pinned_sdk_version(sdk_run: dict[str, Any]) -> None:
    pinned = json.loads((PACKAGE_DIR / "package.json").read_text())["devDependencies"][SDK_NAME]
    assert sdk_run["version"] == pinned


@pytest.mark.parametrize("sample_id", list(SAMPLES))
def test_sdk_encodes_we_decode(sdk_run: dict[str, Any], sample_id: str) -> None:
    type_name, expected = SAMPLES[sample_id]
    sdk_bytes = base64.b64decode(sdk_run["by_id"][sample_id]["sdk"])
    ours = MESSAGE_TYPES[type_name]()
    ours.ParseFromString(sdk_bytes)
    assert _norm(_to_json(ours)) == _norm(expected)
    # Nothing we did not understand, and we would write the very same bytes.
    assert len(UnknownFieldSet(ours)) == 0
    assert ours.SerializeToString() == sdk_bytes


@pytest.mark.parametrize("sample_id", list(SAMPLES))
def test_we_encode_sdk_decodes(sdk_run: dict[str, Any], sample_id: str) -> None:
    _type_name, expected = SAMPLES[sample_id]
    assert _norm(sdk_run["by_id"][sample_id]["sdk_decoded"]) == _norm(expected)


def _all_fields(descriptor: Descriptor, seen: set[str]) -> set[tuple[str, str]]:
    if descriptor.full_name in seen:
        return set()
    seen.add(descriptor.full_name)
    fields = set()
    for field in descriptor.fields:
        fields.add((descriptor.full_name, field.name))
        if field.message_type is not None:
            fields |= _all_fields(field.message_type, seen)
    return fields


def _set_fields(message: Message) -> set[tuple[str, str]]:
    found = set()
    for field, value in message.ListFields():
        found.add((message.DESCRIPTOR.full_name, field.name))
        if field.message_type is not None:
            items = value if field.is_repeated else [value]
            for item in items:
                found |= _set_fields(item)
    return found


def test_samples_set_every_field_of_every_message() -> None:
    seen: set[str] = set()
    every: set[tuple[str, str]] = set()
    for module in (shared_pb2, features_mixer_pb2, features_pb2, session_pb2, gateway_pb2):
        for message_type in module.DESCRIPTOR.message_types_by_name.values():
            every |= _all_fields(message_type, seen)
    covered: set[tuple[str, str]] = set()
    for type_name, as_json in SAMPLES.values():
        covered |= _set_fields(json_format.ParseDict(as_json, MESSAGE_TYPES[type_name]()))
    assert every - covered == set()


def test_every_enum_value_round_trips() -> None:
    """Enum values are plain varints: check each one against the numbers the SDK uses."""
    assert dict(shared_pb2.Kind.items()) == {"AUDIO": 0, "VIDEO": 1}
    assert dict(shared_pb2.BitrateControlMode.items()) == {"DYNAMIC_CONSUMERS": 0, "MAX_BITRATE": 1}
    assert dict(shared_pb2.Receiver.Status.items()) == {"WAITING": 0, "ACTIVE": 1, "INACTIVE": 2}
    assert dict(shared_pb2.Sender.Status.items()) == {"ACTIVE": 0, "INACTIVE": 1}
    assert dict(features_mixer_pb2.Mode.items()) == {"AUTO": 0, "MANUAL": 1}


def test_facade_decode_errors_and_error_response() -> None:
    with pytest.raises(protocol.ProtocolDecodeError):
        protocol.decode_client_event(b"\xff\xff\xff")
    with pytest.raises(protocol.ProtocolDecodeError):
        protocol.decode_connect_request(b"\x2a\x05ab")  # truncated length-delimited field
    event = protocol.response_event(7, protocol.error_response(3, protocol.ErrorCode.RPC_TRACK_NOT_ATTACHED))
    decoded = protocol.decode_server_event(event.SerializeToString())
    assert decoded.seq == 7
    assert decoded.WhichOneof("event") == "response"
    assert decoded.response.req_id == 3
    assert decoded.response.error.code == 0x2004
    assert decoded.response.error.message == "RPC_TRACK_NOT_ATTACHED"
    ice = protocol.decode_remote_ice_request(gateway_pb2.RemoteIceRequest(candidates=["a"]).SerializeToString())
    assert list(ice.candidates) == ["a"]
