"""Strategic merge patch (services.common.resources.strategic): the directives kubectl emits
and the core types' merge keys, on plain objects."""

from __future__ import annotations

from typing import Any

import pytest

from services.common.errors import ApiError
from services.common.resources.patch import apply_patch
from services.common.resources.strategic import strategic_merge

SMP = "application/strategic-merge-patch+json"


def pod_template() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PodTemplate",
        "metadata": {"name": "t", "finalizers": ["a"], "labels": {"x": "1", "y": "2"}},
        "template": {
            "spec": {
                "containers": [
                    {
                        "name": "main",
                        "image": "img:1",
                        "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                    },
                    {"name": "side", "image": "side:1"},
                ],
                "volumes": [{"name": "data", "emptyDir": {}}],
                "tolerations": [{"key": "k1"}],
            }
        },
    }


def spec_of(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["template"]["spec"]  # type: ignore[no-any-return]


def test_lists_with_a_merge_key_merge_by_it() -> None:
    patch = {
        "template": {
            "spec": {
                "containers": [
                    {"name": "main", "image": "img:2", "env": [{"name": "C", "value": "3"}]},
                    {"name": "new", "image": "new:1"},
                ]
            }
        }
    }
    out = spec_of(strategic_merge(pod_template(), patch))
    main, side, new = out["containers"]
    assert main["image"] == "img:2" and [e["name"] for e in main["env"]] == ["A", "B", "C"]
    assert side == {"name": "side", "image": "side:1"}
    assert new == {"name": "new", "image": "new:1"}


def test_lists_without_a_strategy_are_replaced() -> None:
    out = spec_of(strategic_merge(pod_template(), {"template": {"spec": {"tolerations": []}}}))
    assert out["tolerations"] == []


def test_patch_delete_in_a_list_element_and_in_a_map() -> None:
    patch = {
        "metadata": {"labels": {"$patch": "delete"}},
        "template": {"spec": {"containers": [{"name": "side", "$patch": "delete"}]}},
    }
    out = strategic_merge(pod_template(), patch)
    assert "labels" not in out["metadata"]
    assert [c["name"] for c in spec_of(out)["containers"]] == ["main"]


def test_patch_replace_on_a_map_and_a_list() -> None:
    patch = {
        "metadata": {"labels": {"$patch": "replace", "z": "3"}},
        "template": {
            "spec": {"volumes": [{"name": "only", "emptyDir": {}}, {"$patch": "replace"}]}
        },
    }
    out = strategic_merge(pod_template(), patch)
    assert out["metadata"]["labels"] == {"z": "3"}
    assert spec_of(out)["volumes"] == [{"name": "only", "emptyDir": {}}]


def test_set_element_order_and_primitive_lists() -> None:
    patch = {
        "metadata": {
            "finalizers": ["b"],
            "$deleteFromPrimitiveList/finalizers": ["a"],
        },
        "template": {"spec": {"$setElementOrder/containers": [{"name": "side"}, {"name": "main"}]}},
    }
    out = strategic_merge(pod_template(), patch)
    assert out["metadata"]["finalizers"] == ["b"]
    assert [c["name"] for c in spec_of(out)["containers"]] == ["side", "main"]


def test_retain_keys_clears_the_other_fields() -> None:
    original = {"apiVersion": "v1", "strategy": {"type": "Rolling", "rolling": {"max": 1}}}
    patch = {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}
    assert strategic_merge(original, patch)["strategy"] == {"type": "Recreate"}


def test_null_deletes_and_directives_never_stored() -> None:
    patch = {"metadata": {"labels": {"x": None, "$patch": "merge"}}}
    out = strategic_merge(pod_template(), patch)
    assert out["metadata"]["labels"] == {"y": "2"}


def test_bad_directives_are_4xx() -> None:
    with pytest.raises(ApiError) as err:
        strategic_merge(pod_template(), {"metadata": {"$patch": "explode"}})
    assert err.value.code == 422 and "explode" in err.value.message
    with pytest.raises(ApiError) as err:
        patch = {"template": {"spec": {"containers": [{"image": "no-name"}]}}}
        strategic_merge(pod_template(), patch)
    assert err.value.code == 422 and "'name'" in err.value.message
    with pytest.raises(ApiError) as err:
        strategic_merge(pod_template(), ["not", "a", "map"])
    assert err.value.code == 400


def test_apply_patch_takes_it_for_core_kinds_only() -> None:
    core = apply_patch(pod_template(), {"metadata": {"finalizers": ["c"]}}, SMP)
    assert core["metadata"]["finalizers"] == ["a", "c"]
    custom = {**pod_template(), "apiVersion": "kubeflow.org/v1"}
    with pytest.raises(ApiError) as err:
        apply_patch(custom, {"metadata": {}}, SMP)
    assert err.value.code == 415
    assert "application/merge-patch+json" in err.value.message
    assert "accepted media types include: application/json-patch+json" in err.value.message
