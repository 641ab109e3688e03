"""The replica count for a concurrency, and where its target comes from."""

from __future__ import annotations

from services.serving.autoscale import (
    DEFAULT_CONCURRENCY_TARGET,
    concurrency_target,
    desired_replicas,
    replica_bounds,
)


def test_concurrency_target_scale_target_then_container_concurrency_then_default() -> None:
    assert concurrency_target({"scaleTarget": 5}) == 5
    assert concurrency_target({"scaleTarget": 5, "scaleMetric": "concurrency"}) == 5
    assert (
        concurrency_target({"scaleTarget": 50, "scaleMetric": "cpu"}) == DEFAULT_CONCURRENCY_TARGET
    )
    assert concurrency_target({"scaleMetric": "rps", "containerConcurrency": 4}) == 4
    assert concurrency_target({}) == DEFAULT_CONCURRENCY_TARGET


def test_desired_replicas_clamped_between_min_and_max() -> None:
    spec = {"minReplicas": 1, "maxReplicas": 4, "scaleTarget": 2}
    assert [desired_replicas(spec, c) for c in (0, 1, 2, 3, 7, 8, 100)] == [1, 1, 1, 2, 4, 4, 4]
    assert desired_replicas({"minReplicas": 2, "maxReplicas": 3, "scaleTarget": 10}, 0) == 2


def test_replica_bounds_no_max_means_no_autoscaling_and_zero_min_is_one_while_active() -> None:
    assert replica_bounds({}) == (1, 1)
    assert replica_bounds({"minReplicas": 3}) == (3, 3)
    assert replica_bounds({"minReplicas": 0, "maxReplicas": 0}) == (1, 1)
    assert replica_bounds({"minReplicas": 0, "maxReplicas": 2}) == (1, 2)
