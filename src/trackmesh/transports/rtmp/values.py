"""The Python values AMF0 and AMF3 decode to and encode from (shared by :mod:`.amf0`, :mod:`.amf3`)."""

from __future__ import annotations

from typing import Final, TypeAlias

__all__ = ["UNDEFINED", "AmfValue", "Undefined"]


class Undefined:
    """The AMF undefined value, for encoding (decoding maps it to None)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "Undefined"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Undefined)

    def __hash__(self) -> int:
        return 0


UNDEFINED: Final = Undefined()

AmfValue: TypeAlias = bool | float | int | str | Undefined | dict[str, "AmfValue"] | list["AmfValue"] | None
