"""ops.reply_dedup: replies equal up to addresses, URLs, numbers and codes count as one."""

from __future__ import annotations

from ops.reply_dedup import mask, reply_key, split_new


def _r(code: int, text: str) -> dict[str, object]:
    return {"code": code, "text": text}


def test_mask_hides_addresses_urls_numbers_and_enhanced_codes() -> None:
    a = mask("5.7.1 Mail from IP 104.248.224.170 rejected, see https://x.example/q?ip=1 <a@b.example>")
    b = mask("5.7.0 Mail from IP 10.0.0.1  rejected; see http://y.example/  <other@c.example>")
    assert a == b
    assert "ESC" not in mask("no code here") and "esc" in a


def test_different_wording_or_code_is_kept() -> None:
    assert mask("User unknown") != mask("User disabled")
    assert reply_key(_r(550, "5.1.1 User unknown")) != reply_key(_r(450, "4.1.1 User unknown"))


def test_split_new_drops_known_and_repeated_replies() -> None:
    others = [_r(550, "5.1.1 <x@a.example>: user does not exist")]
    new = [
        _r(550, "5.1.1 <y@b.example>: User does not exist"),  # known, other address
        _r(552, "5.2.2 Mailbox full (quota 100 MB)"),
        _r(552, "5.2.2 mailbox full (quota 250 MB)"),  # repeats the one before
        _r(421, "4.7.0 Try again later"),
    ]
    kept, dropped = split_new(new, others)
    assert [r["text"] for r in kept] == ["5.2.2 Mailbox full (quota 100 MB)", "4.7.0 Try again later"]
    assert len(dropped) == 2
