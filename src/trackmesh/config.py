"""Node configuration: every command-line flag, its environment variable and its validation.

Each flag ``--some-flag`` can also be set as ``TRACKMESH_SOME_FLAG``; the command line wins.
A bad value stops the process at start with one line naming the flag and what it accepts.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trackmesh.transports.sip.registration import UpstreamAccount

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
DEFAULT_RTMP_PORT = 1935
RTMP_BFRAMES = ("transcode", "forward", "reject")


class ConfigError(ValueError):
    """A flag or environment value that cannot be used; the message names it."""


def env_name(flag: str) -> str:
    return "TRACKMESH_" + flag.lstrip("-").replace("-", "_").upper()


@dataclass(frozen=True)
class NodeConfig:
    role: str
    http_host: str = "127.0.0.1"
    http_port: int = 3000
    secret: str = ""
    secret_generated: bool = False
    node_ip: str = "127.0.0.1"
    webrtc_port: int = 0
    workers: int = 1
    node_id: int = 1
    zone: int = 0
    log_level: str = "info"
    log_format: str = "text"
    shutdown_timeout: float = 10.0
    seeds: tuple[str, ...] = field(default_factory=tuple)
    cluster_ip: str = "127.0.0.1"
    cluster_port: int = 0
    cluster_mode: str = "mesh"
    cluster_media_version: int = 2  # cluster/zenoh_channels.py: 1 = no send stamp (rolling upgrade)
    capacity: int = 1000
    room_spread: int = 0  # a room's viewers spread over the workers from K sessions (runtime/spread_routing.py)
    # The connector (docs/connector.md); standalone embeds it.
    connector_db: str = "sqlite:///trackmesh-data/connector.db"
    hook_url: str | None = None
    hook_secret: str | None = None
    hook_retry_for: float = 24 * 3600.0
    hook_body: str = "json"
    destroy_room_after: float = 120.0
    apps: str | None = None
    data_dir: str = "trackmesh-data"
    multi_tenancy_sync: str | None = None
    global_gateway: bool = False
    global_redirect: bool = False
    geoip_db: str = ""
    location: tuple[float, float] | None = None
    atm0s_compatible_tokens: bool = False
    dev: bool = False
    metrics_token: str = ""
    metrics_room_labels: int = 0  # runtime/room_metrics.py: label the N busiest rooms; 0 = no room label
    connect_timeout: float = 15.0
    max_sessions: int = 1000
    max_sessions_per_token: int = 100
    http_header_timeout: float = 10.0
    http_body_timeout: float = 30.0
    http_max_connections_per_ip: int = 128
    # Recording (docs/recording.md): files under <record_dir>/<app>/<room>/<session>/<peer>/.
    record_dir: str = "trackmesh-data/recordings"
    record_max_file_minutes: float = 60.0
    record_s3: str | None = None
    record_s3_endpoint: str | None = None
    # RTMP ingest (docs/rtmp.md): None = the default 1935, given up with a warning when taken;
    # 0 = off; an explicit port that cannot be bound stops the node.
    rtmp_port: int | None = None
    rtmp_bframes: str = "transcode"
    rtmp_opus_bitrate: int = 96_000

    @property
    def rtmp_listen_port(self) -> int:
        """The first RTMP port (worker i listens on PORT+i); 0 = RTMP ingest off."""
        return DEFAULT_RTMP_PORT if self.rtmp_port is None else self.rtmp_port
    # SIP (docs/sip.md): None = the default port 5060, given up with a warning when busy; 0 = off.
    sip_port: int | None = None
    sip_rtp_ports: tuple[int, int] = (40000, 40999)
    sip_hook_url: str | None = None
    # MD5 alone by default: baresip 1.0 (libre) gives up on a challenge set containing SHA-256 and sipp
    # answers only the first; the passwords are 128-bit random (HMAC), so MD5 exposes no guessable secret.
    sip_digest_algorithms: tuple[str, ...] = ("MD5",)
    # --sip-register: an upstream account the node registers to (transports/sip/registration.py).
    sip_register: UpstreamAccount | None = None
    # RFC 4028 Min-SE: the shortest session interval we agree to. Below 90 s only with --dev, so
    # tests can watch a refresh and a dead call's timer within seconds (docs/sip.md).
    sip_min_se: int = 90

    @property
    def sip_listen_port(self) -> int:
        return 5060 if self.sip_port is None else self.sip_port
    # Media over QUIC (docs/moq.md). The dataclass default is off; the command line's is 4443.
    moq_port: int = 0
    moq_cert: str = ""
    moq_key: str = ""
    moq_anonymous: bool = False
    # The largest QUIC packet to a MoQ peer on this host (runtime/moq_listener.py); 1200 = as to any peer.
    moq_loopback_datagram_size: int = 16384
    #: Path MTU discovery on MoQ connections (runtime/moq_pmtud.py), and the largest size it tries (0: by family).
    moq_pmtud: bool = True
    moq_pmtud_max: int = 0
    #: The raw-QUIC MoQ ALPNs answered, in our order of preference (transports/moq/alpn.py; empty: all).
    moq_alpns: tuple[str, ...] = ()

    @property
    def token_key(self) -> bytes:
        """The key of session tokens (derived from the secret unless --atm0s-compatible-tokens)."""
        from trackmesh.security.keys import token_key

        return token_key(self.secret, self.atm0s_compatible_tokens)


def _port(flag: str, allow_zero: bool) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = -1
        low = 0 if allow_zero else 1
        if not low <= value <= 65535:
            extra = " (0 = choose a free port)" if allow_zero else ""
            raise ConfigError(f"{flag}: {text!r} is not a port; accepted: an integer {low}..65535{extra}")
        return value

    return parse


def _port_range(flag: str) -> Callable[[str], tuple[int, int]]:
    def parse(text: str) -> tuple[int, int]:
        low_text, _, high_text = text.partition("-")
        try:
            low, high = int(low_text), int(high_text)
        except ValueError:
            low = high = -1
        if not 1024 <= low < high <= 65535:
            raise ConfigError(f"{flag}: {text!r} is not a port range; accepted: LOW-HIGH, 1024 <= LOW < HIGH <= 65535")
        return low, high

    return parse


def _digest_algorithms(flag: str) -> Callable[[str], tuple[str, ...]]:
    def parse(text: str) -> tuple[str, ...]:
        values = tuple(v.strip().upper() for v in text.split(",") if v.strip())
        if not values or any(v not in ("SHA-256", "MD5") for v in values) or len(set(values)) != len(values):
            raise ConfigError(f"{flag}: {text!r} is not accepted; accepted: SHA-256 and/or MD5, comma-separated")
        return values

    return parse


def _moq_alpns(flag: str) -> Callable[[str], tuple[str, ...]]:
    def parse(text: str) -> tuple[str, ...]:
        from trackmesh.transports.moq.alpn import parse_alpns

        try:
            return parse_alpns(text)
        except ValueError as exc:
            raise ConfigError(f"{flag}: {exc}") from None

    return parse


def _int_range(flag: str, low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise ConfigError(f"{flag}: {text!r} is out of range; accepted: an integer {low}..{high}")
        return value

    return parse


def _choice(flag: str, choices: Sequence[str]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.lower()
        if value not in choices:
            raise ConfigError(f"{flag}: {text!r} is not accepted; accepted: {', '.join(choices)}")
        return value

    return parse


def _ip(flag: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        try:
            return str(ipaddress.ip_address(text))
        except ValueError:
            raise ConfigError(f"{flag}: {text!r} is not an IP address; accepted: an IPv4 or IPv6 address") from None

    return parse


def _host(flag: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if not text or any(c.isspace() for c in text):
            raise ConfigError(f"{flag}: {text!r} is not a host; accepted: an IP address or host name")
        return text

    return parse


MIN_SECRET_CHARS = 16
SIP_MIN_SE = 90  # RFC 4028 s4: Min-SE is never below 90 s
SIP_MIN_SE_DEV = 2  # --dev only: short enough for a test, long enough for a refresh round trip


def _secret(flag: str) -> Callable[[str], str]:
    # Any token a browser holds allows an offline guess of the secret (docs/security.md): 16
    # characters at the least; a generated secret has 32.
    def parse(text: str) -> str:
        if len(text) < MIN_SECRET_CHARS:
            raise ConfigError(
                f"{flag}: the secret is too short ({len(text)} characters); accepted: at least {MIN_SECRET_CHARS} "
                "characters (leave it out to get a generated one)"
            )
        return text

    return parse


def _switch(flag: str) -> Callable[[str | bool], bool]:
    def parse(text: str | bool) -> bool:
        if isinstance(text, bool):
            return text
        value = text.strip().lower()
        if value in ("1", "true", "yes", "on"):
            return True
        if value in ("0", "false", "no", "off", ""):
            return False
        raise ConfigError(f"{flag}: {text!r} is not accepted; accepted: 1, true, yes, on, 0, false, no, off")

    return parse


def _bearer_token(flag: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if len(text) < MIN_SECRET_CHARS or any(c.isspace() or not c.isprintable() for c in text):
            raise ConfigError(
                f"{flag}: accepted: at least {MIN_SECRET_CHARS} printable characters without spaces"
            )
        return text

    return parse


def _float_range(flag: str, low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise ConfigError(f"{flag}: {text!r} is out of range; accepted: a number {low}..{high}")
        return value

    return parse


def _seeds(flag: str) -> Callable[[str], tuple[str, ...]]:
    """``tcp/10.0.0.1:7447,tcp/10.0.0.2:7447-7450``: a port range names one endpoint per port
    (a media node with N workers listens on N consecutive cluster ports)."""

    def parse(text: str) -> tuple[str, ...]:
        out: list[str] = []
        for item in (s.strip() for s in text.split(",")):
            if not item:
                continue
            head, sep, last = item.rpartition("-")
            if sep and last.isdigit() and ":" in head and head.rsplit(":", 1)[1].isdigit():
                base, first = head.rsplit(":", 1)
                lo, hi = int(first), int(last)
                if not 0 < lo <= hi <= 65535 or hi - lo > 255:
                    raise ConfigError(f"{flag}: bad port range in {item!r}; accepted: PORT-PORT, at most 256 ports")
                out.extend(f"{base}:{port}" for port in range(lo, hi + 1))
            else:
                out.append(item)
        try:
            from trackmesh.cluster.zenoh_session import ClusterConfigError, check_endpoint
        except ImportError:  # pragma: no cover - zenoh is a dependency
            return tuple(out)
        for ep in out:
            try:
                check_endpoint(ep)
            except ClusterConfigError as exc:
                raise ConfigError(f"{flag}: {exc}") from None
        return tuple(out)

    return parse


def _sip_account(flag: str) -> Callable[[str], UpstreamAccount]:
    def parse(text: str) -> UpstreamAccount:
        from trackmesh.transports.sip.registration import parse_upstream_account

        try:
            return parse_upstream_account(text)
        except ValueError as exc:
            raise ConfigError(f"{flag}: {exc}") from None

    return parse


def _url(flag: str, schemes: tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        from urllib.parse import urlsplit

        parts = urlsplit(text)
        if parts.scheme not in schemes or not (parts.hostname or parts.path):
            raise ConfigError(f"{flag}: {text!r} is not accepted; accepted: a {'/'.join(schemes)} URL")
        return text

    return parse


def _hook_secret(flag: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        from trackmesh.connector.signing import SecretError, parse_secret

        try:
            parse_secret(text)
        except SecretError as exc:
            raise ConfigError(f"{flag}: {exc}") from None
        return text

    return parse


def _dir(flag: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if not text or "\x00" in text:
            raise ConfigError(f"{flag}: expected a directory path")
        if os.path.exists(text) and not os.path.isdir(text):
            raise ConfigError(f"{flag}: {text!r} exists and is not a directory")
        return text

    return parse


def _location(flag: str) -> Callable[[str], tuple[float, float]]:
    def parse(text: str) -> tuple[float, float]:
        try:
            lat, lon = (float(x) for x in text.split(","))
        except ValueError:
            lat, lon = 999.0, 999.0
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise ConfigError(f"{flag}: {text!r} is not a location; accepted: LAT,LON in degrees, e.g. 48.85,2.35")
        return lat, lon

    return parse


def _file(flag: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if not os.path.isfile(text):
            raise ConfigError(f"{flag}: {text!r} is not a readable file")
        return text

    return parse


def _directory(flag: str) -> Callable[[str], str]:
    """A directory to write into: created at first use; refused when a file is in its way."""

    def parse(text: str) -> str:
        if not text.strip() or os.path.isfile(text):
            raise ConfigError(f"{flag}: {text!r} is not a directory path; accepted: a folder (created when needed)")
        return text

    return parse


def _s3_url(flag: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        from urllib.parse import urlparse

        parsed = urlparse(text)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ConfigError(f"{flag}: {text!r} is not an S3 location; accepted: s3://bucket or s3://bucket/prefix")
        return text

    return parse


def _pem_file(flag: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if not os.path.isfile(text) or not os.access(text, os.R_OK):
            raise ConfigError(f"{flag}: {text!r} is not a readable file; accepted: a PEM file path")
        return text

    return parse


def _readable_file(flag: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if not os.path.isfile(text) or not os.access(text, os.R_OK):
            raise ConfigError(f"{flag}: {text!r} is not a readable file; accepted: a MaxMind (.mmdb) database path")
        return text

    return parse


@dataclass(frozen=True)
class Flag:
    name: str
    help: str
    parse: Callable[[str], Any]
    roles: tuple[str, ...]
    metavar: str = "VALUE"
    switch: bool = False  # given without a value (the environment variable takes 1/0, true/false)
    negatable: bool = False  # a switch that is on by default: --no-FLAG turns it off


ALL_ROLES = ("standalone", "gateway", "media", "router", "connector", "console")
CONNECTOR_ROLES = ("standalone", "connector")  # standalone embeds the connector
CLUSTER_MODES = ("mesh", "routers")
HOOK_BODIES = ("json", "protobuf")  # connector/ingest.py
FLAGS: tuple[Flag, ...] = (
    Flag("--http-host", "address the HTTP API listens on (default 127.0.0.1)", _host("--http-host"), ALL_ROLES, "HOST"),
    Flag("--http-port", "port of the HTTP API (default 3000)", _port("--http-port", False), ALL_ROLES, "PORT"),
    Flag(
        "--secret",
        "app and cluster secret: signs tokens and conn ids (default: generated and printed at start)",
        _secret("--secret"),
        ALL_ROLES,
        "SECRET",
    ),
    Flag("--node-ip", "IP address advertised in ICE candidates (default 127.0.0.1)", _ip("--node-ip"),
         ("standalone", "media"), "IP"),
    Flag("--webrtc-port", "first UDP port for WebRTC, one per worker (default 0 = choose)",
         _port("--webrtc-port", True), ("standalone", "media"), "PORT"),
    Flag("--rtmp-port", "first TCP port of RTMP ingest, worker i listens on PORT+i (default 1935, given up with a "
         "warning when taken; 0 = off); on a gateway: the port that splices encoders to the zone's media nodes (off "
         "unless given). See docs/rtmp.md", _port("--rtmp-port", True), ("standalone", "media", "gateway"), "PORT"),
    Flag("--rtmp-bframes", "RTMP H.264 with B-frames: transcode (re-encoded once without B-frames, off the loop), "
         "forward (decode order, warned and counted: browsers may stutter) or reject (the publish is refused with an "
         "onStatus error naming bframes=0) (default transcode)",
         _choice("--rtmp-bframes", RTMP_BFRAMES), ("standalone", "media"), "MODE"),
    Flag("--rtmp-opus-bitrate", "bitrate of the Opus audio transcoded from RTMP AAC, bits/s (default 96000)",
         _int_range("--rtmp-opus-bitrate", 6000, 510_000), ("standalone", "media"), "BPS"),
    Flag("--workers", "number of media worker processes (default 1)", _int_range("--workers", 1, 64),
         ("standalone", "media"), "N"),
    Flag("--node-id", "node index in its zone (default 1)", _int_range("--node-id", 0, 255), ALL_ROLES, "N"),
    Flag("--zone", "zone id (default 0)", _int_range("--zone", 0, (1 << 24) - 1), ALL_ROLES, "N"),
    Flag("--seeds", "comma-separated cluster endpoints to connect to (tcp/IP:PORT or tcp/IP:PORT-PORT): with "
         "--cluster-mode mesh every member already running, with routers the zone's routers; for a router the "
         "other routers (see docs/cluster.md)", _seeds("--seeds"), ("gateway", "media", "router", "connector",
                                                                   "console"), "LIST"),
    Flag("--cluster-mode", "mesh (every member dials every other: a handful of members) or routers (connect to "
         "the zone's routers named in --seeds only: from ~8 members) (default mesh)",
         _choice("--cluster-mode", CLUSTER_MODES), ("gateway", "media", "connector", "console"), "MODE"),
    Flag("--cluster-media-version", "version of the media packets this node sends to other nodes: 2 (the "
         "default) carries a send stamp for trackmesh_cluster_hop_seconds; 1 for a rolling upgrade while some "
         "nodes decode version 1 only (docs/observability.md)", _int_range("--cluster-media-version", 1, 2),
         ("media",), "N"),
    Flag("--cluster-ip", "address the cluster (zenoh) listener binds (default 127.0.0.1)", _ip("--cluster-ip"),
         ("gateway", "media", "router", "connector", "console"), "IP"),
    Flag("--cluster-port", "cluster (zenoh) TCP port; worker i of a media node listens on PORT+i "
         "(default 0 = ephemeral: this member only dials its seeds; a router needs one)",
         _port("--cluster-port", True), ("gateway", "media", "router", "connector", "console"), "PORT"),
    Flag("--capacity", "sessions this media node accepts before gateways route elsewhere (default 1000)",
         _int_range("--capacity", 1, 1_000_000), ("media",), "N"),
    Flag("--room-spread", "spread a room's viewers over this node's workers once the room has K sessions on the "
         "node: each new WHEP viewer then goes to the worker with the fewest sessions, publishers stay on the room's "
         "worker, and the publisher's worker sends each packet once to every other worker with viewers "
         "(docs/cluster.md, \"One room on every core\"; a standalone node links its workers for it); "
         "0 = one worker per room and node (default 0)",
         _int_range("--room-spread", 0, 1_000_000), ("standalone", "media"), "K"),
    Flag("--connector-db", "the connector's database: sqlite:///PATH or postgresql://user@host/db "
         "(default sqlite:///trackmesh-data/connector.db)", _url("--connector-db", ("sqlite", "postgresql", "postgres",
         "postgresql+psycopg")), CONNECTOR_ROLES, "URL"),
    Flag("--hook-url", "POST every event (atm0s HookEvent JSON, Standard Webhooks signed) to this URL",
         _url("--hook-url", ("http", "https")), CONNECTOR_ROLES, "URL"),
    Flag("--hook-secret", "whsec_... secret that signs webhooks (default: derived from --secret; "
         "GET /api/connector/hook-secret shows it)", _hook_secret("--hook-secret"), CONNECTOR_ROLES, "SECRET"),
    Flag("--hook-body", "json (atm0s's protobuf-json, the default) or protobuf (atm0s's protobuf-binary): "
         "the webhook body's form", _choice("--hook-body", HOOK_BODIES), CONNECTOR_ROLES, "FORM"),
    Flag("--hook-retry-for", "seconds a webhook is retried before it is given up (default 86400)",
         _float_range("--hook-retry-for", 1.0, 30 * 86400.0), CONNECTOR_ROLES, "SECONDS"),
    Flag("--destroy-room-after", "seconds a room stays empty before its Stopped event (default 120)",
         _float_range("--destroy-room-after", 0.0, 86400.0), CONNECTOR_ROLES, "SECONDS"),
    Flag("--apps", "JSON file {\"apps\": [{app_id, app_secret, hook?}]}: more apps (multi-tenancy)",
         _file("--apps"), CONNECTOR_ROLES, "FILE"),
    Flag("--multi-tenancy-sync", "URL polled every 30 s for the app list (same JSON as --apps)",
         _url("--multi-tenancy-sync", ("http", "https")), CONNECTOR_ROLES, "URL"),
    Flag("--data-dir", "directory of this node's own files: the events waiting for the zone's connector spill "
         "there (default ./trackmesh-data)", _dir("--data-dir"), ("media", "gateway"), "DIR"),
    Flag("--global", "a global gateway: follows every zone's summary and sends each new session to the best "
         "zone's gateway (307), see docs/cluster.md", _switch("--global"), ("gateway",), switch=True),
    Flag("--global-redirect", "global gateway: answer 307 to the zone gateway instead of proxying (clients that "
         "follow redirects and resend their credentials)", _switch("--global-redirect"), ("gateway",), switch=True),
    Flag("--geoip-db", "global gateway: MaxMind (.mmdb, GeoLite2-City layout) database locating clients by IP; "
         "without it, no geo routing", _readable_file("--geoip-db"), ("gateway",), "PATH"),
    Flag("--location", "zone gateway: where this zone is (LAT,LON), in its zone summary for global gateways",
         _location("--location"), ("gateway",), "LAT,LON"),
    Flag("--atm0s-compatible-tokens", "sign and verify session tokens with the app secret itself, as atm0s does, "
         "instead of a key derived from it (see docs/security.md)", _switch("--atm0s-compatible-tokens"),
         ("standalone", "media"), switch=True),
    Flag("--moq-port", "UDP port of Media over QUIC (raw QUIC and WebTransport) on --http-host "
         "(standalone: default 4443; media: default 0 = off; see docs/moq.md)", _port("--moq-port", True),
         ("standalone", "media"), "PORT"),
    Flag("--moq-cert", "PEM certificate of the MoQ port (default: a self-signed ECDSA certificate valid 10 days, "
         "made at start; its SHA-256 at GET /moq/certificate.sha256)", _pem_file("--moq-cert"), ("standalone", "media"),
         "FILE"),
    Flag("--moq-key", "PEM private key of --moq-cert", _pem_file("--moq-key"), ("standalone", "media"), "FILE"),
    Flag("--moq-anonymous", "open the MoQ relay to anyone: every namespace may be published and subscribed "
         "without a token (interop testing only; logged as a warning)", _switch("--moq-anonymous"),
         ("standalone", "media"), switch=True),
    Flag("--moq-loopback-datagram-size", "largest QUIC packet sent to a MoQ peer on this host (loopback carries "
         "64 KB datagrams; never above the peer's max_udp_payload_size; 1200 = as to any other peer; default 16384)",
         _int_range("--moq-loopback-datagram-size", 1200, 65527), ("standalone", "media"), "BYTES"),
    Flag("--moq-pmtud", "path MTU discovery (RFC 8899) on MoQ connections to peers not on this host, and to those "
         "on it when --moq-loopback-datagram-size is 1200: QUIC packets above 1200 bytes where the path carries "
         "them (on by default; --no-moq-pmtud: 1200-byte packets). See docs/moq.md#speed", _switch("--moq-pmtud"),
         ("standalone", "media"), switch=True, negatable=True),
    Flag("--moq-pmtud-max", "largest QUIC packet path MTU discovery tries (default: an Ethernet path, 1472 bytes "
         "to IPv4 peers, 1452 to IPv6 ones; never above the peer's max_udp_payload_size)",
         _int_range("--moq-pmtud-max", 1200, 65527), ("standalone", "media"), "BYTES"),
    Flag("--moq-alpns", "the raw-QUIC MoQ versions answered, by ALPN, in our order of preference (default: "
         "moqt-20,moqt-22,moqt-21,moqt-16; WebTransport is not affected). E.g. moqt-16 to hold every client to "
         "draft-16", _moq_alpns("--moq-alpns"), ("standalone", "media"), "ALPNS"),
    Flag("--dev", "development mode: GET /dev/token/<kind> hands out demo tokens to loopback clients, so the sample "
         "pages need no secret (never in production)", _switch("--dev"), ("standalone",), switch=True),
    Flag("--metrics-token", "require Authorization: Bearer <token> on /metrics and /api/node/info (default: no auth; "
         "see docs/security.md)", _bearer_token("--metrics-token"), ALL_ROLES, "TOKEN"),
    Flag("--metrics-room-labels", "label the N busiest rooms' series on /metrics with room=\"NAME\" (sessions, "
         "packets in, packets and bytes forwarded); the other rooms are only counted. Off (0) by default: every "
         "labelled room adds 5 series (docs/observability.md)", _int_range("--metrics-room-labels", 0, 1000),
         ("standalone", "media"), "N"),
    Flag("--connect-timeout", "seconds a new WebRTC session has to complete ICE and DTLS before it is closed "
         "(default 15)", _float_range("--connect-timeout", 1.0, 600.0), ("standalone", "media"), "SECONDS"),
    Flag("--max-sessions", "WebRTC sessions (WHIP, WHEP, SDK) this node holds at once; more are refused with 503 "
         "(default 1000; with --workers N each worker takes its share)", _int_range("--max-sessions", 1, 1_000_000),
         ("standalone", "media"), "N"),
    Flag("--max-sessions-per-token", "sessions one token may hold at once; more are refused with 503 (default 100)",
         _int_range("--max-sessions-per-token", 1, 1_000_000), ("standalone", "media"), "N"),
    Flag("--http-header-timeout", "seconds a client has to send a request head; slower ones get 408 (default 10)",
         _float_range("--http-header-timeout", 0.5, 3600.0), ALL_ROLES, "SECONDS"),
    Flag("--http-body-timeout", "seconds a client has to send a request body after its head (default 30)",
         _float_range("--http-body-timeout", 0.5, 3600.0), ALL_ROLES, "SECONDS"),
    Flag("--http-max-connections-per-ip", "HTTP connections one client address may hold open; more get 503 "
         "(default 128; raise it behind a reverse proxy, whose address all requests share)",
         _int_range("--http-max-connections-per-ip", 1, 1_000_000), ALL_ROLES, "N"),
    Flag("--record-dir", "folder for recordings: <app>/<room>/<session>/<peer>/<track>-<n>.webm|mp4 "
         "(default trackmesh-data/recordings; docs/recording.md)", _directory("--record-dir"),
         ("standalone", "media"), "DIR"),
    Flag("--record-max-file-minutes", "a recorded track starts a new file after this many minutes (default 60)",
         _float_range("--record-max-file-minutes", 0.05, 24 * 60.0), ("standalone", "media"), "MINUTES"),
    Flag("--record-s3", "upload finished recordings to s3://BUCKET/PREFIX (credentials and region from the usual "
         "AWS_* variables); the local copy is deleted once the store confirms it", _s3_url("--record-s3"),
         ("standalone", "media"), "URL"),
    Flag("--record-s3-endpoint", "S3-compatible endpoint for --record-s3 (MinIO, Ceph...; path-style addressing)",
         _url("--record-s3-endpoint", ("http", "https")), ("standalone", "media"), "URL"),
    Flag("--sip-port", "UDP and TCP port for SIP calls into rooms (default 5060, skipped with a warning when busy; "
         "0 = no SIP); on a gateway: the UDP port of the stateless proxy to the zone's media nodes (off unless "
         "given). See docs/sip.md", _port("--sip-port", True), ("standalone", "media", "gateway"), "PORT"),
    Flag("--sip-rtp-ports", "UDP ports of SIP calls' RTP, two per call (default 40000-40999)",
         _port_range("--sip-rtp-ports"), ("standalone", "media"), "LOW-HIGH"),
    Flag("--sip-hook-url", "atm0s 0.1 SIP hooks: POST URL/invite names the room of a call without our token or "
         "credentials, URL/auth answers the HA1 of a digest username (see docs/sip.md)",
         _url("--sip-hook-url", ("http", "https")), ("standalone", "media"), "URL"),
    Flag("--sip-register", "register to an upstream account (a trunk, Kamailio) and take the calls it routes to us "
         "into ROOM: sip:USER:PASSWORD@IP[:PORT][;room=ROOM][;expires=SECONDS] (docs/sip.md; prefer the "
         "environment variable: it holds a password)", _sip_account("--sip-register"), ("standalone", "media"), "URI"),
    Flag("--sip-min-se", "RFC 4028 Min-SE: the shortest SIP session-timer interval agreed (default 90, the RFC's "
         f"floor; {SIP_MIN_SE_DEV}..89 only with --dev, for tests; see docs/sip.md)",
         _int_range("--sip-min-se", SIP_MIN_SE_DEV, 86400), ("standalone", "media"), "SECONDS"),
    Flag("--sip-digest-algorithms", "digest challenges offered to SIP callers, in order (default MD5: older UAs "
         "such as baresip 1.0 and sipp fail on SHA-256 challenges; SHA-256,MD5 for RFC 8760 phones)",
         _digest_algorithms("--sip-digest-algorithms"), ("standalone", "media"), "LIST"),
    Flag("--log-level", "debug, info, warning or error (default info)", _choice("--log-level", LOG_LEVELS),
         ALL_ROLES, "LEVEL"),
    Flag("--log-format", "text or json (default text)", _choice("--log-format", LOG_FORMATS), ALL_ROLES, "FORMAT"),
    Flag("--shutdown-timeout", "seconds to wait for sessions to close on SIGTERM (default 10)",
         _float_range("--shutdown-timeout", 0.0, 3600.0), ALL_ROLES, "SECONDS"),
)


FIELD_OF = {"global": "global_gateway"}  # flag names that are Python keywords


def resolve(role: str, cli_values: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> NodeConfig:
    """Build the config of ``role`` from raw command-line values (None = not given) and the
    environment. Raises ConfigError naming the first bad flag."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {"role": role}
    for flag in FLAGS:
        if role not in flag.roles:
            continue
        key = flag.name.lstrip("-").replace("-", "_")
        raw = cli_values.get(key)
        key = FIELD_OF.get(key, key)
        source = flag.name
        if raw is None and env_name(flag.name) in env:
            raw = env[env_name(flag.name)]
            source = env_name(flag.name)
        if raw is None:
            continue
        try:
            values[key] = flag.parse(raw)
        except ConfigError as exc:
            if source != flag.name:
                raise ConfigError(str(exc).replace(flag.name, f"{source} ({flag.name})", 1)) from None
            raise
    if not values.get("secret"):
        values["secret"] = secrets.token_urlsafe(24)
        values["secret_generated"] = True
    node_id = values.get("node_id", 1)
    zone = values.get("zone", 0)
    # As in atm0s: NodeId = zone << 8 | index, so a node id names its zone too.
    values["node_id"] = (zone << 8) | node_id
    values["zone"] = zone
    if role == "router" and not values.get("cluster_port"):
        raise ConfigError("--cluster-port: a router needs a fixed cluster port (the zone's members dial it)")
    if role == "router" and values.get("secret_generated"):
        raise ConfigError("--secret: a router needs the cluster secret (its links are authenticated with it)")
    if values.get("record_s3_endpoint") and not values.get("record_s3"):
        raise ConfigError("--record-s3-endpoint: only with --record-s3 (the bucket and prefix to upload to)")
    if role in ("connector", "console") and values.get("secret_generated"):
        raise ConfigError(f"--secret: the {role} needs the cluster secret (its links are authenticated with it)")
    if values.get("sip_min_se", SIP_MIN_SE) < SIP_MIN_SE and not values.get("dev"):
        raise ConfigError(
            f"--sip-min-se: {values['sip_min_se']} is below RFC 4028's floor of {SIP_MIN_SE} s; accepted: "
            f"{SIP_MIN_SE}..86400 ({SIP_MIN_SE_DEV}..86400 only with --dev, for tests)"
        )
    if role == "standalone":
        values.setdefault("moq_port", 4443)
    if bool(values.get("moq_cert")) != bool(values.get("moq_key")):
        raise ConfigError("--moq-cert: give both --moq-cert and --moq-key, or neither (a certificate is then made)")
    if values.get("geoip_db") and not values.get("global_gateway"):
        raise ConfigError("--geoip-db: only a global gateway (--global) locates clients")
    if values.get("global_redirect") and not values.get("global_gateway"):
        raise ConfigError("--global-redirect: only for a global gateway (--global)")
    routers = values.get("cluster_mode") == "routers"
    if routers and not values.get("seeds"):
        raise ConfigError("--seeds: --cluster-mode routers needs the zone's routers in --seeds")
    if role == "media" and not routers and values.get("workers", 1) > 1 and not values.get("cluster_port"):
        raise ConfigError(
            "--cluster-port: a media node with --workers > 1 needs a cluster port (worker i listens on PORT+i)"
        )
    return NodeConfig(**values)


# From this many seeds (members a mesh member dials) the full mesh no longer pays: measured with
# bench/cluster_small.py, at 8 members its hop is no faster than through a router, and a newcomer
# takes ~0.5 s to join against 10-30 ms (docs/cluster.md, "Tiny clusters: mesh or routers").
MESH_ADVICE_SEEDS = 8


def warnings_of(config: NodeConfig) -> list[str]:
    """Settings that start but probably do not do what the user wants (logged at start)."""
    out: list[str] = []
    if config.role in ("standalone", "media"):
        reachable = config.http_host not in ("127.0.0.1", "::1", "localhost")
        if reachable and ipaddress.ip_address(config.node_ip).is_loopback:
            out.append(
                f"--http-host {config.http_host} lets other machines reach the API, but --node-ip {config.node_ip} "
                "puts a loopback address in ICE candidates: remote browsers will not connect. "
                "Pass --node-ip <an address they can reach>."
            )
    if config.role in ("gateway", "media") and config.cluster_mode == "mesh" and len(config.seeds) >= MESH_ADVICE_SEEDS:
        out.append(
            f"--cluster-mode mesh with {len(config.seeds)} seeds: in a full mesh every member dials every other one "
            f"(n(n-1)/2 links); from about {MESH_ADVICE_SEEDS} members zone routers join faster and cost less "
            "(--cluster-mode routers, docs/cluster.md \"Tiny clusters: mesh or routers\")"
        )
    if config.moq_port and config.moq_anonymous:
        out.append(
            f"--moq-anonymous: the MoQ relay on UDP {config.moq_port} lets ANYONE publish and subscribe ANY namespace "
            "without a token (meant for interop testing, never for production)"
        )
    if config.dev and config.http_host not in ("127.0.0.1", "::1", "localhost"):
        out.append(f"--dev with --http-host {config.http_host}: demo tokens are still handed to loopback clients only")
    return out
