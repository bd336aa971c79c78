"""The metrics port: ``/metrics`` (Prometheus text), ``/healthz`` and ``/readyz`` on
``[metrics] listen``; the counters' labels; the gauges that come and go; readiness reports."""
from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY

from kmta.config import Config
from kmta.pipeline.health import Health, KafkaProbe, MetricsServer, serve, watch
from kmta.pipeline.metrics import (
    CONSUMER_LAG,
    DEFERRALS,
    ISP_LOCKED,
    MESSAGES,
    OTHER,
    UNEXPECTED_ERRORS,
    LiveGauge,
    count_event,
    isp_label,
    known_isps,
    metric_names,
)
from kmta.policy.kb import KnowledgeBase
from ops.kit import free_port
from schemas import DeliveryEvent, IspState, Status
from streams.observe import state_gauges


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def served(clock: Clock) -> Iterator[tuple[Health, str]]:
    health = Health("sender", stall_after=30, start_grace=60, clock=clock)
    server = serve(f"127.0.0.1:{free_port()}", health)
    assert isinstance(server, MetricsServer)
    try:
        yield health, f"http://127.0.0.1:{server.port}"
    finally:
        server.close()


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.headers["Content-Type"], r.read().decode()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.headers["Content-Type"], e.read().decode()


def test_metrics_on_the_configured_address(served: tuple[Health, str]) -> None:
    _, base = served
    known_isps(["gmail"])
    count_event(DeliveryEvent(id="a", to="x@gmail.com", isp="gmail", status=Status.DELIVERED,
                              final=True, source_ip="127.0.0.2", timestamp=1.0))
    status, ctype, text = get(f"{base}/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    assert 'kmta_messages_total{isp="gmail",outcome="delivered",source_ip="127.0.0.2"}' in text
    assert "# TYPE kmta_dlq_records_total counter" in text
    assert "# TYPE kmta_smtp_reply_seconds histogram" in text
    assert get(f"{base}/nothing")[0] == 404


def test_readyz_says_why_until_the_process_reports_ready(served: tuple[Health, str],
                                                         clock: Clock) -> None:
    health, base = served
    status, ctype, body = get(f"{base}/readyz")
    assert (status, ctype) == (503, "application/json")
    assert json.loads(body)["reason"] == "starting"
    assert get(f"{base}/healthz")[0] == 200  # starting is alive
    health.report({"kafka": "unreachable: KafkaConnectionError", "partitions": "none"})
    status, _, body = get(f"{base}/readyz")
    doc = json.loads(body)
    assert status == 503 and doc["status"] == "not ready" and doc["kind"] == "sender"
    assert doc["checks"] == {"kafka": "unreachable: KafkaConnectionError", "partitions": "none"}
    assert doc["reason"] == "kafka: unreachable: KafkaConnectionError; partitions: none"
    health.report({})
    status, _, body = get(f"{base}/readyz")
    assert status == 200 and json.loads(body) == {"status": "ready", "kind": "sender",
                                                  "reason": "", "checks": {}}


def test_a_stalled_loop_is_neither_alive_nor_ready(served: tuple[Health, str],
                                                   clock: Clock) -> None:
    health, base = served
    health.report({})
    clock.t += 29
    assert get(f"{base}/healthz")[0] == 200
    assert get(f"{base}/readyz")[0] == 200
    clock.t += 2  # 31 s without a report
    status, _, body = get(f"{base}/healthz")
    assert status == 503 and "31 s ago" in json.loads(body)["reason"]
    status, _, body = get(f"{base}/readyz")
    assert status == 503 and "loop" in json.loads(body)["checks"]


def test_a_process_that_never_reports_stops_being_alive(clock: Clock) -> None:
    health = Health("worker", start_grace=60, clock=clock)
    clock.t += 59
    assert health.alive()[0]
    clock.t += 2
    ok, body = health.alive()
    assert not ok and body["status"] == "stalled"


def test_metrics_listen_unset_serves_nothing() -> None:
    assert serve(None, Health("worker")) is None


def test_listen_must_be_host_and_port() -> None:
    assert Config.model_validate({"metrics": {"listen": "0.0.0.0:9108"}}).metrics.listen
    with pytest.raises(ValueError, match="host:port"):
        Config.model_validate({"metrics": {"listen": "9108x"}})


async def test_watch_reports_checks_and_counts_failing_refreshes(clock: Clock) -> None:
    health = Health("dashboard", clock=clock)
    errors = UNEXPECTED_ERRORS.labels("dashboard", "metrics")._value.get()
    calls = []

    def broken() -> None:
        raise RuntimeError("no lanes")

    async def lag() -> None:
        calls.append("lag")

    async def checks() -> dict[str, str]:
        calls.append("checks")
        return {"state": "not read yet"}
    task = asyncio.create_task(watch(health, checks, (broken, lag), every=0.01))
    while calls.count("checks") < 2:
        await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    ok, body = health.ready()
    assert not ok
    assert body["checks"] == {"state": "not read yet"}  # a stale gauge is no reason
    assert UNEXPECTED_ERRORS.labels("dashboard", "metrics")._value.get() >= errors + 2
    assert calls[:2] == ["lag", "checks"]


async def test_kafka_probe_asks_at_most_every_few_seconds(clock: Clock) -> None:
    asked = []

    async def request() -> None:
        asked.append(clock.t)
        if len(asked) == 2:
            raise ConnectionError("broker gone")
    probe = KafkaProbe(request, clock=clock)
    assert await probe.check() is None
    clock.t += 1
    assert await probe.check() is None and len(asked) == 1  # the last answer
    clock.t += 5
    assert await probe.check() == "unreachable: ConnectionError: broker gone"
    clock.t += 5
    assert await probe.check() is None and len(asked) == 3


def test_labels_come_from_small_sets() -> None:
    known_isps(["gmail", "yahoo"])
    assert isp_label("gmail") == "gmail"
    assert isp_label("shop-example.test") == OTHER  # an unknown domain is its own ISP
    assert isp_label(None) == OTHER
    before = MESSAGES.labels(OTHER, "", "deferred")._value.get()
    deferred = DEFERRALS.labels(OTHER, "rate_limited")._value.get()
    count_event(DeliveryEvent(id="b", to="x@shop-example.test", isp="shop-example.test",
                              status=Status.DEFERRED, final=False, category="rate_limited",
                              timestamp=1.0))
    assert MESSAGES.labels(OTHER, "", "deferred")._value.get() == before + 1
    assert DEFERRALS.labels(OTHER, "rate_limited")._value.get() == deferred + 1


def test_live_gauges_replace_their_series_per_part() -> None:
    g = LiveGauge("kmta_test_live", "a test gauge", ["group", "partition"])
    try:
        g.set_all({("a", "0"): 3.0, ("a", "1"): 4.0}, part="a")
        g.set_all({("b", "0"): 1.0}, part="b")
        g.set_all({("a", "1"): 2.0}, part="a")  # partition 0 of group a is gone
        assert g.samples() == {("a", "1"): 2.0, ("b", "0"): 1.0}
        assert REGISTRY.get_sample_value("kmta_test_live", {"group": "b", "partition": "0"}) == 1
        assert REGISTRY.get_sample_value("kmta_test_live", {"group": "a",
                                                            "partition": "0"}) is None
    finally:
        REGISTRY.unregister(g)


def test_metric_names_are_what_promql_sees() -> None:
    names = metric_names()
    assert {"kmta_messages_total", "kmta_smtp_reply_seconds_bucket",
            "kmta_dkim_sign_seconds_count", "kmta_consumer_lag_messages",
            "process_resident_memory_bytes"} <= names
    assert "kmta_messages" not in names
    assert CONSUMER_LAG.name in names


def test_brain_states_as_gauges() -> None:
    kb = KnowledgeBase.from_dicts({"isp": {"gmail": {
        "domains": ["gmail.com"], "sending": {"tact": "60s"},
        "speed": {"min": 10, "max": 600, "start": 60}}}})
    known_isps(kb.isp_names())
    now = 5000.0
    states = {
        "gmail": IspState(isp="gmail", speed=120, speed_max=600, throttle_until=now + 60,
                          throttle_rate=300).model_dump(mode="json"),
        "gmail|127.0.0.2": IspState(isp="gmail", source_ip="127.0.0.2",
                                    locked_until=now + 10).model_dump(mode="json"),
        "gmail|127.0.0.3": IspState(isp="gmail", source_ip="127.0.0.3",
                                    speed=240).model_dump(mode="json"),
        "a.test|127.0.0.3": IspState(isp="a.test", source_ip="127.0.0.3",
                                     speed=30).model_dump(mode="json"),
        "a.test": IspState(isp="a.test", locked_until=now + 10).model_dump(mode="json"),
        "b.test": IspState(isp="b.test", locked_until=now - 1, paused=True).model_dump(
            mode="json"),
    }
    speed, limit, locked, paused, ip_speed = state_gauges(states, kb, now)
    assert speed == {("gmail",): 2.0}  # 120 a minute
    assert ip_speed == {("gmail", "127.0.0.3"): 4.0}  # its own level; other ISPs: none
    assert limit == {("gmail",): 5.0}  # the throttle's 300 a minute, below max 600
    assert locked == {("gmail", "", ""): 0.0, ("gmail", "127.0.0.2", ""): 1.0,
                      ("gmail", "127.0.0.3", ""): 0.0, (OTHER, "", ""): 1.0,
                      (OTHER, "127.0.0.3", ""): 0.0}
    assert paused == {("gmail", "", ""): 0.0, ("gmail", "127.0.0.2", ""): 0.0,
                      ("gmail", "127.0.0.3", ""): 0.0, (OTHER, "", ""): 1.0,
                      (OTHER, "127.0.0.3", ""): 0.0}
    ISP_LOCKED.set_all(locked)  # as the worker's observer does: the labels in that order
    assert REGISTRY.get_sample_value("kmta_isp_locked", {
        "isp": "gmail", "source_ip": "127.0.0.2", "pool": ""}) == 1
