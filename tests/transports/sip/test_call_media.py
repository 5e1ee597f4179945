"""The media of calls in rooms, in memory on a virtual clock: the RTP leg (latching, DTMF, what we
send), the transcoders (G.711 <-> Opus through libopus, the mix) and two calls in one room that
hear each other through the room's mixer (mix-minus: never themselves)."""

from __future__ import annotations

import json
import math
import struct
from array import array

from hypothesis import given, settings
from hypothesis import strategies as st

from trackmesh.cluster.local import LocalChannelHub, LocalRegistry
from trackmesh.codecs.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from trackmesh.core.controls import Join, MessageChannelSub, Publish
from trackmesh.core.events import MessageChannelMessage
from trackmesh.core.model import MediaCodec, MediaPacket, TrackKind
from trackmesh.core.worker import MediaWorker
from trackmesh.rtp.packet import RtpHeader, build_rtp_packet
from trackmesh.transports.sip.audio import Downlink, OpusDecoder, SharedDecoders, Uplink, mix_frames
from trackmesh.transports.sip.call_media import DTMF_LABEL, MEDIA_TIMEOUT, TRACK, CallMedia
from trackmesh.transports.sip.offer_answer import Negotiated
from trackmesh.transports.sip.rtp_leg import DtmfDigit, RtpLeg, level_of_pcm

PHONE = ("127.0.0.1", 6000)


def tone(freq: float, samples: int, rate: int = 8000, amp: int = 8000, start: int = 0) -> bytes:
    return array("h", [int(amp * math.sin(2 * math.pi * freq * (start + n) / rate)) for n in range(samples)]).tobytes()


def rms(pcm: bytes) -> float:
    a = array("h")
    a.frombytes(pcm)
    return math.sqrt(sum(s * s for s in a) / max(1, len(a)))


def dtmf_payload(event: int, end: bool, duration: int) -> bytes:
    return struct.pack("!BBH", event, (0x80 if end else 0) | 10, duration)


# ---- the RTP leg ---------------------------------------------------------------------------------


def test_leg_latches_to_the_first_source_and_drops_others() -> None:
    leg = RtpLeg(("127.0.0.1", 9), 0, 8000, 101)
    real = ("127.0.0.1", 6002)
    got = leg.handle_rtp(build_rtp_packet(0, 1, 160, 5, b"\xff" * 160), real)
    assert isinstance(got, tuple) and got[1] == b"\xff" * 160
    assert leg.latched and leg.remote == real  # RFC 4961: we answer where it sends from
    assert leg.handle_rtp(build_rtp_packet(0, 2, 320, 5, b"\xff" * 160), ("127.0.0.1", 7777)) is None
    assert leg.stats.foreign == 1 and leg.stats.received == 1
    assert leg.handle_rtp(build_rtp_packet(8, 3, 480, 5, b"\xd5" * 160), real) is None  # not negotiated
    assert leg.stats.other_pt == 1


def test_leg_reports_each_dtmf_event_once() -> None:
    leg = RtpLeg(PHONE, 0, 8000, 101)
    events = []
    seq = 0
    for ts, digit in ((1000, 1), (5000, 11)):  # "1" then "#"
        for i, end in enumerate([False, False, True, True, True]):
            seq += 1
            got = leg.handle_rtp(build_rtp_packet(101, seq, ts, 5, dtmf_payload(digit, end, 160 * (i + 1))), PHONE)
            if got is not None:
                events.append(got)
    assert events == [DtmfDigit("1", 20), DtmfDigit("#", 20)]
    assert leg.stats.dtmf == 10


def test_leg_sends_with_running_seq_and_timestamp_and_dtmf_end_packets() -> None:
    leg = RtpLeg(PHONE, 8, 8000, 101)
    leg.send(b"\xd5" * 160, marker=True)
    leg.skip()
    leg.send(b"\xd5" * 160)
    leg.send_dtmf("5")
    out = []
    while (tx := leg.poll_transmit()) is not None:
        out.append(tx)
    headers = [RtpHeader.parse(d) for d, _, _ in out]
    assert [h.payload_type for h in headers] == [8, 8, 101, 101, 101, 101]
    assert headers[0].marker and not headers[1].marker and headers[2].marker
    assert (headers[1].sequence_number - headers[0].sequence_number) & 0xFFFF == 1
    assert (headers[1].timestamp - headers[0].timestamp) & 0xFFFFFFFF == 320  # the skipped ptime counts
    assert len({h.timestamp for h in headers[2:]}) == 1  # one event, one timestamp (RFC 4733 s2.5.1.2)
    assert [d[12 + 1] & 0x80 for d, _, _ in out[2:]] == [0, 0x80, 0x80, 0x80]
    assert all(dest == PHONE and not rtcp for _, dest, rtcp in out)


def test_leg_sender_report_goes_to_the_rtcp_port() -> None:
    leg = RtpLeg(PHONE, 0, 8000, None)
    leg.handle_timeout(0.0, 1.8e9)
    assert leg.poll_transmit() is None  # nothing sent yet: no SR
    leg.send(b"\xff" * 160)
    leg.poll_transmit()
    leg.handle_timeout(1.0, 1.8e9)
    sr = leg.poll_transmit()
    assert sr is not None and sr[1] == ("127.0.0.1", 6001) and sr[2] and sr[0][1] == 200
    leg.handle_timeout(2.0, 1.8e9)
    assert leg.poll_transmit() is None  # next one 5 s later


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.booleans())
def test_leg_never_raises_on_garbage(data: bytes, latched: bool) -> None:
    leg = RtpLeg(PHONE, 0, 8000, 101)
    if latched:
        leg.handle_rtp(build_rtp_packet(0, 1, 1, 1, b"\xff"), PHONE)
    got = leg.handle_rtp(data, PHONE)
    assert got is None or isinstance(got, (tuple, DtmfDigit))
    leg.handle_rtcp(data, PHONE)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 255), st.integers(0, 255), st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF))
def test_dtmf_payload_of_any_value_never_raises(event: int, flags: int, duration: int, ts: int) -> None:
    leg = RtpLeg(PHONE, 0, 8000, 101)
    got = leg.handle_rtp(build_rtp_packet(101, 1, ts, 1, struct.pack("!BBH", event, flags, duration)), PHONE)
    assert got is None if event > 15 else isinstance(got, DtmfDigit)


# ---- transcoding ---------------------------------------------------------------------------------


def test_level_of_pcm() -> None:
    assert level_of_pcm(bytes(320)) == 127
    assert level_of_pcm(array("h", [32767, -32767] * 80).tobytes()) == 0
    assert 8 <= level_of_pcm(tone(440, 160)) <= 16  # 8000 peak sine: about -15 dBov


def test_mix_clips_and_adds() -> None:
    a = array("h", [30000, -30000, 100]).tobytes()
    b = array("h", [10000, -10000, 50]).tobytes()
    assert array("h", mix_frames([a, b], 3)) == array("h", [32767, -32768, 150])
    assert mix_frames([], 4) == bytes(8)


def test_pcmu_uplink_becomes_opus_that_decodes_to_the_tone() -> None:
    for codec, encode, _decode in (("PCMU", ulaw_encode, ulaw_decode), ("PCMA", alaw_encode, alaw_decode)):
        uplink = Uplink(codec)
        packets = []
        for i in range(25):
            packets += uplink.feed(encode(tone(440, 160, start=160 * i)))
        assert len(packets) == 25
        decoder = OpusDecoder(8000)
        decoded = b"".join(decoder.decode(p) for p, _ in packets[5:])
        assert rms(decoded) > 3000  # the 440 Hz tone survives G.711 -> Opus -> PCM
        assert all(level <= 20 for level in (level_of_pcm(pcm) for _, pcm in packets))


def test_downlink_mixes_slots_toward_the_phone() -> None:
    encoder_side = Uplink("PCMU")  # makes Opus packets of a tone
    opus = [p for i in range(10) for p, _ in encoder_side.feed(ulaw_encode(tone(300, 160, start=160 * i)))]
    downlink = Downlink("PCMU", 3)
    assert downlink.mix() == b"\xff" * 160  # a silent room: PCMU silence, RTP keeps flowing
    for p in opus:
        downlink.on_slot_packet(0, p)
        downlink.on_slot_packet(2, p)
    frames = [downlink.mix() for _ in range(5)]
    assert all(f is not None and len(f) == 160 for f in frames)
    assert rms(ulaw_decode(frames[-1] or b"")) > 3000
    # Per slot at most 5 frames (100 ms) wait; the rest was dropped (the resampler holds back a few samples).
    assert len(opus) == 10 and 2 * (len(opus) - 2 - 5) <= downlink.dropped <= 2 * (len(opus) - 5)


# ---- calls in a room -----------------------------------------------------------------------------


def negotiated(port: int, codec: str = "PCMU", pt: int = 0, direction: str = "sendrecv") -> Negotiated:
    rate = 48000 if codec == "opus" else 8000
    return Negotiated("127.0.0.1", port, pt, codec, rate, 1, 101, 20, direction, 0)


def drain(call: CallMedia) -> list[bytes]:
    out = []
    while (tx := call.leg.poll_transmit()) is not None:
        if not tx[2]:
            out.append(tx[0])
    return out


def test_two_callers_hear_each_other_and_dtmf_reaches_the_room() -> None:
    worker = MediaWorker(1, 0, "secret-secret-secret", LocalRegistry(), LocalChannelHub())
    now = 0.0
    alice = CallMedia(worker.create_endpoint(), "r", "sip-alice", negotiated(6000), now)
    bob = CallMedia(worker.create_endpoint(), "r", "sip-bob", negotiated(6100, "PCMA", 8), now)
    alice.start(now)
    bob.start(now)
    watcher = worker.create_endpoint()
    assert watcher.control(now, Join("r", "watcher")) is None
    assert watcher.control(now, MessageChannelSub(DTMF_LABEL)) is None
    heard_by_bob: list[bytes] = []
    heard_by_alice: list[bytes] = []
    for i in range(100):  # 2 s: alice speaks, bob is silent
        now += 0.02
        payload = ulaw_encode(tone(440, 160, start=160 * i))
        alice.handle_rtp(now, build_rtp_packet(0, i, 160 * i, 1, payload), ("127.0.0.1", 6000))
        bob.handle_rtp(now, build_rtp_packet(8, i, 160 * i, 2, alaw_encode(bytes(320))), ("127.0.0.1", 6100))
        worker.handle_timeout(now)
        for call in (alice, bob):
            call.on_core_events(now)
            call.tick(now, 1.8e9 + now)
        heard_by_bob += drain(bob)
        heard_by_alice += drain(alice)
    assert alice.stats.uplink_packets == 100
    ep = alice.endpoint.remote_track(TRACK)
    assert ep is not None and ep.packets == 100
    assert len(heard_by_bob) > 50  # the mixer gave bob a slot with alice in it
    pcm = alaw_decode(heard_by_bob[-1][12:])
    assert rms(pcm) > 2000
    # Mix-minus: alice hears bob's near-silence (G.711 idle noise), never her own tone.
    assert len(heard_by_alice) > 90 and max(rms(ulaw_decode(p[12:])) for p in heard_by_alice) < 100
    # DTMF from alice: one message on the room's channel.
    alice.handle_rtp(now, build_rtp_packet(101, 500, 99999, 1, dtmf_payload(9, False, 160)), ("127.0.0.1", 6000))
    messages = []
    while (ev := watcher.poll_event()) is not None:
        if isinstance(ev, MessageChannelMessage):
            messages.append(ev)
    assert [(m.label, m.peer) for m in messages] == [(DTMF_LABEL, "sip-alice")]
    assert b'"digit": "9"' in messages[0].data and alice.digits == ["9"]


def test_hold_stops_our_media_and_the_media_timeout() -> None:
    worker = MediaWorker(1, 0, "secret-secret-secret", LocalRegistry(), LocalChannelHub())
    call = CallMedia(worker.create_endpoint(), "r", "sip-carol", negotiated(6000), 0.0)
    call.start(0.0)
    call.downlink.on_slot_packet(0, Uplink("PCMU").feed(ulaw_encode(tone(440, 160)))[0][0])
    call.renegotiate(negotiated(6000, direction="recvonly"), 1.0)  # the phone said a=sendonly
    call.tick(1.0, 0.0)
    assert drain(call) == [] and call.on_hold
    assert call.dead(1.0 + MEDIA_TIMEOUT - 1) is None  # hold music expected: the timeout still runs
    assert call.dead(1.0 + MEDIA_TIMEOUT + 1) == "no RTP from the phone"
    call.renegotiate(negotiated(6000, direction="inactive"), 50.0)
    assert call.dead(50.0 + 10 * MEDIA_TIMEOUT) is None  # inactive: no RTP either way, the call stays up


def test_a_voice_heard_by_many_phones_is_decoded_once_per_packet() -> None:
    worker = MediaWorker(1, 0, "secret-secret-secret", LocalRegistry(), LocalChannelHub())
    now = 0.0
    speaker = worker.create_endpoint()
    assert speaker.control(now, Join("r", "speaker")) is None
    assert speaker.control(now, Publish("mic", TrackKind.AUDIO)) is None
    mic = speaker.remote_track("mic")
    assert mic is not None
    decoders = SharedDecoders()
    calls = [CallMedia(worker.create_endpoint(), "r", f"sip-{i}", negotiated(6000 + 2 * i), now, decoders)
             for i in range(4)]  # fmt: skip
    for call in calls:
        call.start(now)
    opus = [p for i in range(50) for p, _ in Uplink("PCMU").feed(ulaw_encode(tone(440, 160, start=160 * i)))]
    heard = [0] * len(calls)
    for k, payload in enumerate(opus):
        now += 0.02
        pkt = MediaPacket(MediaCodec.OPUS, 111, k, 960 * k, False, False, payload, audio_level=20)
        pkt.arrival = now
        mic.on_packet(pkt)
        worker.handle_timeout(now)
        for i, call in enumerate(calls):
            call.on_core_events(now)
            call.tick(now, now)
            heard[i] += len(drain(call))
    assert all(h > 30 for h in heard), heard
    # Each packet the slots received was decoded once for the four phones.
    assert decoders.shared == 3 * decoders.decoded and decoders.decoded > 30 and len(decoders) == 1
    decoders.sweep(now + 10)
    assert len(decoders) == 0


def test_reordered_and_lost_phone_packets() -> None:
    worker = MediaWorker(1, 0, "secret-secret-secret", LocalRegistry(), LocalChannelHub())
    call = CallMedia(worker.create_endpoint(), "r", "sip-dave", negotiated(6000), 0.0)
    call.start(0.0)
    src = ("127.0.0.1", 6000)
    order = [0, 1, 3, 2, 4, 6, 7, 8, 9, 10]  # 2 and 3 swapped, 5 lost
    for n, seq in enumerate(order):
        call.handle_rtp(
            0.02 * n, build_rtp_packet(0, seq, 160 * seq, 1, ulaw_encode(tone(440, 160, start=160 * seq))), src
        )
    assert call.jitter.stats.early == 5 and call.jitter.stats.lost == 1  # 3 before 2; 6..9 before the loss
    # Every 20 ms of the phone's time became Opus: 11 packets, the lost one concealed.
    assert call.stats.uplink_packets == 11


def test_a_dial_out_ends_when_every_other_peer_left() -> None:
    worker = MediaWorker(1, 0, "secret-secret-secret", LocalRegistry(), LocalChannelHub())
    other = worker.create_endpoint()
    assert other.control(0.0, Join("r", "alice")) is None
    call = CallMedia(worker.create_endpoint(), "r", "sip-out", negotiated(6000), 0.0)
    call.end_when_alone = True
    call.start(0.0)
    call.on_core_events(0.0)
    assert call.others == {"alice"}
    call.last_rtp = 100.0
    assert call.dead(100.0) is None
    worker.close_endpoint(100.0, other.session, "left")
    call.on_core_events(100.0)
    assert call.dead(101.0) is None and call.dead(102.5) == "every other peer left the room"


def test_g722_phones_are_transcoded_both_ways() -> None:
    from trackmesh.transports.sip.audio import G722

    phone = G722()  # the phone's own codec state
    uplink = Uplink("G722")
    packets = []
    for i in range(25):
        packets += uplink.feed(phone.encode(tone(440, 320, rate=16000, start=320 * i)))
    assert len(packets) == 25 and uplink.rate == 16000
    decoder = OpusDecoder(16000)
    decoded = b"".join(decoder.decode(p) for p, _ in packets[5:])
    assert rms(decoded) > 3000  # the tone survives G.722 -> Opus
    downlink = Downlink("G722", 3)
    silence = downlink.mix()
    assert silence is not None and len(silence) == 160  # 20 ms of G.722 (16 kHz, 4 bits a sample)
    for p, _ in packets:
        downlink.on_slot_packet(1, p)
    frames = [downlink.mix() for _ in range(5)]
    heard = G722()
    pcm = b"".join(heard.decode(f or b"") for f in [silence, *frames])
    assert all(f is not None and len(f) == 160 for f in frames) and rms(pcm[-640 * 3 :]) > 2000


def test_an_rtpengine_endpoint_waits_180_s_for_packets() -> None:
    """runtime/rtpengine_media.py's calls: media_timeout 180 s (atm0s #482), not 30 s."""
    from trackmesh.runtime.rtpengine_media import RTPENGINE_TIMEOUT

    worker = MediaWorker(1, 0, "secret-secret-secret", LocalRegistry(), LocalChannelHub())
    call = CallMedia(worker.create_endpoint(), "r", "gw-call", negotiated(6000, "PCMA", 8), 0.0)
    call.media_timeout = RTPENGINE_TIMEOUT
    assert not call.started  # joins on its first packet (the runtime calls start)
    assert call.dead(MEDIA_TIMEOUT + 1) is None
    assert call.dead(RTPENGINE_TIMEOUT - 1) is None
    assert call.dead(RTPENGINE_TIMEOUT + 1) == "no RTP from the phone"
    call.start(10.0)
    assert call.started and call.endpoint.room == "r"


def test_a_dial_out_is_connecting_in_the_room_then_connected() -> None:
    """runtime/sip_media.py joins a ringing dial-out with state "connecting"; CallMedia.start then
    updates the same peer to "connected" (no second join)."""
    from trackmesh.core.events import PeerJoined, PeerUpdated
    from trackmesh.core.model import JoinOptions

    worker = MediaWorker(1, 0, "secret-secret-secret", LocalRegistry(), LocalChannelHub())
    watcher = worker.create_endpoint()
    assert watcher.control(0.0, Join("r", "watcher")) is None
    endpoint = worker.create_endpoint()
    connecting = JoinOptions(metadata='{"sip": true, "state": "connecting"}')
    assert endpoint.control(0.0, Join("r", "sip-1001", connecting)) is None
    worker.handle_timeout(0.1)
    CallMedia(endpoint, "r", "sip-1001", negotiated(6000), 0.2).start(0.2)
    worker.handle_timeout(0.3)
    seen = []
    while (ev := watcher.poll_event()) is not None:
        if isinstance(ev, PeerJoined | PeerUpdated) and ev.info.peer == "sip-1001":
            seen.append(json.loads(ev.info.metadata or "{}")["state"])
    assert seen == ["connecting", "connected"], seen
