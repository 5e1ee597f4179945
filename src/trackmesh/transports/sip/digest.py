"""HTTP Digest authentication for SIP (s22, RFC 2617, RFC 7616, RFC 8760): MD5 and SHA-256.

Server side (:class:`DigestServer`, the registrar and the INVITE gate): challenges carry a
stateless nonce, ``<issued-at ms hex>-<salt>.<HMAC of both>``, so any worker holding the secret can check
it and its age without a shared table; nonce counts are tracked per nonce (bounded) so a
replayed ``nc`` gets a fresh challenge (``stale=true``), never a hint about which part failed.
The password is never needed: the caller supplies HA1 (from the hook or derived from the app
secret), looked up between :func:`parse_credentials` and :meth:`DigestServer.check`.

Client side (:class:`DigestClient`, a UA answering 401/407 from a trunk or registrar): picks
the strongest offered algorithm (RFC 8760 s2.4: SHA-256 over MD5) and counts ``nc`` per nonce.

Only ``qop=auth`` (and the RFC 2069 no-qop form for old peers) is supported; ``auth-int``,
``-sess`` algorithms and ``userhash`` are refused as unsupported algorithms.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field

from trackmesh.errors import RemoteProtocolError
from trackmesh.transports.sip.message import split_list

__all__ = [
    "ALGORITHMS",
    "Challenge",
    "Credentials",
    "DigestClient",
    "DigestError",
    "DigestServer",
    "Verdict",
    "compute_ha1",
    "parse_challenge",
    "parse_credentials",
]

#: RFC 7616 s6.1 algorithm names -> hashlib names, in our order of preference.
ALGORITHMS = {"SHA-256": "sha256", "MD5": "md5"}


class DigestError(RemoteProtocolError):
    """A malformed or unsupported Authorization / WWW-Authenticate value."""


def _h(algorithm: str, text: str) -> str:
    return hashlib.new(ALGORITHMS[algorithm], text.encode()).hexdigest()


def compute_ha1(algorithm: str, username: str, realm: str, password: str) -> str:
    """RFC 7616 s3.4.2: H(username ":" realm ":" password)."""
    return _h(algorithm, f"{username}:{realm}:{password}")


def _response(
    algorithm: str, ha1: str, nonce: str, nc: str, cnonce: str, qop: str | None, method: str, uri: str
) -> str:
    ha2 = _h(algorithm, f"{method}:{uri}")
    if qop is None:  # RFC 2069 compatibility (RFC 2617 s3.2.2.1)
        return _h(algorithm, f"{ha1}:{nonce}:{ha2}")
    return _h(algorithm, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


def _params(value: str) -> dict[str, str]:
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        raise DigestError(f"not a Digest value: {scheme[:20]!r}")
    out: dict[str, str] = {}
    try:
        parts = split_list(rest)
    except RemoteProtocolError as e:
        raise DigestError(str(e)) from e
    for part in parts:
        name, eq, val = part.partition("=")
        name = name.strip().lower()
        if not eq or not name:
            raise DigestError(f"bad auth parameter {part[:40]!r}")
        val = val.strip()
        if len(val) >= 2 and val[0] == val[-1] == '"':
            val = val[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        if name in out:
            raise DigestError(f"repeated auth parameter {name}")
        out[name] = val
    return out


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True, slots=True)
class Challenge:
    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ("auth",)
    opaque: str | None = None
    stale: bool = False

    def render(self) -> str:
        parts = [f"realm={_quote(self.realm)}", f"nonce={_quote(self.nonce)}", f"algorithm={self.algorithm}"]
        if self.qop:
            parts.append(f"qop={_quote(','.join(self.qop))}")
        if self.opaque is not None:
            parts.append(f"opaque={_quote(self.opaque)}")
        if self.stale:
            parts.append("stale=true")
        return "Digest " + ", ".join(parts)


def parse_challenge(value: str) -> Challenge:
    p = _params(value)
    if "realm" not in p or "nonce" not in p:
        raise DigestError("challenge without realm or nonce")
    qop = tuple(q.strip() for q in p["qop"].split(",")) if "qop" in p else ()
    return Challenge(
        realm=p["realm"],
        nonce=p["nonce"],
        algorithm=p.get("algorithm", "MD5").upper(),
        qop=qop,
        opaque=p.get("opaque"),
        stale=p.get("stale", "").lower() == "true",
    )


@dataclass(frozen=True, slots=True)
class Credentials:
    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    qop: str | None = None
    nc: str = ""
    cnonce: str = ""
    opaque: str | None = None

    def render(self) -> str:
        parts = [
            f"username={_quote(self.username)}",
            f"realm={_quote(self.realm)}",
            f"nonce={_quote(self.nonce)}",
            f"uri={_quote(self.uri)}",
            f"response={_quote(self.response)}",
            f"algorithm={self.algorithm}",
        ]
        if self.qop is not None:
            parts += [f"qop={self.qop}", f"nc={self.nc}", f"cnonce={_quote(self.cnonce)}"]
        if self.opaque is not None:
            parts.append(f"opaque={_quote(self.opaque)}")
        return "Digest " + ", ".join(parts)


def parse_credentials(value: str) -> Credentials:
    """An Authorization / Proxy-Authorization value (s22.2, RFC 7616 s3.4)."""
    p = _params(value)
    for name in ("username", "realm", "nonce", "uri", "response"):
        if name not in p:
            raise DigestError(f"credentials without {name}")
    qop = p.get("qop")
    if qop is not None and (len(p.get("nc", "")) != 8 or not p.get("cnonce")):
        raise DigestError("qop without an 8-digit nc and a cnonce")
    return Credentials(
        username=p["username"],
        realm=p["realm"],
        nonce=p["nonce"],
        uri=p["uri"],
        response=p["response"].lower(),
        algorithm=p.get("algorithm", "MD5").upper(),
        qop=qop,
        nc=p.get("nc", ""),
        cnonce=p.get("cnonce", ""),
        opaque=p.get("opaque"),
    )


class Verdict(enum.Enum):
    OK = "ok"
    STALE = "stale"  # a good response on an expired or replayed nonce: challenge again, stale=true
    INVALID = "invalid"  # wrong password, user, realm, URI or algorithm: 401/403, no detail


class DigestServer:
    """Issues and checks challenges for one realm with stateless, expiring nonces."""

    def __init__(
        self,
        secret: bytes,
        realm: str,
        *,
        nonce_ttl: float = 300.0,
        max_tracked: int = 10000,
        algorithms: tuple[str, ...] = tuple(ALGORITHMS),
    ) -> None:
        """``algorithms``: the challenges offered, in this order (RFC 8760 s2.4: preferred first; some
        UAs, sipp among them, answer only the first one, so MD5 may have to come first for them)."""
        unknown = [a for a in algorithms if a not in ALGORITHMS]
        if unknown or not algorithms:
            raise ValueError(f"digest algorithms must be among {', '.join(ALGORITHMS)}, got {algorithms}")
        self.algorithms = algorithms
        self._secret = secret
        self.realm = realm
        self.nonce_ttl = nonce_ttl
        self._nc: OrderedDict[str, int] = OrderedDict()
        self._max_tracked = max_tracked

    def _mac(self, issued: str) -> str:
        return hmac.new(self._secret, f"{self.realm}:{issued}".encode(), hashlib.sha256).hexdigest()[:32]

    def nonce(self, now: float) -> str:
        # A random salt keeps two challenges in the same millisecond apart (separate nc counts).
        issued = f"{int(now * 1000):x}-{secrets.token_hex(4)}"
        return f"{issued}.{self._mac(issued)}"

    def challenges(self, now: float, *, stale: bool = False) -> list[str]:
        """WWW-Authenticate values in ``algorithms`` order (SHA-256 first by default), sharing one nonce."""
        nonce = self.nonce(now)
        return [Challenge(self.realm, nonce, alg, stale=stale).render() for alg in self.algorithms]

    def _nonce_age(self, now: float, nonce: str) -> float | None:
        issued, dot, mac = nonce.partition(".")
        if not dot or not hmac.compare_digest(mac, self._mac(issued)):
            return None
        try:
            return now - int(issued.partition("-")[0], 16) / 1000
        except ValueError:
            return None

    def check(self, now: float, method: str, request_uri: str, creds: Credentials, ha1: str | None) -> Verdict:
        """Verify ``creds`` for ``method`` on ``request_uri`` given the user's HA1 (None: unknown user).

        Every check runs before the verdict so timing does not reveal which part failed.
        """
        ok = ha1 is not None
        ok &= creds.algorithm in self.algorithms
        ok &= creds.realm == self.realm
        ok &= creds.uri == request_uri  # s22.4: the digest covers the Request-URI
        ok &= creds.qop in (None, "auth")
        age = self._nonce_age(now, creds.nonce)
        ok &= age is not None
        if creds.algorithm in ALGORITHMS:
            expected = _response(
                creds.algorithm, ha1 or "", creds.nonce, creds.nc, creds.cnonce, creds.qop, method, creds.uri
            )
        else:
            expected = ""
        ok &= hmac.compare_digest(expected, creds.response)
        if not ok:
            return Verdict.INVALID
        assert age is not None
        if age > self.nonce_ttl or age < -1.0:
            return Verdict.STALE
        if creds.qop is not None:
            try:
                nc = int(creds.nc, 16)
            except ValueError:
                return Verdict.INVALID
            if nc <= self._nc.get(creds.nonce, 0):
                return Verdict.STALE  # replayed nonce count (RFC 7616 s3.4.5)
            self._nc[creds.nonce] = nc
            self._nc.move_to_end(creds.nonce)
            while len(self._nc) > self._max_tracked:
                self._nc.popitem(last=False)
        return Verdict.OK


@dataclass
class DigestClient:
    """Answers challenges for one account; ``cnonce`` values come from the caller (randomness
    is an input like time)."""

    username: str
    password: str
    _nc: dict[str, int] = field(default_factory=dict)

    @staticmethod
    def choose(values: list[str]) -> Challenge:
        """The strongest supported challenge among WWW-/Proxy-Authenticate values."""
        usable: list[Challenge] = []
        for v in values:
            try:
                c = parse_challenge(v)
            except DigestError:
                continue
            if c.algorithm in ALGORITHMS and (not c.qop or "auth" in c.qop):
                usable.append(c)
        if not usable:
            raise DigestError("no supported Digest challenge")
        order = list(ALGORITHMS)
        return min(usable, key=lambda c: order.index(c.algorithm))

    def authorize(self, challenge: Challenge, method: str, uri: str, cnonce: str) -> str:
        """The Authorization / Proxy-Authorization value for a request to ``uri``."""
        ha1 = compute_ha1(challenge.algorithm, self.username, challenge.realm, self.password)
        qop = "auth" if challenge.qop else None
        nc_value = self._nc.get(challenge.nonce, 0) + 1
        self._nc[challenge.nonce] = nc_value
        nc = f"{nc_value:08x}"
        creds = Credentials(
            username=self.username,
            realm=challenge.realm,
            nonce=challenge.nonce,
            uri=uri,
            response=_response(challenge.algorithm, ha1, challenge.nonce, nc, cnonce, qop, method, uri),
            algorithm=challenge.algorithm,
            qop=qop,
            nc=nc if qop else "",
            cnonce=cnonce if qop else "",
            opaque=challenge.opaque,
        )
        return creds.render()
