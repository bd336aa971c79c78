"""Routing: outbox message -> validated envelope on the ISP's queue partition.

Bad input never stops the pipeline: undecodable records go to the dead-letter topic with the
reason and the original bytes; a message whose id is known also gets a final ``rejected`` event.
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Container
from datetime import UTC, datetime
from typing import Any

import pydantic_core
from pydantic import ValidationError

from kmta.config import Config, PoolConfig
from kmta.errors import InputError
from kmta.pipeline.logs import bind, log_context
from kmta.pipeline.metrics import DEAD_LETTERS, UNEXPECTED_ERRORS
from kmta.pipeline.outgoing import Outgoing, Stamped, UnsignedRefused
from kmta.pipeline.outputs import Ending, Out, ended, event_out, internal_event, new_id
from kmta.pipeline.resolver import MxStatus, Resolver
from kmta.pipeline.seenids import SeenIds
from kmta.policy.addresses import split_address
from kmta.policy.compose import compose_bytes
from kmta.policy.dedup import IdVerdict, Seen, encode_seen, judge
from kmta.policy.kb import KnowledgeBase
from kmta.policy.partitions import PartitionMap
from kmta.policy.suppression import is_suppressed
from schemas import (
    DeadLetter,
    DeliveryEvent,
    Envelope,
    OutboxMessage,
    Status,
    envelope_codec,
    explain,
)
from schemas.message import ID_PATTERN, TlsPolicy
from streams.mtasts import MtaSts

__all__ = ["DEDUP_WINDOW", "Router"]

log = logging.getLogger(__name__)

_ID = re.compile(ID_PATTERN.strip("^$"))
DLQ_ORIGINAL_MAX = 256 * 1024  # bytes of an unwritable record's original kept in its dead letter
DEDUP_WINDOW = 24 * 3600.0  # seconds an accepted id stays taken (worker.dedup_window)




class Router:
    def __init__(self, config: Config, kb: KnowledgeBase, pmap: PartitionMap,
                 resolver: Resolver, suppressed: Container[str],
                 retry_first: Callable[[Envelope, float], list[Out]],
                 clock: Callable[[], float] = time.time,
                 seen: SeenIds | None = None,
                 dedup_window: float = DEDUP_WINDOW,
                 outgoing: Outgoing | None = None, mta_sts: MtaSts | None = None,
                 hold: Callable[[Envelope, float], list[Out] | None] | None = None,
                 ids_header: tuple[str, bytes] | None = None) -> None:
        self._c = config
        self._out = outgoing or Outgoing(config)  # reads and checks the DKIM keys
        self._sts = mta_sts or MtaSts(config, resolver)
        self._kb = kb
        self._pmap = pmap
        self._resolver = resolver
        self._suppressed = suppressed
        self._hold = hold  # reputation holds (streams/delay.py): the message waits
        self._retry_first = retry_first
        self._clock = clock
        self._id_domain = config.delivery.helo_name
        self._isps: dict[tuple[str, tuple[str, ...]], str] = {}
        # ids accepted within the window (the ids topic's view, shared with the other workers)
        self._seen = seen if seen is not None else SeenIds()
        # on every ids record written: this worker's ids view skips the records carrying it
        # (their ids are in ``seen`` already, set here), app.py
        self._ids_headers = (ids_header,) if ids_header else None
        self._window = dedup_window
        self._pruned_at = 0.0
        self.errors = 0  # records whose routing failed unexpectedly (each went to the DLQ)
        self.dead_letters = 0

    async def route(self, raw: bytes | None, topic: str, partition: int, offset: int) -> list[Out]:
        """Everything one outbox record becomes. Never raises: an unexpected error routing this
        record sends it to the dead-letter topic with the reason (logged and counted), so one
        record can never stop the route loop."""
        now = self._clock()
        with log_context():  # lines logged while routing it carry its id and ISP once known
            try:
                return await self._route(raw, topic, partition, offset, now)
            except Exception as e:
                self.errors += 1
                UNEXPECTED_ERRORS.labels("worker", "route").inc()
                log.exception("routing the record at %s/%s/%s failed", topic, partition, offset)
                return [self._dlq(f"internal error while routing: {type(e).__name__}: {e}",
                                  raw or b"", topic, partition, offset, now)]

    async def _route(self, raw: bytes | None, topic: str, partition: int, offset: int,
                     now: float) -> list[Out]:
        if raw is None:
            return [self._dlq("empty record", b"", topic, partition, offset, now)]
        try:
            doc = _loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            return [self._dlq(f"not JSON: {e}", raw, topic, partition, offset, now)]
        except RecursionError:
            return [self._dlq("not JSON this reader accepts: nested too deeply", raw, topic,
                              partition, offset, now)]
        if not isinstance(doc, dict):
            return [self._dlq("not a JSON object", raw, topic, partition, offset, now)]
        try:
            msg = OutboxMessage.model_validate(doc)
            _, sdomain = split_address(msg.from_, "from")
            local, domain = split_address(msg.to, "to")
            msg_id = msg.id or new_id()
            bind(message_id=msg_id)
            data = compose_bytes(msg, msg_id, sdomain, now,
                                 self._out.headers(msg, sdomain, msg_id))
            stamped = self._out.stamp(data, msg_id, msg.from_, sdomain, now)  # DKIM, VERP
            if len(stamped.data) > self._c.delivery.max_message_bytes:
                raise InputError(f"message is {len(stamped.data)} bytes; the limit is "
                                 f"{self._c.delivery.max_message_bytes}")
            pool = self._c.pool(msg.pool)
            if msg.pool is not None and pool is None:
                raise InputError(f"unknown pool {msg.pool!r}")
        except (ValidationError, InputError, RecursionError) as e:
            reason = _clean(_reason(e))
            rid = _valid_id(doc.get("id"))
            outs = [self._dlq(reason, raw, topic, partition, offset, now, rid)]
            to = doc.get("to")
            if rid is not None and isinstance(to, str) and self._first(rid, partition, offset,
                                                                         now, outs):
                ev = DeliveryEvent(id=rid, to=_clean(to[:320]), status=Status.REJECTED,
                                   final=True, response=reason,
                                   category="unsigned" if isinstance(e, UnsignedRefused)
                                   else "invalid_message",
                                   internal=True, timestamp=now,
                                   campaign=_clean(_str(doc.get("campaign"))))
                outs.append(event_out(self._c, ev))
            return outs
        outs: list[Out] = []
        # taken before the DNS lookup: a concurrent twin sees it
        if msg.id is not None and not self._first(msg.id, partition, offset, now, outs):
            # looked up again only for a duplicate (``_first`` left it as it was): a new id's
            # one lookup can be a read of the ids file (kmta/pipeline/seenids.py)
            seen = self._seen.get(msg.id)
            assert seen is not None
            return [self._dlq(
                f"duplicate id {msg.id!r}: first accepted at {_iso(seen.at)} (outbox "
                f"partition {seen.partition}, offset {seen.offset}); ids are unique within "
                f"{self._window / 3600:g} h", raw, topic, partition, offset, now)]
        try:
            return await self._accepted(msg, msg_id, local, domain, stamped, pool, now) + outs
        except BaseException:
            if msg.id is not None:  # dead-lettered after all: the id is free again
                self._seen.pop(msg.id, None)
            raise

    def _first(self, rid: str, partition: int, offset: int, now: float,
               outs: list[Out]) -> bool:
        """Remember ``rid`` as accepted (here at once, in every worker through the ids topic);
        False when it was already accepted from another record within the window."""
        if self._window <= 0:
            return True
        seen = self._seen.get(rid)
        if judge(seen, partition, offset, now, self._window) is IdVerdict.DUPLICATE:
            return False
        s = Seen(now if seen is None or seen.at <= now - self._window else seen.at,
                 partition, offset)
        self._seen[rid] = s
        outs.append(Out(self._c.topic("ids"), encode_seen(s), rid.encode(),
                        headers=self._ids_headers))
        self._prune(now)
        return True

    def _prune(self, now: float) -> None:
        """Forget ids older than the window (the ids topic deletes them by retention too)."""
        if now < self._pruned_at + 300:
            return
        self._pruned_at = now
        self._seen.prune(now - self._window)

    async def _accepted(self, msg: OutboxMessage, msg_id: str, local: str, domain: str,
                        stamped: Stamped, pool: PoolConfig | None, now: float) -> list[Out]:
        env = Envelope(
            id=msg_id, sender=stamped.mail_from, rcpt=f"{local}@{domain}", domain=domain,
            isp=self._isp_for(domain, ()),  # member domains known without DNS
            # the pool by name, also when the message named none (the default pool): rules
            # and locks narrowed per pool key on it
            data=stamped.data, pool=pool.name if pool else msg.pool, campaign=msg.campaign,
            meta=msg.meta,
            expires_at=msg.expires_at.timestamp() if msg.expires_at else None,
            accepted_at=now, routed_at=now, dkim=list(stamped.selectors) or None,
            # compose_bytes writes CRLF line ends only, and so does the DKIM signing in front
            # of them (tests/unit/test_compose.py): the senders need not check them again
            crlf=True)
        if env.expires_at is not None and env.expires_at <= now:
            return [ended(self._c, env, Ending.EXPIRED, "expired before it could be routed",
                          now)]
        sdomain = split_address(msg.from_, "from")[1]
        if is_suppressed(self._suppressed, env.rcpt, self._out.sending_domains(sdomain),
                         env.campaign):
            return [event_out(self._c, internal_event(
                env, Status.SUPPRESSED, 550, "5.1.1", "recipient is on the suppression list",
                "suppressed", now))]
        res = await self._resolver.mx(domain)
        if res.status is MxStatus.OK:
            env.isp = self._isp_for(domain, tuple(h.host for h in res.hosts))
            bind(isp=env.isp)
            env.mx = res.hosts
            env.mx_resolved_at = now
            env.mx_ttl = res.ttl
            env.tls_policy = await self.tls_policy(domain, now)
            held = self._hold(env, now) if self._hold else None
            if held is not None:
                return held
            return self.enqueue(env, now, first=True)
        env.isp = self._isp_for(domain, ())
        if res.permanent:
            code, enh = (556, "5.1.10") if res.status is MxStatus.NULL_MX else (550, "5.1.2")
            return [event_out(self._c, internal_event(
                env, Status.BOUNCED, code, enh, res.detail, "bad_domain", now))]
        return self._retry_first(env, now)  # DNS temporarily failing: retry later

    async def tls_policy(self, domain: str, now: float) -> TlsPolicy | None:
        """The domain's MTA-STS policy when it enforces (cached; ``streams/mtasts.py``)."""
        return await self._sts.enforced(domain, now)

    def _isp_for(self, domain: str, mx_hosts: tuple[str, ...]) -> str:
        """The knowledge base's MX rollup, remembered: the KB does not change while the worker
        runs, and matching an unknown domain's MX hosts against every ISP's globs costs
        30-40 us a message (docs/benchmark.md)."""
        key = (domain, mx_hosts)
        isp = self._isps.get(key)
        if isp is None:
            if len(self._isps) >= 100_000:
                self._isps.clear()
            isp = self._isps[key] = self._kb.isp_for(domain, mx_hosts)
        return isp

    def enqueue(self, env: Envelope, now: float, first: bool = False) -> list[Out]:
        """The envelope onto its ISP's queue partition (+ a ``queued`` event the first time)."""
        env.routed_at = now
        part = self._pmap.partition_for(env.isp, env.id)
        if log.isEnabledFor(logging.DEBUG):  # the hot path builds no extra dict otherwise
            log.debug("to queue partition %s", part,
                      extra={"isp": env.isp, "message_id": env.id})
        outs = [Out(self._c.topic("queue"), envelope_codec.encode(env), env.isp.encode(), part)]
        if first:
            ev = DeliveryEvent(id=env.id, to=env.rcpt, isp=env.isp, domain=env.domain,
                               status=Status.QUEUED, final=False, timestamp=now,
                               accepted_at=env.accepted_at, campaign=env.campaign,
                               meta=env.meta, sender=env.sender, pool=env.pool,
                               size=len(env.data), dkim=env.dkim)
            outs.append(event_out(self._c, ev))
        return outs

    def dead_letter(self, reason: str, raw: bytes, topic: str, partition: int,
                    offset: int) -> Out:
        """A dead letter for a record whose outputs could not be written. Its original is cut
        to ``DLQ_ORIGINAL_MAX`` bytes (the whole record stays on its own topic, at the
        partition and offset named, until that topic's retention)."""
        if len(raw) > DLQ_ORIGINAL_MAX:
            reason += (f" (original cut to its first {DLQ_ORIGINAL_MAX} of {len(raw)} bytes, "
                       f"sha256 {hashlib.sha256(raw).hexdigest()})")
            raw = raw[:DLQ_ORIGINAL_MAX]
        return self._dlq(reason, raw, topic, partition, offset, self._clock())

    def _dlq(self, reason: str, raw: bytes, topic: str, partition: int, offset: int,
             now: float, rid: object = None) -> Out:
        self.dead_letters += 1
        DEAD_LETTERS.labels("worker").inc()
        try:
            original, enc = raw.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            original, enc = base64.b64encode(raw).decode(), "base64"
        dl = DeadLetter(reason=_clean(reason)[:2000], topic=topic, partition=partition,
                        offset=offset, timestamp=now, original=original,
                        original_encoding=enc, id=_valid_id(rid))
        return Out(self._c.topic("dlq"), dl.to_json(), None)


def _loads(raw: bytes) -> Any:
    """The outbox record decoded as ``json.loads`` decodes it. pydantic's Rust parser reads a
    100 KB record in ~0.15 ms where ``json.loads`` takes ~0.27 ms (docs/benchmark.md); it
    refuses some texts ``json.loads`` reads (a lone surrogate escape, a UTF-8 BOM, nesting past
    its limit) and words its errors otherwise, so whatever it refuses goes to ``json.loads``,
    whose result or error stands: it accepts nothing ``json.loads`` refuses, and where both
    read a text they give the same value (a unit test compares the two)."""
    try:
        return pydantic_core.from_json(raw, cache_strings=False)
    except ValueError:
        return json.loads(raw)


def _reason(e: Exception) -> str:
    if isinstance(e, ValidationError):
        return "invalid message: " + explain(e, "message")
    if isinstance(e, RecursionError):
        return "invalid message: nested too deeply"
    return f"invalid message: {e}"


def _str(v: object) -> str | None:
    return v[:200] if isinstance(v, str) else None


def _clean(v: str | None) -> str | None:
    """Text that encodes as UTF-8 (a lone surrogate from a JSON ``\\ud800`` becomes ``?``)."""
    return v.encode("utf-8", "replace").decode("utf-8") if v is not None else None


def _valid_id(v: object) -> str | None:
    """The record's id when it is one kmta accepts (else the record gets no event by id)."""
    return v if isinstance(v, str) and _ID.fullmatch(v) else None


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")
