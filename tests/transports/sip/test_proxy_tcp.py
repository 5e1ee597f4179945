"""The gateway's stateless SIP proxy over TCP (RFC 3261 s18): Content-Length frames in, the node reached over
TCP with a Via naming TCP (s18.2.1), responses back on the caller's connection by the stamped Via
(s18.2.2), the node's requests toward a TCP caller on its connection (our Record-Route's flow token), in
memory."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.transports.sip.test_proxy import CALLER, GW, NODES, invite
from trackmesh.transports.sip.dialog import Dialog
from trackmesh.transports.sip.message import Request, Response, make_response
from trackmesh.transports.sip.parser import StreamFramer, parse_message, serialize
from trackmesh.transports.sip.proxy import (
    FLOW_PARAM,
    NODE_PARAM,
    TCP,
    UDP,
    ProxyDatagram,
    SipNode,
    StatelessProxy,
)

CALLER_CONN = ("10.0.0.9", 40123)  # the caller's TCP connection (an ephemeral source port, not its sent-by)


def tcp_invite(**kw: Any) -> Request:
    req = invite(**kw)
    via = req.headers.get_all("Via")[0].replace("SIP/2.0/UDP", "SIP/2.0/TCP").replace(";rport", "")
    req.headers.replace_first("Via", via)
    return req


def run_tcp(proxy: StatelessProxy, data: bytes, source: tuple[str, int], nodes: list[SipNode] = NODES,
            now: float = 0.0) -> list[ProxyDatagram]:  # fmt: skip
    proxy.handle_stream_frame(now, data, source, nodes)
    out = []
    while (d := proxy.poll_transmit()) is not None:
        out.append(d)
    return out


def test_a_tcp_dialog_through_the_proxy_both_ways() -> None:
    proxy = StatelessProxy(*GW)
    (fwd,) = run_tcp(proxy, serialize(tcp_invite()), CALLER_CONN)
    assert (fwd.transport, fwd.destination, fwd.connect) == (TCP, NODES[0].address, NODES[0].address)
    at_node = parse_message(fwd.data)
    assert isinstance(at_node, Request)
    ours, caller = at_node.via()
    assert ours.transport == "TCP" and (ours.host, ours.port) == GW  # s18.2.1: the transport we send over
    # No rport asked, but only the connection's port finds the caller again: stamped anyway.
    assert caller.params["rport"] == str(CALLER_CONN[1]) and caller.params["received"] == CALLER_CONN[0]
    flow = f"{FLOW_PARAM}={CALLER_CONN[0]}~{CALLER_CONN[1]}"
    assert at_node.headers.get_all("Record-Route") == [f"<sip:10.0.0.1:5060;lr;{NODE_PARAM}=2;transport=tcp;{flow}>"]
    # The node answers on our connection to it: back on the caller's connection, else a new one to sent-by.
    ok = make_response(at_node, 200, to_tag="n1")
    ok.headers.add("Contact", "<sip:room@10.0.0.3:5062;transport=tcp>")
    (back,) = run_tcp(proxy, serialize(ok), NODES[0].address)
    assert (back.transport, back.destination, back.connect) == (TCP, CALLER_CONN, CALLER)
    at_caller = parse_message(back.data)
    assert isinstance(at_caller, Response) and len(at_caller.via()) == 1
    # The caller's in-dialog BYE (Route from the Record-Route) over TCP: to the dialog's node over TCP.
    uac = Dialog.as_uac(tcp_invite(), at_caller)
    bye = uac.create_request("BYE", f"SIP/2.0/TCP {CALLER[0]}:{CALLER[1]};branch=z9hG4bKbye")
    (fwd_bye,) = run_tcp(proxy, serialize(bye), CALLER_CONN, nodes=list(reversed(NODES)))
    assert (fwd_bye.transport, fwd_bye.destination) == (TCP, NODES[0].address)
    # The node's BYE toward the caller: on the caller's connection (the flow token), else to its Contact.
    uas = Dialog.as_uas(at_node, ok)
    node_bye = uas.create_request("BYE", "SIP/2.0/TCP 10.0.0.3:5062;branch=z9hG4bKnb;rport")
    (out,) = run_tcp(proxy, serialize(node_bye), NODES[0].address)
    assert (out.transport, out.destination, out.connect) == (TCP, CALLER_CONN, CALLER)
    to_caller = parse_message(out.data)
    assert isinstance(to_caller, Request) and to_caller.via()[0].transport == "TCP"
    # The caller's 200 to that BYE, on its connection: to the node over TCP (the node's stamped Via).
    (done,) = run_tcp(proxy, serialize(make_response(to_caller, 200)), CALLER_CONN)
    assert (done.transport, done.destination) == (TCP, NODES[0].address)
    assert proxy.counters["sip_proxy_tcp_in"] == 5 and proxy.counters["sip_proxy_tcp_out"] == 5
    assert proxy.counters["sip_proxy_stray_responses"] == 0


def test_a_node_without_tcp_gets_udp_and_the_answer_still_reaches_the_tcp_caller() -> None:
    proxy = StatelessProxy(*GW)
    udp_only = [SipNode(4, ("10.0.0.4", 5064), tcp=False)]
    (fwd,) = run_tcp(proxy, serialize(tcp_invite()), CALLER_CONN, nodes=udp_only)
    assert (fwd.transport, fwd.destination) == (UDP, udp_only[0].address)
    at_node = parse_message(fwd.data)
    assert isinstance(at_node, Request) and at_node.via()[0].transport == "UDP"
    proxy.handle_datagram(0.0, serialize(make_response(at_node, 180, to_tag="t")), udp_only[0].address, udp_only)
    back = proxy.poll_transmit()
    assert back is not None and (back.transport, back.destination) == (TCP, CALLER_CONN)


def test_udp_callers_are_unchanged_and_udp_targets_stay_udp() -> None:
    proxy = StatelessProxy(*GW)
    proxy.handle_datagram(0.0, serialize(invite()), CALLER, NODES)
    fwd = proxy.poll_transmit()
    assert fwd is not None and (fwd.transport, fwd.connect) == (UDP, None)
    (rr,) = parse_message(fwd.data).headers.get_all("Record-Route")
    assert "transport" not in rr and FLOW_PARAM not in rr
    # A node's request over TCP toward a caller whose Route and URI say nothing of TCP: UDP.
    route = f"<sip:10.0.0.1:5060;lr;{NODE_PARAM}=2>"
    (out,) = run_tcp(proxy, serialize(invite(to_tag="n", method="BYE", routes=[route])), NODES[0].address)
    assert (out.transport, out.destination) == (UDP, ("10.0.0.1", 5060))


def test_bad_tcp_requests_are_answered_on_their_connection() -> None:
    proxy = StatelessProxy(*GW)
    bad = serialize(tcp_invite()).replace(b"CSeq: 1 INVITE", b"CSeq: x INVITE")
    (r,) = run_tcp(proxy, bad, CALLER_CONN)
    resp = parse_message(r.data, validate=False)
    assert isinstance(resp, Response) and resp.status == 400 and (r.transport, r.destination) == (TCP, CALLER_CONN)
    (r,) = run_tcp(proxy, serialize(tcp_invite()), CALLER_CONN, nodes=[])
    resp = parse_message(r.data)
    assert isinstance(resp, Response) and resp.status == 503 and r.destination == CALLER_CONN
    # A response whose next Via is a transport we do not speak (TLS): dropped and counted.
    (fwd,) = run_tcp(proxy, serialize(tcp_invite()), CALLER_CONN)
    at_node = parse_message(fwd.data)
    assert isinstance(at_node, Request)
    resp = make_response(at_node, 180, to_tag="t")
    vias = resp.headers.get_all("Via")
    resp.headers.remove("Via")
    resp.headers.add("Via", vias[0])
    resp.headers.add("Via", vias[1].replace("SIP/2.0/TCP", "SIP/2.0/TLS"))
    assert run_tcp(proxy, serialize(resp), NODES[0].address) == []
    assert proxy.counters["sip_proxy_stray_responses"] == 1


MESSAGES = [
    serialize(tcp_invite()),
    serialize(tcp_invite(method="CANCEL")),
    serialize(tcp_invite(to_tag="n", method="BYE", routes=[f"<sip:10.0.0.1:5060;lr;{NODE_PARAM}=1>"])),
    b"\r\n\r\n",  # RFC 5626 keep-alive between messages
    serialize(tcp_invite(max_forwards="0")),
]


@settings(max_examples=200, deadline=None)
@given(picks=st.lists(st.sampled_from(MESSAGES), min_size=1, max_size=6), cuts=st.lists(st.integers(1, 300)))
def test_a_stream_cut_anywhere_gives_what_whole_messages_give(picks: list[bytes], cuts: list[int]) -> None:
    """s18.3: however TCP segments the stream, the frames (and so what the proxy sends) are the same."""
    stream = b"".join(picks)
    whole, cut = StatelessProxy(*GW), StatelessProxy(*GW)
    expected: list[ProxyDatagram] = []
    for p in picks:
        expected += run_tcp(whole, p, CALLER_CONN)
    framer, got, at = StreamFramer(), [], 0
    for n in [*cuts, len(stream)]:
        framer.feed(stream[at : at + n])
        at += n
        while (frame := framer.next_frame()) is not None:
            got += run_tcp(cut, frame, CALLER_CONN)
    assert got == expected and framer.buffered == 0


@settings(max_examples=300, deadline=None)
@given(data=st.one_of(
    st.binary(max_size=600),
    st.builds(lambda msg, cut, junk: msg[:cut] + junk + msg[cut:], st.sampled_from([*MESSAGES[:3],
        serialize(make_response(tcp_invite(), 200, to_tag="t"))]), st.integers(0, 400), st.binary(max_size=40)),
))  # fmt: skip
def test_any_tcp_frame_is_answered_forwarded_or_dropped_never_raised(data: bytes) -> None:
    """Whatever a connection frames, the proxy emits parseable SIP or nothing; answers go on that connection."""
    proxy = StatelessProxy(*GW)
    for d in run_tcp(proxy, data, CALLER_CONN) + run_tcp(proxy, data, NODES[1].address):
        msg = parse_message(d.data, validate=False)
        assert d.destination[1] > 0
        if isinstance(msg, Response) and d.transport == TCP and msg.status >= 400:
            assert d.destination in (CALLER_CONN, NODES[1].address)
