"""The group's committed offsets of newly assigned partitions, read *stable* (KIP-447).

A sender that gives a partition up commits its last outcomes and offsets in a transaction; the
broker answers that transaction's commit once it is decided, and writes its offsets into the
group a moment later. An ordinary OffsetFetch in that moment returns the offset from before,
and the next owner delivers again messages whose outcomes are already committed: a second
final event. OffsetFetch v7 with ``require_stable`` makes the broker answer
UNSTABLE_OFFSET_COMMIT until no transactional offset commit is pending for the partition, as
Kafka's own clients do for read_committed consumers. aiokafka 0.14 sends OffsetFetch v3 at
most, so v7 is defined here, on aiokafka's protocol types, and sent through its client; a
broker without v7 gets aiokafka's own fetch.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from aiokafka import TopicPartition
from aiokafka import errors as Errors
from aiokafka.errors import IncompatibleBrokerVersion, UnsupportedVersionError
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    Boolean,
    CompactArray,
    CompactString,
    Int16,
    Int32,
    Int64,
    Schema,
    TaggedFields,
)
from aiokafka.structs import OffsetAndMetadata

log = logging.getLogger(__name__)

__all__ = ["UNSTABLE_OFFSET_COMMIT", "fetch_stable", "offsets_of"]

UNSTABLE_OFFSET_COMMIT = 88  # a transactional offset commit is pending for the partition
RETRY = 0.05  # seconds between asks while unstable
RETRY_ERROR = 0.2  # seconds between asks after a retriable error


class OffsetFetchResponse_v7(Response):
    API_KEY = 9
    API_VERSION = 7
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("topics", CompactArray(
            ("name", CompactString("utf-8")),
            ("partitions", CompactArray(
                ("partition_index", Int32),
                ("committed_offset", Int64),
                ("committed_leader_epoch", Int32),
                ("metadata", CompactString("utf-8")),
                ("error_code", Int16),
                ("tags", TaggedFields))),
            ("tags", TaggedFields))),
        ("error_code", Int16),
        ("tags", TaggedFields),
    )


class OffsetFetchRequest_v7(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 9
    API_VERSION = 7
    RESPONSE_TYPE = OffsetFetchResponse_v7
    SCHEMA = Schema(
        ("group_id", CompactString("utf-8")),
        ("topics", CompactArray(
            ("name", CompactString("utf-8")),
            ("partition_indexes", CompactArray(Int32)),
            ("tags", TaggedFields))),
        ("require_stable", Boolean),
        ("tags", TaggedFields),
    )


class StableOffsetFetch(Request[OffsetFetchRequest_v7]):
    """OffsetFetch v7 only (aiokafka picks the version the broker supports from ``_CLASSES``:
    a broker without v7 makes ``prepare`` raise)."""

    API_KEY = 9

    def __init__(self, group: str, tps: Iterable[TopicPartition]) -> None:
        by_topic: dict[str, list[int]] = {}
        for tp in tps:
            by_topic.setdefault(tp.topic, []).append(tp.partition)
        self._group = group
        self._topics = [(t, sorted(ps), {}) for t, ps in sorted(by_topic.items())]

    def build(self, request_struct_class: type[OffsetFetchRequest_v7]) -> OffsetFetchRequest_v7:
        return request_struct_class(self._group, self._topics, True, {})


def offsets_of(resp: Any) -> tuple[dict[TopicPartition, OffsetAndMetadata], bool, int]:
    """(committed offsets, whether any partition was unstable, the first other error code)."""
    out: dict[TopicPartition, OffsetAndMetadata] = {}
    unstable = resp.error_code == UNSTABLE_OFFSET_COMMIT
    error = 0 if resp.error_code in (0, UNSTABLE_OFFSET_COMMIT) else resp.error_code
    for name, partitions, _ in resp.topics:
        for index, offset, _epoch, metadata, code, _ in partitions:
            if code == UNSTABLE_OFFSET_COMMIT:
                unstable = True
            elif code:
                error = error or code
            elif offset >= 0:
                out[TopicPartition(name, index)] = OffsetAndMetadata(offset, metadata or "")
    return out, unstable, error


async def fetch_stable(consumer: Any, group: str, tps: list[TopicPartition]
                       ) -> dict[TopicPartition, OffsetAndMetadata]:
    """The committed offsets (with metadata) of ``tps``, once none has a transactional commit
    pending. Uses aiokafka's private coordinator and client (``_coordinator``, ``_client``):
    its public ``committed()`` drops the metadata and is not stable. The caller bounds the
    wait."""
    coordinator = consumer._coordinator
    while True:
        await coordinator.ensure_coordinator_known()
        try:
            resp = await consumer._client.send(coordinator.coordinator_id,
                                               StableOffsetFetch(group, tps))
        except (UnsupportedVersionError, IncompatibleBrokerVersion, NotImplementedError):
            log.info("broker without OffsetFetch v7: committed offsets read unstable")
            result: dict[TopicPartition, OffsetAndMetadata] = (
                await coordinator.fetch_committed_offsets(tps))
            return result
        except Errors.KafkaError as e:
            if not e.retriable:
                raise
            log.info("OffsetFetch of %s: %r; asking again", tps, e)
            coordinator.coordinator_dead()
            await asyncio.sleep(RETRY_ERROR)
            continue
        out, unstable, error = offsets_of(resp)
        if error:
            kind = Errors.for_code(error)
            if not kind.retriable:
                raise kind(f"OffsetFetch failed: error code {error}")
            # the group is loading or moving (a broker restarted, a rebalance): ask again
            log.info("OffsetFetch of %s: %s; asking again", tps, kind.__name__)
            if kind in (Errors.NotCoordinatorError, Errors.CoordinatorNotAvailableError):
                coordinator.coordinator_dead()
            await asyncio.sleep(RETRY_ERROR)
            continue
        if not unstable:
            return out
        await asyncio.sleep(RETRY)
