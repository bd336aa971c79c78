"""Shared fixtures: one real Kafka broker per test session (started by the repo's own manager,
through the kit the benchmarks use too), and a fresh, isolated pipeline per test."""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ops.deployment import Pipeline
from ops.kit import start_broker, stop_broker
from tests.cluster import Cluster


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``KMTA_TEST_BOOTSTRAP`` (an already running cluster) or a broker started here."""
    if os.environ.get("KMTA_TEST_BOOTSTRAP"):
        yield os.environ["KMTA_TEST_BOOTSTRAP"]
        return
    data = tmp_path_factory.mktemp("kafka")
    bootstrap = start_broker(data)
    try:
        yield bootstrap
    finally:
        stop_broker(data)


@pytest.fixture
def pipeline_factory(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Callable[..., Pipeline]]:
    made: list[Pipeline] = []

    def make(bootstrap: str | None = None, **kw: Any) -> Pipeline:
        sub = tmp_path / f"p{len(made)}"
        sub.mkdir()
        p = Pipeline(bootstrap or kafka_bootstrap, sub, **kw)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


@pytest.fixture
def cluster_factory(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    """Kafka clusters of the test's own (fault tests kill and restart their brokers), started
    with ``make(brokers)`` and stopped at the end. Ask for it before ``pipeline_factory``: the
    pipeline's processes are stopped first, then the cluster."""
    made: list[Cluster] = []

    def make(brokers: int = 1, heap: str = "384m") -> Cluster:
        c = Cluster(tmp_path / f"kafka{len(made)}", brokers, heap)
        made.append(c)
        c.start()
        return c

    yield make
    for c in made:
        c.stop()
