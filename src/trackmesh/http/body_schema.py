"""A pydantic model's JSON schema as a self-contained OpenAPI request-body schema.

``model_json_schema()`` puts nested models under a local ``$defs`` with ``#/$defs/...``
references; placed in ``openapi_extra`` those references resolve against the OpenAPI document's
root, where there is no ``$defs`` (ReDoc stops with "Invalid reference token: $defs"). Nested
models are inlined instead: request bodies here are small and never recursive.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

_PREFIX = "#/$defs/"


def body_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    defs: dict[str, Any] = schema.pop("$defs", {})

    def inline(node: Any, depth: int) -> Any:
        if depth > 32:
            raise ValueError(f"{model.__name__}: schema nested too deeply (recursive model?)")
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith(_PREFIX):
                target = inline(defs[ref[len(_PREFIX) :]], depth + 1)
                rest = {k: inline(v, depth + 1) for k, v in node.items() if k != "$ref"}
                return {**target, **rest}
            return {k: inline(v, depth + 1) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v, depth + 1) for v in node]
        return node

    out: dict[str, Any] = inline(schema, 0)
    return out
