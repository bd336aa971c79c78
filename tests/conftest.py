"""Shared fixtures: one real Kafka broker per test session (started by the repo's own manager),
and a fresh, isolated pipeline per test."""
from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.harness import Pipeline, free_port  # noqa: E402


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``KMTA_TEST_BOOTSTRAP`` (an already running cluster) or a broker started here."""
    if os.environ.get("KMTA_TEST_BOOTSTRAP"):
        yield os.environ["KMTA_TEST_BOOTSTRAP"]
        return
    from ops.kafka import cli as kafka_cli
    from ops.kafka import manager

    libs = manager.ensure_jars(kafka_cli.default_cache_dir(os.environ))
    data = tmp_path_factory.mktemp("kafka")
    port = free_port()
    while True:  # the controller listens on port + 100
        try:
            free = free_port()
            import socket
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 100))
            break
        except OSError:
            port = free
    info = manager.start(data, 1, port, libs=libs, heap="768m")
    try:
        yield info.bootstrap_servers
    finally:
        manager.stop(data)


@pytest.fixture
def pipeline_factory(kafka_bootstrap: str, tmp_path: Path) -> Iterator:
    made: list[Pipeline] = []

    def make(**kw) -> Pipeline:  # noqa: ANN003
        sub = tmp_path / f"p{len(made)}"
        sub.mkdir()
        p = Pipeline(kafka_bootstrap, sub, **kw)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()
