"""Workload networks on Kubernetes (``WorkloadSpec.network``; local_network.py is the local side).

Pods of a cluster already share one network, so a group needs only two objects: a headless
Service per member with a ``hostname`` (the name the others resolve, as the Training
Operator's ``<job>-master-0``), owned by that member's pod, and one NetworkPolicy per group
that lets its members in to one another past the profile's gateway-only ingress policy.
Every member's pod is an owner of the policy, so it goes with the group's last pod.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .k8s_client import KubeApi
from .k8s_manifests import (
    network_policy_manifest,
    network_service_manifest,
    owner_reference,
)
from .models import WorkloadSpec


async def attach_network(api: KubeApi, spec: WorkloadSpec, pod: Mapping[str, Any]) -> None:
    """Make (or join) the group's objects for a pod just created; idempotent."""
    service = network_service_manifest(spec, pod)
    if service is not None:
        await api.create_or_keep(f"/api/v1/namespaces/{spec.namespace}/services", service)
    policy = network_policy_manifest(spec)
    if policy is None:
        return
    path = f"/apis/networking.k8s.io/v1/namespaces/{spec.namespace}/networkpolicies"
    owner = owner_reference(pod)
    policy["metadata"]["ownerReferences"] = [owner]
    if await api.create_or_keep(path, policy):
        return
    current = await api.get_or_none(f"{path}/{policy['metadata']['name']}")
    if current is None:
        return
    owners = list(current.get("metadata", {}).get("ownerReferences") or [])
    if all(o.get("uid") != owner["uid"] for o in owners):
        await api.patch(
            f"{path}/{policy['metadata']['name']}",
            {"metadata": {"ownerReferences": [*owners, owner]}},
        )
