"""Bounded-mode import selection: which remote audio sources a stage subscribes, kept to the top
``limit`` by reported level with hold and margins (docs/mixer.md, "Bounding inter-node traffic")."""

from __future__ import annotations

import math

from ..model import TrackSource
from . import HOLD, IMPORT_MARGIN, SWITCH_MARGIN
from .source import Source

__all__ = ["Imports"]


class Imports:
    """A set of imported remote sources kept to the top ``limit`` by reported level, with hold
    and margins (bounded mode): the stage's for its AUTO listeners, one per MANUAL listener."""

    __slots__ = ("since",)

    def __init__(self) -> None:
        self.since: dict[TrackSource, float] = {}  # imported source -> since when

    def choose(
        self, now: float, reported: dict[TrackSource, int], limit: int, sources: dict[TrackSource, Source]
    ) -> list[TrackSource]:
        """``reported``: the eligible remote sources and their levels. Returns the sources that
        came in or went out."""
        imports = self.since
        changed: list[TrackSource] = []
        for source in list(imports):
            if limit == 0 or (source not in reported and now - imports[source] >= HOLD):
                del imports[source]
                changed.append(source)
        if len(imports) > limit:
            # The limit shrank (a listener with more slots left): the bound holds at once; the
            # quietest imports that no slot carries go first.
            def keep(source: TrackSource) -> tuple[bool, int]:
                src = sources.get(source)
                return (src is not None and bool(src.outputs), reported.get(source, 0))

            for source in sorted(imports, key=keep)[: len(imports) - limit]:
                del imports[source]
                changed.append(source)
        top = sorted(reported, key=lambda s: reported[s], reverse=True)[:limit]
        for source in top:
            if source in imports:
                continue
            if len(imports) < limit:
                imports[source] = now
                changed.append(source)
                continue
            # The quietest import outside the top that has had its hold; one a listener's slot
            # carries goes last and only for a newcomer louder by the slots' own margin.
            victim: TrackSource | None = None
            victim_key = (True, math.inf)
            for cur, since in imports.items():
                if cur in top or now - since < HOLD:
                    continue
                src = sources.get(cur)
                key = (src is not None and bool(src.outputs), float(reported.get(cur, 0)))
                if key < victim_key:
                    victim, victim_key = cur, key
            margin = SWITCH_MARGIN if victim_key[0] else IMPORT_MARGIN
            if victim is not None and reported[source] >= victim_key[1] + margin:
                del imports[victim]
                imports[source] = now
                changed.extend((victim, source))
        return changed
