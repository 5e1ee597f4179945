"""The gateway's stateless SIP proxy (RFC 3261 s16.11): Via and Record-Route, in-dialog routing both ways,
branch stability for retransmissions and CANCEL, Max-Forwards, bad input and no node, in memory."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from trackmesh.transports.sip.dialog import Dialog
from trackmesh.transports.sip.message import Headers, Request, Response, Via, make_response
from trackmesh.transports.sip.parser import parse_message, serialize
from trackmesh.transports.sip.proxy import NODE_PARAM, ProxyDatagram, SipNode, StatelessProxy

GW = ("10.0.0.1", 5060)
CALLER = ("10.0.0.9", 5070)
NODES = [SipNode(2, ("10.0.0.3", 5062)), SipNode(1, ("10.0.0.2", 5061))]  # best first


def invite(branch: str = "z9hG4bKc1", *, method: str = "INVITE", to_tag: str | None = None,
           routes: list[str] | None = None, max_forwards: str | None = "70") -> Request:  # fmt: skip
    h = Headers()
    h.add("Via", f"SIP/2.0/UDP {CALLER[0]}:{CALLER[1]};branch={branch};rport")
    if max_forwards is not None:
        h.add("Max-Forwards", max_forwards)
    for r in routes or []:
        h.add("Route", r)
    h.add("From", "<sip:alice@example.com>;tag=a1")
    h.add("To", "<sip:room@10.0.0.1>" + (f";tag={to_tag}" if to_tag else ""))
    h.add("Call-ID", "cid1")
    h.add("CSeq", f"1 {method}")
    h.add("Contact", f"<sip:alice@{CALLER[0]}:{CALLER[1]}>")
    return Request(method, "sip:room@10.0.0.1", h)


def status(data: bytes) -> int:
    """The status code of a response the proxy sent."""
    resp = parse_message(data)
    assert isinstance(resp, Response), resp
    return resp.status


def run(proxy: StatelessProxy, data: bytes, source: tuple[str, int], nodes: list[SipNode] = NODES,
        now: float = 0.0) -> list[ProxyDatagram]:  # fmt: skip
    proxy.handle_datagram(now, data, source, nodes)
    out = []
    while (d := proxy.poll_transmit()) is not None:
        out.append(d)
    return out


def test_new_invite_goes_to_the_best_node_with_our_via_and_record_route() -> None:
    proxy = StatelessProxy(*GW)
    (fwd,) = run(proxy, serialize(invite()), CALLER)
    assert fwd.destination == NODES[0].address
    msg = parse_message(fwd.data)
    assert isinstance(msg, Request) and msg.uri == "sip:room@10.0.0.1"
    vias = msg.via()
    assert (vias[0].host, vias[0].port) == GW and vias[0].branch and vias[0].branch.startswith("z9hG4bK")
    assert vias[1].params["rport"] == str(CALLER[1]) and vias[1].branch == "z9hG4bKc1"
    assert msg.headers.get_all("Record-Route") == [f"<sip:10.0.0.1:5060;lr;{NODE_PARAM}=2>"]
    assert msg.headers.get("Max-Forwards") == "69"


def test_a_whole_dialog_through_the_proxy_with_real_dialogs_on_both_ends() -> None:
    """The node's UAS dialog takes the route set from Record-Route (s12.1.1); its BYE comes back
    through the proxy to the caller, and the caller's BYE (Route from the 200) reaches the same node."""
    proxy = StatelessProxy(*GW)
    (fwd,) = run(proxy, serialize(invite()), CALLER)
    at_node = parse_message(fwd.data)
    assert isinstance(at_node, Request)
    ok = make_response(at_node, 200, to_tag="n1")
    ok.headers.add("Contact", "<sip:room@10.0.0.3:5062>")
    (back,) = run(proxy, serialize(ok), NODES[0].address)
    assert back.destination == CALLER  # rport and received of the caller's Via
    at_caller = parse_message(back.data)
    assert isinstance(at_caller, Response) and len(at_caller.via()) == 1
    # The caller (UAC) dialog from the 200: its BYE carries our Route and goes to the proxy.
    caller_invite = invite()
    uac = Dialog.as_uac(caller_invite, at_caller)
    bye = uac.create_request("BYE", f"SIP/2.0/UDP {CALLER[0]}:{CALLER[1]};branch=z9hG4bKbye")
    assert bye.headers.get_all("Route") == [f"<sip:10.0.0.1:5060;lr;{NODE_PARAM}=2>"]
    # Load moved: node 1 is now best, but the dialog stays on node 2.
    (fwd_bye,) = run(proxy, serialize(bye), CALLER, nodes=list(reversed(NODES)))
    assert fwd_bye.destination == NODES[0].address
    msg = parse_message(fwd_bye.data)
    assert isinstance(msg, Request) and msg.headers.get_all("Route") == [] and msg.uri == "sip:room@10.0.0.3:5062"
    # The node's own BYE toward the caller follows the Record-Route it saw.
    uas = Dialog.as_uas(at_node, ok)
    node_bye = uas.create_request("BYE", "SIP/2.0/UDP 10.0.0.3:5062;branch=z9hG4bKnb")
    (out,) = run(proxy, serialize(node_bye), NODES[0].address)
    assert out.destination == CALLER
    assert parse_message(out.data).headers.get_all("Route") == []


def test_retransmission_and_cancel_follow_the_invite() -> None:
    proxy = StatelessProxy(*GW)
    (first,) = run(proxy, serialize(invite()), CALLER, now=0.0)
    flipped = list(reversed(NODES))
    (again,) = run(proxy, serialize(invite()), CALLER, nodes=flipped, now=0.5)
    (cancel,) = run(proxy, serialize(invite(method="CANCEL")), CALLER, nodes=flipped, now=1.0)
    assert first.destination == again.destination == cancel.destination == NODES[0].address
    assert first.data == again.data
    branch = parse_message(first.data).via()[0].branch
    assert parse_message(cancel.data).via()[0].branch == branch
    # A non-2xx ACK: same branch, To tag, no Route: the remembered node.
    (ack,) = run(proxy, serialize(invite(method="ACK", to_tag="n1")), CALLER, nodes=flipped, now=2.0)
    assert ack.destination == NODES[0].address
    # After the transaction's lifetime a new request with that branch is a new choice.
    (late,) = run(proxy, serialize(invite()), CALLER, nodes=flipped, now=100.0)
    assert late.destination == NODES[1].address


def test_hops_bad_input_and_no_node_are_answered() -> None:
    proxy = StatelessProxy(*GW)
    (r,) = run(proxy, serialize(invite(max_forwards="0")), CALLER)
    resp = parse_message(r.data)
    assert isinstance(resp, Response) and resp.status == 483 and r.destination == CALLER
    (r,) = run(proxy, serialize(invite()), CALLER, nodes=[SipNode(1, ("10.0.0.2", 5061), accepting=False)])
    resp = parse_message(r.data)
    assert isinstance(resp, Response) and resp.status == 503 and resp.headers.get("Retry-After") == "5"
    bad = serialize(invite()).replace(b"CSeq: 1 INVITE", b"CSeq: x INVITE")
    (r,) = run(proxy, bad, CALLER)
    resp = parse_message(r.data, validate=False)  # it echoes the bad CSeq (s8.2.6.2)
    assert isinstance(resp, Response) and resp.status == 400 and "CSeq" in resp.reason
    (r,) = run(proxy, serialize(invite(routes=["<sip:evil.example.com;lr>"])), CALLER)
    assert status(r.data) == 403  # never an open relay
    (r,) = run(proxy, serialize(invite(to_tag="x", routes=[f"<sip:10.0.0.1:5060;lr;{NODE_PARAM}=7>"])), CALLER)
    assert status(r.data) == 481
    (r,) = run(proxy, serialize(invite(to_tag="x", method="BYE")), CALLER)
    assert status(r.data) == 481
    assert run(proxy, serialize(invite(to_tag="x", method="ACK")), CALLER) == []  # never answered
    assert run(proxy, b"garbage\r\n\r\n", CALLER) == [] and run(proxy, b"\r\n\r\n", CALLER) == []
    stray = make_response(invite(), 200, to_tag="t")
    assert run(proxy, serialize(stray), NODES[0].address) == []  # top Via not ours
    assert proxy.counters["sip_proxy_too_many_hops"] == 1 and proxy.counters["sip_proxy_no_node"] == 1
    assert proxy.counters["sip_proxy_stray_responses"] == 1


tokens = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789-.!%*_+`'~"), min_size=1, max_size=16)


@settings(max_examples=150, deadline=None)
@given(branch=tokens, extra_vias=st.lists(st.tuples(st.sampled_from(["10.1.1.1", "h.example.com", "[::1]"]),
       st.integers(1, 65535), tokens), max_size=3), hops=st.integers(1, 255), node=st.integers(0, 10**6))  # fmt: skip
def test_via_stack_round_trips_through_the_proxy(
    branch: str, extra_vias: list[tuple[str, int, str]], hops: int, node: int
) -> None:
    """Whatever the caller's Via stack, a request gains exactly our Via on top and its response loses
    exactly it, going to the next Via's received/rport; the branch is the same for a retransmission."""
    proxy = StatelessProxy(*GW)
    req = invite("z9hG4bK" + branch, max_forwards=str(hops))
    for host, port, b in extra_vias:
        req.headers.add("Via", f"SIP/2.0/UDP {host}:{port};branch=z9hG4bK{b}")
    before = req.headers.get_all("Via")
    nodes = [SipNode(node, ("10.0.0.5", 5080))]
    (fwd,) = run(proxy, serialize(req), CALLER, nodes=nodes)
    (again,) = run(proxy, serialize(req), CALLER, nodes=nodes)
    assert fwd == again
    at_node = parse_message(fwd.data)
    assert isinstance(at_node, Request)
    vias = at_node.headers.get_all("Via")
    assert len(vias) == len(before) + 1 and vias[2:] == before[1:]
    assert Via.parse(vias[1]).params["received"] == CALLER[0]
    assert at_node.headers.get("Max-Forwards") == str(hops - 1)
    (rr,) = at_node.headers.get_all("Record-Route")
    assert f";{NODE_PARAM}={node}>" in rr
    resp = make_response(at_node, 180, to_tag="t")
    (back,) = run(proxy, serialize(resp), nodes[0].address, nodes=nodes)
    assert back.destination == CALLER
    assert parse_message(back.data).headers.get_all("Via") == vias[1:]


@settings(max_examples=150, deadline=None)
@given(node=st.integers(0, 10**6), extra=st.lists(st.sampled_from(["<sip:10.8.8.8:5080;lr>", "<sip:10.9.9.9;lr>"]),
       max_size=2), user=st.one_of(st.none(), tokens))  # fmt: skip
def test_our_route_is_read_back_and_removed(node: int, extra: list[str], user: str | None) -> None:
    """s16.4: the top Route naming us is removed, the rest kept in order; its node decides the hop."""
    proxy = StatelessProxy(*GW)
    target = SipNode(node, ("10.0.0.5", 5080))
    ours = f"<sip:{user + '@' if user else ''}10.0.0.1:5060;lr;{NODE_PARAM}={node}>"
    (fwd,) = run(proxy, serialize(invite(to_tag="n", method="BYE", routes=[ours, *extra])), CALLER, nodes=[target])
    assert fwd.destination == target.address
    assert parse_message(fwd.data).headers.get_all("Route") == extra
    # From the node itself: toward the next Route, else the Request-URI.
    (out,) = run(proxy, serialize(invite(to_tag="n", method="BYE", routes=[ours, *extra])), target.address,
                 nodes=[target])  # fmt: skip
    expected = {"<sip:10.8.8.8:5080;lr>": ("10.8.8.8", 5080), "<sip:10.9.9.9;lr>": ("10.9.9.9", 5060)}
    assert out.destination == (expected[extra[0]] if extra else ("10.0.0.1", 5060))


@settings(max_examples=300, deadline=None)
@given(data=st.one_of(
    st.binary(max_size=600),
    st.builds(lambda msg, cut, junk: msg[:cut] + junk + msg[cut:], st.sampled_from([
        serialize(invite()),
        serialize(invite(to_tag="n", method="BYE", routes=[f"<sip:10.0.0.1:5060;lr;{NODE_PARAM}=1>"])),
        serialize(make_response(invite(), 200, to_tag="t"))]), st.integers(0, 400), st.binary(max_size=40)),
))  # fmt: skip
def test_any_datagram_is_answered_forwarded_or_dropped_never_raised(data: bytes) -> None:
    """Bad input never crashes the gateway: whatever comes in, the proxy emits parseable SIP or nothing."""
    proxy = StatelessProxy(*GW)
    for d in run(proxy, data, CALLER) + run(proxy, data, NODES[1].address):
        parse_message(d.data, validate=False)
        assert d.destination[1] > 0


def test_hostnames_are_never_looked_up() -> None:
    """No DNS on the proxy: a next hop named by a host name is refused (502), a response toward one dropped."""
    proxy = StatelessProxy(*GW)
    node = SipNode(1, ("10.0.0.2", 5061))
    bye = invite(to_tag="n", method="BYE", routes=[f"<sip:10.0.0.1:5060;lr;{NODE_PARAM}=1>"])
    bye.uri = "sip:alice@phone.example.com"
    (r,) = run(proxy, serialize(bye), node.address, nodes=[node])
    assert r.destination == node.address and status(r.data) == 502
    resp = make_response(invite(), 180, to_tag="t")
    resp.headers.remove("Via")
    for v in ("SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-tmp-x", "SIP/2.0/UDP phone.example.com:5070;branch=z9hG4bK1"):
        resp.headers.add("Via", v)
    assert run(proxy, serialize(resp), node.address, nodes=[node]) == []
    assert proxy.counters["sip_proxy_not_an_ip"] == 2


@settings(max_examples=100, deadline=None)
@given(user=tokens, ids=st.lists(st.integers(0, 1000), min_size=2, max_size=5, unique=True))
def test_register_goes_by_its_address_of_record(user: str, ids: list[int]) -> None:
    """Every REGISTER of an AOR reaches the same node whatever the load order (its bindings live
    there); a node leaving moves only its own AORs."""
    nodes = [SipNode(i, ("10.0.1.1", 5000 + i)) for i in ids]

    def register(branch: str, order: list[SipNode]) -> tuple[str, int]:
        req = invite("z9hG4bK" + branch, method="REGISTER")
        req.headers.set("To", f"<sip:{user}@example.com>")
        proxy = StatelessProxy(*GW)
        (fwd,) = run(proxy, serialize(req), CALLER, nodes=order)
        assert parse_message(fwd.data).headers.get_all("Record-Route") == []  # not a dialog
        return fwd.destination

    first = register("r1", nodes)
    assert register("r2", list(reversed(nodes))) == first
    others = [n for n in nodes if n.address != first]
    survivor = register("r3", [n for n in nodes if n.address != others[0].address])
    assert survivor == first
