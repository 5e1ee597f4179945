"""The zenoh session of a cluster node: config builder and opener.

Every node is a zenoh *peer* with an explicit listen endpoint and explicit seeds to connect to.
Scouting is always off (multicast scouting would announce the node on 224.0.0.224:7446, gossip
would make it dial addresses it learned from others), so a node only ever talks to the endpoints
it was given and to the nodes that connect to it.

Links are authenticated with zenoh's user/password extension (``transport/auth/usrpwd``): both
sides of every link prove knowledge of a password derived from the cluster secret (a challenge /
response; the password itself is not sent). A node with another secret fails the handshake and
gets no link, hence no data, no queries and no liveliness. usrpwd authenticates but does not
encrypt: across untrusted networks use ``tls/`` endpoints as well.

zenoh reads the accepted credentials from a *dictionary file* (``user:password`` lines). We write
it into a private temporary directory (mode 0600) and delete it when the session closes.

Wiring (the driver, per node process)::

    node = open_node(ClusterConfig(secret, listen=["tcp/<node-ip>:<port>"], seeds=[...]))
    post = loop.call_soon_threadsafe           # zenoh threads -> the worker's event loop
    clock = time.monotonic                     # the clock the core's ``now`` comes from
    registry = ZenohRegistry(node.session, post, clock)
    hub = ZenohChannelHub(node.session, post, clock)
    worker = MediaWorker(node_id, 0, secret, registry, hub)
    ...
    hub.close(); registry.close(); node.close()    # on shutdown, after the worker's
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import zenoh

from trackmesh.security.keys import derive_key

# Liveliness lease: a node that stops answering (hang, partition: no TCP FIN) is declared dead
# after this long, so its registry entries vanish within the 3 s the cluster promises. A killed
# process is noticed at once, when the kernel closes its sockets. Keep-alives come from zenoh's
# Rust threads, so a busy Python loop (GIL) does not make a node look dead.
DEFAULT_LEASE_MS = 2000
# Keep-alives per lease period (zenoh's ``transport/link/tx/keep_alive``).
KEEP_ALIVES_PER_LEASE = 4

DATA_QUEUE_BATCHES = 16  # zenoh 1.10 asserts 1..16 batches per queue (pipeline RBLEN)

_ENDPOINT = re.compile(r"^(tcp|tls|quic|udp)/(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$")


class ClusterConfigError(ValueError):
    """A cluster setting that cannot be turned into a safe zenoh config."""


def check_endpoint(endpoint: str) -> str:
    """``proto/host:port`` with an explicit host and port (no wildcards, no zenoh extras)."""
    m = _ENDPOINT.match(endpoint)
    if m is None or not 0 <= int(m.group(3)) <= 65535:
        raise ClusterConfigError(f"zenoh endpoint must look like tcp/127.0.0.1:7447, got {endpoint!r}")
    return endpoint


def derive_credentials(secret: str | bytes) -> tuple[str, str]:
    """(user, password) for zenoh usrpwd, derived from the cluster secret.

    From the secret's own cluster-link key (HKDF), separate from every other use (ConnIds, tokens).
    The user name is sent in clear during the handshake, so it is a short tag (it only tells which secret generation a
    node runs, handy while rotating); the password is never sent.
    """
    if not secret:
        raise ClusterConfigError("the cluster secret must not be empty")
    key = derive_key(secret, "cluster-link")  # HKDF, security/keys.py
    user = "tm-" + hmac.new(key, b"user", hashlib.sha256).hexdigest()[:12]
    password = hmac.new(key, b"password", hashlib.sha256).hexdigest()
    return user, password


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """What a node needs to join the cluster mesh."""

    secret: str | bytes
    listen: Sequence[str] = ()
    seeds: Sequence[str] = ()
    lease_ms: int = DEFAULT_LEASE_MS
    # "peer": the full mesh. With gossip off, peers do not relay for each other (verified with
    # zenoh 1.10: A-B-C chain, A's puts never reach C, even through a router-mode B), so peers
    # must be fully meshed: give every node every other node (one direction is enough).
    # "router" + "client": routers relay for their clients and route among themselves (link
    # state), one hop more; see cluster/topology.py and docs/cluster.md ("Zone routers").
    mode: str = "peer"
    # Extra zenoh settings (path -> JSON value), applied last; scouting cannot be re-enabled.
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for ep in (*self.listen, *self.seeds):
            check_endpoint(ep)
        if not self.listen and not self.seeds:
            raise ClusterConfigError("a node needs a listen endpoint or at least one seed")
        if self.mode not in ("peer", "client", "router"):
            raise ClusterConfigError(f"zenoh mode must be peer, client or router, got {self.mode!r}")
        if not 200 <= self.lease_ms <= 60_000:
            raise ClusterConfigError(f"lease must be 200..60000 ms, got {self.lease_ms}")
        for path in self.extra:
            if path.startswith(("scouting", "transport/auth", "mode")):
                raise ClusterConfigError(f"{path!r} is managed by trackmesh and cannot be overridden")


def build_config(cfg: ClusterConfig, dictionary_file: str) -> zenoh.Config:
    """The zenoh config of a node. ``dictionary_file`` must hold ``user:password`` (see open_node)."""
    user, password = derive_credentials(cfg.secret)
    z = zenoh.Config()
    settings: list[tuple[str, Any]] = [
        ("mode", cfg.mode),
        ("scouting/multicast/enabled", False),
        ("scouting/gossip/enabled", False),
        ("listen/endpoints", list(cfg.listen)),
        ("connect/endpoints", list(cfg.seeds)),
        ("transport/auth/usrpwd", {"user": user, "password": password, "dictionary_file": dictionary_file}),
        ("transport/link/tx/lease", cfg.lease_ms),
        ("transport/link/tx/keep_alive", KEEP_ALIVES_PER_LEASE),
        # Media goes with CongestionControl.DROP: with zenoh's default of 2 batches per priority
        # queue a few ms of scheduling hiccup on a busy node already drops packets of a paced
        # stream. A deeper data queue absorbs such bursts (batches are allocated lazily).
        ("transport/link/tx/queue/size/data", DATA_QUEUE_BATCHES),
    ]
    settings.extend(cfg.extra.items())
    for path, value in settings:
        z.insert_json5(path, json.dumps(value))
    # Belt and braces: refuse to hand out a config that could scout.
    scouting = [json.loads(z.get_json(f"scouting/{kind}/enabled")) for kind in ("multicast", "gossip")]
    if scouting != [False, False]:
        raise ClusterConfigError("zenoh scouting must stay disabled")
    return z


class ZenohNode:
    """An open zenoh session plus the private files it needs; ``close()`` removes them."""

    __slots__ = ("_tmpdir", "config", "session")

    def __init__(self, session: zenoh.Session, config: ClusterConfig, tmpdir: str) -> None:
        self.session = session
        self.config = config
        self._tmpdir = tmpdir

    @property
    def zid(self) -> str:
        return str(self.session.zid())

    def peers(self) -> list[str]:
        """zids of the peers (not routers) this session currently has an (authenticated) link with."""
        return [str(z) for z in self.session.info.peers_zid()]

    def routers(self) -> list[str]:
        """zids of the routers this session currently has an (authenticated) link with."""
        return [str(z) for z in self.session.info.routers_zid()]

    def clients(self) -> list[str]:
        """zids of the clients linked to this session (a router's share of its zone's members)."""
        return [str(t.zid) for t in self.session.info.transports() if t.whatami == zenoh.WhatAmI.CLIENT]

    def links(self) -> int:
        """Authenticated links of any kind: what "connected to the cluster" means in every mode."""
        return len(self.peers()) + len(self.routers())

    def close(self) -> None:
        try:
            if not self.session.is_closed():
                self.session.close()  # type: ignore[no-untyped-call]
        finally:
            shutil.rmtree(self._tmpdir, ignore_errors=True)


def open_node(cfg: ClusterConfig) -> ZenohNode:
    """Open the node's zenoh session (peer mode, no scouting, authenticated links)."""
    user, password = derive_credentials(cfg.secret)
    tmpdir = tempfile.mkdtemp(prefix="trackmesh-zenoh-")
    try:
        path = os.path.join(tmpdir, "usrpwd")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"{user}:{password}\n")
        session = zenoh.open(build_config(cfg, path))
    except BaseException:
        shutil.rmtree(tmpdir, ignore_errors=True)
        raise
    return ZenohNode(session, cfg, tmpdir)
