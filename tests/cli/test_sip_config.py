"""The SIP flags: --sip-port (default 5060, 0 = off), --sip-rtp-ports, --sip-digest-algorithms, --sip-register,
--sip-min-se."""

from __future__ import annotations

import pytest

from trackmesh.config import ConfigError, resolve


def test_sip_defaults_and_values() -> None:
    cfg = resolve("standalone", {}, {})
    assert cfg.sip_port is None and cfg.sip_listen_port == 5060  # the default: skipped with a warning when busy
    assert cfg.sip_rtp_ports == (40000, 40999) and cfg.sip_digest_algorithms == ("MD5",)
    given = {"sip_port": "0", "sip_rtp_ports": "30000-30099", "sip_digest_algorithms": "sha-256,md5"}
    cfg = resolve("media", given, {})
    assert cfg.sip_listen_port == 0 and cfg.sip_rtp_ports == (30000, 30099)
    assert cfg.sip_digest_algorithms == ("SHA-256", "MD5")
    assert resolve("standalone", {}, {"TRACKMESH_SIP_PORT": "5070"}).sip_listen_port == 5070


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"sip_port": "70000"}, "--sip-port"),
        ({"sip_rtp_ports": "40000"}, "--sip-rtp-ports"),
        ({"sip_rtp_ports": "500-600"}, "--sip-rtp-ports"),
        ({"sip_rtp_ports": "41000-40000"}, "--sip-rtp-ports"),
        ({"sip_digest_algorithms": "SHA-512"}, "--sip-digest-algorithms"),
        ({"sip_digest_algorithms": "MD5,MD5"}, "--sip-digest-algorithms"),
        ({"sip_register": "sip:trunk@10.0.0.1"}, "--sip-register"),
        ({"sip_register": "sip:trunk:pw@pbx.example.com"}, "--sip-register"),
    ],
)
def test_bad_sip_values_name_the_flag(values: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve("standalone", values, {})


def test_sip_register_from_the_environment_keeps_the_password_out_of_errors_and_repr() -> None:
    env = {"TRACKMESH_SIP_REGISTER": "sip:trunk:hunter2@10.0.0.1:5070;room=lobby"}
    account = resolve("standalone", {}, env).sip_register
    assert account is not None and (account.user, account.host, account.port, account.room) == (
        "trunk", "10.0.0.1", 5070, "lobby")  # fmt: skip
    assert account.password == "hunter2" and "hunter2" not in repr(account)
    assert resolve("standalone", {}, {}).sip_register is None
    with pytest.raises(ConfigError) as exc:
        resolve("standalone", {"sip_register": "sip:trunk:hunter2@pbx.example.com"}, {})
    assert "hunter2" not in str(exc.value)


def test_sip_min_se_keeps_rfc_4028s_floor_unless_dev() -> None:
    assert resolve("standalone", {}, {}).sip_min_se == 90  # RFC 4028 s4
    assert resolve("media", {"sip_min_se": "1800"}, {}).sip_min_se == 1800
    # Below 90 s only for tests and development (--dev): an interval of seconds is agreed.
    assert resolve("standalone", {"sip_min_se": "2", "dev": True}, {}).sip_min_se == 2
    assert resolve("standalone", {"dev": True}, {"TRACKMESH_SIP_MIN_SE": "5"}).sip_min_se == 5
    with pytest.raises(ConfigError, match=r"--sip-min-se: 30 is below RFC 4028's floor of 90 s"):
        resolve("standalone", {"sip_min_se": "30"}, {})
    with pytest.raises(ConfigError, match="--sip-min-se"):
        resolve("media", {"sip_min_se": "30"}, {})
    with pytest.raises(ConfigError, match="--sip-min-se"):
        resolve("standalone", {"sip_min_se": "1", "dev": True}, {})  # under 2 s: no time for a refresh
