"""SIP in a cluster: sipp calls the zone gateway's --sip-port, the stateless proxy (transports/sip/proxy.py)
hands the dialog to a media node, the call's ACK and BYE follow the Record-Route back through the gateway.

A gateway and two media nodes with SIP on, as real processes in the private network namespace (loopback
only); sipp gets -timeout and its scenario honours Record-Route (``rrs``, ``[routes]``, ``[next_url]``)
like any RFC 3261 UA. The HTTP dial-outs through the gateway: a softphone REGISTERed through the
gateway's proxy is called by ``POST /sip/invite/client`` at the gateway (routed to the node with its
binding), a trunk by ``POST /sip/invite/server``; DTMF and hang-up go to each call's node by its
session id.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.test_roles import SECRET, Cluster, Member, http, running_cluster
from tests.e2e.sipp_scenarios import (
    PCMA,
    PCMU,
    TELEPHONE_EVENT,
    check,
    pause,
    play_pcap,
    recv,
    register,
    request,
    response,
    scenario,
    sdp_audio,
)

pytestmark = pytest.mark.e2e

HOST = "127.0.0.1"
SIPP_PCAPS = Path("/usr/share/sip-tester")

#: A trunk calling through the gateway (``rport``: RFC 3581), each scenario with its own From tag.
_pcap_trunk = partial(request, user="trunk", rport=True, from_tag="[pid]SIPpTag09[call_number]")
_hung_up_trunk = partial(request, user="trunk", rport=True, from_tag="[pid]SIPpTag10[call_number]")
#: Media at sipp's -i address (the c-line of sipp's uac_pcap).
_LOCAL = "IP[local_ip_type] [local_ip]"

#: sipp's built-in uac_pcap, with the dialog's route set: ACK and BYE carry the gateway's Record-Route.
PROXIED_PCAP = scenario(
    "uac_pcap through a proxy",
    _pcap_trunk("INVITE", cseq=1, sdp=sdp_audio(PCMA, TELEPHONE_EVENT, port="[auto_media_port]",
                                                 connection=_LOCAL, fmtp=["101 0-11,16"])),
    recv(response=100, optional=True),
    recv(response=180, optional=True),
    recv(response=200, rrs=True, checks=[check("Record-Route: .sip:127.0.0.1:[0-9]+;lr;tmnode=[0-9]+", "rr")]),
    _pcap_trunk("ACK", cseq=1, in_dialog=True, route_set=True, contact=False),
    play_pcap("pcap/g711a.pcap"),
    pause(3000),
    _pcap_trunk("BYE", cseq=2, in_dialog=True, route_set=True, contact=False),
    recv(response=200),
    references=["rr"],
)  # fmt: skip


#: A call the room hangs up: the media node's BYE follows the route set it took from Record-Route.
HUNG_UP_BY_THE_ROOM = scenario(
    "hung up by the room, through a proxy",
    _hung_up_trunk("INVITE", cseq=1, sdp=sdp_audio(PCMU, connection=_LOCAL)),
    recv(response=100, optional=True),
    recv(response=180, optional=True),
    recv(response=200, rrs=True),
    _hung_up_trunk("ACK", cseq=1, in_dialog=True, route_set=True, contact=False),
    recv(request="BYE"),
    response("200 OK"),
)  # fmt: skip


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@pytest.fixture
def cluster(netns_guard: None) -> Iterator[Cluster]:
    if shutil.which("sipp") is None:
        pytest.fail("sipp is missing: scripts/test.sh installs sip-tester (scripts/system-packages.txt)")
    with running_cluster() as c:
        yield c


def run_sipp(cwd: Path, port: int, scenario: str, token: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sipp", f"{HOST}:{port}", "-i", HOST, "-p", str(free_udp_port()), "-mp", str(free_udp_port() & ~1),
         "-m", "1", "-timeout", "15s", "-nostdin", "-trace_err", "-sf", scenario, "-s", token, *extra],
        cwd=cwd, capture_output=True, text=True, timeout=25,
    )  # fmt: skip


def sipp_failure(proc: subprocess.CompletedProcess[str], cwd: Path) -> str:
    errors = "".join(p.read_text(errors="replace") for p in cwd.glob("*errors.log"))
    return proc.stdout[-1500:] + proc.stderr[-500:] + errors[-2000:]


def sip_calls(m: Member) -> list[dict[str, Any]]:
    status, _, body = http("GET", m.base + "/api/sip/calls", headers={"Authorization": f"Bearer {SECRET}"})
    assert status == 200, body
    return list(json.loads(body)["data"]["calls"])


def test_sipp_calls_the_gateway_and_the_dialog_lives_on_one_media_node(cluster: Cluster, tmp_path: Path) -> None:
    gw_sip = free_udp_port()
    gw = cluster.start("gateway", 1, 1, "--sip-port", str(gw_sip))
    media = [cluster.media(1, 10 + i, "--sip-port", str(free_udp_port()), "--sip-rtp-ports",
                           f"{43000 + 100 * i}-{43099 + 100 * i}") for i in range(2)]  # fmt: skip
    nodes = cluster.wait_nodes(gw, 2)
    deadline = time.monotonic() + 10
    while not all("sip" in n for n in nodes) and time.monotonic() < deadline:  # their load reports name SIP
        time.sleep(0.2)
        nodes = cluster.wait_nodes(gw, 2)
    assert sorted(n["sip"].rpartition(":")[0] for n in nodes) == [HOST, HOST], nodes
    room = "sip-cluster-room"
    body = json.dumps({"room": room, "peer": "trunk1", "ttl": 600}).encode()
    auth = {"Content-Type": "application/json", "Authorization": f"Bearer {SECRET}"}
    status, _, raw = http("POST", gw.base + "/token/sip", body, auth)
    assert status == 200, raw
    token = json.loads(raw)["data"]["token"]
    (tmp_path / "proxied.xml").write_text(PROXIED_PCAP)
    (tmp_path / "pcap").symlink_to(SIPP_PCAPS)

    async def main() -> tuple[subprocess.CompletedProcess[str], list[tuple[int, dict[str, Any]]]]:
        sipp = asyncio.create_task(asyncio.to_thread(run_sipp, tmp_path, gw_sip, "proxied.xml", token))
        seen: list[tuple[int, dict[str, Any]]] = []
        while not sipp.done():  # the call as each media node reports it, while it lasts
            for i, m in enumerate(media):
                seen += [(i, c) for c in await asyncio.to_thread(sip_calls, m)]
            await asyncio.sleep(0.3)
        return await sipp, seen

    proc, seen = asyncio.run(main())
    assert proc.returncode == 0, sipp_failure(proc, tmp_path)
    # One media node had the call, in the room, with the phone's RTP arriving (PCMA in, Opus into the room).
    assert {i for i, _ in seen} in ({0}, {1}), seen
    last = seen[-1][1]
    assert last["room"] == room and last["peer"] == "trunk1" and last["codec"] == "PCMA", last
    assert last["rtp_in"] > 20 and last["uplink_packets"] > 20, last
    owner = media[seen[-1][0]]
    deadline = time.monotonic() + 5
    while sip_calls(owner) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sip_calls(owner) == []  # the BYE, through the proxy, ended the call
    counters = gw.info()["counters"]
    assert counters["sip_proxy_new_dialogs"] == 1, counters  # the INVITE (its retransmissions remembered)
    assert counters["sip_proxy_in_dialog"] >= 2, counters  # ACK and BYE by the Route naming the node
    assert counters["sip_proxy_responses"] >= 2 and counters["sip_proxy_bad"] == 0, counters
    # The room hangs up a second call: the media node's BYE goes through the gateway to the caller.
    (tmp_path / "hangup.xml").write_text(HUNG_UP_BY_THE_ROOM)
    hung_up_by_the_room(media, tmp_path, gw_sip, token)
    counters = gw.info()["counters"]
    assert counters["sip_proxy_new_dialogs"] == 2 and counters["sip_proxy_toward_caller"] >= 1, counters
    assert counters["sip_proxy_stray_responses"] == 0 and counters["sip_proxy_unknown_dialog"] == 0, counters
    assert counters["sip_proxy_tcp_in"] == 0, counters
    # The same over TCP (RFC 3261 s18, sipp -t t1: one connection to the gateway): the INVITE and ACK go on
    # to the node over TCP, the 200 and the node's BYE come back on sipp's connection, sipp's 200 to it too.
    hung_up_by_the_room(media, tmp_path, gw_sip, token, "-t", "t1")
    counters = gw.info()["counters"]
    assert counters["sip_proxy_new_dialogs"] == 3 and counters["sip_proxy_toward_caller"] >= 2, counters
    assert counters["sip_proxy_tcp_in"] >= 3 and counters["sip_proxy_tcp_out"] >= 4, counters  # 100/200, BYE
    assert counters["sip_proxy_stray_responses"] == 0 and counters["sip_proxy_unknown_dialog"] == 0, counters
    assert counters["sip_proxy_tcp_framing_errors"] == 0 and counters["sip_proxy_tcp_connect_failures"] == 0, counters
    dial_outs_through_the_gateway(gw, gw_sip, media, tmp_path)


def hung_up_by_the_room(media: list[Member], tmp_path: Path, gw_sip: int, token: str, *extra: str) -> None:
    """sipp calls through the gateway; the call's node hangs it up (DELETE): its BYE reaches sipp."""
    with ThreadPoolExecutor(1) as pool:
        call_done = pool.submit(run_sipp, tmp_path, gw_sip, "hangup.xml", token, *extra)
        deadline = time.monotonic() + 10
        calls: list[tuple[Member, dict[str, Any]]] = []
        while not calls and time.monotonic() < deadline and not call_done.done():
            calls = [(m, c) for m in media for c in sip_calls(m)]
            time.sleep(0.2)
        assert len(calls) == 1, (calls, call_done.done() and sipp_failure(call_done.result(), tmp_path))
        node, call = calls[0]
        status, _, body = http("DELETE", f"{node.base}/api/sip/calls/{call['session']}",
                               headers={"Authorization": f"Bearer {SECRET}"})  # fmt: skip
        assert status == 200, body
        proc = call_done.result()
    assert proc.returncode == 0, sipp_failure(proc, tmp_path)  # sipp got the BYE and its 200 reached the node


def register_scenario(contact: str) -> str:
    """sipp REGISTERs (a digest challenge, then 200) with the Contact of a sipp uas listening at ``contact``."""
    return scenario(
        "register through the gateway",
        register("phone9", cseq=1, contact=f"<sip:phone9@{contact}>", rport=True),
        recv(response=401, auth=True),
        register("phone9", cseq=2, contact=f"<sip:phone9@{contact}>", rport=True, authentication=True),
        recv(response=200),
    )


def dial_outs_through_the_gateway(gw: Member, gw_sip: int, media: list[Member], tmp_path: Path) -> None:
    """The atm0s 0.1 dial-out paths at the gateway's HTTP port (docs/sip.md, In a cluster)."""
    auth = {"Content-Type": "application/json", "Authorization": f"Bearer {SECRET}"}
    room = "sip-cluster-out"
    status, _, raw = http("POST", gw.base + "/token/sip", json.dumps({"room": room, "ttl": 600}).encode(), auth)
    assert status == 200, raw
    creds = json.loads(raw)["data"]
    phone_port, trunk_port = free_udp_port(), free_udp_port()
    (tmp_path / "register.xml").write_text(register_scenario(f"{HOST}:{phone_port}"))
    phones: list[subprocess.Popen[str]] = []

    def uas(port: int) -> subprocess.Popen[str]:
        phones.append(subprocess.Popen(
            ["sipp", "-sn", "uas", "-i", HOST, "-p", str(port), "-mp", str(free_udp_port() & ~1), "-rtp_echo",
             "-m", "1", "-timeout", "20s", "-nostdin", "-trace_err"],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        ))  # fmt: skip
        return phones[-1]

    def answered(session: int) -> tuple[int, dict[str, Any]]:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            found = [(i, c) for i, m in enumerate(media) for c in sip_calls(m)
                     if c["session"] == session and c["rtp_in"] > 10]  # fmt: skip
            if found:
                return found[0]  # answered, and sipp's echo of our RTP came back
            time.sleep(0.2)
        raise AssertionError([sip_calls(m) for m in media])

    def post(path: str, body: dict[str, Any]) -> tuple[int, dict[str, str], dict[str, Any]]:
        status, headers, raw = http("POST", gw.base + path, json.dumps(body).encode(), auth)
        return status, headers, json.loads(raw)

    def ended_by_our_bye(p: subprocess.Popen[str]) -> None:
        out, _ = p.communicate(timeout=15)
        assert p.returncode == 0, out[-2000:]  # its one call ended with our BYE

    try:
        phone, trunk = uas(phone_port), uas(trunk_port)  # both listen now: their 4 s time-waits overlap
        proc = subprocess.run(
            ["sipp", f"{HOST}:{gw_sip}", "-i", HOST, "-p", str(free_udp_port()), "-m", "1", "-timeout", "15s",
             "-nostdin", "-trace_err", "-sf", "register.xml", "-au", creds["username"], "-ap", creds["password"]],
            cwd=tmp_path, capture_output=True, text=True, timeout=25,
        )  # fmt: skip
        assert proc.returncode == 0, sipp_failure(proc, tmp_path)  # registered through the gateway's proxy
        bindings = []
        for i, m in enumerate(media):
            status, _, raw = http("GET", m.base + "/api/sip/registrations", headers=auth)
            assert status == 200, raw
            bindings += [(i, b) for b in json.loads(raw)["data"]["registrations"]]
        ((holder, binding),) = bindings  # on one node: the one its address of record hashes to
        assert binding["contact"] == f"sip:phone9@{HOST}:{phone_port}" and binding["room"] == room, binding
        body: dict[str, Any] = {"room_id": room, "dest_session_id": binding["session_id"], "from_number": "100"}
        status, headers, resp = post("/sip/invite/client", body)
        assert status == 200, resp
        assert headers["x-trackmesh-served-by"] == f"1/{media[holder].node}", headers
        session = resp["data"]["session_id"]
        owner, call = answered(session)
        assert owner == holder and call["room"] == room and call["peer"] == "sip-phone9", call
        status, _, resp = post(f"/sip/call/{session}/dtmf", {"digits": "5"})
        # Reached the call's node (any other answers 404); sipp's uas answered no telephone-event: 0 sent.
        assert status == 200 and resp["data"]["sent"] == 0, resp
        status, _, raw = http("DELETE", f"{gw.base}/sip/call/{session}", headers=auth)
        assert status == 200, raw

        status, _, resp = post("/sip/invite/client", {**body, "dest_session_id": "no-such"})
        assert status == 404, resp  # every SIP node of the zone was asked
        body = {"room_id": room, "dest_addr": f"{HOST}:{trunk_port}", "from_number": "100", "to_number": "4930"}
        status, headers, resp = post("/sip/invite/server", body)
        assert status == 200, resp
        session = resp["data"]["session_id"]
        owner, call = answered(session)
        assert headers["x-trackmesh-served-by"] == f"1/{media[owner].node}" and call["peer"] == "sip-4930", call
        status, _, raw = http("DELETE", f"{gw.base}/api/sip/calls/{session}", headers=auth)
        assert status == 200, raw
        ended_by_our_bye(phone)
        ended_by_our_bye(trunk)
        status, _, raw = http("DELETE", f"{gw.base}/sip/call/{(1 << 40) | 7}", headers=auth)
        assert status == 404, raw  # a session of a node the zone does not have
        status, _, raw = http("DELETE", f"{gw.base}/sip/call/{session}")
        assert status == 401, raw  # no app secret: refused at the gateway
        # "no-such" missed on both nodes; the real binding at most once (the other node asked first).
        assert gw.info()["counters"]["sip_binding_misses"] in (2, 3), gw.info()["counters"]
    finally:
        for p in phones:
            if p.poll() is None:
                p.kill()
                p.wait()
