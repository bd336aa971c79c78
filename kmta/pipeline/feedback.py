"""Records a feedback verdict writes: the results event (after the message's final, not
changing it), the suppression record for a hard bounce, complaint or unsubscribe, and the
dead letter (with the raw message) for what could not be read. Shared by ``kmta inbound``
and ``kmta unsubscribe``."""
from __future__ import annotations

import base64

from kmta.config import Config
from kmta.pipeline.metrics import DEAD_LETTERS
from kmta.pipeline.outputs import Out, event_out
from kmta.policy.inbound import Feedback
from kmta.policy.kb import KnowledgeBase
from kmta.policy.suppression import record_for, unsubscribe_scope
from schemas import DeadLetter, DeliveryEvent, FeedbackInfo, Status

__all__ = ["dead_letter", "feedback_outs", "recipient_domain"]

_DETAIL_KEYS = frozenset(FeedbackInfo.model_fields) - {"tied_by", "hard", "received_at"}


def recipient_domain(fb: Feedback) -> str:
    """The domain of the address the feedback is about, lowercased."""
    return fb.to.rpartition("@")[2].lower()


def feedback_outs(config: Config, kb: KnowledgeBase, fb: Feedback, now: float,
                  node: str | None, received_at: float | None = None,
                  isp: str | None = None) -> list[Out]:
    """The results event and, when ``fb.hard``, the suppression record (plus its audit).
    ``isp``: the recipient domain's, by MX (``kmta/pipeline/feedbackisp.py``); without it,
    a member domain's ISP or the domain itself."""
    status = Status(fb.kind)
    domain = recipient_domain(fb)
    if isp is None:
        isp = kb.isp_for(domain, ())
    info = FeedbackInfo(tied_by=fb.tied_by, hard=fb.hard, received_at=received_at,
                        **{k: v for k, v in fb.detail.items() if k in _DETAIL_KEYS})
    ev = DeliveryEvent(id=fb.id, to=fb.to, isp=isp, domain=domain, status=status, final=False,
                       code=fb.code, enhanced_code=fb.enhanced_code, response=fb.response,
                       category=fb.category, node=node, timestamp=now, campaign=fb.campaign,
                       sender=fb.sender, feedback=info)
    outs = [event_out(config, ev)]
    if fb.hard:
        scope, value = "global", None
        if status is Status.UNSUBSCRIBE:
            scope, value = unsubscribe_scope(config.unsubscribe.scope, fb.campaign, fb.domain)
        rec = record_for(status, fb.to, now, msg_id=fb.id, category=fb.category,
                         detail=fb.response, by=node, scope=scope, value=value)
        outs.append(Out(config.topic("suppression"), rec.to_json(), rec.key().encode()))
    return outs


def dead_letter(config: Config, reason: str, raw: bytes, topic: str, partition: int,
                offset: int, now: float, msg_id: str | None = None) -> Out:
    try:
        original, enc = raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        original, enc = base64.b64encode(raw).decode(), "base64"
    dl = DeadLetter(reason=reason, topic=topic, partition=partition, offset=offset,
                    timestamp=now, original=original, original_encoding=enc, id=msg_id)
    DEAD_LETTERS.labels("inbound").inc()
    return Out(config.topic("dlq"), dl.to_json(), None)
