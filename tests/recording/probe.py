"""ffprobe / ffmpeg (Debian's) as the oracles of a recorded file."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

needs_ffmpeg = pytest.mark.skipif(
    shutil.which("ffprobe") is None or shutil.which("ffmpeg") is None,
    reason="ffmpeg/ffprobe not installed (scripts/system-packages.txt)",
)


def probe(path: Path) -> dict[str, Any]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams", str(path)],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def last_packet_time(path: Path) -> float:
    """The presentation time of the file's last packet (what a player reaches), in seconds."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "0", "-show_entries", "packet=pts_time", "-of", "csv=p=0",
         str(path)],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    times = [float(t) for t in out.stdout.split() if t.strip() and t.strip() != "N/A"]
    return max(times)


def decode_errors(path: Path) -> str:
    """What ``ffmpeg -v error -i F -f null -`` prints: empty when the whole file decodes cleanly."""
    out = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-f", "null", "-"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return (out.stderr + ("" if out.returncode == 0 else f"\nexit {out.returncode}")).strip()


def media_bytes(path: Path) -> int:
    """The sum of the file's packet sizes: the media it holds, without the container's bytes."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "packet=size", "-of", "csv=p=0", str(path)],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    return sum(int(t) for t in out.stdout.split() if t.strip().isdigit())
