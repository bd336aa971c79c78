"""The labelled reply corpus (tests/data/replies/) and a regression floor on its tuned part.

The figures themselves are printed by ``make eval-classify``; the held-out part is scored there,
never asserted here, so that nobody tunes the rules against it through this test."""

from __future__ import annotations

import io
import json

import pytest

from kmta.policy.classify import CATEGORIES, Classifier, suppresses
from kmta.policy.kb import KnowledgeBase
from ops.classify_eval import CORPUS, load_corpus, main, score

TUNED = load_corpus(CORPUS / "tuned.jsonl")
HELDOUT = load_corpus(CORPUS / "heldout.jsonl")
HELDOUT2 = load_corpus(CORPUS / "heldout2.jsonl")
HELDOUT3 = load_corpus(CORPUS / "heldout3.jsonl")
HELDOUT4 = load_corpus(CORPUS / "heldout4.jsonl")
HELDOUT5 = load_corpus(CORPUS / "heldout5.jsonl")
HELDOUT6 = load_corpus(CORPUS / "heldout6.jsonl")
HELDOUT7 = load_corpus(CORPUS / "heldout7.jsonl")
HELDOUT8 = load_corpus(CORPUS / "heldout8.jsonl")
HELDOUT9 = load_corpus(CORPUS / "heldout9.jsonl")
HELDOUT10 = load_corpus(CORPUS / "heldout10.jsonl")
HELDOUT11 = load_corpus(CORPUS / "heldout11.jsonl")
LATER = HELDOUT2 + HELDOUT3 + HELDOUT4 + HELDOUT5 + HELDOUT6 + HELDOUT7 + HELDOUT8 + HELDOUT9 + HELDOUT10 + HELDOUT11


def test_corpus_is_big_labelled_and_attributed() -> None:
    assert len(TUNED) + len(HELDOUT) >= 500 and len(HELDOUT) >= 150 and len(HELDOUT2) >= 100
    assert len(HELDOUT3) >= 50 and len(HELDOUT4) >= 100 and len(HELDOUT5) >= 150 and len(HELDOUT6) >= 80 and len(HELDOUT7) >= 40
    assert len(HELDOUT8) >= 120 and len(HELDOUT9) >= 120 and len(HELDOUT10) >= 120
    assert len(HELDOUT11) >= 120
    for r in TUNED + HELDOUT + LATER:
        assert r["label"] in CATEGORIES, r
        assert r["provider"] and r["source"] and r["text"], r
        assert isinstance(r["temporary"], bool) and isinstance(r["suppress"], bool)
        # the labels agree with themselves: only a permanent unknown address/domain suppresses
        assert r["suppress"] == (suppresses(r["label"]) and not r["temporary"]), r


def test_parts_do_not_overlap() -> None:
    key = lambda r: (r["code"], " ".join(r["text"].lower().split()))  # noqa: E731
    later = (HELDOUT2, HELDOUT3, HELDOUT4, HELDOUT5, HELDOUT6, HELDOUT7, HELDOUT8, HELDOUT9, HELDOUT10, HELDOUT11)
    parts = [{key(r) for r in part} for part in (TUNED, HELDOUT, *later)]
    # no reply twice within the later held-out parts either
    assert [len(p) for p in parts[2:]] == [len(p) for p in later]
    for i, a in enumerate(parts):
        for b in parts[i + 1 :]:
            assert not a & b


def test_tuned_part_regression_floor() -> None:
    s = score(TUNED, Classifier.load(), KnowledgeBase.load())
    assert s.total == len(TUNED)
    assert s.accuracy >= 95.0
    assert s.temporary_bounced <= 1.0
    assert s.soft_suppressed <= 2.0
    assert s.hard_suppressed >= 95.0


def test_scoring_counts_what_it_should() -> None:
    records = [
        {
            "code": 550,
            "text": "5.1.1 User unknown",
            "label": "bad_mailbox",
            "temporary": False,
            "suppress": True,
        },
        {
            "code": 552,
            "text": "5.5.3 Too many recipients",
            "label": "rate_limit",
            "temporary": True,
            "suppress": False,
        },
        # deliberately mislabelled: counted as wrong, in the tables as it came out
        {
            "code": 550,
            "text": "5.1.8 Sender address rejected",
            "label": "bad_mailbox",
            "temporary": False,
            "suppress": True,
        },
    ]
    s = score(records, Classifier.load(), KnowledgeBase.load())
    assert (s.total, s.correct) == (3, 2)
    assert s.temp[("temporary", "defer")] == 1 and s.temporary_bounced == 0.0
    assert s.supp[("suppress", "suppress")] == 1 and s.supp[("suppress", "keep")] == 1
    assert s.hard_suppressed == 50.0 and len(s.misses) == 1


def test_main_prints_both_parts() -> None:
    out = io.StringIO()
    assert main([], out=out) == 0
    text = out.getvalue()
    for needle in (
        "tuned.jsonl",
        "heldout.jsonl",
        "heldout2.jsonl",
        "heldout3.jsonl",
        "heldout4.jsonl",
        "heldout5.jsonl",
        "heldout6.jsonl",
        "heldout7.jsonl",
        "heldout8.jsonl",
        "heldout9.jsonl",
        "category accuracy",
        "temporary bounced",
        "soft suppressed",
        "hard suppressed",
        "truth / verdict",
        "truth / decision",
    ):
        assert needle in text


@pytest.mark.parametrize("part", [TUNED, HELDOUT, HELDOUT2, HELDOUT3, HELDOUT4, HELDOUT5, HELDOUT6, HELDOUT7, HELDOUT8, HELDOUT9])
def test_records_are_json_round_trippable(part: list[dict]) -> None:
    for r in part[:20]:
        assert json.loads(json.dumps(r)) == r


def test_steps_chained_by_hand_agree_with_judge() -> None:
    # Reply.parse -> classify -> the ISP's reply rules -> disposition -> suppression, as callers
    # that do not use judge() chain them: the same verdicts on every reply of the corpus
    from kmta.policy.reply import Reply
    from kmta.policy.reply_rules import disposition, match_reply
    from kmta.policy.verdict import explain

    classifier, kb = Classifier.load(), KnowledgeBase.load()
    for r in TUNED + HELDOUT + LATER:
        reply = Reply.parse(r.get("code"), r["text"])
        isp, v = explain(reply, classifier, kb, r.get("isp"), r.get("domain"))
        matched = match_reply(reply, kb.effective(isp))
        category = matched.category if matched and matched.category else classifier.classify(reply)
        verdict = disposition(reply, matched)
        assert (category, verdict, verdict == "bounce" and suppresses(category)) == (
            v.category,
            v.verdict,
            v.suppress,
        ), r


def test_every_part_is_labelled_consistently_and_distinct() -> None:
    # every part the eval reads (PARTS, through heldout39): labels that agree with themselves,
    # each reply attributed, no reply (code and text) in two parts, none twice in a later part
    # (the tuned part may repeat a reply that two of its sources both give)
    from ops.classify_eval import PARTS

    key = lambda r: (r["code"], " ".join(r["text"].lower().split()))  # noqa: E731
    seen: dict[tuple[object, str], str] = {}
    for part in PARTS:
        mine: set[tuple[object, str]] = set()
        for r in load_corpus(CORPUS / f"{part}.jsonl"):
            assert r["label"] in CATEGORIES and r["provider"] and r["source"], (part, r)
            assert r["suppress"] == (suppresses(r["label"]) and not r["temporary"]), (part, r)
            assert seen.get(key(r), part) == part, (part, seen[key(r)], r)
            assert part in ("tuned", "heldout") or key(r) not in mine, (part, r)
            mine.add(key(r))
            seen[key(r)] = part
    assert len(PARTS) == 41 and {"heldout37", "heldout38", "heldout39", "heldout40"} <= set(PARTS)
