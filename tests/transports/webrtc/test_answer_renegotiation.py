"""Subsequent answers (RFC 8829 s5.3.2): an m-line already negotiated keeps its payload types (``keep_codecs``) and
our SSRCs (``send_ssrcs``); the m-line-level rules of a renegotiation are tested in tests/transports/sdk."""

from __future__ import annotations

import pytest

from tests.transports.webrtc.test_answer import FIXTURES, LOCAL, counter
from trackmesh.sdp.model import SdpError
from trackmesh.transports.webrtc.answer import AnswerPolicy, SendSsrcs, answer_offer

OFFER = (FIXTURES / "chrome_whep_recvonly.sdp").read_text()


def test_subsequent_answer_keeps_payload_types_and_ssrcs() -> None:
    first = answer_offer(OFFER, LOCAL, AnswerPolicy.whep(), rng=counter())
    video = next(m for m in first.media if m.kind == "video")
    assert len(video.codecs) > 1  # VP8, VP9, H.264 profiles...
    kept = video.codecs[1:2]
    ssrcs = {m.mid: SendSsrcs(m.local_ssrc, m.local_rtx_ssrc) for m in first.media if m.local_ssrc is not None}
    again = answer_offer(
        OFFER, LOCAL, AnswerPolicy.whep(), send_ssrcs=ssrcs, keep_codecs={video.mid: kept}, rng=counter(5000)
    )
    video2 = again.by_mid(video.mid)
    assert video2 is not None
    assert [c.payload_type for c in video2.codecs] == [kept[0].payload_type]
    assert [(m.mid, m.local_ssrc, m.local_rtx_ssrc) for m in again.media] == [
        (m.mid, m.local_ssrc, m.local_rtx_ssrc) for m in first.media
    ]
    # The other m-lines are negotiated as before.
    audio, audio2 = (next(m for m in r.media if m.kind == "audio") for r in (first, again))
    assert audio.codecs == audio2.codecs


def test_an_mline_that_drops_all_its_payload_types_is_refused() -> None:
    first = answer_offer(OFFER, LOCAL, AnswerPolicy.whep(), rng=counter())
    video = next(m for m in first.media if m.kind == "video")
    other = next(c for c in first.media if c.kind == "audio").codecs  # payload types this m-line never had
    with pytest.raises(SdpError, match="negotiated payload types"):
        answer_offer(OFFER, LOCAL, AnswerPolicy.whep(), keep_codecs={video.mid: other}, rng=counter())
