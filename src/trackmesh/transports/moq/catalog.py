"""The MSF catalog of a room (draft-ietf-moq-msf, formerly WARP's catalog): a JSON document, the
one object of each group of the ``catalog`` track, listing the room's tracks and how to decode
them. Each update is a whole catalog in a new group (MSF s5: a complete catalog is always
independent; we send no delta updates), so a subscriber that starts at the current group has it.

A track entry: ``name`` (``"<peer>/<track>"``), ``packaging`` (``"loc"``), ``isLive``, ``role``
(``"video"``/``"audio"``), ``renderGroup`` (one per peer: its tracks play together), ``label``,
and when known ``codec`` (the WebCodecs codec string), ``width``/``height`` (video) or
``samplerate``/``channelConfig`` (audio). Tracks share the catalog's namespace, so entries carry
no ``namespace``. Sans-IO; :func:`decode_catalog` checks what it reads (a publisher's catalog).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

from trackmesh.transports.moq.errors import MoqDecodeError

__all__ = ["CATALOG_TRACK", "CatalogTrack", "codec_string", "decode_catalog", "encode_catalog"]

CATALOG_TRACK: Final = b"catalog"
MSF_VERSION: Final = 1
MAX_CATALOG = 1 << 16

#: Our codec names -> WebCodecs codec strings (the WebCodecs codec registry). The profile and
#: level are the common ones a WebRTC publisher sends (H.264 constrained baseline 3.1, VP9 profile 0,
#: AV1 main profile); a decoder configured with them decodes the others of the same family.
_CODEC_STRINGS: Final = {
    "vp8": "vp8",
    "vp9": "vp09.00.10.08",
    "h264": "avc1.42e01f",
    "av1": "av01.0.04M.08",
    "opus": "opus",
    "pcmu": "ulaw",
    "pcma": "alaw",
}


def codec_string(codec: str) -> str:
    """The WebCodecs codec string of one of our codec names ("" when there is none)."""
    return _CODEC_STRINGS.get(codec.lower(), "")


@dataclass(frozen=True, slots=True)
class CatalogTrack:
    name: str
    video: bool
    render_group: int = 1
    label: str = ""
    codec: str = ""  # WebCodecs codec string; "" until the first packet says which
    width: int = 0
    height: int = 0
    samplerate: int = 0
    channels: int = 0


def _entry(t: CatalogTrack) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": t.name,
        "packaging": "loc",
        "isLive": True,
        "role": "video" if t.video else "audio",
        "renderGroup": t.render_group,
    }
    if t.label:
        out["label"] = t.label
    if t.codec:
        out["codec"] = t.codec
    if t.video:
        if t.width and t.height:
            out["width"], out["height"] = t.width, t.height
    else:
        if t.samplerate:
            out["samplerate"] = t.samplerate
        if t.channels:
            out["channelConfig"] = str(t.channels)
    return out


def encode_catalog(tracks: list[CatalogTrack], generated_at_ms: int | None = None) -> bytes:
    doc: dict[str, Any] = {"version": MSF_VERSION}
    if generated_at_ms is not None:
        doc["generatedAt"] = generated_at_ms
    doc["tracks"] = [_entry(t) for t in tracks]
    return json.dumps(doc, separators=(",", ":")).encode()


def _int(obj: dict[str, Any], key: str) -> int:
    value = obj.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MoqDecodeError(f"catalog track field {key!r} is not a non-negative integer")
    return value


def _str(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key, "")
    if not isinstance(value, str):
        raise MoqDecodeError(f"catalog track field {key!r} is not a string")
    return value


def decode_catalog(data: bytes) -> list[CatalogTrack]:
    """The tracks of an MSF catalog object; MoqDecodeError when it is not one we can read."""
    if len(data) > MAX_CATALOG:
        raise MoqDecodeError(f"catalog of {len(data)} bytes (at most {MAX_CATALOG})")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise MoqDecodeError("the catalog is not JSON") from None
    if not isinstance(doc, dict) or doc.get("version") != MSF_VERSION or not isinstance(doc.get("tracks"), list):
        raise MoqDecodeError("not an MSF catalog (version 1 with a tracks list)")
    out = []
    for obj in doc["tracks"]:
        if not isinstance(obj, dict):
            raise MoqDecodeError("a catalog track is not an object")
        name = _str(obj, "name")
        if not name:
            raise MoqDecodeError("a catalog track has no name")
        role = obj.get("role", "video")
        if role not in ("video", "audio"):
            raise MoqDecodeError(f"catalog track role {role!r} is neither video nor audio")
        channels = _str(obj, "channelConfig")
        if channels and not channels.isdigit():
            raise MoqDecodeError("catalog track channelConfig is not a number")
        out.append(
            CatalogTrack(
                name,
                role == "video",
                _int(obj, "renderGroup"),
                _str(obj, "label"),
                _str(obj, "codec"),
                _int(obj, "width"),
                _int(obj, "height"),
                _int(obj, "samplerate"),
                int(channels) if channels else 0,
            )
        )
    return out
