"""Shared fixtures: one real Kafka broker per test session (started by the repo's own manager),
and a fresh, isolated pipeline per test."""
from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.cluster import Cluster, free_base_port, kafka_libs  # noqa: E402
from tests.harness import Pipeline  # noqa: E402


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``KMTA_TEST_BOOTSTRAP`` (an already running cluster) or a broker started here."""
    if os.environ.get("KMTA_TEST_BOOTSTRAP"):
        yield os.environ["KMTA_TEST_BOOTSTRAP"]
        return
    from ops.kafka import manager

    data = tmp_path_factory.mktemp("kafka")
    info = manager.start(data, 1, free_base_port(), libs=kafka_libs(), heap="768m")
    try:
        yield info.bootstrap_servers
    finally:
        manager.stop(data)


@pytest.fixture
def pipeline_factory(kafka_bootstrap: str, tmp_path: Path) -> Iterator:
    made: list[Pipeline] = []

    def make(bootstrap: str | None = None, **kw) -> Pipeline:  # noqa: ANN003
        sub = tmp_path / f"p{len(made)}"
        sub.mkdir()
        p = Pipeline(bootstrap or kafka_bootstrap, sub, **kw)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


@pytest.fixture
def cluster_factory(tmp_path: Path) -> Iterator:
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
