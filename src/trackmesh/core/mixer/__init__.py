"""Audio mixer without decoding: see :mod:`.stage` (this commit only moves the module into a package)."""

from .stage import (
    MAX_MANUAL_SOURCES,
    MAX_SLOTS,
    VOICE_INTERVAL,
    AudioMixer,
    MixerStage,
    decode_levels,
    encode_levels,
    levels_channel,
)

__all__ = [
    "MAX_MANUAL_SOURCES",
    "MAX_SLOTS",
    "VOICE_INTERVAL",
    "AudioMixer",
    "MixerStage",
    "decode_levels",
    "encode_levels",
    "levels_channel",
]
