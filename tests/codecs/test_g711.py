"""G.711: the companding tables against CPython's audioop (an independent implementation of
ITU-T G.711), and RFC 3551 packetization."""

from __future__ import annotations

import struct
import warnings
from types import ModuleType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trackmesh.codecs.g711 import (
    G711Depacketizer,
    G711Packetizer,
    alaw_decode,
    alaw_encode,
    alaw_to_linear,
    linear_to_alaw,
    linear_to_ulaw,
    ulaw_decode,
    ulaw_encode,
    ulaw_to_linear,
)
from trackmesh.errors import LocalProtocolError

ALL_CODES = bytes(range(256))


def audioop() -> ModuleType:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module: ModuleType = pytest.importorskip("audioop", reason="audioop left CPython in 3.13")
        return module


def test_decode_tables_match_audioop() -> None:
    ref = audioop()
    assert ulaw_decode(ALL_CODES) == ref.ulaw2lin(ALL_CODES, 2)
    assert alaw_decode(ALL_CODES) == ref.alaw2lin(ALL_CODES, 2)


def test_encode_every_sample_matches_audioop() -> None:
    ref = audioop()
    pcm = struct.pack("<65536h", *range(-32768, 32768))
    assert ulaw_encode(pcm) == ref.lin2ulaw(pcm, 2)
    assert alaw_encode(pcm) == ref.lin2alaw(pcm, 2)


def test_codes_survive_decode_encode() -> None:
    for code in range(256):
        assert linear_to_alaw(alaw_to_linear(code)) == code
        # mu-law has two zeros (0x7F is -0, 0xFF is +0): both decode to 0, which encodes as +0.
        assert linear_to_ulaw(ulaw_to_linear(code)) == (0xFF if code == 0x7F else code)


@given(st.integers(-32768, 32767))
def test_quantization_error_is_bounded(sample: int) -> None:
    # The step doubles per segment: at most 1/16 of the magnitude (plus the smallest step).
    for encode, decode in ((linear_to_ulaw, ulaw_to_linear), (linear_to_alaw, alaw_to_linear)):
        assert abs(decode(encode(sample)) - sample) <= abs(sample) // 16 + 1100 // 16 + 1


@given(st.binary(min_size=1, max_size=2000), st.integers(1, 1400), st.sampled_from([10, 20, 30]))
def test_packetize_roundtrip(samples: bytes, mtu: int, ptime: int) -> None:
    payloads = G711Packetizer(ptime).packetize(samples, mtu)
    assert all(0 < len(p) <= min(mtu, 8 * ptime) for p in payloads)
    depack = G711Depacketizer()
    for i, p in enumerate(payloads):
        depack.push(p, i, i * 160, i == 0)
    out = []
    while (frame := depack.poll_frame()) is not None:
        out.append(frame.data)
    assert b"".join(out) == samples and depack.frames == len(payloads)


def test_bad_input() -> None:
    depack = G711Depacketizer()
    depack.push(b"", 1, 0, False)
    assert depack.bad_payloads == 1 and depack.poll_frame() is None
    with pytest.raises(LocalProtocolError):
        ulaw_encode(b"\x00")
    with pytest.raises(LocalProtocolError):
        G711Packetizer(0)
