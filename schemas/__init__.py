"""One source of truth for every record that crosses a process boundary.

Public topics (outbox, results, control, dlq, audit, state, nodes, suppression) carry plain
JSON. The pydantic models here define them; the JSON Schema files beside this module are
generated from the models (``python -m schemas.generate``) and a test checks that they are up to
date.
"""
from __future__ import annotations

from schemas.base import Model, explain
from schemas.control import ControlAction, ControlCommand, ControlRecord
from schemas.events import (
                            FEEDBACK_STATUSES,
                            FINAL_STATUSES,
                            DeadLetter,
                            DeliveryEvent,
                            FeedbackInfo,
                            Status,
                            TlsInfo,
)
from schemas.inbound import InboundMail
from schemas.message import Envelope, MxHost, OutboxMessage, TlsPolicy
from schemas.nodes import IspLoad, NodeStats
from schemas.rules import (
                            IspRule,
                            ReplyRule,
                            RetryRule,
                            RulesFile,
                            SendingRule,
                            SpeedRule,
)
from schemas.state import IspState, WarmupStatus
from schemas.suppression import Reason, Suppression

__all__ = [
                            "FEEDBACK_STATUSES",
                            "FINAL_STATUSES",
                            "ControlAction",
                            "ControlCommand",
                            "ControlRecord",
                            "DeadLetter",
                            "DeliveryEvent",
                            "Envelope",
                            "FeedbackInfo",
                            "InboundMail",
                            "IspLoad",
                            "IspRule",
                            "IspState",
                            "Model",
                            "MxHost",
                            "NodeStats",
                            "OutboxMessage",
                            "Reason",
                            "ReplyRule",
                            "RetryRule",
                            "RulesFile",
                            "SendingRule",
                            "SpeedRule",
                            "Status",
                            "Suppression",
                            "TlsInfo",
                            "TlsPolicy",
                            "WarmupStatus",
                            "explain",
]
