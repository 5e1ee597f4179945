"""Kamailio (Debian's 5.6) in front of a node as SIP proxy and registrar.

The configuration (KAMAILIO_CFG, copied into docs/sip.md) keeps phones' registrations in memory,
Record-Routes every dialog, relays requests for registered users to them and everything else to
the node. Two calls go through it:

- sipp (a scenario that keeps the route set) dials ``sip:<token>@kamailio``: Kamailio relays the
  INVITE to the node, the call joins the token's room, its ACK and BYE follow the Record-Route
  through Kamailio;
- a softphone (sipp's ``uas``) REGISTERs to Kamailio as ``bob``; the room dials
  ``sip:bob@kamailio`` (POST /api/sip/calls): Kamailio finds bob's binding, the call joins the room,
  DELETE's BYE reaches the softphone through Kamailio;
- the node itself REGISTERs to Kamailio as ``trackmesh-up`` (``--sip-register``, digest, refreshed
  every 5 s): a call to ``sip:trackmesh-up@kamailio`` reaches the node through its binding and
  joins the account's room.

Loopback only, inside the private network namespace (scripts/test.sh).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import TrackmeshNode
from tests.e2e.sipp_scenarios import PCMU, TELEPHONE_EVENT, pause, recv, register, request, scenario, sdp_audio

pytestmark = pytest.mark.e2e

HOST = "127.0.0.1"
UP_PASSWORD = "kamailio-up-pw"  # the node's account at Kamailio (--sip-register)
MODULES = "/usr/lib/x86_64-linux-gnu/kamailio/modules/"

KAMAILIO_CFG = """#!KAMAILIO
debug=2
log_stderror=yes
children=2
auto_aliases=no
listen=udp:127.0.0.1:{kport}
alias="127.0.0.1:{kport}"
mpath="{modules}"

loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "sanity.so"
loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "auth.so"

modparam("usrloc", "db_mode", 0)
modparam("registrar", "min_expires", 10)
modparam("rr", "append_fromtag", 1)

request_route {{
    if (!mf_process_maxfwd_header("10")) {{
        sl_send_reply("483", "Too Many Hops");
        exit;
    }}
    if (has_totag()) {{
        # In-dialog requests follow the route set (our Record-Route).
        if (loose_route()) {{
            t_relay();
            exit;
        }}
        if (is_method("ACK") && t_check_trans()) {{
            t_relay();
            exit;
        }}
        sl_send_reply("404", "Not here");
        exit;
    }}
    if (is_method("CANCEL")) {{
        if (t_check_trans()) {{
            t_relay();
        }}
        exit;
    }}
    if (is_method("REGISTER")) {{
        # The trackmesh node's own account (--sip-register): digest with a password kept here.
        if ($tU == "trackmesh-up" && !pv_auth_check("$td", "{up_password}", "0", "1")) {{
            auth_challenge("$td", "1");
            exit;
        }}
        save("location");
        exit;
    }}
    record_route();
    if (lookup("location")) {{
        t_relay();
        exit;
    }}
    # Not a registered phone: a room on trackmesh (the Request-URI's user is the room or a token).
    $du = "sip:{tm_host}:{tm_port}";
    t_relay();
    exit;
}}
"""


def register_bob(uas_port: int) -> str:
    """bob's phone (sipp's uas at ``uas_port``) REGISTERs to Kamailio."""
    return scenario(
        "register bob to kamailio",
        register("bob", cseq=1, domain="[remote_ip]:[remote_port]", contact=f"<sip:bob@{HOST}:{uas_port}>"),
        recv(response=200),
    )


# A UA that keeps the route set (RFC 3261 s12.1.2): sipp's built-in uac sends its BYE to the
# proxy's own address without Route, which a proxy answers 404.
CALL_VIA_PROXY = scenario(
    "call through a proxy",
    request("INVITE", cseq=1, sdp=sdp_audio(PCMU, TELEPHONE_EVENT, session_id=1, version=1)),
    recv(response=100, optional=True),
    recv(response=180, optional=True),
    recv(response=200, rrs=True),
    request("ACK", cseq=1, in_dialog=True, route_set=True, contact=False),
    pause(1500),
    request("BYE", cseq=2, in_dialog=True, route_set=True, contact=False),
    recv(response=200),
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def proxied(netns_guard: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TrackmeshNode, int]]:
    for tool in ("kamailio", "sipp"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: scripts/test.sh installs it (scripts/system-packages.txt)")
    tm_port, kport = free_port(), free_port()
    run = tmp_path_factory.mktemp("kamailio")
    cfg = run / "kamailio.cfg"
    cfg.write_text(
        KAMAILIO_CFG.format(kport=kport, modules=MODULES, tm_host=HOST, tm_port=tm_port, up_password=UP_PASSWORD)
    )
    check = subprocess.run(["kamailio", "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=20)
    assert check.returncode == 0, check.stderr[-2000:]
    kamailio = subprocess.Popen(
        ["kamailio", "-f", str(cfg), "-DD", "-E", "-Y", str(run), "-P", str(run / "kamailio.pid"), "-m", "32",
         "-M", "8"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    time.sleep(1.0)
    node: TrackmeshNode | None = None
    try:
        assert kamailio.poll() is None, kamailio.communicate()[0][-3000:]
        node = TrackmeshNode(
            "--sip-port", str(tm_port), "--sip-rtp-ports", "42300-42399",
            "--sip-register", f"sip:trackmesh-up:{UP_PASSWORD}@{HOST}:{kport};room=kamailio-trunk;expires=10",
        )  # fmt: skip
        yield node, kport
    finally:
        rc = node.stop() if node is not None else 0  # first: its un-REGISTER reaches Kamailio
        kamailio.terminate()
        try:
            kamailio.wait(10)
        except subprocess.TimeoutExpired:
            kamailio.kill()
            kamailio.wait()
    tail = node.log_tail(200)
    assert "Traceback" not in "\n".join(node.lines), tail
    assert rc == 0, f"trackmesh exited {rc}:\n{tail}"


def sip_calls(node: TrackmeshNode) -> list[dict[str, Any]]:
    status, body = node.proc.json("GET", "/api/sip/calls", token=node.secret)
    assert status == 200, body
    return list(body["data"]["calls"])


def wait_call(node: TrackmeshNode, room: str, timeout: float = 8.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [c for c in sip_calls(node) if c["room"] == room]
        if found:
            return found[0]
        time.sleep(0.1)
    raise AssertionError(f"no call in {room}: {sip_calls(node)}")


def test_a_call_through_kamailio_reaches_the_room(proxied: tuple[TrackmeshNode, int], tmp_path: Path) -> None:
    node, kport = proxied
    token = node.token("sip", "kamailio-in", "proxied-phone")
    (tmp_path / "call.xml").write_text(CALL_VIA_PROXY)
    sipp = subprocess.Popen(
        ["sipp", f"{HOST}:{kport}", "-sf", "call.xml", "-s", token, "-i", HOST, "-p", str(free_port()),
         "-mp", str(free_port() & ~1), "-m", "1", "-timeout", "20s", "-nostdin", "-trace_err"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        call = wait_call(node, "kamailio-in")
        assert call["peer"] == "proxied-phone", call
        out, _ = sipp.communicate(timeout=20)
        errors = "".join(p.read_text(errors="replace") for p in tmp_path.glob("*errors.log"))
        assert sipp.returncode == 0, out[-1000:] + errors[-2500:]  # 200, ACK and BYE/200 through the proxy
    finally:
        if sipp.poll() is None:
            sipp.kill()
            sipp.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and [c for c in sip_calls(node) if c["room"] == "kamailio-in"]:
        time.sleep(0.1)
    left = [c for c in sip_calls(node) if c["room"] == "kamailio-in"]
    assert left == [], left  # the BYE came through


def test_the_room_dials_a_phone_registered_at_kamailio(proxied: tuple[TrackmeshNode, int], tmp_path: Path) -> None:
    node, kport = proxied
    uas_port = free_port()
    phone = subprocess.Popen(
        ["sipp", "-sn", "uas", "-i", HOST, "-p", str(uas_port), "-mp", str(free_port() & ~1), "-rtp_echo",
         "-m", "1", "-timeout", "20s", "-nostdin", "-trace_err"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        (tmp_path / "register.xml").write_text(register_bob(uas_port))
        reg = subprocess.run(
            ["sipp", f"{HOST}:{kport}", "-sf", "register.xml", "-i", HOST, "-p", str(free_port()), "-m", "1",
             "-timeout", "10s", "-nostdin", "-trace_err"],
            cwd=tmp_path, capture_output=True, text=True, timeout=20,
        )  # fmt: skip
        assert reg.returncode == 0, reg.stdout[-2000:]
        body = {"room": "kamailio-out", "to": f"sip:bob@{HOST}:{kport}"}
        status, resp = node.proc.json("POST", "/api/sip/calls", body, token=node.secret)
        assert status == 200, resp
        session = resp["data"]["session"]
        call = wait_call(node, "kamailio-out")
        assert call["session"] == session and call["peer"] == "sip-bob", call
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and call["rtp_in"] < 10:
            call = wait_call(node, "kamailio-out")
            time.sleep(0.1)
        assert call["rtp_in"] >= 10, call  # sipp echoes our RTP: media flows directly, signalling via Kamailio
        status, _ = node.proc.json("DELETE", f"/api/sip/calls/{session}", token=node.secret)
        assert status == 200
        out, _ = phone.communicate(timeout=15)
        assert phone.returncode == 0, out[-2000:]  # our BYE reached it through Kamailio
    finally:
        if phone.poll() is None:
            phone.kill()
            phone.wait()


def sip_stats(node: TrackmeshNode) -> dict[str, Any]:
    status, body = node.proc.json("GET", "/api/sip/calls", token=node.secret)
    assert status == 200, body
    return dict(body["data"]["sip"])


def test_the_node_registers_to_kamailio_and_takes_calls_for_its_account(
    proxied: tuple[TrackmeshNode, int], tmp_path: Path
) -> None:
    node, kport = proxied
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline and not sip_stats(node).get("upstream_registered"):
        time.sleep(0.1)
    stats = sip_stats(node)
    assert stats["upstream_registered"] == 1 and stats["upstream_status"] == 200, stats
    assert stats["upstream_challenged"] >= 1 and stats["upstream_expires"] == 10, stats  # digest answered
    (tmp_path / "call.xml").write_text(CALL_VIA_PROXY)
    sipp = subprocess.Popen(
        ["sipp", f"{HOST}:{kport}", "-sf", "call.xml", "-s", "trackmesh-up", "-i", HOST, "-p", str(free_port()),
         "-mp", str(free_port() & ~1), "-m", "1", "-timeout", "20s", "-nostdin", "-trace_err"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        call = wait_call(node, "kamailio-trunk")  # Kamailio's lookup sent it to our registered Contact
        assert call["peer"] == "sip-sipp", call
        out, _ = sipp.communicate(timeout=20)
        errors = "".join(p.read_text(errors="replace") for p in tmp_path.glob("*errors.log"))
        assert sipp.returncode == 0, out[-1000:] + errors[-2500:]
    finally:
        if sipp.poll() is None:
            sipp.kill()
            sipp.wait()
    # The binding was refreshed (every 5 s with expires=10) and is still there.
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline and sip_stats(node)["upstream_ok"] < 2:
        time.sleep(0.2)
    stats = sip_stats(node)
    assert stats["upstream_ok"] >= 2 and stats["upstream_registered"] == 1 and stats["upstream_failed"] == 0, stats
