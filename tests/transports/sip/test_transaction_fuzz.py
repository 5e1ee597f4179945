"""The transaction layer never raises on network input, whatever arrives in whatever order."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from trackmesh.transports.sip.message import Headers, Request, Response, make_response
from trackmesh.transports.sip.parser import serialize
from trackmesh.transports.sip.transaction import TransactionLayer, TransactionTerminated

SOURCES = [("127.0.0.1", 5070), ("127.0.0.2", 5080)]


def base(method: str, branch: str, cseq: int, to_tag: bool, via_host: str) -> Request:
    h = Headers()
    h.add("Via", f"SIP/2.0/UDP {via_host}:5070;branch={branch};rport")
    h.add("Max-Forwards", "70")
    h.add("From", "<sip:a@example.com>;tag=f")
    h.add("To", "<sip:b@example.com>" + (";tag=t" if to_tag else ""))
    h.add("Call-ID", "cid")
    h.add("CSeq", f"{cseq} {method}")
    return Request(method, "sip:b@example.com", h)


message = st.builds(
    base,
    st.sampled_from(["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER"]),
    st.sampled_from(["z9hG4bK1", "z9hG4bK2", "old-style"]),
    st.integers(1, 3),
    st.booleans(),
    st.sampled_from(["127.0.0.1", "10.0.0.1", "[::1]"]),
)


@st.composite
def datagrams(draw: st.DrawFn) -> bytes:
    req = draw(message)
    m: Request | Response = req
    if draw(st.booleans()):
        m = make_response(req, draw(st.sampled_from([100, 180, 200, 401, 486, 503])), to_tag="t")
    wire = bytearray(serialize(m))
    for _ in range(draw(st.integers(0, 3))):
        pos = draw(st.integers(0, len(wire) - 1))
        wire[pos] = draw(st.sampled_from(list(b';,<>":= \r\nXz0')))
    return bytes(wire)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0, 40), datagrams(), st.sampled_from(SOURCES), st.booleans()),
        max_size=25,
    ),
    st.lists(st.sampled_from([("INVITE", 200), ("INVITE", 486), ("BYE", 200), ("OPTIONS", 200)]), max_size=5),
)
def test_layer_survives_any_interleaving(
    steps: list[tuple[float, bytes, tuple[str, int], bool]], answers: list[tuple[str, int]]
) -> None:
    layer = TransactionLayer()
    now = 0.0
    pending: list[Request] = []
    for dt, data, source, tick in steps:
        now += dt
        if tick:
            layer.handle_timeout(now)
        layer.handle_datagram(now, data, source)
        while (ev := layer.poll_event()) is not None:
            request = getattr(ev, "request", None)
            if isinstance(request, Request) and getattr(ev, "key", None) is not None:
                pending.append(request)
        # The TU answers what it was given, as a real one would.
        for method, status in answers:
            for req in [r for r in pending if r.method == method]:
                key = [k for k, t in layer.transactions.items() if t.request is req]
                if key and layer.transactions[key[0]].state.value in ("Trying", "Proceeding"):
                    layer.send_response(now, make_response(req, status, to_tag="u"))
        while layer.poll_transmit() is not None:
            pass
    # Run the clock out: every transaction ends and nothing is left scheduled.
    for _ in range(200):
        deadline = layer.next_deadline()
        if deadline is None:
            break
        layer.handle_timeout(deadline)
        while (ev := layer.poll_event()) is not None:
            assert not isinstance(ev, TransactionTerminated) or ev.key not in layer.transactions
    assert layer.transactions == {}
    assert layer.next_deadline() is None
