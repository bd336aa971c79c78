"""Raising ``max.message.bytes`` of topics that exist already (created by an older kmta, with a
smaller ``delivery.max_message_bytes``, or by hand with the broker's 1 MiB default).

Kafka's IncrementalAlterConfigs (KIP-339) sets one entry and leaves a topic's other settings
as they are; the older AlterConfigs would reset every setting it is not given. aiokafka's
admin client has only the older one, so the request is defined here on aiokafka's protocol
classes (version 0: every broker since Kafka 2.3 takes it).
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, TypeAlias

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import for_code
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import Array, Boolean, Int8, Int16, Int32, Schema, String

log = logging.getLogger(__name__)

__all__ = ["raise_max_message_bytes"]

_TOPIC = int(ConfigResourceType.TOPIC)
_SET = 0  # IncrementalAlterConfigs operation: SET (1 DELETE, 2 APPEND, 3 SUBTRACT)
KEY = "max.message.bytes"


class IncrementalAlterConfigsResponse_v0(Response):  # aiokafka's names
    API_KEY = 44
    API_VERSION = 0
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("responses", Array(("error_code", Int16), ("error_message", String("utf-8")),
                            ("resource_type", Int8), ("resource_name", String("utf-8")))),
    )


class IncrementalAlterConfigsRequest_v0(RequestStruct):
    API_KEY = 44
    API_VERSION = 0
    RESPONSE_TYPE = IncrementalAlterConfigsResponse_v0
    SCHEMA = Schema(
        ("resources", Array(
            ("resource_type", Int8), ("resource_name", String("utf-8")),
            ("configs", Array(("name", String("utf-8")), ("config_operation", Int8),
                              ("value", String("utf-8")))))),
        ("validate_only", Boolean),
    )


_Struct: TypeAlias = IncrementalAlterConfigsRequest_v0


class IncrementalAlterConfigsRequest(Request[_Struct]):
    API_KEY = 44

    def __init__(self, resources: list[Any]) -> None:
        self._resources = resources

    def build(self, request_struct_class: type[_Struct]) -> _Struct:
        return request_struct_class(self._resources, False)


async def current_limits(admin: AIOKafkaAdminClient, topics: list[str]) -> dict[str, int]:
    """Each topic's ``max.message.bytes`` as the broker applies it (its own or the default)."""
    if not topics:
        return {}
    responses = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, t, {KEY: None}) for t in topics])
    out: dict[str, int] = {}
    for resp in responses:
        for res in resp.to_object()["resources"]:
            for entry in res["config_entries"]:
                if entry["config_names"] == KEY and entry["config_value"] is not None:
                    out[res["resource_name"]] = int(entry["config_value"])
    return out


async def raise_max_message_bytes(admin: AIOKafkaAdminClient, wanted: Mapping[str, int]
                                  ) -> dict[str, int]:
    """Set ``max.message.bytes`` of each topic in ``wanted`` whose limit is lower (a larger one,
    set by an operator, is kept); returns what was raised, topic -> new limit. A broker that
    refuses (not authorised, a version without the request) leaves the topics as they are,
    with a warning: records larger than their limit are then refused and dead-lettered."""
    have = await current_limits(admin, list(wanted))
    low = {t: n for t, n in wanted.items() if t in have and have[t] < n}
    if not low:
        return {}
    req = IncrementalAlterConfigsRequest(
        [(_TOPIC, t, [(KEY, _SET, str(n))]) for t, n in sorted(low.items())])
    try:
        resp = await admin._send_request(req)  # its own requests go this way too
    except Exception as e:  # noqa: BLE001 - an old or locked-down broker: say so, go on
        log.warning("could not raise %s of %s: %s", KEY, sorted(low), e)
        return {}
    raised = {}
    for r in resp.to_object()["responses"]:
        name = r["resource_name"]
        if r["error_code"]:
            log.warning("could not raise %s of %s to %s: %s %s", KEY, name, low.get(name),
                        for_code(r["error_code"]).__name__, r["error_message"] or "")
        elif name in low:
            raised[name] = low[name]
            log.info("raised %s of %s from %s to %s", KEY, name, have[name], low[name])
    return raised
