"""Our webhooks verify with the JavaScript ``standardwebhooks`` package (npm), as docs/connector.md
shows: with the whole ``whsec_`` secret, and not after a byte of the body changed."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.npm_fixtures import install
from trackmesh.connector import events as ev
from trackmesh.connector import signing

HERE = Path(__file__).parent / "js_verifier"


def run_node(secret: str, headers: dict[str, str], body: bytes) -> subprocess.CompletedProcess[str]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    target = install("webhook_js_verifier")
    shutil.copyfile(HERE / "verify.mjs", target / "verify.mjs")
    payload = json.dumps({"secret": secret, "headers": headers, "body": body.decode()})
    return subprocess.run([node, str(target / "verify.mjs")], input=payload, capture_output=True, text=True,
                          timeout=60)


def test_javascript_library_verifies_a_delivery() -> None:
    secret = signing.derived_secret("js-app-secret")
    body = ev.to_json(ev.HookEvent(1, 1733500000000, ev.PeerEvent(123, ev.Join("r", "p"))))
    hdrs = signing.headers(signing.parse_secret(secret), "evt_1_2_3", int(time.time()), body)
    done = run_node(secret, hdrs, body)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == json.loads(body)
    tampered = run_node(secret, hdrs, body.replace(b'"p"', b'"q"'))
    assert tampered.returncode == 1 and "signature" in tampered.stderr.lower()
