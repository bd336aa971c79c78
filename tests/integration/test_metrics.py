"""Prometheus metrics and health of every process kind during a real pipeline run: a worker,
two sender nodes, a dashboard, kmta inbound and kmta unsubscribe, each with a metrics port of
its own. ``/readyz`` turns 200 once each is ready; the counters scraped from the processes add
up to what the results, dlq and inbound topics hold; the gauges show the senders' partitions,
their lag going to 0, the brain's speed and its limit, and an operator's pause."""
from __future__ import annotations

import json
import smtplib
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterable

from prometheus_client.parser import text_string_to_metric_families

from kmta.pipeline.metrics import OTHER
from kmta.pipeline.rules import load_kb
from tests.harness import Pipeline, free_port, messages, wait_for

PASSWORD = "metrics-test-password"
SENDERS = ("sender-1", "sender-2")
Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.read().decode()
    except OSError as e:  # not listening yet
        return 0, str(e)


def scrape(p: Pipeline, name: str) -> Series:
    status, text = get(f"{p.metrics_url(name)}/metrics")
    assert status == 200, (name, status, text[:300])
    out: Series = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def total(series: Iterable[Series], name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for s in series for (n, ls), v in s.items() if n == name and want <= ls)


def by(series: Iterable[Series], name: str, *keys: str) -> Counter[tuple[str, ...]]:
    out: Counter[tuple[str, ...]] = Counter()
    for s in series:
        for (n, ls), v in s.items():
            if n == name and v:
                d = dict(ls)
                out[tuple(d[k] for k in keys)] += int(v)
    return out


def ready(p: Pipeline, name: str) -> bool:
    status, body = get(f"{p.metrics_url(name)}/readyz")
    if status == 503:
        doc = json.loads(body)
        assert doc["status"] == "not ready" and doc["reason"], doc
    return status == 200


def test_every_process_is_scraped_and_the_counters_match_the_topics(pipeline_factory) -> None:
    inbound_port, unsub_port = free_port(), free_port()
    p = pipeline_factory(metrics=True, extra={
        "dashboard": {"password": PASSWORD},
        "delivery": {"verp_secret": "v3rp"},
        "domains": [{"name": "kmta.test", "return_path": "bounces.kmta.test"}],
        "inbound": {"listen": f"127.0.0.1:{inbound_port}"},
        "unsubscribe": {"listen": f"127.0.0.1:{unsub_port}", "secret": "s3cret"},
    })
    p.start_sim()
    p.start_worker()
    for name in SENDERS:
        p.start_sender(name)
    p._spawn("dashboard", ["--config", str(p.config_path), "dashboard", "--port",
                           str(free_port())])
    p.start_inbound()
    p.start_unsubscribe()
    kinds = ("worker", *SENDERS, "dashboard", "inbound", "unsubscribe")
    wait_for(lambda: all(ready(p, n) for n in kinds), 120, "every process ready")
    for name in kinds:
        status, body = get(f"{p.metrics_url(name)}/healthz")
        assert status == 200 and json.loads(body)["status"] == "alive", (name, body)

    docs = messages(120, ["gmail.com", "yahoo.com", "outlook.com", "shop-example.test"])
    docs += [{"from": "s@kmta.test", "to": "unknown7@gmail.com", "subject": "x", "text": "y"},
             {"from": "s@kmta.test", "to": "tempfail1@yahoo.com", "subject": "x", "text": "y"},
             {"from": "s@kmta.test", "to": "a@nx.invalid", "subject": "x", "text": "y"}]
    ids = p.produce(docs)
    p.produce_raw([b"not json at all", b"[1, 2, 3]"])
    finals = p.wait_finals(ids, timeout=120)
    assert Counter(f["status"] for f in finals.values()) == {"delivered": 121, "bounced": 2}
    with smtplib.SMTP("127.0.0.1", inbound_port, timeout=10) as smtp:  # one mail received
        smtp.sendmail("mailer@rcpt.test", ["b+nothing@bounces.kmta.test"],
                      b"Subject: hello\r\n\r\nnot a report\r\n")

    known = set(load_kb(p.config).isp_names())
    writers = ("worker", *SENDERS, "inbound")

    def truth() -> Counter[tuple[str, ...]]:
        return Counter((e["isp"] if e.get("isp") in known else OTHER, e.get("source_ip") or "",
                        e["status"]) for e in p.results())

    def counters_match() -> bool:
        scraped = by([scrape(p, n) for n in writers], "kmta_messages_total", "isp",
                     "source_ip", "outcome")
        return scraped == truth()
    wait_for(counters_match, 30, "kmta_messages_total == the results topic", interval=0.5)
    events = p.results()
    assert {("gmail", "delivered"), ("yahoo", "deferred"), (OTHER, "delivered"),
            (OTHER, "bounced")} <= {(k[0], k[2]) for k in truth()}
    assert all(e["source_ip"] in ("127.0.0.2", "127.0.0.3")
               for e in events if e["status"] == "delivered")

    worker = scrape(p, "worker")
    senders = [scrape(p, n) for n in SENDERS]
    dlq = p.read_topic("dlq")
    assert total([worker], "kmta_dlq_records_total", component="worker") == len(dlq) == 2
    assert total([worker], "kmta_route_records_total") == len(docs) + 2
    deferred = by([worker, *senders], "kmta_deferrals_total", "isp", "category")
    assert deferred == Counter((e["isp"] if e["isp"] in known else OTHER,
                                e.get("category") or "unknown") for e in events
                               if e["status"] == "deferred")
    assert deferred
    assert total([worker], "kmta_delay_records_total") >= 1  # the deferred one came back
    by_sender = Counter(e["node"] for e in events if e.get("node") in SENDERS
                        and e["status"] in ("delivered", "bounced", "deferred"))
    for name, s in zip(SENDERS, senders, strict=True):
        assert total([s], "kmta_smtp_reply_seconds_count") >= by_sender[name] > 0
    inbound = scrape(p, "inbound")
    assert scrape(p, "unsubscribe") and scrape(p, "dashboard")
    assert total([inbound], "kmta_inbound_received_total", outcome="accepted") == len(
        p.read_topic("inbound")) == 1

    # the queue partitions are split between the two senders; their lag goes to 0
    group = f"{p.prefix}senders"

    def lag_of(name: str) -> dict[str, float]:
        return {dict(ls)["partition"]: v for (n, ls), v in scrape(p, name).items()
                if n == "kmta_consumer_lag_messages" and ("group", group) in ls}

    def drained() -> bool:
        lags = [lag_of(n) for n in SENDERS]
        return all(lags) and all(v == 0 for lag in lags for v in lag.values())
    wait_for(drained, 30, "the senders' lag at 0", interval=1.0)
    lags = [lag_of(n) for n in SENDERS]
    assert not set(lags[0]) & set(lags[1])
    assert len(lags[0]) + len(lags[1]) == p.config.kafka.queue_partitions
    routed_lag = {dict(ls)["group"] for (n, ls) in scrape(p, "worker")
                  if n == "kmta_consumer_lag_messages"}
    assert {f"{p.prefix}route", f"{p.prefix}delay", f"{p.prefix}brain"} <= routed_lag
    assert any(n == "kmta_consumer_lag_messages" and ("group", "dashboard") in ls
               for (n, ls) in scrape(p, "dashboard"))

    # the brain's speed and its limit (FAST_RULES: 5000 a 1 s tact), then a pause
    worker = scrape(p, "worker")
    assert total([worker], "kmta_isp_speed_limit_messages_per_second", isp="gmail") == 5000
    assert 0 < total([worker], "kmta_isp_speed_messages_per_second", isp="gmail") <= 5000
    assert total([worker], "kmta_isp_paused", isp="gmail") == 0
    p.control("pause", "gmail")
    wait_for(lambda: total([scrape(p, "worker")], "kmta_isp_paused", isp="gmail", source_ip="",
                           pool="") == 1, 30, "the pause as a gauge", interval=0.5)


def test_readyz_follows_kafka_and_healthz_stays_alive(cluster_factory, pipeline_factory
                                                      ) -> None:
    """The only broker killed: the worker and the sender say not ready, with Kafka as the
    reason, and stay alive (restarting them would not help); started again, both are ready."""
    cluster = cluster_factory(1)
    p = pipeline_factory(bootstrap=cluster.bootstrap, metrics=True)
    p.start(senders=1)
    kinds = ("worker", "sender-1")
    wait_for(lambda: all(ready(p, n) for n in kinds), 120, "worker and sender ready")
    cluster.kill(1)

    def kafka_down(name: str) -> bool:
        status, body = get(f"{p.metrics_url(name)}/readyz")
        return status == 503 and "kafka" in json.loads(body)["checks"]
    wait_for(lambda: all(kafka_down(n) for n in kinds), 60, "Kafka as the reason", interval=0.5)
    for name in kinds:
        status, body = get(f"{p.metrics_url(name)}/healthz")
        assert status == 200, (name, body)
        assert scrape(p, name)  # /metrics still answers
    cluster.start()
    wait_for(lambda: all(ready(p, n) for n in kinds), 120, "ready again", interval=0.5)
