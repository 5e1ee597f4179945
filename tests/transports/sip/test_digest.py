"""Digest authentication (RFC 7616 / RFC 8760): vectors, server checks, client answers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trackmesh.errors import RemoteProtocolError
from trackmesh.transports.sip.digest import (
    Challenge,
    DigestClient,
    DigestError,
    DigestServer,
    Verdict,
    compute_ha1,
    parse_challenge,
    parse_credentials,
)

# RFC 7616 s3.9.1 example inputs (published test vectors).
VECTOR = {
    "username": "Mufasa",
    "password": "Circle of Life",
    "realm": "http-auth@example.org",
    "uri": "/dir/index.html",
    "nonce": "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
    "cnonce": "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
}


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_vectors(algorithm: str, expected: str) -> None:
    client = DigestClient(VECTOR["username"], VECTOR["password"])
    challenge = Challenge(
        VECTOR["realm"], VECTOR["nonce"], algorithm, ("auth",), opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
    )
    value = client.authorize(challenge, "GET", VECTOR["uri"], VECTOR["cnonce"])
    creds = parse_credentials(value)
    assert creds.response == expected
    assert (creds.nc, creds.qop, creds.opaque) == ("00000001", "auth", challenge.opaque)


def sip_round(server: DigestServer, client: DigestClient, now: float, uri: str = "sip:room@127.0.0.1") -> str:
    challenge = DigestClient.choose(server.challenges(now))
    return client.authorize(challenge, "REGISTER", uri, cnonce="abc123")


def test_server_accepts_sha256_first_and_md5() -> None:
    server = DigestServer(b"secret", "trackmesh")
    client = DigestClient("alice", "pw")
    values = server.challenges(10.0)
    assert parse_challenge(values[0]).algorithm == "SHA-256" and parse_challenge(values[1]).algorithm == "MD5"
    creds = parse_credentials(sip_round(server, client, 10.0))
    assert creds.algorithm == "SHA-256"
    ha1 = compute_ha1("SHA-256", "alice", "trackmesh", "pw")
    assert server.check(11.0, "REGISTER", "sip:room@127.0.0.1", creds, ha1) is Verdict.OK
    md5 = DigestClient.choose([values[1]])
    creds = parse_credentials(client.authorize(md5, "INVITE", "sip:room@127.0.0.1", "c2"))
    ha1_md5 = compute_ha1("MD5", "alice", "trackmesh", "pw")
    assert server.check(11.0, "INVITE", "sip:room@127.0.0.1", creds, ha1_md5) is Verdict.OK


def test_server_rejects_without_saying_why() -> None:
    server = DigestServer(b"secret", "trackmesh")
    client = DigestClient("alice", "pw")
    creds = parse_credentials(sip_round(server, client, 0.0))
    good = compute_ha1("SHA-256", "alice", "trackmesh", "pw")
    wrong = compute_ha1("SHA-256", "alice", "trackmesh", "nope")
    assert server.check(1.0, "REGISTER", "sip:room@127.0.0.1", creds, wrong) is Verdict.INVALID
    assert server.check(1.0, "REGISTER", "sip:room@127.0.0.1", creds, None) is Verdict.INVALID  # unknown user
    assert server.check(1.0, "INVITE", "sip:room@127.0.0.1", creds, good) is Verdict.INVALID  # other method
    assert server.check(1.0, "REGISTER", "sip:other@127.0.0.1", creds, good) is Verdict.INVALID  # other URI
    other = DigestServer(b"another secret", "trackmesh")
    assert other.check(1.0, "REGISTER", "sip:room@127.0.0.1", creds, good) is Verdict.INVALID  # forged nonce


def test_expired_nonce_and_replayed_nc_are_stale() -> None:
    server = DigestServer(b"secret", "trackmesh", nonce_ttl=60)
    client = DigestClient("alice", "pw")
    ha1 = compute_ha1("SHA-256", "alice", "trackmesh", "pw")
    creds = parse_credentials(sip_round(server, client, 0.0))
    assert server.check(61.0, "REGISTER", "sip:room@127.0.0.1", creds, ha1) is Verdict.STALE
    creds = parse_credentials(sip_round(server, client, 100.0))
    assert server.check(101.0, "REGISTER", "sip:room@127.0.0.1", creds, ha1) is Verdict.OK
    assert server.check(102.0, "REGISTER", "sip:room@127.0.0.1", creds, ha1) is Verdict.STALE  # same nc again
    # The client counts up on the same nonce, which the server accepts.
    challenge = parse_challenge(server.challenges(100.0)[0])
    first = parse_credentials(client.authorize(challenge, "REGISTER", "sip:room@127.0.0.1", "x"))
    second = parse_credentials(client.authorize(challenge, "REGISTER", "sip:room@127.0.0.1", "y"))
    assert (first.nc, second.nc) == ("00000001", "00000002")
    assert server.check(103.0, "REGISTER", "sip:room@127.0.0.1", first, ha1) is Verdict.OK
    assert server.check(103.0, "REGISTER", "sip:room@127.0.0.1", second, ha1) is Verdict.OK
    stale = parse_challenge(server.challenges(200.0, stale=True)[0])
    assert stale.stale


def test_client_choice_and_bad_values() -> None:
    assert DigestClient.choose(['Digest realm="r", nonce="n"']).algorithm == "MD5"
    with pytest.raises(DigestError):
        DigestClient.choose(['Digest realm="r", nonce="n", algorithm=MD5-sess', 'Basic realm="r"'])
    for bad in (
        'Basic realm="x"',
        "Digest realm",
        'Digest realm="a", realm="b", nonce="n"',
        'Digest realm="unterminated',
    ):
        with pytest.raises(DigestError):
            parse_challenge(bad)
    with pytest.raises(DigestError, match="nc"):
        parse_credentials('Digest username="a", realm="r", nonce="n", uri="sip:x@y", response="0", qop=auth')
    quoted = Challenge('we\\ird "realm"', "n").render()
    assert parse_challenge(quoted).realm == 'we\\ird "realm"'


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_garbage_credentials_raise_only_protocol_errors(text: str) -> None:
    server = DigestServer(b"s", "r")
    try:
        creds = parse_credentials("Digest " + text)
    except RemoteProtocolError:
        return
    assert server.check(0.0, "INVITE", creds.uri, creds, "0" * 64) in (Verdict.INVALID, Verdict.STALE, Verdict.OK)
