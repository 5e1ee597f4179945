"""Session admission: how many WebRTC sessions a worker holds, in all and per token.

Limits come before work (issue 17): a session is refused with 503 and a reason before its offer is
even parsed, when the node (``--max-sessions``) or the token it presents (``--max-sessions-per-token``)
already holds its maximum. Every WebRTC transport of a worker (WHIP/WHEP and the SDK) shares one
:class:`SessionAdmission`, like it shares the UDP port.

Counting is per worker: a worker takes ``ceil(max_sessions / workers)`` of the node's sessions (a room
lives on one worker, so rooms spread the load), and a token's sessions are counted on the worker that
holds them (a WHIP/WHEP token names a room, so all its sessions land on one worker).
"""

from __future__ import annotations

import math

from trackmesh.rpc import RpcError

from .worker import WorkerRuntime

#: Worker counters (exported as ``trackmesh_<name>_total`` by /metrics).
REFUSED_NODE_FULL = "sessions_refused_node_full"
REFUSED_TOKEN_FULL = "sessions_refused_token_full"
CONNECT_TIMEOUTS = "sessions_connect_timeout"


class SessionAdmission:
    __slots__ = ("by_token", "counters", "limit", "live", "per_token")

    def __init__(self, runtime: WorkerRuntime) -> None:
        cfg = runtime.config
        self.limit = math.ceil(cfg.max_sessions / max(cfg.workers, 1))
        self.per_token = cfg.max_sessions_per_token
        self.live = 0
        self.by_token: dict[str, int] = {}
        self.counters = runtime.counters
        for name in (REFUSED_NODE_FULL, REFUSED_TOKEN_FULL, CONNECT_TIMEOUTS):
            self.counters.setdefault(name, 0)

    @classmethod
    def of(cls, runtime: WorkerRuntime) -> SessionAdmission:
        """The worker's admission (made by the first transport that asks)."""
        found = runtime.services.get(cls)
        if found is None:
            found = runtime.services[cls] = cls(runtime)
        assert isinstance(found, cls)
        return found

    def check(self, token_hash: str) -> None:
        """Raise 503 with the reason when one more session for ``token_hash`` would exceed a limit."""
        if self.live >= self.limit:
            self.counters[REFUSED_NODE_FULL] += 1
            raise RpcError(503, f"this node is full: {self.live} sessions (--max-sessions); try another node")
        if self.by_token.get(token_hash, 0) >= self.per_token:
            self.counters[REFUSED_TOKEN_FULL] += 1
            raise RpcError(
                503, f"this token already holds {self.per_token} sessions (--max-sessions-per-token); close one first"
            )

    def add(self, token_hash: str) -> None:
        self.live += 1
        self.by_token[token_hash] = self.by_token.get(token_hash, 0) + 1

    def release(self, token_hash: str, reason: str) -> None:
        """A session admitted with :meth:`add` ended (``reason`` as logged)."""
        self.live = max(self.live - 1, 0)
        left = self.by_token.get(token_hash, 0) - 1
        if left > 0:
            self.by_token[token_hash] = left
        else:
            self.by_token.pop(token_hash, None)
        if reason.startswith("connect timeout"):
            self.counters[CONNECT_TIMEOUTS] += 1

    def stats(self) -> dict[str, int]:
        return {"sessions": self.live, "limit": self.limit, "per_token": self.per_token, "tokens": len(self.by_token)}
