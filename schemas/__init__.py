"""One source of truth for every record that crosses a process boundary.

Public topics (outbox, results, control, dlq, audit, state) carry plain JSON. The pydantic models here
define them; the JSON Schema files beside this module are generated from the models
(``python -m schemas.generate``) and a test checks that they are up to date.
"""
from __future__ import annotations

from schemas.base import Model, explain
from schemas.control import ControlAction, ControlCommand, ControlRecord
from schemas.events import (DeliveryEvent, DeadLetter, FeedbackInfo, Status, FINAL_STATUSES,
                            FEEDBACK_STATUSES, TlsInfo)
from schemas.inbound import InboundMail
from schemas.suppression import Reason, Suppression
from schemas.message import Envelope, MxHost, OutboxMessage, TlsPolicy
from schemas.rules import (
    IspRule,
    ReplyRule,
    RetryRule,
    RulesFile,
    SendingRule,
    SpeedRule,
)
from schemas.nodes import IspLoad, NodeStats
from schemas.state import IspState

__all__ = [
    "Model", "explain",
    "ControlAction", "ControlCommand", "ControlRecord",
    "DeliveryEvent", "DeadLetter", "FeedbackInfo", "Status", "FINAL_STATUSES",
    "FEEDBACK_STATUSES", "TlsInfo", "InboundMail", "Reason", "Suppression",
    "Envelope", "MxHost", "OutboxMessage", "TlsPolicy",
    "IspRule", "ReplyRule", "RetryRule", "RulesFile", "SendingRule", "SpeedRule",
    "IspState", "IspLoad", "NodeStats",
]
