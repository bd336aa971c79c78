"""The suppression store (``kmta/pipeline/suppressionstore.py``): counts that follow
replacements and removals, searches by domain and address prefix, pages, capped counts."""
from __future__ import annotations

from kmta.pipeline.suppressionstore import SuppressionStore
from schemas.suppression import Reason, Suppression


def rec(address: str, reason: Reason, at: float, **kw) -> Suppression:
    return Suppression(address=address, reason=reason, at=at, **kw)


def test_counts_follow_replacements_and_removals() -> None:
    s = SuppressionStore()
    s.apply("a@x.example", rec("a@x.example", Reason.COMPLAINT, 1))
    s.apply("a@x.example", rec("a@x.example", Reason.MANUAL, 2))  # the same key again
    s.apply("b@x.example", rec("b@x.example", Reason.HARD_BOUNCE, 3))
    s.apply("c@x.example", None)  # a tombstone for a key never seen
    c = s.counts()
    assert (c["complaint"], c["manual"], c["hard_bounce"], c["total"]) == (0, 1, 1, 2)
    s.apply("b@x.example", None)
    assert s.counts()["hard_bounce"] == 0 and len(s) == 1
    assert s.get("a@x.example").reason is Reason.MANUAL and s.get("b@x.example") is None
    s.close()


def test_search_by_domain_and_prefix_with_pages() -> None:
    s = SuppressionStore()
    for i in range(30):
        dom = "gmail.com" if i % 3 else "yahoo.com"
        s.apply(f"user{i}@{dom}", rec(f"user{i}@{dom}", Reason.ASYNC_BOUNCE, float(i)))
    s.apply("campaign:c|user1@gmail.com", rec("user1@gmail.com", Reason.UNSUBSCRIBE, 99.0,
                                               scope="campaign", value="c"))
    newest = s.rows("", limit=3)
    assert [r["id"] for r in newest] == ["campaign:c|user1@gmail.com", "user29@gmail.com",
                                         "user28@gmail.com"]
    assert newest[0]["scope"] == "campaign:c"
    yahoo = [r["address"] for r in s.rows("@Yahoo.com", limit=100)]
    assert yahoo == [f"user{i}@yahoo.com" for i in range(27, -1, -3)]
    assert [r["address"] for r in s.rows("yahoo.com", limit=2, offset=1)] == [
        "user24@yahoo.com", "user21@yahoo.com"]  # a bare domain name, page 2
    # a prefix: addresses in code-point order ("0" before "@"), an address's records newest
    # first
    assert [r["id"] for r in s.rows("USER1", limit=4)] == [
        "user10@gmail.com", "user11@gmail.com", "user12@yahoo.com", "user13@gmail.com"]
    assert [r["id"] for r in s.rows("user1@", limit=5)] == [
        "campaign:c|user1@gmail.com", "user1@gmail.com"]
    assert s.rows("nobody.example") == [] and s.matches("nobody.example") == 0
    assert (s.matches(""), s.matches("@gmail.com"), s.matches("user2"), s.matches("user")) == (
        31, 21, 11, 31)
    assert s.matches("user", cap=5) == 5
    s.close()
