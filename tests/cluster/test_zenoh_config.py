"""The node config: no scouting, explicit endpoints, credentials from the secret (no session opened)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from trackmesh.cluster.zenoh_session import ClusterConfig, ClusterConfigError, build_config, derive_credentials

OPENS_SESSIONS = False  # builds configs only: runs outside the netns too


def test_config_is_peer_without_scouting_with_explicit_endpoints_and_usrpwd() -> None:
    cfg = ClusterConfig("s3cret", listen=["tcp/127.0.0.1:7447"], seeds=["tcp/127.0.0.1:7448", "tcp/[::1]:7449"])
    z = build_config(cfg, "/tmp/dict")

    def get(path: str) -> Any:
        return json.loads(z.get_json(path))

    assert get("mode") == "peer"
    assert get("scouting/multicast/enabled") is False
    assert get("scouting/gossip/enabled") is False
    assert get("listen/endpoints") == ["tcp/127.0.0.1:7447"]
    assert get("connect/endpoints") == ["tcp/127.0.0.1:7448", "tcp/[::1]:7449"]
    user, password = derive_credentials("s3cret")
    assert get("transport/auth/usrpwd") == {"user": user, "password": password, "dictionary_file": "/tmp/dict"}
    assert get("transport/link/tx/lease") == cfg.lease_ms


def test_credentials_depend_on_the_secret_only() -> None:
    assert derive_credentials("a") == derive_credentials(b"a")
    assert derive_credentials("a") != derive_credentials("b")
    user, password = derive_credentials("a")
    assert user.startswith("tm-") and ":" not in user + password and password != "a"
    with pytest.raises(ClusterConfigError):
        derive_credentials("")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"listen": ["127.0.0.1:7447"]},  # no protocol
        {"listen": ["tcp/127.0.0.1"]},  # no port
        {"listen": ["tcp/127.0.0.1:7447#iface=eth0"]},  # zenoh endpoint extras
        {"seeds": ["tcp/127.0.0.1:99999"]},
        {},  # neither listen nor seeds
        {"listen": ["tcp/127.0.0.1:1"], "lease_ms": 50},
        {"listen": ["tcp/127.0.0.1:1"], "extra": {"scouting/multicast/enabled": True}},
        {"listen": ["tcp/127.0.0.1:1"], "extra": {"transport/auth/usrpwd/user": "x"}},
        {"listen": ["tcp/127.0.0.1:1"], "extra": {"mode": "router"}},
        {"listen": ["tcp/127.0.0.1:1"], "mode": "broker"},
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ClusterConfigError):
        ClusterConfig("secret", **kwargs)  # type: ignore[arg-type]
