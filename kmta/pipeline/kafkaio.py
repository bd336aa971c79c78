"""Kafka at the edge: topic layout, producers, and readers of compacted topics."""
from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import ssl
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar, overload

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError
from aiokafka.helpers import create_ssl_context

from kmta.config import Config, KafkaConfig
from kmta.errors import ConfigError, KafkaUnreachable
from kmta.pipeline.topicconfig import raise_max_message_bytes

log = logging.getLogger(__name__)

__all__ = [
    "FETCH",
    "FETCH_PARTITION_BYTES",
    "VIEW_WAIT_MS",
    "CompactedView",
    "Rebalance",
    "TopicSpec",
    "client_options",
    "delay_topic",
    "described",
    "ensure_topics",
    "make_producer",
    "new_topic",
    "record_limit",
    "security_options",
    "stop_loop",
    "topic_partitions",
    "topic_specs",
    "why_unreachable",
]


# What one fetch of a consumer brings in, at most: aiokafka holds a fetch response, and the
# decompressed copies of its batches, until it has handed out every record of it, and its
# defaults (1 MiB a partition, 50 MiB a response; the senders had 4 MiB a partition) let a long
# backlog make each response as large as the limits allow: the senders' and the worker's RSS
# grew with the messages queued (scripts/bench_soak.py: senders' peak 84 MB at 10,000 queued,
# 133 MB at 100,000). 512 KiB holds two of the producers' 256 KiB batches; a larger record still
# arrives (the broker returns a fetch's first batch whole, KIP-74). 2 MiB of lz4 batches is
# ~3,000 2 KB messages or ~60 of 100 KB, ahead of what a process handles between two fetches.
FETCH_PARTITION_BYTES = 512 * 1024
FETCH_MAX_BYTES = 2 * 1024 * 1024
FETCH = {"max_partition_fetch_bytes": FETCH_PARTITION_BYTES, "fetch_max_bytes": FETCH_MAX_BYTES}

# How long the broker holds a fetch of a consumer that has nothing new: each idle fetch costs the
# broker work for every partition in it, 10 times a second at aiokafka's 100 ms, for every
# consumer of every connected deployment (docs/benchmark.md, session 14: the broker's idle CPU).
# A record that arrives answers a held fetch at once (fetch_min_bytes 1: the broker completes
# the waiting fetch when the partition's end, or its last stable offset for read_committed,
# moves), so a longer wait costs no reaction time to new records. What it delays is whatever
# waits for the consumer's fetch in flight: aiokafka sends nothing else to the broker for that
# consumer's partitions (a seek's offset reset, a resumed or newly fetchable partition) until the
# held fetch returns. Hence: the views (assigned once, seeked only at start) hold 1 s; consumers
# that pause and resume partitions as they go (the senders' queue consumer, the delay
# scheduler) hold less.
VIEW_WAIT_MS = 1000


def record_limit(config: Config) -> int:
    """The largest record kmta writes, in bytes, for a message of
    ``delivery.max_message_bytes``: its outbox record and a dead letter carry it as JSON text
    (CRLF line ends escaped to 4 bytes: up to twice the message), plus 64 KiB for the other
    fields. A queue or delay record needs less (the message as it is, after a head of a few
    hundred bytes: ``schemas.envelope_codec``) and gets the same limit: nothing is gained by a
    lower one. Topics are created with this ``max.message.bytes`` (existing ones with a lower
    one are raised to it at start: ``ensure_topics``) and producers with this
    ``max_request_size``, so a message the router accepts is never refused by the broker (its
    default of 1 MiB would refuse most messages of the default 10 MiB)."""
    return config.delivery.max_message_bytes * 2 + 65536


def client_options(config: Config) -> dict[str, Any]:
    """``bootstrap_servers`` and the security options of ``[kafka]``, for every aiokafka client
    (consumer, producer, admin). A unit test holds that no client is built without them."""
    return {"bootstrap_servers": config.kafka.bootstrap_servers, **_security(config.kafka)}


def security_options(config: Config) -> dict[str, Any]:
    """The security part of :func:`client_options` (streams.app turns it into faust's
    ``broker_credentials``)."""
    return _security(config.kafka)


def _security(k: KafkaConfig) -> dict[str, Any]:
    secret = k.sasl_password.get_secret_value() if k.sasl_password else None
    key_pw = k.ssl_keyfile_password.get_secret_value() if k.ssl_keyfile_password else None
    return _security_of(k.security_protocol, k.sasl_mechanism, k.sasl_username, secret,
                        k.ssl_cafile, k.ssl_certfile, k.ssl_keyfile, key_pw, k.ssl_check_hostname)


@functools.cache  # once per process and setting: one SSL context shared by every client
def _security_of(protocol: str, mechanism: str | None, user: str | None, password: str | None,
                 cafile: str | None, certfile: str | None, keyfile: str | None,
                 key_password: str | None, check_hostname: bool) -> dict[str, Any]:
    opts: dict[str, Any] = {"security_protocol": protocol}
    if protocol.startswith("SASL_"):
        opts.update(sasl_mechanism=mechanism, sasl_plain_username=user,
                    sasl_plain_password=password)
        if protocol == "SASL_PLAINTEXT":
            log.warning("kafka: SASL over a plaintext connection; %s", "the password crosses "
                        "the network in clear text" if mechanism == "PLAIN" else
                        "records cross the network unencrypted")
    if protocol.endswith("SSL"):
        opts["ssl_context"] = _tls_context(cafile, certfile, keyfile, key_password,
                                           check_hostname)
    return opts


async def why_unreachable(config: Config, timeout: float = 10.0) -> str:
    """Connect to each bootstrap server the way the clients do and say what failed. aiokafka's
    clients log the cause and raise only 'Unable to bootstrap'; this names the cause."""
    from aiokafka.conn import create_conn
    from aiokafka.errors import SaslAuthenticationFailed, UnsupportedSaslMechanismError

    k = config.kafka
    opts = _security(k)
    who = (f"{k.security_protocol}, {k.sasl_mechanism} user {k.sasl_username!r}"
           if k.security_protocol.startswith("SASL_") else k.security_protocol)
    reasons = []
    for server in k.bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            conn = await asyncio.wait_for(create_conn(
                host.strip("[]"), int(port), request_timeout_ms=int(timeout * 1000), **opts),
                timeout)
        except SaslAuthenticationFailed as e:
            why = f"the broker refused the login (wrong user name or password?): {e}"
        except UnsupportedSaslMechanismError:
            why = f"the listener does not offer SASL mechanism {k.sasl_mechanism}"
        except ssl.SSLCertVerificationError as e:
            why = (f"the broker's certificate is not trusted ({e.verify_message}): check "
                   "ssl_cafile, and ssl_check_hostname against the certificate's names")
        except ssl.SSLError as e:
            why = f"TLS handshake failed: {e}"
        except (KafkaConnectionError, asyncio.IncompleteReadError, ConnectionResetError) as e:
            why = (f"the broker closed the connection ({e or type(e).__name__}): does this "
                   f"listener speak {k.security_protocol}? does it require a client "
                   "certificate?")
        except (OSError, TimeoutError) as e:
            why = f"cannot connect: {e or 'timed out'}"
        else:
            conn.close()
            why = "reachable and logged in (the failure was later)"
        reasons.append(f"{server.strip()}: {why}")
    return f"Kafka ({who}): " + "; ".join(reasons)


def _tls_context(cafile: str | None, certfile: str | None, keyfile: str | None,
                 key_password: str | None, check_hostname: bool) -> ssl.SSLContext:
    for name, path in (("ssl_cafile", cafile), ("ssl_certfile", certfile),
                       ("ssl_keyfile", keyfile)):
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"kafka.{name}: {path} not found")
    try:
        ctx = create_ssl_context(cafile=cafile, certfile=certfile, keyfile=keyfile,
                                 password=key_password)
    except (ssl.SSLError, OSError) as e:
        raise ConfigError(f"kafka TLS settings: {e}") from None
    ctx.check_hostname = check_hostname
    return ctx


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    compacted: bool = False
    retention_ms: int | None = None


def topic_specs(config: Config) -> list[TopicSpec]:
    """Every topic kmta uses, with partition counts. Results, control and state are keyed by ISP
    and share one partition count so the worker's per-ISP table is co-partitioned with them."""
    k = config.kafka
    t = config.topic
    specs = [
        TopicSpec(t("outbox"), k.partitions),
        TopicSpec(t("queue"), k.queue_partitions),
        TopicSpec(t("results"), k.partitions),
        TopicSpec(t("control"), k.partitions),
        TopicSpec(t("state"), k.partitions, compacted=True),
        TopicSpec(t("suppression"), k.partitions, compacted=True),
        # ids accepted within the dedup window: compacted, and deleted by age after it
        TopicSpec(t("ids"), k.partitions, compacted=True,
                  retention_ms=int((config.worker.dedup_window + 3600) * 1000)),
        TopicSpec(t("nodes"), 1, compacted=True),
        TopicSpec(t("audit"), 1),
        TopicSpec(t("dlq"), 1),
        TopicSpec(t("inbound"), k.partitions),  # raw mail taken by kmta inbound
    ]
    specs += [TopicSpec(delay_topic(config, tier), k.partitions) for tier in k.delay_tiers]
    return specs


def delay_topic(config: Config, tier: float) -> str:
    return config.topic(f"delay.{int(tier)}s")


def new_topic(config: Config, spec: TopicSpec) -> NewTopic:
    """The topic to create for ``spec``: replicated ``kafka.replication_factor`` times, and
    with two replicas in sync for a write (one with a single replica), so an acks=all write is
    on two brokers before it counts as written, whatever the cluster's default."""
    cfg = {"min.insync.replicas": str(min(2, config.kafka.replication_factor)),
           # records carry whole messages: the broker's default (1 MiB) would refuse
           # what delivery.max_message_bytes allows (as the producers' request size)
           "max.message.bytes": str(record_limit(config)),
           # batches stay as the producers compressed them (whatever the broker's default):
           # the broker neither recompresses nor stores them uncompressed
           "compression.type": "producer"}
    if spec.compacted:
        cfg["cleanup.policy"] = "compact"
        cfg["min.cleanable.dirty.ratio"] = "0.1"
        cfg["segment.ms"] = "600000"
    if spec.retention_ms is not None:
        cfg["retention.ms"] = str(spec.retention_ms)
        if spec.compacted:
            cfg["cleanup.policy"] = "compact,delete"
    return NewTopic(spec.name, spec.partitions, config.kafka.replication_factor,
                    topic_configs=cfg)


async def ensure_topics(config: Config, timeout: float = 60.0) -> None:
    """Create missing topics, and raise ``max.message.bytes`` of existing ones that take less
    than ``record_limit`` (idempotent); raises when the broker is unreachable in time."""
    admin = AIOKafkaAdminClient(**client_options(config), request_timeout_ms=int(timeout * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout)
    except (KafkaConnectionError, TimeoutError):
        await admin.close()
        raise KafkaUnreachable(await why_unreachable(config)) from None
    try:
        specs = topic_specs(config)
        names = [s.name for s in specs]
        existing = set(await admin.list_topics())
        # made by an older kmta (or by hand): records of the largest message must fit
        await raise_max_message_bytes(admin, {n: record_limit(config) for n in names
                                              if n in existing})
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            await create_missing(admin, config, [s for s in specs if s.name not in existing])
            try:
                await described(admin, names, min(5.0, timeout))
                return
            except TimeoutError:
                # a topic still being deleted refuses its creation (the broker answers per
                # topic, aiokafka does not raise): list again and create what is missing
                if asyncio.get_running_loop().time() > deadline:
                    raise
            existing = set(await admin.list_topics())
    finally:
        await admin.close()


async def create_missing(admin: AIOKafkaAdminClient, config: Config,
                         missing: list[TopicSpec]) -> None:
    """Ask the broker to create the ``missing`` topics; a topic it refuses is logged (the
    caller waits for it to show)."""
    new = [new_topic(config, s) for s in missing]
    if not new:
        return
    try:
        response = await admin.create_topics(new)
    except TopicAlreadyExistsError:
        return
    refused = {t[0]: t[1] for t in getattr(response, "topic_errors", ())
               if t[1] not in (0, TopicAlreadyExistsError.errno)}
    if refused:
        log.info("creating topics %s: broker refused (error codes) %s", sorted(refused), refused)
    log.info("created topics %s", sorted(n.name for n in new if n.name not in refused))


async def described(admin: AIOKafkaAdminClient, topics: list[str], timeout: float
                    ) -> list[dict[str, Any]]:
    """The topics' metadata once it shows every topic with its partitions (a topic just
    created takes a moment); TimeoutError after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            desc: list[dict[str, Any]] = await admin.describe_topics(topics)
        except KafkaError as e:  # e.g. the broker asked has just died: ask again (another)
            if not e.retriable or asyncio.get_running_loop().time() > deadline:
                raise
            log.info("describing %s failed (%r); retrying", topics, e)
        else:
            if all(d.get("error_code", 0) == 0 and d.get("partitions") for d in desc):
                return desc
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"topics {topics} not found")
        await asyncio.sleep(0.2)


async def topic_partitions(config: Config, topics: list[str]) -> list[TopicPartition]:
    """Every partition of the topics (aiokafka consumers without a subscription know none)."""
    admin = AIOKafkaAdminClient(**client_options(config))
    await admin.start()
    try:
        desc = await described(admin, topics, 30)
        return [TopicPartition(d["topic"], p["partition"])
                for d in desc for p in sorted(d["partitions"], key=lambda x: x["partition"])]
    finally:
        await admin.close()


LZ4_LEVEL = 1  # lz4's fast mode; 3 and above is LZ4-HC


def fast_lz4() -> None:
    """Make aiokafka compress lz4 at ``LZ4_LEVEL``. aiokafka 0.14 has no compression level
    setting and compresses lz4 at level 9 (LZ4-HC, after the broker's default for
    recompressing): 1.6 ms CPU for a 200 KB batch of HTML, against 0.15 ms at level 1 for a
    ratio of 0.41 instead of 0.37 (docs/benchmark.md). Its record builders (the C one and the
    Python fallback) call ``lz4_encode`` through their module globals, where it is replaced;
    a unit test holds that batches are then written at this level. Idempotent."""
    import aiokafka.codec
    from aiokafka.record import default_records as python_builder

    fast = functools.partial(aiokafka.codec.lz4_encode, level=LZ4_LEVEL)
    modules: list[Any] = [python_builder]
    try:
        from aiokafka.record._crecords import default_records as c_builder
        modules.append(c_builder)
    except ImportError:  # aiokafka built without its C extension
        pass
    for module in modules:
        if getattr(module, "lz4_encode", None) is aiokafka.codec.lz4_encode:
            module.lz4_encode = fast


def make_producer(config: Config, **kw) -> AIOKafkaProducer:
    """acks=all + idempotence: a written outcome is durable before an offset is committed.
    Batches are compressed (``kafka.compression``, lz4 by default, at its fast level: a
    100 KB message costs the broker a copy of a fraction of its bytes on each write, fetch
    and replication)."""
    codec = config.kafka.compression
    if codec == "lz4":
        fast_lz4()
    opts = dict(acks="all", enable_idempotence=True, linger_ms=5, max_batch_size=256 * 1024,
                max_request_size=record_limit(config),
                compression_type=None if codec == "none" else codec)
    opts.update(kw)
    return AIOKafkaProducer(**client_options(config), **opts)


class Rebalance(ConsumerRebalanceListener):
    """A consumer group's rebalance, handed to two callables: ``revoked`` (awaited before the
    partitions move, so it can finish and commit) and, if given, ``assigned``."""

    def __init__(self, revoked: Callable[[list[TopicPartition]], Awaitable[None]],
                 assigned: Callable[[list[TopicPartition]], Awaitable[None] | None] | None = None,
                 ) -> None:
        self._revoked = revoked
        self._assigned = assigned

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self._revoked(list(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        if self._assigned is not None:
            done = self._assigned(list(assigned))
            if inspect.isawaitable(done):
                await done


class ViewValues(Protocol):
    """Where a view keeps the latest value per key: a dict, or e.g. the ids' compact
    ``SeenIds``."""

    def __setitem__(self, key: str, value: Any, /) -> None: ...

    def pop(self, key: str, default: None, /) -> object: ...


VV = TypeVar("VV", bound=ViewValues)


class CompactedView(Generic[VV]):
    """Tails a compacted topic from the beginning into ``values`` (latest value per key).

    ``ready`` is set once the view has caught up with the end offsets seen at start.
    ``on_change(key, value)`` is called for each record after decoding (value None = tombstone).
    ``skip``: a record carrying this header (name, value) is passed over: the worker's own ids
    records, whose values its router put into ``values`` when it wrote them (reading them back
    cost a decode and a store per routed message); a worker started again has another value.
    """

    @overload
    def __init__(self: CompactedView[dict[str, Any]], config: Config, topic: str,
                 decode: Callable[[bytes], object],
                 on_change: Callable[[str, object | None], None] | None = None, *,
                 wait_ms: int = ...) -> None: ...

    @overload
    def __init__(self, config: Config, topic: str, decode: Callable[[bytes], object],
                 on_change: Callable[[str, object | None], None] | None = None, *,
                 values: VV, skip: tuple[str, bytes] | None = None,
                 wait_ms: int = ...) -> None: ...

    def __init__(self, config: Config, topic: str,
                 decode: Callable[[bytes], object],
                 on_change: Callable[[str, object | None], None] | None = None,
                 values: Any = None, skip: tuple[str, bytes] | None = None,
                 wait_ms: int = VIEW_WAIT_MS) -> None:
        """``values``: where the latest values are kept (a dict unless given); ``wait_ms``:
        how long the broker holds an idle fetch (``VIEW_WAIT_MS``)."""
        self._skip = skip
        self._config = config
        self.topic = topic
        self._decode = decode
        self._on_change = on_change
        # the overloads tie VV to what is passed (a dict[str, Any] when nothing is)
        self.values: VV = {} if values is None else values  # type: ignore[assignment]
        self.ready = asyncio.Event()
        self.bad_records = 0
        self.wait_ms = wait_ms
        self._task: asyncio.Task | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._last: dict[TopicPartition, int] = {}
        self._end: dict[TopicPartition, int] = {}

    async def start(self) -> None:
        # read committed: an aborted routing transaction's ids never count as accepted
        c = AIOKafkaConsumer(**client_options(self._config), enable_auto_commit=False,
                             isolation_level="read_committed", auto_offset_reset="earliest",
                             fetch_max_wait_ms=self.wait_ms, **FETCH)
        await c.start()
        tps = await topic_partitions(self._config, [self.topic])
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        self._end = await c.end_offsets(tps)
        self._consumer = c
        self._task = asyncio.create_task(self._run(), name=f"view:{self.topic}")
        self._check_ready()

    def _check_ready(self) -> None:
        if self.ready.is_set() or self._consumer is None:
            return
        for tp, end in self._end.items():
            if self._last.get(tp, -1) + 1 < end:
                return
        self.ready.set()

    async def _run(self) -> None:
        assert self._consumer is not None
        skip = self._skip
        while True:
            # caught up, the loop only waits for records (getmany returns as they arrive);
            # before, it checks the positions at least every 200 ms
            batch = await self._consumer.getmany(
                timeout_ms=self.wait_ms if self.ready.is_set() else 200, max_records=5000)
            for tp, records in batch.items():
                for r in records:
                    self._last[tp] = r.offset
                    if skip is not None and skip in (r.headers or ()):
                        continue
                    try:
                        key = r.key.decode() if r.key else ""
                    except UnicodeDecodeError:  # no writer of kmta's makes such a key
                        self.bad_records += 1
                        log.warning("undecodable key on %s at %s", tp, r.offset)
                        continue
                    if r.value is None:
                        self.values.pop(key, None)
                        value = None
                    else:
                        try:  # the store may refuse a decoded value too (SeenIds' bounds)
                            value = self._decode(r.value)
                            self.values[key] = value
                        except Exception:  # noqa: BLE001 - a bad record must not stop the view
                            self.bad_records += 1
                            log.warning("undecodable record on %s at %s", tp, r.offset)
                            continue
                    if self._on_change:
                        self._on_change(key, value)
            if not self.ready.is_set():
                # the position, not the last record: transaction markers take offsets too (a
                # topic that ends in one is never caught up by its records)
                for tp in self._end:
                    self._last[tp] = max(self._last.get(tp, -1),
                                         await self._consumer.position(tp) - 1)
                self._check_ready()

    async def stop(self) -> None:
        await stop_loop(self._task, self._consumer)


async def stop_loop(task: asyncio.Task | None, consumer: AIOKafkaConsumer | None) -> None:
    """Cancel a consumer's loop task (whatever it raised is over) and stop the consumer."""
    if task:
        task.cancel()
        try:
            await task
        except (asyncio.CancelledError, Exception):  # noqa: BLE001
            pass
    if consumer:
        await consumer.stop()
