"""``trackmesh dev-cluster``: every bad flag is one line and exit code 2, before any member starts."""

from __future__ import annotations

import pytest

from trackmesh.cli.main import main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--media-per-zone", "0"], "argument --media-per-zone: '0' is out of range; accepted: an integer 1..32"),
        (["--zones", "x"], "argument --zones: 'x' is out of range"),
        (["--secret", "short"], "argument --secret: the secret is too short (5 characters)"),
        (["--log-level", "loud"], "argument --log-level: 'loud' is not accepted; accepted: debug, info, warning"),
        (["--bogus"], "unrecognized arguments: --bogus"),
        # + the global gateway and a connector per zone
        (["--http-port", "65531", "--zones", "2"], "10 members need ports up to 65540"),  # with the console
        (["--http-port", "65531", "--zones", "2", "--no-connector"], "8 members need ports up to 65538"),
        (["--http-port", "65531", "--zones", "2", "--no-connector", "--no-console"],
         "7 members need ports up to 65537"),
    ],
)
def test_bad_flags_are_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["dev-cluster", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("trackmesh dev-cluster: ") and message in err, err
    assert "usage:" not in err and "Traceback" not in err


def test_a_bad_secret_in_the_environment_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRACKMESH_SECRET", "too-short")
    with pytest.raises(SystemExit) as exc:
        main(["dev-cluster"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "TRACKMESH_SECRET: the secret is too short" in err


def test_help_is_plain_text(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["dev-cluster", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "``" not in out and "trackmesh dev-cluster --zones 2 --media-per-zone 2" in out
