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


def test_the_zone_gateways_document_describes_its_routed_sip_paths() -> None:
    from trackmesh.gateway.node import GatewayNode

    gw = GatewayNode(resolve("gateway", {"secret": "a-secret-of-16-chars", "node_id": "9"}, {}))
    doc = TestClient(gw.create_app()).get("/openapi.json").json()
    for ref in refs(doc):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in doc["components"]["schemas"], ref
    assert "$defs" not in str(doc)
    paths = doc["paths"]
    for path, method, field in (("/sip/invite/server", "post", "dest_addr"), ("/sip/invite/client", "post",
                                "dest_session_id"), ("/api/sip/calls", "post", "to"),
                                ("/sip/call/{session_id}/dtmf", "post", "digits"),
                                ("/api/sip/calls/{session}/dtmf", "post", "digits")):  # fmt: skip
        schema = paths[path][method]["requestBody"]["content"]["application/json"]["schema"]
        assert field in schema["properties"], (path, schema)
    assert "delete" in paths["/sip/call/{session_id}"] and "delete" in paths["/api/sip/calls/{session}"]
