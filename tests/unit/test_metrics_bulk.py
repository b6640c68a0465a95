"""Ended sessions recorded in bulk equal the same endings recorded one by one."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, Counter, Histogram

from app import metrics


def samples(*collectors: Counter | Histogram) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for collector in collectors
        for family in collector.collect()
        for sample in family.samples
    }


def test_bulk_endings_equal_one_by_one_observations(monkeypatch) -> None:
    registry = CollectorRegistry()
    bulk_ended = Counter("bulk_ended", "x", ["tenant", "reason"], registry=registry)
    bulk_lifetime = Histogram(
        "bulk_lifetime", "x", ["tenant"], buckets=metrics.LIFETIME_BOUNDS[:-1], registry=registry
    )
    one_ended = Counter("one_ended", "x", ["tenant", "reason"], registry=registry)
    one_lifetime = Histogram(
        "one_lifetime", "x", ["tenant"], buckets=metrics.LIFETIME_BOUNDS[:-1], registry=registry
    )
    monkeypatch.setattr(metrics, "SESSIONS_ENDED", bulk_ended)
    monkeypatch.setattr(metrics, "SESSION_LIFETIME", bulk_lifetime)

    rng = random.Random(7)
    # Exact bucket bounds too: a session that expired untouched lived exactly its idle timeout.
    lifetimes = [rng.choice([60.0, 1.0, 604800.0, 0.0, rng.uniform(0, 10**6)]) for _ in range(3000)]
    endings = metrics.Endings()
    for n, lifetime in enumerate(lifetimes):
        tenant, reason = f"t{n % 3}", ("expired_idle", "expired_lifetime")[n % 2]
        endings.add(tenant, reason, lifetime)
        one_ended.labels(tenant, reason).inc()
        one_lifetime.labels(tenant).observe(lifetime)
    assert len(endings) == 3000
    endings.record()

    def renamed(values: dict, prefix: str) -> dict:
        return {(name.replace(prefix, ""), labels): value for (name, labels), value in values.items()}

    assert renamed(samples(bulk_ended, bulk_lifetime), "bulk_") == renamed(
        samples(one_ended, one_lifetime), "one_"
    )
    assert len(endings) == 0
