"""Rooms are per app (multi-tenancy, docs/connector.md): two apps publish in a room of the same
name, as the same peer name, on one standalone node; each app's WHEP viewer decodes its own app's
video only (told apart by frame size), and the single-tenant app's viewer of that room gets none."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import TrackmeshNode

pytestmark = pytest.mark.e2e

ACME, GLOBEX = "acme-secret-0123456789", "globex-secret-0123456789"
SIZES = {"acme": (320, 240), "globex": (480, 360)}


def tenant_token(node: TrackmeshNode, secret: str, kind: str, room: str, peer: str) -> str:
    status, resp = node.proc.json("POST", f"/token/{kind}", {"room": room, "peer": peer, "ttl": 600}, token=secret)
    assert status == 200 and resp["status"], (status, resp)
    return str(resp["data"]["token"])


def test_two_apps_in_rooms_of_one_name_see_only_their_own_tracks(
    tmp_path: Path, aiortc_client: Any, netns_guard: None
) -> None:
    apps = tmp_path / "apps.json"
    apps.write_text(json.dumps({"apps": [{"app_id": "acme", "app_secret": ACME},
                                         {"app_id": "globex", "app_secret": GLOBEX}]}))  # fmt: skip
    node = TrackmeshNode("--apps", str(apps), "--connector-db", f"sqlite:///{tmp_path / 'c.db'}")
    try:
        secrets = {"acme": ACME, "globex": GLOBEX}
        whip, whep = node.url("/whip/endpoint"), node.url("/whep/endpoint")
        with ThreadPoolExecutor(5) as pool:
            publishers = {
                app: pool.submit(aiortc_client, "whip", whip, "--token",
                                 tenant_token(node, secrets[app], "whip", "shared", "alice"),
                                 "--size", "{}x{}".format(*SIZES[app]), "--duration", "10", timeout=90)
                for app in SIZES
            }  # fmt: skip
            viewers = {
                app: pool.submit(aiortc_client, "whep", whep, "--token",
                                 tenant_token(node, secrets[app], "whep", "shared", "viewer"),
                                 "--frames", "20", "--min-frames", "20", "--duration", "12", timeout=90)
                for app in SIZES
            }  # fmt: skip
            # The single-tenant app's room "shared" is another room: it stays empty.
            default = pool.submit(aiortc_client, "whep", whep, "--token", node.token("whep", "shared", "viewer"),
                                  "--min-frames", "0", "--duration", "5", timeout=90)
            for app, fut in viewers.items():
                rc, summary, err = fut.result()
                assert rc == 0, (app, summary, err[-2000:], node.log_tail())
                assert summary["frames"] >= 20 and [tuple(s) for s in summary["sizes"]] == [SIZES[app]], (app, summary)
            rc, summary, err = default.result()
            assert rc == 0, (summary, err[-2000:])
            assert summary["frames"] == 0, summary
            for app, fut in publishers.items():
                rc, summary, err = fut.result()
                assert rc == 0 and summary["status"] == 201, (app, summary, err[-2000:])
        # The event log: each app sees its own room "shared" (and its peers) only.
        for app, secret in secrets.items():
            status, resp = node.proc.json("GET", "/api/connector/log/rooms?limit=100", token=secret)
            assert status == 200, resp
            assert [r["room"] for r in resp["data"]] == ["shared"], (app, resp)
        status, resp = node.proc.json("GET", "/api/connector/log/rooms?limit=100", token=node.secret)
        assert status == 200 and [r["room"] for r in resp["data"]] == ["shared"], resp  # the default app's viewer
    finally:
        assert node.stop() == 0, node.log_tail()
