"""Recording: every published track to its own playable file, no transcode (docs/recording.md).

Sans-IO cores, fed packets and ``now`` (wall-clock seconds, a parameter, never read inside):

- ``clock``: RTP timestamp unwrapping and the RTP -> wall-clock mapping (RFC 3550 s6.4.1: the
  sender report pairs an NTP time with an RTP timestamp), one sender clock per peer so a peer's
  tracks stay in sync and every track of a room lands on the node's one wall clock.
- ``reorder``: a small reorder buffer in front of the depacketizer, so a NACKed packet that
  arrives late still completes its frame instead of costing a key-frame wait.
- ``track``: one track's recorder: reorder, depacketize (``trackmesh.codecs``), key-frame gating
  (after loss or garbage, wait for the next key frame: never write a frame that references a lost
  one), codec parameter sets re-inserted before H.264/HEVC key frames, file segments (a new one on
  a codec or layer change and after the maximum file duration), outputs drained with ``poll``.
- ``layout``: where files go and the sidecar JSON that describes each one.

Drivers (threads and files, never on a media worker's loop): ``muxer`` writes one segment with
PyAV (WebM for VP8/VP9/AV1/Opus, fragmented MP4 for H.264/HEVC); ``writer`` is the thread with its
bounded queue that runs the cores and the muxers.

May import: the standard library, :mod:`trackmesh.errors`, :mod:`trackmesh.codecs`,
:mod:`trackmesh.core.model`; the drivers also PyAV. Never a transport, the runtime or HTTP.
"""
