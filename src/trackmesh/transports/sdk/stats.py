"""The SDK's receiver stats event (``ServerEvent.Receiver.Stats``), built from one outgoing stream.

``source``: the source's bitrate as it reaches us (every layer), and what the viewer's RTCP
reports say about the stream we send it (RFC 3550 s6.4, see
:mod:`trackmesh.rtp.reports`): ``rtt`` in milliseconds (A - LSR - DLSR),
``lost`` the fraction of packets lost over the viewer's last report interval (0..1) and
``jitter`` the interarrival jitter in milliseconds. All three stay 0 until the viewer reports
(a viewer reports about once a second; ``rtt`` needs one of our SRs to have reached it).

``transmit``: the spatial and temporal layer forwarded and the bitrate sent over the last
interval.
"""

from __future__ import annotations

from trackmesh.transports.sdk.protocol import session_pb2
from trackmesh.transports.webrtc.media_out import OutboundTrack

__all__ = ["receiver_stats"]

Stats = session_pb2.ServerEvent.Receiver.Stats


def receiver_stats(out: OutboundTrack, last_octets: int, interval: float) -> Stats:
    """The stats of ``out`` for the interval of ``interval`` seconds since ``last_octets``
    payload octets had been sent."""
    kbps = max(0, out.octets - last_octets) * 8 // max(int(interval * 1000), 1)
    source_kbps = int(out.source_bps / 1000) if out.video else kbps
    rep = out.reception
    return Stats(
        source=Stats.Source(
            bitrate_kbps=source_kbps,
            rtt=rep.rtt_ms,
            lost=rep.fraction_lost,
            jitter=rep.jitter_ms,
        ),
        transmit=Stats.Transmit(spatial=out.spatial_layer, temporal=out.temporal_layer, bitrate_kbps=kbps),
    )
