from __future__ import annotations

import pytest

from trackmesh.cli.main import main
from trackmesh.config import ConfigError, env_name, resolve


def test_defaults_of_standalone() -> None:
    cfg = resolve("standalone", {}, {})
    assert (cfg.http_host, cfg.http_port, cfg.node_ip, cfg.webrtc_port, cfg.workers) == (
        "127.0.0.1",
        3000,
        "127.0.0.1",
        0,
        1,
    )
    assert cfg.secret_generated and len(cfg.secret) >= 24
    assert cfg.log_level == "info"


def test_environment_sets_every_flag_and_the_command_line_wins() -> None:
    env = {
        env_name("--http-port"): "3005",
        env_name("--workers"): "3",
        env_name("--secret"): "from-env-secret-16",
        env_name("--node-ip"): "127.0.0.5",
        env_name("--log-level"): "DEBUG",
        env_name("--zone"): "2",
        env_name("--node-id"): "9",
    }
    cfg = resolve("standalone", {"http_port": "3006"}, env)
    assert cfg.http_port == 3006
    assert cfg.workers == 3 and cfg.secret == "from-env-secret-16" and not cfg.secret_generated
    assert cfg.node_ip == "127.0.0.5" and cfg.log_level == "debug"
    assert cfg.node_id == (2 << 8) | 9 and cfg.zone == 2


@pytest.mark.parametrize(
    ("values", "env", "message"),
    [
        ({"http_port": "70000"}, {}, "--http-port: '70000' is not a port; accepted: an integer 1..65535"),
        ({"workers": "0"}, {}, "--workers: '0' is out of range; accepted: an integer 1..64"),
        ({"node_ip": "localhost"}, {}, "--node-ip: 'localhost' is not an IP address"),
        ({"log_level": "loud"}, {}, "--log-level: 'loud' is not accepted; accepted: debug, info, warning, error"),
        ({"secret": "short"}, {}, "--secret: the secret is too short (5 characters); accepted: at least 16 characters"),
        ({}, {"TRACKMESH_WEBRTC_PORT": "x"}, "TRACKMESH_WEBRTC_PORT (--webrtc-port): 'x' is not a port"),
    ],
)
def test_bad_values_name_the_flag(values: dict[str, str], env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        resolve("standalone", values, env)
    assert str(exc.value).startswith(message)


def test_cli_prints_one_line_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["standalone", "--http-port", "abc"]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0
    assert "--http-port: 'abc' is not a port" in err


def test_unknown_flag_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["standalone", "--bogus", "1"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "--bogus" in err


def test_switches_come_from_the_command_line_or_the_environment() -> None:
    cfg = resolve("standalone", {"dev": True}, {env_name("--atm0s-compatible-tokens"): "yes"})
    assert cfg.dev and cfg.atm0s_compatible_tokens
    cfg = resolve("standalone", {"dev": None}, {env_name("--dev"): "0"})
    assert not cfg.dev and not cfg.atm0s_compatible_tokens
    with pytest.raises(ConfigError, match="TRACKMESH_DEV \\(--dev\\): 'maybe' is not accepted"):
        resolve("standalone", {}, {env_name("--dev"): "maybe"})
    with pytest.raises(ConfigError, match="--metrics-token: accepted: at least 16 printable characters"):
        resolve("standalone", {"metrics_token": "short"}, {})


def test_the_cli_takes_switches_without_a_value(capsys: pytest.CaptureFixture[str]) -> None:
    from trackmesh.cli.main import build_parser

    args = build_parser().parse_args(["standalone", "--dev", "--atm0s-compatible-tokens"])
    cfg = resolve("standalone", vars(args), {})
    assert cfg.dev and cfg.atm0s_compatible_tokens and cfg.metrics_token == ""
    args = build_parser().parse_args(["media"])
    assert "dev" not in vars(args)  # --dev is for a standalone node on a developer's machine


def test_rtmp_flags() -> None:
    cfg = resolve("standalone", {}, {})
    rtmp = (cfg.rtmp_port, cfg.rtmp_listen_port, cfg.rtmp_bframes, cfg.rtmp_opus_bitrate)
    assert rtmp == (None, 1935, "transcode", 96000)
    cfg = resolve("media", {"rtmp_port": "0", "rtmp_bframes": "REJECT"}, {"TRACKMESH_RTMP_OPUS_BITRATE": "64000"})
    assert (cfg.rtmp_port, cfg.rtmp_listen_port, cfg.rtmp_bframes, cfg.rtmp_opus_bitrate) == (0, 0, "reject", 64000)
    for flags, message in (
        ({"rtmp_port": "70000"}, "--rtmp-port: '70000' is not a port"),
        ({"rtmp_bframes": "drop"}, "--rtmp-bframes: 'drop' is not accepted; accepted: transcode, forward, reject"),
        ({"rtmp_opus_bitrate": "1"}, "--rtmp-opus-bitrate: '1' is out of range"),
    ):
        with pytest.raises(ConfigError, match=message):
            resolve("standalone", flags, {})
    assert resolve("gateway", {"rtmp_port": "1936"}, {}).rtmp_port == 1936  # the gateway's splice
    assert resolve("gateway", {}, {}).rtmp_port is None  # off on a gateway unless given
    assert resolve("gateway", {"sip_port": "5070"}, {}).sip_port == 5070  # the gateway's SIP proxy
    assert resolve("gateway", {}, {}).sip_port is None  # off on a gateway unless given (gateway/node.py)


def test_the_connector_role_takes_the_cluster_and_connector_flags_and_needs_the_secret() -> None:
    cfg = resolve("connector", {"secret": "s" * 24, "zone": "2", "node_id": "4", "seeds": "tcp/127.0.0.1:7447",
                                "connector_db": "sqlite:///x/c.db", "hook_url": "http://127.0.0.1:9/h"}, {})
    assert (cfg.node_id, cfg.connector_db, cfg.hook_url) == (2 << 8 | 4, "sqlite:///x/c.db", "http://127.0.0.1:9/h")
    with pytest.raises(ConfigError, match="--secret: the connector needs the cluster secret"):
        resolve("connector", {}, {})
    # Media nodes keep their own files (the connector's spill queue) in --data-dir.
    assert resolve("media", {"data_dir": "/tmp/x"}, {}).data_dir == "/tmp/x"
    assert resolve("media", {}, {}).data_dir == "trackmesh-data"


def test_recording_flags() -> None:
    cfg = resolve("standalone", {}, {})
    assert (cfg.record_dir, cfg.record_max_file_minutes, cfg.record_s3) == ("trackmesh-data/recordings", 60.0, None)
    cfg = resolve(
        "media",
        {"record_dir": "/srv/rec", "record_s3": "s3://bucket/pre/fix", "record_s3_endpoint": "http://127.0.0.1:9000"},
        {"TRACKMESH_RECORD_MAX_FILE_MINUTES": "15"},
    )
    assert (cfg.record_dir, cfg.record_max_file_minutes) == ("/srv/rec", 15.0)
    assert (cfg.record_s3, cfg.record_s3_endpoint) == ("s3://bucket/pre/fix", "http://127.0.0.1:9000")
    for values, message in (
        ({"record_s3": "http://bucket/x"}, "--record-s3"),
        ({"record_s3_endpoint": "http://127.0.0.1:9000"}, "--record-s3-endpoint: only with --record-s3"),
        ({"record_max_file_minutes": "0"}, "--record-max-file-minutes"),
        ({"record_dir": __file__}, "--record-dir"),
    ):
        with pytest.raises(ConfigError, match=message):
            resolve("standalone", values, {})


def test_moq_alpns_choose_the_raw_quic_versions_and_refuse_unknown_ones() -> None:
    assert resolve("standalone", {}, {}).moq_alpns == ()
    assert resolve("standalone", {"moq_alpns": "moqt-16,moqt-20"}, {}).moq_alpns == ("moqt-16", "moqt-20")
    assert resolve("media", {}, {env_name("--moq-alpns"): "moqt-16"}).moq_alpns == ("moqt-16",)
    with pytest.raises(ConfigError, match="--moq-alpns: 'moqt-99' is not accepted; accepted: one or more of"):
        resolve("standalone", {"moq_alpns": "moqt-99"}, {})
