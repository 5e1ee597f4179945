"""Audio mixer without decoding ("virtual mix-minus"): the N loudest voices of a room, forwarded.

Contract (the design, its reasons and bounded mode are in docs/mixer.md):

- A listener is an endpoint that sent :class:`~trackmesh.core.controls.MixerConfig`: N output slots,
  audio LocalTracks the transport created. Each slot forwards, undecoded, the packets of one of the
  N loudest sources of the room (RFC 6464 audio level, ``MediaPacket.audio_level``), never one of
  the listener's own peer. A slot change is a ``MixerSlotSet``/``MixerSlotUnset`` plus a
  ``LocalTrackStateChanged(ACTIVE, source)``; voice activity a ``VoiceActivity`` event.
- One :class:`~.stage.MixerStage` per (worker, room) subscribes each source once, ranks them once per
  :data:`TICK` and gives each listener (:class:`~.listener.AudioMixer`) its own top N. Per packet:
  a counter update and the calls to the slots' LocalTracks, nothing else.
- Bounded mode (a cluster node): a stage imports remote audio only for the top N (+1) by the levels
  the other workers report on the hub's message path (:mod:`.levels`, chosen in :mod:`.imports`).

Modules: :mod:`.stage` (the orchestrator and registry watcher), :mod:`.listener` (one listener's slot
policy), :mod:`.source` (one source's level accounting), :mod:`.imports` (bounded-mode selection),
:mod:`.levels` (the levels summary and its channel). They import the rest of ``trackmesh.core``,
never a transport, the runtime or the cluster; this module holds only the tuning below.
"""

TICK = 0.1  # ranking and slot decisions, seconds
LEVEL_TAU = 0.3  # level smoothing time constant, seconds
HOLD = 0.5  # a source that spoke this recently keeps its slot
SILENCE_TIMEOUT = 1.0  # no packet (or no levels summary) for this long: the slot (the summary) is dropped
SWITCH_MARGIN = 30.0  # levels by which a newcomer must beat a source that holds its slot
SPEAKING_DBOV = -60  # "spoke" for the hold above
VOICE_DBOV = -40  # voice activity threshold (atm0s: -40 dBov)
VOICE_INTERVAL = 0.5  # at most one voice activity event per source this often
MIN_LOUDNESS = 1.0  # below this a source is digital silence and takes no free slot
MAX_SLOTS = 8
MAX_MANUAL_SOURCES = 256
IMPORT_MARGIN = 6.0  # levels by which a remote newcomer must beat an imported source to replace it
