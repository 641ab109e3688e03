"""A profile's Namespace and what comes with it, as Kubeflow's profile controller makes it.

For a profile (a namespace and its owner): the Namespace, labelled for Kubeflow and for Pod
Security "restricted"; the ServiceAccounts ``default-editor`` (workloads run as it) and
``default-viewer``; RoleBindings of the owner to ``kubeflow-admin`` and of the two accounts
to ``kubeflow-edit`` and ``kubeflow-view``; and a NetworkPolicy that lets only the platform's
gateway reach the workload pods. Pure functions; the runtime creates them in order.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .k8s_manifests import MANAGED_BY, MANAGED_LABELS
from .quota import QUOTA_NAME

#: Kubeflow's annotation naming a profile namespace's owner.
OWNER_ANNOTATION = "owner"
NETWORK_POLICY = "shipyard-gateway-only"
GATEWAY_COMPONENT = "gateway"
RBAC_GROUP = "rbac.authorization.k8s.io"


def namespace_manifest(namespace: str, owner: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": namespace,
            "labels": {
                **MANAGED_LABELS,
                "app.kubernetes.io/part-of": "kubeflow-profile",
                "katib.kubeflow.org/metrics-collector-injection": "enabled",
                "pod-security.kubernetes.io/enforce": "restricted",
            },
            "annotations": {OWNER_ANNOTATION: owner},
        },
    }


def _managed(
    api_version: str, kind: str, namespace: str, name: str, **fields: Any
) -> dict[str, Any]:
    """A namespaced object of the profile, labelled as shipyard's, with ``fields`` after its
    metadata."""
    return {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace, "labels": dict(MANAGED_LABELS)},
        **fields,
    }


def service_account_manifest(namespace: str, name: str) -> dict[str, Any]:
    # Pods mount a projected, audience-bound token instead (k8s_manifests).
    return _managed("v1", "ServiceAccount", namespace, name, automountServiceAccountToken=False)


def _role_binding(
    namespace: str, name: str, cluster_role: str, subject: dict[str, Any]
) -> dict[str, Any]:
    return _managed(
        f"{RBAC_GROUP}/v1",
        "RoleBinding",
        namespace,
        name,
        roleRef={"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": cluster_role},
        subjects=[subject],
    )


def role_binding_manifests(namespace: str, owner: str) -> list[dict[str, Any]]:
    def account(name: str) -> dict[str, Any]:
        return {"kind": "ServiceAccount", "name": name, "namespace": namespace}

    return [
        _role_binding(
            namespace,
            "namespaceAdmin",
            "kubeflow-admin",
            {"kind": "User", "name": owner, "apiGroup": RBAC_GROUP},
        ),
        _role_binding(namespace, "default-editor", "kubeflow-edit", account("default-editor")),
        _role_binding(namespace, "default-viewer", "kubeflow-view", account("default-viewer")),
    ]


def network_policy_manifest(namespace: str, platform_namespace: str) -> dict[str, Any]:
    """Ingress to the namespace's workload pods from the platform's gateway pods only."""
    return _managed(
        "networking.k8s.io/v1",
        "NetworkPolicy",
        namespace,
        NETWORK_POLICY,
        spec={
            "podSelector": {"matchLabels": {MANAGED_BY: MANAGED_LABELS[MANAGED_BY]}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [
                        {
                            "namespaceSelector": {
                                "matchLabels": {"kubernetes.io/metadata.name": platform_namespace}
                            },
                            "podSelector": {
                                "matchLabels": {"app.kubernetes.io/component": GATEWAY_COMPONENT}
                            },
                        }
                    ]
                }
            ],
        },
    )


def resource_quota_manifest(namespace: str, hard: Mapping[str, str]) -> dict[str, Any]:
    """The profile's ``resourceQuotaSpec`` as the ResourceQuota Kubeflow names
    ``kf-resource-quota``."""
    return _managed("v1", "ResourceQuota", namespace, QUOTA_NAME, spec={"hard": dict(hard)})


def profile_objects(
    namespace: str, owner: str, platform_namespace: str
) -> list[tuple[str, dict[str, Any]]]:
    """(collection path, manifest) for everything but the Namespace, in creation order."""
    core = f"/api/v1/namespaces/{namespace}"
    rbac = f"/apis/{RBAC_GROUP}/v1/namespaces/{namespace}/rolebindings"
    objects: list[tuple[str, dict[str, Any]]] = [
        (f"{core}/serviceaccounts", service_account_manifest(namespace, "default-editor")),
        (f"{core}/serviceaccounts", service_account_manifest(namespace, "default-viewer")),
    ]
    objects += [(rbac, rb) for rb in role_binding_manifests(namespace, owner)]
    objects.append(
        (
            f"/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies",
            network_policy_manifest(namespace, platform_namespace),
        )
    )
    return objects
