"""Suite-wide settings for the nodes tests start (in process or as subprocesses, which inherit it)."""

from __future__ import annotations

import os

# Every standalone node would otherwise bind UDP 4443 for Media over QUIC and collide with the
# next one; the MoQ tests pass --moq-port explicitly (the command line wins over the environment).
os.environ.setdefault("TRACKMESH_MOQ_PORT", "0")
