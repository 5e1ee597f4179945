"""The node's OpenAPI document is self-contained: every ``$ref`` points into ``#/components``
(a ``#/$defs/...`` left by a model's own schema stops ReDoc: "Invalid reference token")."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from pydantic import BaseModel

from trackmesh.config import resolve
from trackmesh.http.app import create_app
from trackmesh.http.body_schema import body_schema
from trackmesh.runtime.node import Node


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for v in node.values() for r in refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


def test_every_reference_resolves_inside_the_document() -> None:
    node = Node(resolve("standalone", {"secret": "a-secret-of-16-chars", "workers": "1"}, {}))
    doc = TestClient(create_app(node)).get("/openapi.json").json()
    found = refs(doc)
    assert found, "the document has component references"
    for ref in found:
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.rsplit("/", 1)[1] in doc["components"]["schemas"], ref
    assert "$defs" not in str(doc)
    # The dial-out body (a nested model) is documented with its credentials inline.
    dial = doc["paths"]["/api/sip/calls"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert dial["properties"]["auth"]["anyOf"][0]["properties"]["username"]["type"] == "string"


class Inner(BaseModel):
    n: int


class Outer(BaseModel):
    a: Inner
    b: list[Inner]


def test_nested_models_are_inlined() -> None:
    schema = body_schema(Outer)
    assert "$defs" not in schema and "$ref" not in str(schema)
    assert schema["properties"]["a"]["properties"]["n"]["type"] == "integer"
    assert schema["properties"]["b"]["items"]["required"] == ["n"]
