"""The JSON Schema files of the public topics: generated from the models, and saying the same.

The models are the source of truth (``python -m schemas.generate`` writes the files). Here: the
committed files equal what the models generate; every record a model writes validates against
its file and reads back equal; and for outbox messages (what users write by hand) the file and
the model give the same verdict on a table of valid and invalid examples.
"""
from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime
from typing import Any

import jsonschema
import pytest
from pydantic import ValidationError

from schemas import (
    ControlCommand,
    ControlRecord,
    DeadLetter,
    DeliveryEvent,
    IspLoad,
    IspState,
    Model,
    NodeStats,
    OutboxMessage,
    Status,
    generate,
)
from schemas.generate import SCHEMAS, path_of, render, stale

TOPICS = ["outbox", "results", "control", "state", "dlq", "audit", "nodes", "suppression"]


def validator(topic: str) -> jsonschema.Draft202012Validator:
    schema = json.loads(path_of(topic).read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema)


# -- the files ---------------------------------------------------------------------------------
def test_every_public_topic_has_a_schema_file() -> None:
    assert list(SCHEMAS) == TOPICS
    for topic in TOPICS:
        schema = json.loads(path_of(topic).read_text(encoding="utf-8"))
        assert schema["$schema"] == generate.DIALECT
        jsonschema.Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("topic", TOPICS)
def test_file_is_up_to_date_with_the_model(topic: str) -> None:
    on_disk = json.loads(path_of(topic).read_text(encoding="utf-8"))
    assert on_disk == json.loads(render(SCHEMAS[topic])), (
        f"{path_of(topic).name} is stale: run python -m schemas.generate")
    assert topic not in stale()


def test_generate_check_mode(tmp_path) -> None:
    assert generate.main(["--check", "--dir", str(tmp_path)]) == 1
    assert generate.main(["--dir", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"{t}.schema.json" for t in TOPICS)
    assert generate.main(["--check", "--dir", str(tmp_path)]) == 0
    path_of("state", tmp_path).write_text("{}")
    assert stale(tmp_path) == ["state"]


# -- round trips -------------------------------------------------------------------------------
NOW = 1_790_000_000.25

SAMPLES: list[tuple[str, Model]] = [
    ("outbox", OutboxMessage.model_validate({
        "id": "cmp-7:42@x+y=z.1", "from": "news@shop.example", "to": "Ann@Example.COM",
        "subject": "Grüße — ünïcödé", "text": "hello\n", "html": "<p>hello</p>",
        "headers": {"List-Unsubscribe": "<mailto:u@shop.example>", "X-Campaign": "spring"},
        "pool": "default", "campaign": "spring", "meta": {"user": 42, "tags": ["a", "b"]},
        "expires_at": "2026-12-01T10:00:00Z"})),
    ("outbox", OutboxMessage.model_validate({
        "from": "a@b.example", "to": "c@d.example",
        "data": "From: a@b.example\r\nSubject: x\r\n\r\nbody\r\n",
        "expires_at": 1_800_000_000})),
    ("results", DeliveryEvent(
        id="m1", to="ann@gmail.com", isp="gmail", domain="gmail.com", status=Status.DEFERRED,
        final=False, attempt=2, code=421, enhanced_code="4.7.28",
        response="Our system has detected an unusual rate", category="rate_limited",
        internal=False, mx="gmail-smtp-in.l.google.com", source_ip="127.0.0.2",
        pool="default", node="sender-1", timestamp=NOW, accepted_at=NOW - 60,
        next_attempt_at=NOW + 300, campaign="spring", meta={"user": 1}, sender="a@b.example",
        size=1234)),
    ("results", DeliveryEvent(id="m2", to="x@y.example", status=Status.REJECTED, final=True,
                              timestamp=NOW)),
    ("control", ControlCommand(
        id="c1", action="set_rules", isp="gmail", source_ip="127.0.0.2",
        rules={"speed": {"max": 100}}, actor="ops", reason="warm-up", timestamp=NOW,
        signature="ab" * 32)),
    ("control", ControlCommand(id="c2", action="pause", isp="yahoo", actor="ops",
                               timestamp=NOW)),
    ("state", IspState(
        isp="gmail", source_ip="127.0.0.2", paused=True, locked_until=NOW + 3600,
        lock_reason="gmail_block", lock_reply="421 4.7.0 blocked", speed=120.5, speed_min=1,
        speed_max=600, throttle_until=NOW + 60, throttle_rate=10, max_connections=2,
        clear_before=NOW - 1, rules={"speed": {"max": 100}}, rules_version=3,
        updated_at=NOW)),
    ("dlq", DeadLetter(reason="not JSON", topic="kmta.outbox", partition=3, offset=17,
                       timestamp=NOW, original="/w==", original_encoding="base64", id="m9")),
    ("audit", ControlRecord(command=ControlCommand(id="c3", action="clear", isp="mail.ru",
                                                   actor="ops", timestamp=NOW),
                            applied=True, worker="w1", timestamp=NOW)),
    ("audit", ControlRecord(raw="{not json", applied=False, error="not JSON", timestamp=NOW)),
    ("nodes", NodeStats(node="sender-1", partitions=[0, 1, 7],
                        isps={"gmail": IspLoad(in_flight=3, backlog=10, connections=2,
                                               delivered=100, attempts=104, rate=5.5,
                                               paused=False),
                              "yahoo": IspLoad(paused=True)},
                        delivered_total=100, attempts_total=104, started_at=NOW - 10,
                        timestamp=NOW, stopping=True)),
]


@pytest.mark.parametrize(("topic", "record"), SAMPLES,
                         ids=[f"{t}-{i}" for i, (t, _) in enumerate(SAMPLES)])
def test_round_trip(topic: str, record: Model) -> None:
    raw = record.to_json()  # exactly what kmta writes to the topic
    doc = json.loads(raw)
    validator(topic).validate(doc)
    back = type(record).model_validate_json(raw)
    assert back == record
    assert type(record) is SCHEMAS[topic]


def test_round_trip_keeps_the_instant_of_expires_at() -> None:
    msg = SAMPLES[1][1]
    assert isinstance(msg, OutboxMessage)
    assert msg.expires_at == datetime.fromtimestamp(1_800_000_000, UTC)


# -- same verdict: file and model --------------------------------------------------------------
def model_ok(model: type[Model], doc: Any) -> bool:
    verdicts = []
    for check in (model.model_validate, lambda d: model.model_validate_json(json.dumps(d))):
        try:
            check(doc)
            verdicts.append(True)
        except ValidationError:
            verdicts.append(False)
    assert verdicts[0] == verdicts[1], f"python and JSON validation disagree on {doc!r}"
    return verdicts[0]


BASE = {"from": "news@shop.example", "to": "ann@gmail.com"}
COMPOSED = {**BASE, "subject": "hello", "text": "hi"}
DATA = {**BASE, "data": "Subject: hi\r\n\r\nbody\r\n"}

OUTBOX_EXAMPLES: list[tuple[str, bool, Any]] = [
    ("text", True, COMPOSED),
    ("html only", True, {**BASE, "subject": "s", "html": "<p>hi</p>"}),
    ("one-click unsubscribe", True, {**COMPOSED, "unsubscribe_url": "https://u.example/x",
                                     "unsubscribe_mailto": "u@example.com"}),
    ("unsubscribe url not https", False, {**COMPOSED, "unsubscribe_url": "http://u.example/"}),
    ("unsubscribe url too long", False, {**COMPOSED,
                                         "unsubscribe_url": "https://u.example/" + "x" * 900}),
    ("text and html", True, {**COMPOSED, "html": "<b>hi</b>"}),
    ("every field", True, SAMPLES[0][1].model_dump(mode="json", by_alias=True,
                                                   exclude_none=True)),
    ("data", True, DATA),
    ("data, empty headers", True, {**DATA, "headers": {}}),
    ("data, nulls for the rest", True, {**DATA, "subject": None, "text": None, "html": None,
                                        "headers": None}),
    ("null data, composed", True, {**COMPOSED, "data": None}),
    ("empty subject", True, {**COMPOSED, "subject": ""}),
    ("expires_at ISO 8601", True, {**COMPOSED, "expires_at": "2026-12-01T10:00:00+02:00"}),
    ("expires_at epoch", True, {**COMPOSED, "expires_at": 1_800_000_000}),
    ("expires_at epoch float", True, {**COMPOSED, "expires_at": 1_800_000_000.5}),
    ("id of every allowed character", True, {**COMPOSED, "id": "aZ0._:@+=-"}),
    ("id of 200", True, {**COMPOSED, "id": "x" * 200}),
    ("unicode", True, {**COMPOSED, "subject": "日本語", "text": "Привет"}),
    ("meta nested", True, {**COMPOSED, "meta": {"a": [1, {"b": None}]}}),
    ("campaign 200", True, {**COMPOSED, "campaign": "c" * 200}),
    ("no recipient", False, {"from": "a@b.example", "subject": "s", "text": "t"}),
    ("no sender", False, {"to": "a@b.example", "subject": "s", "text": "t"}),
    ("python name from_", False, {"from_": "a@b.example", "to": "c@d.example",
                                  "subject": "s", "text": "t"}),
    ("unknown field", False, {**COMPOSED, "cc": "x@y.example"}),
    ("misspelt field", False, {**COMPOSED, "subjet": "s"}),
    ("data and subject", False, {**DATA, "subject": "s"}),
    ("data and text", False, {**DATA, "text": "t"}),
    ("data and html", False, {**DATA, "html": "h"}),
    ("data and headers", False, {**DATA, "headers": {"X-A": "1"}}),
    ("subject only", False, {**BASE, "subject": "s"}),
    ("text only", False, {**BASE, "text": "t"}),
    ("no body", False, BASE),
    ("null subject", False, {**COMPOSED, "subject": None}),
    ("null text and html", False, {**COMPOSED, "text": None, "html": None}),
    ("empty id", False, {**COMPOSED, "id": ""}),
    ("id with a space", False, {**COMPOSED, "id": "a b"}),
    ("id with a slash", False, {**COMPOSED, "id": "a/b"}),
    ("id of 201", False, {**COMPOSED, "id": "x" * 201}),
    ("recipient too short", False, {**COMPOSED, "to": "a@"}),
    ("recipient of 321", False, {**COMPOSED, "to": "a" * 311 + "@b.example"}),
    ("subject of 999", False, {**COMPOSED, "subject": "s" * 999}),
    ("pool of 101", False, {**COMPOSED, "pool": "p" * 101}),
    ("subject a number", False, {**COMPOSED, "subject": 5}),
    ("text a list", False, {**COMPOSED, "text": ["a"]}),
    ("header value a number", False, {**COMPOSED, "headers": {"X-A": 1}}),
    ("meta a list", False, {**COMPOSED, "meta": [1]}),
    ("expires_at a boolean", False, {**COMPOSED, "expires_at": True}),
    ("expires_at an object", False, {**COMPOSED, "expires_at": {"at": 1}}),
    ("not an object", False, [COMPOSED]),
    ("a string", False, "hello"),
]


@pytest.mark.parametrize(("why", "valid", "doc"), OUTBOX_EXAMPLES,
                         ids=[e[0] for e in OUTBOX_EXAMPLES])
def test_outbox_examples_same_verdict(why: str, valid: bool, doc: Any) -> None:
    assert model_ok(OutboxMessage, doc) is valid, f"model on {why}"
    assert validator("outbox").is_valid(doc) is valid, f"schema file on {why}"


def test_outbox_body_rule_same_verdict_for_every_combination() -> None:
    """Each body field absent, null or set (headers also empty): 324 messages, one verdict."""
    v = validator("outbox")
    values = {"data": DATA["data"], "subject": "s", "text": "t", "html": "<p>h</p>",
              "headers": {"X-A": "1"}}
    absent = object()
    choices = {k: [absent, None, val] + ([{}] if k == "headers" else [])
               for k, val in values.items()}
    checked = 0
    for combo in itertools.product(*choices.values()):
        doc = {**BASE, **{k: c for k, c in zip(choices, combo, strict=True) if c is not absent}}
        assert model_ok(OutboxMessage, doc) == v.is_valid(doc), doc
        checked += 1
    assert checked == 3 * 3 * 3 * 3 * 4


CONTROL_EXAMPLES: list[tuple[str, bool, dict]] = [
    ("pause", True, {"id": "c", "action": "pause", "isp": "gmail", "actor": "ops",
                     "timestamp": NOW}),
    ("set_rules", True, {"id": "c", "action": "set_rules", "isp": "gmail", "actor": "ops",
                         "timestamp": NOW, "rules": {"speed": {"max": 10}}}),
    ("pause, null rules", True, {"id": "c", "action": "pause", "isp": "gmail", "actor": "ops",
                                 "timestamp": NOW, "rules": None}),
    ("set_rules without rules", False, {"id": "c", "action": "set_rules", "isp": "gmail",
                                        "actor": "ops", "timestamp": NOW}),
    ("set_rules, empty rules", False, {"id": "c", "action": "set_rules", "isp": "gmail",
                                       "actor": "ops", "timestamp": NOW, "rules": {}}),
    ("pause with rules", False, {"id": "c", "action": "pause", "isp": "gmail", "actor": "ops",
                                 "timestamp": NOW, "rules": {"speed": {"max": 10}}}),
    ("pause, empty rules", False, {"id": "c", "action": "pause", "isp": "gmail",
                                   "actor": "ops", "timestamp": NOW, "rules": {}}),
    ("unknown action", False, {"id": "c", "action": "reboot", "isp": "gmail", "actor": "ops",
                               "timestamp": NOW}),
    ("no actor", False, {"id": "c", "action": "pause", "isp": "gmail", "timestamp": NOW}),
]


@pytest.mark.parametrize(("why", "valid", "doc"), CONTROL_EXAMPLES,
                         ids=[e[0] for e in CONTROL_EXAMPLES])
def test_control_examples_same_verdict(why: str, valid: bool, doc: dict) -> None:
    assert model_ok(ControlCommand, doc) is valid, f"model on {why}"
    assert validator("control").is_valid(doc) is valid, f"schema file on {why}"


# -- feedback events and suppression records (issue 11) ---------------------------------------
def test_feedback_event_is_documented_and_never_final() -> None:
    from schemas import FEEDBACK_STATUSES, FINAL_STATUSES, FeedbackInfo
    assert not FEEDBACK_STATUSES & FINAL_STATUSES
    ev = DeliveryEvent(id="m1", to="a@gmail.com", isp="gmail", status=Status.ASYNC_BOUNCE,
                       final=False, code=550, enhanced_code="5.1.1", response="no such user",
                       category="bad_mailbox", timestamp=1.0,
                       feedback=FeedbackInfo(tied_by="verp", hard=True, reporting_mta="x"))
    doc = json.loads(ev.to_json())
    validator("results").validate(doc)
    assert DeliveryEvent.model_validate(doc) == ev
    bad = dict(doc, status="complained")
    assert list(validator("results").iter_errors(bad))


def test_suppression_record_scopes() -> None:
    from schemas.suppression import Reason, Suppression, key_of
    s = Suppression(address="A@Gmail.com", reason=Reason.COMPLAINT, at=1.0)
    assert s.key() == "a@gmail.com" == key_of("a@gmail.com")
    c = Suppression(address="a@gmail.com", scope="campaign", value="spring",
                    reason=Reason.UNSUBSCRIBE, at=1.0)
    assert c.key() == "campaign:spring|a@gmail.com"
    validator("suppression").validate(json.loads(c.to_json()))
    with pytest.raises(ValueError):
        Suppression(address="a@gmail.com", scope="domain", reason=Reason.MANUAL, at=1.0)
    with pytest.raises(ValueError):
        Suppression(address="a@gmail.com", value="x", reason=Reason.MANUAL, at=1.0)
