"""--moq-alpns' parser (transports/moq/alpn.py): a choice of the raw-QUIC ALPNs we speak, in order."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trackmesh.transports.moq.alpn import DRAFT_OF_ALPN, parse_alpns


def test_a_choice_keeps_its_order() -> None:
    assert parse_alpns("moqt-16") == ("moqt-16",)
    assert parse_alpns(" moqt-16 , moqt-20 ") == ("moqt-16", "moqt-20")


@pytest.mark.parametrize("text", ["", " , ", "moqt-99", "moqt-16,moqt-16", "h3", "moqt-16,moq-00"])
def test_anything_else_is_refused_naming_what_is_accepted(text: str) -> None:
    with pytest.raises(ValueError, match="accepted: one or more of moqt-20, moqt-22, moqt-21, moqt-16"):
        parse_alpns(text)


@given(st.lists(st.sampled_from([*DRAFT_OF_ALPN, "moqt-99", "h3", "", " "]), max_size=6), st.text(max_size=20))
def test_any_text_gives_known_distinct_alpns_or_a_clear_error(items: list[str], noise: str) -> None:
    for text in (",".join(items), noise):
        try:
            got = parse_alpns(text)
        except ValueError as exc:
            assert "accepted" in str(exc)
            continue
        assert got and len(set(got)) == len(got) and all(a in DRAFT_OF_ALPN for a in got)
