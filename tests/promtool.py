"""``promtool check metrics`` (Debian's prometheus package) on an exposition text."""

from __future__ import annotations

import re
import shutil
import subprocess

PROMTOOL = shutil.which("promtool")


def promtool_problems(text: str) -> str:
    """What promtool says about ``text`` ("" when it accepts it)."""
    assert PROMTOOL is not None, "promtool is missing (apt-get install prometheus)"
    proc = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    return (proc.stdout + proc.stderr).strip() + ("" if proc.returncode == 0 else f" (exit {proc.returncode})")


def sample(text: str, name: str, **labels: str) -> float:
    """The value of the sample ``name`` whose labels include ``labels`` (0.0 when absent)."""
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$", line)
        if m is None or m.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            return float(m.group(4))
    return 0.0
