"""The brain: a faust app whose agents route messages and keep per-ISP decisions in a
changelog-backed table. Agents are thin: decode, call the policy code, store, send."""
from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import socket
import threading
import time
import uuid
from typing import Any

import faust
import mode
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import TopicAlreadyExistsError
from faust.types.auth import CredentialsT

from kmta.config import Config
from kmta.errors import ConfigError, KmtaError
from kmta.pipeline.control import check_fresh, parse_command, remember
from kmta.pipeline.health import Health
from kmta.pipeline.kafkaio import (
    FETCH_PARTITION_BYTES,
    CompactedView,
    TopicSpec,
    client_options,
    described,
    new_topic,
    security_options,
)
from kmta.pipeline.outputs import Out
from kmta.pipeline.resolver import Resolver
from kmta.pipeline.rules import load_kb, load_warmup, partition_map, warm_ips
from kmta.pipeline.seenids import SeenIds
from kmta.pipeline.suppression import SuppressionView
from kmta.policy.dedup import decode_seen
from kmta.policy.kb import KnowledgeBase
from kmta.policy.warmup import WarmPlan, new_ips
from schemas import ControlRecord
from schemas.control import ALL_ISPS, WARMUP_ACTIONS
from streams import committed
from streams.brain import (
    apply_command,
    warmup_mark,
)
from streams.decide import BATCH, BATCH_WAIT, Decide, publish
from streams.delay import DelayScheduler
from streams.ingest import OutboxRoute
from streams.observe import Observer
from streams.router import Router
from streams.rows import Rows

log = logging.getLogger(__name__)

# Records of faust's consumers (results, control) alive as Python objects at most: one fetch
# turned into records (POLL_RECORDS; faust's default, None, made each poll return all it had
# fetched: 8 results partitions x 512 KiB, 12,000-20,000 records and ~1 KB of objects each
# while the brain lagged behind a drain or a routing burst) plus the agent's buffer
# (STREAM_BUFFER; faust pauses a partition's fetching while it is full). What is fetched and
# not polled yet stays as the batches' bytes (FETCH_PARTITION_BYTES a partition).
POLL_RECORDS = 2 * BATCH
STREAM_BUFFER = 4 * BATCH


def faust_credentials(config: Config) -> CredentialsT | None:
    """``[kafka]`` security as faust's ``broker_credentials`` (faust hands them to its own
    consumers, producer and topic creation); the same SSL context as every other client."""
    opts = security_options(config)
    protocol = opts["security_protocol"]
    if protocol.startswith("SASL_"):
        return faust.SASLCredentials(username=opts["sasl_plain_username"],
                                     password=opts["sasl_plain_password"],
                                     mechanism=opts["sasl_mechanism"],
                                     ssl_context=opts.get("ssl_context"))
    if protocol == "SSL":
        return faust.SSLCredentials(opts["ssl_context"])
    return None


def brokers(config: Config) -> list[str]:
    return [f"kafka://{s.strip()}" for s in config.kafka.bootstrap_servers.split(",") if s.strip()]


def ensure_changelog(config: Config) -> None:
    """Create the table's changelog topic before faust starts. Faust would create it itself,
    but its consumer can keep the just-created topic at 0 partitions in its metadata, and then
    the table's first write fails its partition check (PartitionsMismatch, which kills the
    agent; the metadata was not refreshed within 30 s): seen in about one start in three in the
    integration tests."""
    # build() may be called where an event loop already runs: create from a thread of its own
    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(_create_changelog(config))
        except BaseException as e:  # noqa: BLE001 - re-raised below, in the caller's thread
            errors.append(e)
    t = threading.Thread(target=run, name="ensure-changelog")
    t.start()
    t.join()
    if errors:
        raise errors[0]


def changelog_spec(config: Config) -> TopicSpec:
    """The brain table's changelog topic (faust's name for it), made like kmta's own compacted
    topics: before, it had no min.insync.replicas of its own (a cluster default of 1 let an
    acks=all write of the brain's state sit on a single broker)."""
    return TopicSpec(f"{config.kafka.topic_prefix}brain-isp-state-changelog",
                     config.kafka.partitions, compacted=True)


async def _create_changelog(config: Config) -> None:
    spec = changelog_spec(config)
    name = spec.name
    admin = AIOKafkaAdminClient(**client_options(config), request_timeout_ms=30000)
    await admin.start()
    try:
        if name not in await admin.list_topics():
            try:
                await admin.create_topics([new_topic(config, spec)])
            except TopicAlreadyExistsError:
                pass
        try:
            await described(admin, [name], 30)
        except TimeoutError:
            raise ConfigError(f"topic {name} did not become available") from None
    finally:
        await admin.close()


def app_options(config: Config, datadir: str) -> dict[str, Any]:
    """faust.App's settings for the brain (besides its id and ``broker_credentials``, passed
    beside them where the app is made: a test checks every faust.App gets them)."""
    return {
        "broker": brokers(config),
        "store": config.worker.store,
        "topic_partitions": config.kafka.partitions,
        "topic_replication_factor": config.kafka.replication_factor,
        "producer_acks": -1,
        "consumer_auto_offset_reset": "earliest",
        "web_enabled": False,
        "datadir": datadir,
        "table_standby_replicas": 0,
        "broker_commit_every": 500,
        "broker_commit_interval": 1.0,
        # a worker killed without leaving the group holds its partitions (and the brain's
        # rows) until its session expires: 15 s like the senders, not faust's 60 s
        "broker_session_timeout": 15.0,
        "stream_wait_empty": False,
        # faust's consumers (results, control, ...): bytes fetched, records polled, events
        # buffered at most (POLL_RECORDS above)
        "consumer_max_fetch_size": FETCH_PARTITION_BYTES,
        "broker_max_poll_records": POLL_RECORDS,
        "stream_buffer_maxsize": STREAM_BUFFER,
    }


def build(config: Config, kb: KnowledgeBase | None = None,
          health: Health | None = None) -> faust.App:
    """Create the faust app with its topics, table and agents (no module-level singletons);
    ``health`` gets the worker's reports (``streams/observe.py``)."""
    kb = kb or load_kb(config)
    pmap = partition_map(config, kb)
    # IP warm-up: the config's new source IPs and the operators' marks (state key '*|<ip>',
    # read by the states view below); None while no IP is new
    configured, schedules = warm_ips(config), load_warmup(config)
    marks: dict[str, int | None] = {}
    plan: list[WarmPlan | None] = [WarmPlan(configured, schedules) if configured else None]

    def on_state(key: str, value: object | None) -> None:
        if not key.startswith(f"{ALL_ISPS}|"):
            return
        marks[key.split("|", 1)[1]] = value.get("warmup_since") if isinstance(value,
                                                                             dict) else None
        ips = new_ips(configured, marks)
        plan[0] = WarmPlan(ips, schedules) if ips else None
    ensure_changelog(config)
    node = config.worker.name or f"{socket.gethostname()}-{os.getpid()}"
    secret = config.control.secret.get_secret_value() if config.control.secret else None
    if not secret:
        log.warning("control.secret is not set: this worker applies unsigned control commands "
                    "from anyone who can write to %s; set [control] secret in production",
                    config.topic("control"))
    max_age = config.control.max_age
    t = config.topic
    datadir = os.path.join(config.data_dir, "faust", node)
    os.makedirs(datadir, exist_ok=True)
    app = faust.App(f"{config.kafka.topic_prefix}brain",
                    broker_credentials=faust_credentials(config), **app_options(config, datadir))
    committed.install(app)  # before any topic: faust's consumer reads read_committed

    def raw_topic(name: str, partitions: int) -> faust.TopicT:
        return app.topic(t(name), key_type=bytes, value_type=bytes, key_serializer="raw",
                         value_serializer="raw", partitions=partitions)

    results = raw_topic("results", config.kafka.partitions)
    control = raw_topic("control", config.kafka.partitions)
    # values: a Row's JSON bytes (streams/rows.py), written and read as they are ("raw")
    table = app.Table("isp-state", default=None, partitions=config.kafka.partitions,
                      value_type=bytes)
    rows = Rows()

    # a stable file name (not host-pid): a restart reuses the index and reads only what is new
    suppressed = SuppressionView(config, config.worker.name or socket.gethostname())
    # this process's own ids records, which its view skips (the router keeps them as it writes
    # them); another value in each process started, so a restarted worker reads them all
    own_ids = ("kmta-writer", f"{node}.{uuid.uuid4().hex[:16]}".encode())
    # the ids beyond the last worker.dedup_memory_ids in a file of this process's data dir
    # (made afresh at start: the view reads the whole topic again), so memory stays flat at
    # any number of ids in the window (kmta/pipeline/seenids.py)
    hot = config.worker.dedup_memory_ids
    ids = CompactedView(config, t("ids"), decode_seen, skip=own_ids, values=SeenIds(
        path=os.path.join(datadir, "seen-ids.sqlite") if hot else None, hot=hot))
    states = CompactedView(config, t("state"), json.loads, on_state)
    resolver = Resolver(config.dns)
    rng = random.Random()
    delay = DelayScheduler(config, kb, pmap, resolver, states, rng, node)
    router = Router(config, kb, pmap, resolver, suppressed.index,
                    retry_first=delay.dns_retry, seen=ids.values,
                    dedup_window=config.worker.dedup_window, hold=delay.hold,
                    ids_header=own_ids)
    delay.router = router
    route = OutboxRoute(config, router, config.worker.router_concurrency, node)
    observer = Observer(health or Health("worker"), kb, config.kafka.topic_prefix, app, route,
                        delay, states, {"ids": ids, "state": states, "suppression": suppressed})
    watching: list[asyncio.Task] = []

    async def send_all(outs: list[Out]) -> None:
        futs = [await app.producer.send(o.topic, o.key, o.value, o.partition, None, None)
                for o in outs]
        for f in futs:
            await f

    @app.service
    class Edges(mode.Service):
        """The worker's consumers beside faust's: the views, the delay scheduler and the route
        loop (outbox -> queue, see streams/ingest.py). Started and stopped with the app, so a
        SIGTERM lets the route loop finish and commit its batch."""

        async def on_start(self) -> None:
            watching.append(asyncio.create_task(observer.run()))  # reports from the start on
            await suppressed.start()
            await states.start()
            await ids.start()
            # the ids accepted before this worker started, before it routes: else a duplicate
            # arriving at start would pass
            await asyncio.wait_for(ids.ready.wait(), 300)
            await delay.start()
            await suppressed.ready.wait()  # never route against a half-read list
            await route.start()

        async def on_stop(self) -> None:
            for task in watching:
                task.cancel()
            await route.stop()
            await delay.stop()
            await ids.stop()
            ids.values.close()
            await states.stop()
            await suppressed.stop()

    decider = Decide(table, kb, config.reputation, node, t, lambda: plan[0], time.time, rows)

    # the table's rows: one agent at a time reads, changes and writes them (decide keeps its
    # batch's rows until the batch's records are sent)
    rows_lock = asyncio.Lock()

    @app.agent(results)
    async def decide(stream):
        # take_events acks a batch's records when the next batch is asked for: after the
        # records were sent and decider.write handed the rows to the table (the changelog
        # records to faust's producer, which faust flushes before it commits an offset)
        async for batch in stream.take_events(BATCH, BATCH_WAIT):
            async with rows_lock:
                outs = decider.batch(batch)
                try:
                    await send_all(outs)
                finally:
                    decider.write()

    @app.agent(control)
    async def obey(stream):
        async for ev in stream.events():
            async with rows_lock:
                await obey_one(ev)

    async def obey_one(ev) -> None:
        """One control record: applied to its ISP's row, published, audited."""
        now = time.time()
        cmd = None
        try:
            cmd = parse_command(ev.value, secret)
            row = rows.take(cmd.isp, table.get(cmd.isp))
            check_fresh(cmd, now, max_age, row.commands, row.commands_floor)
            apply_command(row, cmd, kb, now)
            row.commands_floor = remember(row.commands, cmd, now, max_age,
                                          row.commands_floor)
            table[cmd.isp] = rows.put(cmd.isp, row)
            if cmd.action in WARMUP_ACTIONS:
                mark = warmup_mark(cmd, now)
                outs = [Out(t("state"), mark.to_json(), mark.key.encode())]
            else:
                outs = publish(row, now, kb, t("state"))
            rec = ControlRecord(command=cmd, applied=True, worker=node, timestamp=now)
        except Exception as e:
            error = str(e)
            if not isinstance(e, (KmtaError, ValueError)):
                log.exception("control record at offset %s failed", ev.message.offset)
                error = f"internal error: {type(e).__name__}: {e}"
            outs = []
            cmd = cmd or getattr(e, "command", None)  # decoded but not signed right
            raw = None if cmd else (ev.value or b"").decode("utf-8", "replace")[:2000]
            rec = ControlRecord(command=cmd, raw=raw, applied=False, error=error[:2000],
                                worker=node, timestamp=now)
            log.warning("control command refused: %s", rec.error,
                        extra={"isp": cmd.isp if cmd else None})
        outs.append(Out(t("audit"), rec.to_json(), None))
        await send_all(outs)

    app.kmta_router = router  # type: ignore[attr-defined]
    app.kmta_route = route  # type: ignore[attr-defined]
    app.kmta_delay = delay  # type: ignore[attr-defined]
    return app
