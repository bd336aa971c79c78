"""Suppression scopes (policy), the on-disk index the route loop reads, and the receiver's
answer when Kafka does not take a message."""
from __future__ import annotations

import asyncio
from types import SimpleNamespace

from inbound.receiver import InboundHandler
from kmta.config import Config
from kmta.pipeline.suppression import SuppressionIndex
from kmta.policy.suppression import is_suppressed, keys_for, record_for
from schemas import Status
from schemas.suppression import key_of


def test_scopes() -> None:
    store = {key_of("a@x.example"), key_of("b@x.example", "domain", "shop.example"),
             key_of("c@x.example", "campaign", "spring")}
    assert is_suppressed(store, "A@X.example", ["other.example"], None)
    assert is_suppressed(store, "b@x.example", ["mail.shop.example", "shop.example"], "x")
    assert not is_suppressed(store, "b@x.example", ["other.example"], None)
    assert is_suppressed(store, "c@x.example", ["shop.example"], "spring")
    assert not is_suppressed(store, "c@x.example", ["shop.example"], "autumn")
    assert not is_suppressed(store, "c@x.example", ["shop.example"], None)
    assert keys_for("d@x", ["s", "s", None], "k") == ["d@x", "domain:s|d@x", "campaign:k|d@x"]


def test_records_of_feedback() -> None:
    r = record_for(Status.COMPLAINT, "A@b.example", 5.0, msg_id="m1", category="complaint")
    assert (r.key(), r.reason.value, r.id, r.at) == ("a@b.example", "complaint", "m1", 5.0)
    u = record_for(Status.UNSUBSCRIBE, "a@b.example", 5.0, scope="campaign", value="c1")
    assert u.key() == "campaign:c1|a@b.example"


def test_index_survives_reopen_with_its_offsets(tmp_path) -> None:
    path = str(tmp_path / "s" / "w.sqlite")
    idx = SuppressionIndex(path)
    idx.apply([("a@x", True), ("b@x", True), ("a@x", False), ("c@x", True)],
              {("t", 0): 4, ("t", 1): 9})
    assert "b@x" in idx and "c@x" in idx and "a@x" not in idx and 3 not in idx
    assert idx.contains_any(["a@x", "z@x", "c@x"]) and not idx.contains_any(["a@x", "z@x"])
    assert is_suppressed(idx, "C@x", ["d"], "k") and not is_suppressed(idx, "a@x", ["d"], "k")
    idx.close()
    again = SuppressionIndex(path)
    assert len(again) == 2 and "b@x" in again
    assert again.offsets("t") == {0: 4, 1: 9}
    again.close()


class _Down:
    async def send_and_wait(self, *a, **kw):
        raise ConnectionError("broker unreachable")


class _Up:
    def __init__(self) -> None:
        self.sent: list = []

    async def send_and_wait(self, topic, value, key=None):
        self.sent.append((topic, value, key))


def test_receiver_answers_250_only_once_kafka_has_it() -> None:
    cfg = Config.model_validate({"domains": [{"name": "shop.example",
                                              "return_path": "bounces.shop.example"}],
                                 "delivery": {"verp_secret": "s"}})
    env = SimpleNamespace(rcpt_tos=[], mail_from="", original_content=b"Subject: x\r\n\r\nx")
    session = SimpleNamespace(peer=("127.0.0.1", 5), host_name="mx")

    async def go(producer):
        h = InboundHandler(cfg, producer, "n1")
        refused = await h.handle_RCPT(None, session, env, "a@other.example", [])
        env.rcpt_tos.clear()
        ok = await h.handle_RCPT(None, session, env, "b+tok@Bounces.Shop.Example", [])
        return refused, ok, await h.handle_DATA(None, session, env)
    refused, ok, data = asyncio.run(go(_Down()))
    assert refused.startswith("550") and ok.startswith("250") and data.startswith("451")
    up = _Up()
    env.rcpt_tos.clear()
    assert asyncio.run(go(up))[2].startswith("250")
    assert up.sent[0][0] == "kmta.inbound"


def test_index_file_is_stable_per_name_and_never_shared(tmp_path) -> None:
    import os

    from kmta.pipeline.suppression import claim
    fd1, p1 = claim(str(tmp_path), "host-a")
    fd2, p2 = claim(str(tmp_path), "host-a")  # a second worker on the same data_dir
    assert p1.endswith("host-a.sqlite") and p2.endswith("host-a-2.sqlite")
    os.close(fd1)  # the first one stopped: its restart takes its own file again
    fd3, p3 = claim(str(tmp_path), "host-a")
    assert p3 == p1
    os.close(fd2)
    os.close(fd3)


def test_sorted_hashes_follow_a_set_through_adds_removals_and_merges() -> None:
    import random
    from array import array

    from kmta.pipeline.hashset import SortedHashes
    rng = random.Random(11)
    start = sorted({rng.randrange(-500, 500) for _ in range(300)})
    s, ref = SortedHashes(array("q", start), compact_at=16), set(start)
    for step in range(3000):
        h = rng.randrange(-600, 600)
        if rng.random() < 0.5:
            s.add(h)
            ref.add(h)
        else:
            s.discard(h)
            ref.discard(h)
        if step % 97 == 0:
            assert all((x in s) == (x in ref) for x in range(-600, 600))
            assert len(s) == len(ref)
    s.compact()
    assert list(s._a) == sorted(ref) and "x" not in s


def test_keys_are_spelled_as_the_records_key_them() -> None:
    from schemas.suppression import Suppression
    keys = keys_for(" Ann@X.Example ", ["Shop.Example", "shop.example", None, "b.example"], "Spring")
    recs = [Suppression(address="ann@x.example", reason="manual", at=0),
            Suppression(address="ann@x.example", scope="domain", value="shop.example",
                        reason="manual", at=0),
            Suppression(address="ann@x.example", scope="domain", value="b.example",
                        reason="manual", at=0),
            Suppression(address="ann@x.example", scope="campaign", value="Spring",
                        reason="manual", at=0)]
    assert keys == [r.key() for r in recs]


def test_index_lookups_follow_applied_changes_after_load(tmp_path) -> None:
    path = str(tmp_path / "w.sqlite")
    idx = SuppressionIndex(path, load=False)
    idx.apply([("a@x", True), ("b@x", True)], {("t", 0): 2})
    assert list(idx.loading(chunk=1)) == [1, 2]  # yields after each chunk read
    idx.apply([("a@x", False), ("c@x", True), ("c@x", True)], {("t", 0): 5})
    assert ["b@x" in idx, "a@x" in idx, "c@x" in idx, len(idx)] == [True, False, True, 2]
    idx.close()


def test_mailto_unsubscribe_takes_the_configured_domain_scope() -> None:
    from kmta.pipeline.feedback import feedback_outs
    from kmta.pipeline.rules import load_kb
    from kmta.policy.classify import Classifier
    from kmta.policy.inbound import Feedback, read
    from kmta.policy.unsubscribe import make_token
    from schemas.suppression import Suppression

    cfg = Config.model_validate({"unsubscribe": {"secret": "u", "scope": "domain"}})
    tok = make_token(b"u", "m1", "Ann@Gmail.com", "spring", "shop.example")
    raw = (f"From: ann@gmail.com\r\nTo: unsubscribe@bounces.shop.example\r\n"
           f"Subject: unsubscribe {tok}\r\n\r\n\r\n").encode()
    fb = read(raw, "unsubscribe@bounces.shop.example", Classifier.load(), None, b"u")
    assert isinstance(fb, Feedback) and fb.domain == "shop.example"
    outs = feedback_outs(cfg, load_kb(cfg), fb, 10.0, "n1")
    sup = [o for o in outs if o.topic == "kmta.suppression"]
    assert [o.key for o in sup] == [b"domain:shop.example|ann@gmail.com"]
    rec = Suppression.model_validate_json(sup[0].value)
    assert (rec.scope, rec.value, rec.reason.value, rec.id) == (
        "domain", "shop.example", "unsubscribe", "m1")
    # the same mail under the default scope: the campaign
    outs = feedback_outs(Config.model_validate({"unsubscribe": {"secret": "u"}}),
                         load_kb(cfg), fb, 10.0, "n1")
    assert [o.key for o in outs if o.topic == "kmta.suppression"] == [
        b"campaign:spring|ann@gmail.com"]
