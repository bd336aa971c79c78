"""The metrics endpoint: ``[metrics] listen`` serves Prometheus text with kmta's counters."""
from __future__ import annotations

import urllib.request

import pytest

from kmta.config import Config
from kmta.pipeline.metrics import UNEXPECTED_ERRORS, serve
from ops.kit import free_port


def test_served_on_the_configured_address() -> None:
    port = free_port()
    serve(f"127.0.0.1:{port}")
    UNEXPECTED_ERRORS.labels("sender", "outcome").inc()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    assert 'kmta_unexpected_errors_total{component="sender",stage="outcome"}' in text
    assert "# TYPE kmta_dlq_records_total counter" in text


def test_listen_must_be_host_and_port() -> None:
    assert Config.model_validate({"metrics": {"listen": "0.0.0.0:9108"}}).metrics.listen
    with pytest.raises(ValueError, match="host:port"):
        Config.model_validate({"metrics": {"listen": "9108x"}})
