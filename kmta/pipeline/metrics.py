"""Prometheus metrics of kmta's processes (prometheus-client), served on ``[metrics] listen``
with ``/healthz`` and ``/readyz`` (``kmta/pipeline/health.py``).

Names follow Prometheus conventions: a ``kmta_`` prefix, ``_total`` for counters, base units
(seconds, messages). Labels take values from small sets only, never an id or an address: an
ISP of the knowledge base (any other destination is ``other``: an unknown domain is its own ISP
and would make a series per domain), a configured source IP, a reply category, a partition.

Counters and histograms are counted where the thing happens (``inc()`` lines); the gauges of
things that come and go (lanes, partitions, brain states) are ``LiveGauge`` snapshots that each
process's loop refreshes once a second (a scrape, in the server's thread, only reads them).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from schemas import DeliveryEvent, Status

__all__ = [
    "CONSUMER_LAG",
    "DEAD_LETTERS",
    "DEFERRALS",
    "DELAY_MOVED",
    "DKIM_SIGN_SECONDS",
    "FEEDBACK_ISP",
    "INBOUND_RECEIVED",
    "IP_SPEED",
    "ISP_LOCKED",
    "ISP_PAUSED",
    "ISP_SPEED",
    "ISP_SPEED_LIMIT",
    "MESSAGES",
    "OTHER",
    "ROUTED",
    "SENDER_BACKLOG",
    "SENDER_CONNECTIONS",
    "SENDER_IN_FLIGHT",
    "SENDER_RATE",
    "SMTP_REPLY_SECONDS",
    "UNEXPECTED_ERRORS",
    "LiveGauge",
    "count_event",
    "isp_label",
    "known_isps",
    "metric_names",
]

OTHER = "other"  # the label of every destination that is not an ISP of the knowledge base

_known: frozenset[str] = frozenset()


def known_isps(names: Iterable[str]) -> None:
    """The ISPs that get a label value of their own (the knowledge base's, set by each process
    at start); any other destination counts as ``other``."""
    global _known
    _known = frozenset(names)
    _children.clear()


def isp_label(isp: str | None) -> str:
    return isp if isp in _known else OTHER


# -- counters and histograms ----------------------------------------------------------------
MESSAGES = Counter(
    "kmta_messages_total", "Result events written, by ISP, source IP and outcome (the event's "
    "status: queued, delivered, deferred, bounced, expired, suppressed, rejected, cancelled, "
    "async_bounce, complaint, unsubscribe)", ["isp", "source_ip", "outcome"])
DEFERRALS = Counter(
    "kmta_deferrals_total", "Deferred attempts by ISP and reply category", ["isp", "category"])
DEAD_LETTERS = Counter(
    "kmta_dlq_records_total", "Records written to the dead-letter topic", ["component"])
UNEXPECTED_ERRORS = Counter(
    "kmta_unexpected_errors_total",
    "Records or messages whose handling failed unexpectedly; each still got its answer "
    "(a dead letter or a retry) and the process went on", ["component", "stage"])
INBOUND_RECEIVED = Counter(
    "kmta_inbound_received_total", "Mails kmta inbound answered at DATA: accepted (written to "
    "the inbound topic before the 250) or tempfailed (451: the topic could not be written)",
    ["outcome"])
FEEDBACK_ISP = Counter(
    "kmta_feedback_isp_total", "Recipient domains of feedback (async bounces, complaints, "
    "unsubscribes) placed in an ISP, once per batch, by how: member (a domain of the "
    "knowledge base), mx (its MX hosts), no_mx (NXDOMAIN, null MX, no host), failed (the "
    "lookup failed or timed out), invalid (not a domain name); the last three count the domain "
    "as its own ISP", ["how"])
ROUTED = Counter(
    "kmta_route_records_total", "Outbox records the route loop routed (written and committed)")
DELAY_MOVED = Counter(
    "kmta_delay_records_total", "Delay-topic records the delay scheduler moved (to the queue, "
    "a longer tier or a final event), by tier in seconds", ["tier"])
SMTP_REPLY_SECONDS = Histogram(
    "kmta_smtp_reply_seconds", "Seconds from MAIL FROM to the provider's final reply to the "
    "message's data, by ISP", ["isp"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
EVENT_APPLY_DELAY = Histogram(
    "kmta_event_apply_delay_seconds", "Seconds from a delivery event's own timestamp (the "
    "reply's time) to when the brain applied it: how late speed and lock decisions are",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64))
# the event-apply delay split at the results record's Kafka timestamp (the sender's producer
# sets it when the transaction sends the outcome; LogAppendTime: the broker's append time) and
# at the start of the decide batch that holds it (the clock at the batch's first event)
EVENT_RECORD_DELAY = Histogram(
    "kmta_event_record_delay_seconds", "Seconds from a delivery event's own timestamp to its "
    "results record's Kafka timestamp: the sender side of the event-apply delay",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64))
RECORD_BATCH_DELAY = Histogram(
    "kmta_record_batch_delay_seconds", "Seconds from a results record's Kafka timestamp to the "
    "start of the decide batch that holds it (transaction commit, fetch, faust's buffer, "
    "take_events' wait)",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64))
BATCH_APPLY_DELAY = Histogram(
    "kmta_batch_apply_delay_seconds", "Seconds from the start of a decide batch to when the "
    "brain applied one of its events (the batch's own work before it)",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 4))
EVENT_APPLY_DELAY_MAX = Gauge(
    "kmta_event_apply_delay_max_seconds", "The largest event-apply delay since the process "
    "started (kmta_event_apply_delay_seconds has only bucket bounds)")
DKIM_SIGN_SECONDS = Histogram(
    "kmta_dkim_sign_seconds", "Seconds to DKIM-sign one message (every signature it gets)",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25))


_children: dict[tuple[str | None, str | None, Status, str | None], list[Any]] = {}


def count_event(ev: DeliveryEvent) -> None:
    """Count one result event as it is made (``kmta.pipeline.outputs.event_out``). The
    labelled children are kept: ``labels()`` costs about three times the ``inc()``, and the
    label sets are few."""
    key = (ev.isp, ev.source_ip, ev.status, ev.category if ev.status is Status.DEFERRED
           else None)
    children = _children.get(key)
    if children is None:
        if len(_children) > 10_000:  # unknown ISPs all map to "other", yet keep it bounded
            _children.clear()
        isp = isp_label(ev.isp)
        children = [MESSAGES.labels(isp, ev.source_ip or "", ev.status.value)]
        if ev.status is Status.DEFERRED:
            children.append(DEFERRALS.labels(isp, ev.category or "unknown"))
        _children[key] = children
    for child in children:
        child.inc()


# -- gauges of things that come and go --------------------------------------------------------
Samples = Mapping[tuple[str, ...], float]  # label values -> value


class LiveGauge(Collector):
    """A gauge whose series are replaced whole by ``set_all`` (from the process's loop; one
    writer per ``part``, e.g. a consumer group); a scrape reads the last sets. Each set is one
    attribute swap, so safe across the two threads, and the series of a lane or a partition
    gone simply stop being reported."""

    def __init__(self, name: str, documentation: str, labels: list[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labels = labels
        self._parts: Mapping[str, Samples] = {}
        REGISTRY.register(self)

    def set_all(self, samples: Samples, part: str = "") -> None:
        self._parts = {**self._parts, part: dict(samples)}

    def samples(self) -> dict[tuple[str, ...], float]:
        return {k: v for part in self._parts.values() for k, v in part.items()}

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(self.name, self.documentation, labels=self.labels)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        g = GaugeMetricFamily(self.name, self.documentation, labels=self.labels)
        for labels, value in self.samples().items():
            g.add_metric(list(labels), value)
        yield g


CONSUMER_LAG = LiveGauge(
    "kmta_consumer_lag_messages", "Records of a partition this process owns not yet finished "
    "(log end offset minus the committed offset or position), by consumer group",
    ["group", "topic", "partition"])
ISP_SPEED = LiveGauge(
    "kmta_isp_speed_messages_per_second", "The brain's current speed of an ISP (all nodes "
    "together), per source IP", ["isp", "pool"])
IP_SPEED = LiveGauge(
    "kmta_source_ip_speed_messages_per_second", "The brain's own speed level of one source IP "
    "at an ISP (speed.per_ip; all nodes together); the ISP's speed is the lowest",
    ["isp", "source_ip"])
ISP_SPEED_LIMIT = LiveGauge(
    "kmta_isp_speed_limit_messages_per_second", "The highest speed an ISP's rule allows (speed "
    "max, or a throttle's rate while it lasts), per source IP", ["isp", "pool"])
ISP_LOCKED = LiveGauge(
    "kmta_isp_locked", "1 while a lock stops sending: the whole ISP (source_ip and pool empty), "
    "a source IP or a pool; for 'other', the number of locked scopes", ["isp", "source_ip", "pool"])
ISP_PAUSED = LiveGauge(
    "kmta_isp_paused", "1 while an operator's pause stops sending (scopes as kmta_isp_locked)",
    ["isp", "source_ip", "pool"])
SENDER_RATE = LiveGauge(
    "kmta_sender_rate_limit_messages_per_second", "This sender node's pacing rate for an ISP "
    "over its source IPs that may send now (its share of the ISP's speed)", ["isp"])
SENDER_CONNECTIONS = LiveGauge(
    "kmta_sender_connections", "Open SMTP connections of this sender node", ["isp", "source_ip"])
SENDER_BACKLOG = LiveGauge(
    "kmta_sender_backlog_messages", "Messages waiting in this sender node's lanes", ["isp"])
SENDER_IN_FLIGHT = LiveGauge(
    "kmta_sender_in_flight_messages", "Messages taken and not finished: being delivered, or "
    "waiting for their write", [])

_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count",
            "_created"), "summary": ("", "_sum", "_count", "_created"), "info": ("_info",)}


def metric_names() -> set[str]:
    """Every series name kmta's registry exports, as PromQL sees it (a counter's ``x_total``,
    a histogram's ``x_bucket``, ``x_sum``, ``x_count``), the client's process and Python
    collectors included: what the Grafana dashboard may query."""
    names: set[str] = set()
    for fam in REGISTRY.collect():
        names.update(fam.name + s for s in _SUFFIXES.get(fam.type, ("",)))
    return names
