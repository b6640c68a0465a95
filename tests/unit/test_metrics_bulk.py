"""Histogram values observed in bulk (`metrics.observe_many`, used for a purge batch's endings) equal the
same values observed one by one."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, Histogram

BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 86400, 604800)


def samples(histogram: Histogram) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name.split("_", 1)[1], tuple(sorted(sample.labels.items()))): sample.value
        for family in histogram.collect()
        for sample in family.samples
    }


def test_bulk_observations_equal_one_by_one_observations() -> None:
    from app.metrics import observe_many

    registry = CollectorRegistry()
    bulk = Histogram("bulk_lifetime", "x", ["tenant"], buckets=BUCKETS, registry=registry)
    single = Histogram("single_lifetime", "x", ["tenant"], buckets=BUCKETS, registry=registry)
    rng = random.Random(7)
    # Exact bucket bounds too: a session that expired untouched lived exactly its idle timeout.
    values = [rng.choice([60.0, 1.0, 604800.0, 0.0, 10.0**7, rng.uniform(0, 10**6)]) for _ in range(3000)]
    for tenant in ("a", "b"):
        observe_many(bulk.labels(tenant), values)
        for value in values:
            single.labels(tenant).observe(value)
    assert samples(bulk) == samples(single)
