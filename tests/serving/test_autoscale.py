"""The replica count for a load (concurrency, or requests per second), and where its target
comes from."""

from __future__ import annotations

from services.serving.autoscale import (
    DEFAULT_CONCURRENCY_TARGET,
    DEFAULT_RPS_TARGET,
    Load,
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
    loads = [Load(c, rps=1000.0) for c in (0, 1, 2, 3, 7, 8, 100)]  # rps: not the metric
    assert [desired_replicas(spec, load) for load in loads] == [1, 1, 1, 2, 4, 4, 4]
    assert desired_replicas({"minReplicas": 2, "maxReplicas": 3, "scaleTarget": 10}, Load()) == 2


def test_desired_replicas_by_requests_per_second() -> None:
    """scaleMetric rps: scaleTarget requests per second per replica (Knative's 200 unset);
    concurrency does not count then."""
    spec = {"minReplicas": 1, "maxReplicas": 5, "scaleMetric": "rps", "scaleTarget": 10}
    rates = (0.0, 9.5, 10.0, 10.5, 31.0, 500.0)
    assert [desired_replicas(spec, Load(50, rps)) for rps in rates] == [1, 1, 1, 2, 4, 5]
    unset = {"maxReplicas": 5, "scaleMetric": "rps"}
    assert desired_replicas(unset, Load(0, DEFAULT_RPS_TARGET + 1)) == 2


def test_replica_bounds_no_max_means_no_autoscaling_and_zero_min_is_one_while_active() -> None:
    assert replica_bounds({}) == (1, 1)
    assert replica_bounds({"minReplicas": 3}) == (3, 3)
    assert replica_bounds({"minReplicas": 0, "maxReplicas": 0}) == (1, 1)
    assert replica_bounds({"minReplicas": 0, "maxReplicas": 2}) == (1, 2)
