"""Pure parts of kubectl support: the Table ``Accept`` negotiation, OpenAPI 3.0 from pydantic
schemas, and the fieldValidation helpers."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel, Field

from services.common.errors import ApiError
from services.common.resources import fieldvalidation as fields
from services.common.resources.kinds import ResourceKind, Spec
from services.common.resources.openapi import document, to_openapi
from services.common.resources.printing import table_version

KUBECTL = (
    "application/json;as=Table;v=v1;g=meta.k8s.io,"
    "application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
)


def test_table_version_negotiation() -> None:
    assert table_version(KUBECTL) == "v1"
    assert table_version("application/json;as=Table;v=v1beta1;g=meta.k8s.io") == "v1beta1"
    assert table_version("application/json") is None
    assert table_version(None) is None
    assert table_version("application/vnd.kubernetes.protobuf, application/json") is None
    assert table_version("text/html,*/*;q=0.8") is None
    assert table_version("application/json;as=Table;v=v2;g=meta.k8s.io,application/json") is None
    with pytest.raises(ApiError) as err:
        table_version("application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io")
    assert err.value.code == 406


class Part(Spec):
    """A part of a gizmo."""

    name: str = Field(description="The part's name.")
    count: int = Field(1, gt=0)


class GizmoSpec(Spec):
    """What a gizmo should be."""

    parts: list[Part] | None = None
    size: str | int = 1
    mode: str | None = None
    anything: dict[str, object] | None = None


GIZMO = ResourceKind("example.com", "v1", "Gizmo", "gizmos", GizmoSpec, "test")


def test_to_openapi_drops_json_schema_only_constructs() -> None:
    schema = to_openapi(
        {
            "title": "X",
            "anyOf": [{"$ref": "#/components/schemas/a.B"}, {"type": "null"}],
            "default": None,
            "description": "d",
        }
    )
    assert schema == {"description": "d", "allOf": [{"$ref": "#/components/schemas/a.B"}]}
    assert to_openapi({"exclusiveMinimum": 0, "type": "integer"}) == {
        "minimum": 0,
        "exclusiveMinimum": True,
        "type": "integer",
    }
    assert to_openapi({"const": "x"}) == {"enum": ["x"]}
    assert to_openapi({"anyOf": [{"type": "string"}, {"type": "integer"}]}) == {
        "x-kubernetes-int-or-string": True
    }


def test_document_of_a_kind() -> None:
    doc = document([GIZMO])
    schemas = doc["components"]["schemas"]
    gizmo = schemas["com.example.v1.Gizmo"]
    assert gizmo["x-kubernetes-group-version-kind"] == [
        {"group": "example.com", "version": "v1", "kind": "Gizmo"}
    ]
    assert gizmo["properties"]["spec"]["allOf"] == [
        {"$ref": "#/components/schemas/com.example.v1.GizmoSpec"}
    ]
    assert gizmo["properties"]["spec"]["description"] == "What a gizmo should be."
    spec = schemas["com.example.v1.GizmoSpec"]
    assert spec["properties"]["parts"]["items"] == {
        "$ref": "#/components/schemas/com.example.v1.Gizmo.Part"
    }
    assert spec["properties"]["size"]["x-kubernetes-int-or-string"] is True
    part = schemas["com.example.v1.Gizmo.Part"]
    assert part["properties"]["name"]["description"] == "The part's name."
    assert part["properties"]["count"]["exclusiveMinimum"] is True
    text = json.dumps(schemas)
    assert '"type": "null"' not in text and "$defs" not in text and '"title"' not in text
    patch = doc["paths"]["/apis/example.com/v1/namespaces/{namespace}/gizmos/{name}"]["patch"]
    assert patch["x-kubernetes-group-version-kind"]["kind"] == "Gizmo"
    assert [p["name"] for p in patch["parameters"]] == ["fieldValidation"]
    assert set(patch["requestBody"]["content"]) == {
        "application/json-patch+json",
        "application/merge-patch+json",
    }


def test_no_spec_model_and_plain_models() -> None:
    class Loose(BaseModel):
        x: int

    kind = ResourceKind("", "v1", "Thing", "things", None, "test", extra_top_level=("data",))
    schemas = document([kind])["components"]["schemas"]
    thing = schemas["io.k8s.api.core.v1.Thing"]
    assert "spec" not in thing["properties"]
    assert thing["properties"]["data"]["additionalProperties"] == {"type": "string"}
    assert to_openapi(Loose.model_json_schema())["properties"]["x"] == {"type": "integer"}


def test_field_validation_helpers() -> None:
    assert fields.directive(None) == "Warn" and fields.directive("Strict") == "Strict"
    with pytest.raises(ApiError) as err:
        fields.directive("strict")
    assert err.value.code == 400
    doc, dups = fields.parse_json(b'{"a":{"b":1,"b":2},"l":[{"c":1,"c":1}]}')
    assert doc == {"a": {"b": 2}, "l": [{"c": 1}]} and dups == ["a.b", "l[0].c"]
    body = {"spec": {"parts": [{"name": "x", "weight": 1}]}, "extra": 1}
    assert fields.drop(body, "spec.parts[0].weight") and fields.drop(body, "extra")
    assert body == {"spec": {"parts": [{"name": "x"}]}}
    assert not fields.drop(body, "spec.parts[3].weight") and not fields.drop(body, "spec.nope")
    report = fields.FieldReport("Warn")
    report.note("unknown field", "spec.x")
    assert report.headers() == [("Warning", '299 - "unknown field \\"spec.x\\""')]
    assert fields.FieldReport("Ignore", ["w"]).headers() == []
