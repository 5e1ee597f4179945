"""The load tester shipped as ``trackmesh-bench`` (cli.py): real WebRTC clients against a trackmesh server.

client.py (ICE/DTLS/SRTP client transport), signalling.py (WHIP/WHEP), sdk_client.py (the SDK's
``/webrtc/connect`` and data channel), media.py (paced publisher and receivers of a pre-encoded
recording.py), streams.py (per-stream loss/latency/freeze logs), runner.py (S1 broadcast), multi.py
(S2 meeting, S3 audio only), servers.py (the pinned server and /proc statistics), deployment.py (a
running node or gateway named by ``--url``, statistics from its /metrics), multi_report.py and
verdict.py (tables). May import the shared layers and transports; nothing in trackmesh imports it.
The Janus comparison built on it lives in the repository, not in the package (bench/janus/).
"""
