"""Where recordings go, and the sidecar that describes each file.

Layout (every name percent-encoded, so a ``/`` or ``..`` in a room or peer name stays one
harmless path segment)::

    <record dir>/<app>/<room>/<session>/<peer>/<track>-<index>.<webm|mp4>
    <record dir>/<app>/<room>/<session>/<peer>/<track>-<index>.<webm|mp4>.json

``<app>`` is ``default`` for the node's own app; ``<session>`` is the room's recording session
(UTC start time and a random suffix: ``20261207T061502Z-3fa2``); ``<index>`` counts the track's
files in the session (a new one on a codec change or after ``--record-max-file-minutes``).

The sidecar JSON is written when the file opens, when its start is refined by a sender report,
and when it closes: ``room``, ``peer``, ``track``, ``app``, ``session``, ``codec``, ``container``,
``start_time`` (ISO 8601 UTC) and ``start_wall`` (Unix seconds) of the first sample on the node's
clock, ``synced`` (placed by RTCP sender reports, else by arrival), ``tagged_start_time`` (the
``start_time`` tag inside the file: the start as known when it opened), ``opened_wall`` (when the
node opened the file), ``status`` (``recording``,
``complete`` or ``failed``), ``duration``, ``bytes`` (media written), ``end_reason``, ``error``. A file whose
sidecar still says ``recording`` after the node is gone was cut by a crash: it plays up to its
last fragment.
"""

from __future__ import annotations

import json
import os
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

__all__ = [
    "DEFAULT_APP",
    "file_stem",
    "iso_time",
    "list_recordings",
    "mark_interrupted",
    "new_session",
    "read_sidecar",
    "recorded_file",
    "write_sidecar",
]

DEFAULT_APP: Final = "default"
_SIDE: Final = ".json"


def _seg(name: str) -> str:
    enc = quote(name, safe="-_.@+=,")
    return enc if enc not in ("", ".", "..") else enc.replace(".", "%2E") or "%00"


def seg(name: str) -> str:
    """``name`` as one path segment of the layout (percent-encoded)."""
    return _seg(name)


def iso_time(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_session(wall: float) -> str:
    """A room recording session's folder name: its UTC start and a random suffix."""
    return datetime.fromtimestamp(wall, UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(2)


def room_dir(root: Path, app: str, room: str) -> Path:
    return root / _seg(app or DEFAULT_APP) / _seg(room)


def file_stem(root: Path, app: str, room: str, session: str, peer: str, track: str, index: int) -> Path:
    """The path of a track's ``index``-th file in the session, without its extension."""
    return room_dir(root, app, room) / _seg(session) / _seg(peer) / f"{_seg(track)}-{index:03d}"


def write_sidecar(media: Path, info: dict[str, Any]) -> None:
    """Write the sidecar of ``media`` atomically (a crash leaves the old one or the new one)."""
    side = media.with_name(media.name + _SIDE)
    tmp = side.with_name(side.name + ".tmp")
    tmp.write_text(json.dumps(info, sort_keys=True))
    os.replace(tmp, side)


def read_sidecar(side: Path) -> dict[str, Any] | None:
    try:
        info = json.loads(side.read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def mark_interrupted(root: Path) -> int:
    """At start: sidecars still saying ``recording`` belong to files a crash cut (they play up to
    their last fragment); they become ``interrupted``. Returns how many."""
    found = 0
    if not root.is_dir():
        return 0
    for side in root.rglob("*" + _SIDE):
        info = read_sidecar(side)
        if info is None or info.get("status") != "recording":
            continue
        media = side.with_name(side.name[: -len(_SIDE)])
        info.update(status="interrupted", end_reason="the node stopped without finalising this file")
        write_sidecar(media, info)
        found += 1
    return found


def list_recordings(root: Path, app: str, room: str | None) -> list[dict[str, Any]]:
    """Every recorded file of ``app`` (of ``room`` only, when given), oldest session first, each
    its sidecar plus ``path`` (relative to ``root``) and ``size``, the file's current size. A file
    uploaded to S3 (and so deleted here) is listed from its sidecar: ``uploaded``, ``s3_key``."""
    base = room_dir(root, app, room) if room is not None else root / _seg(app or DEFAULT_APP)
    if not base.is_dir():
        return []
    out: list[dict[str, Any]] = []
    for side in sorted(base.rglob("*" + _SIDE)):
        if side.name.endswith(".upload" + _SIDE):
            continue  # an S3 upload's resume state (recording/upload.py)
        media = side.with_name(side.name[: -len(_SIDE)])
        info = read_sidecar(side)
        if info is None:
            continue
        if media.exists():
            info["size"] = media.stat().st_size
        elif not info.get("uploaded"):
            continue  # removed by hand
        info["path"] = str(media.relative_to(root))
        out.append(info)
    out.sort(key=lambda i: (str(i.get("session", "")), float(i.get("start_wall", 0.0)), i["path"]))
    return out


def recorded_file(root: Path, app: str, path: str) -> Path | None:
    """The media file ``path`` (as :func:`list_recordings` names it, relative to ``root``) when it is a
    recorded file of ``app`` still here: inside the app's folder once resolved (no ``..``, no symlink
    out), with its sidecar next to it. None otherwise."""
    if not path or "\0" in path or path.endswith(_SIDE):
        return None
    try:
        base = (root / _seg(app or DEFAULT_APP)).resolve()
        full = (root / path).resolve()
    except (OSError, RuntimeError, ValueError):
        return None
    if base not in full.parents or not full.is_file():
        return None
    return full if full.with_name(full.name + _SIDE).is_file() else None

