"""One SMTP mail transaction as commands in flight and the replies that came back: which
commands go together (RFC 2920 PIPELINING, RFC 3030 CHUNKING) and what the replies, matched
in order, mean for the message and the connection. Pure: the client in senders/ sends and
reads; this module decides.

A transaction is a list of steps (``rset``, ``mail``, ``rcpt``, ``data``, ``dot``, ``bdat``).
Lock-step sends one and reads its reply; pipelined, ``[rset] mail rcpt data`` go in one write
(the body after the 354), or with CHUNKING ``[rset] mail rcpt bdat`` (``BDAT <n> LAST`` and the
message) in one write: one round trip per message. Replies are matched to the steps in order;
the first one that is not what its step expects decides the outcome and its stage, exactly as
the lock-step client decided before: MAIL refused is stage ``mail``, RCPT ``rcpt``, DATA, the
final reply after the dot, or BDAT ``data``.

Across transactions (RFC 2920 §3.1: DATA ends a group, but the end of data may be followed by
the next transaction's commands): with DATA, a connection that has its next message at hand
writes ``body . MAIL RCPT DATA`` in one write (``rides``), so each message costs one round trip
with DATA too. The replies of such a write belong to two messages, in order: the final reply
of the first, then the second's MAIL, RCPT and DATA replies (``settle_pair``). A message whose
commands went behind a reply that ended the session (421, the connection closed) was never
attempted: ``unsent``, it goes back to its lane.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kmta.policy.reply import Reply

__all__ = ["EXPECT", "STAGE", "Plan", "Settled", "plan", "rides", "settle", "settle_pair",
           "steps"]

# the codes each step's reply must have to go on (those aiosmtplib 5 checked, lock-step)
EXPECT: dict[str, tuple[int, ...]] = {
    "rset": (250,), "mail": (250,), "rcpt": (250, 251), "data": (354,), "dot": (250,),
    "bdat": (250,),
}
STAGE = {"rset": "mail", "mail": "mail", "rcpt": "rcpt", "data": "data", "dot": "data",
         "bdat": "data"}
FINAL = ("dot", "bdat")


@dataclass(frozen=True)
class Plan:
    """How this connection sends: ``pipelined`` (the server offers PIPELINING and the config
    allows it) and ``chunking`` (CHUNKING offered and allowed: BDAT instead of DATA)."""

    pipelined: bool
    chunking: bool


def plan(offers: Callable[[str], bool], allowed: bool) -> Plan:
    """``offers(name)``: whether the server's EHLO listed ``name``; ``allowed``: the config's
    ``[delivery] pipelining`` (False: lock-step DATA, the client before RFC 2920 support)."""
    if not allowed:
        return Plan(False, False)
    return Plan(offers("pipelining"), offers("chunking"))


def steps(p: Plan, reset: bool) -> list[str]:
    """The steps of one message, in the order sent (``dot`` follows a 354 to ``data``)."""
    return (["rset"] if reset else []) + ["mail", "rcpt", "bdat" if p.chunking else "data"]


def rides(p: Plan) -> bool:
    """Whether the next message's ``MAIL RCPT DATA`` may follow this one's end of data in the
    same write: pipelined DATA only. (With CHUNKING a message is one write already; without
    PIPELINING nothing goes ahead of a reply.)"""
    return p.pipelined and not p.chunking


@dataclass(frozen=True)
class Settled:
    """What the replies so far mean.

    ``state``: ``go`` (every reply as expected and the last step not final: send on; after a
    354 that is the body), ``accepted``, ``failed``, or ``unsent`` (commands written behind
    another message's end of data, and the session ended before a reply of their own: no
    attempt, the message goes back to its lane; ``settle_pair``). On ``failed``: ``reply``
    and ``stage`` are the outcome's; ``lost`` means the session is over (421 or the
    connection closed: no further message on it); ``reset`` that a transaction may still be
    open on the server, so the next message starts with RSET; ``lone_dot`` that the server
    answered DATA with 354 although MAIL or RCPT failed, so a lone "." must end that empty
    message (RFC 2920 §3.1).
    """

    state: str
    reply: Reply | None = None
    stage: str = "data"
    lost: bool = False
    reset: bool = False
    lone_dot: bool = False


def settle(sent: Sequence[str], got: Sequence[Reply], mx: str,
           closed: str | None = None) -> Settled:
    """Match ``got`` (replies in arrival order) to ``sent`` (steps in order); ``closed``: why
    the connection ended if it did (None: still open, every reply for ``sent`` is in ``got``
    or the caller is still reading)."""
    failed: tuple[str, Reply] | None = None
    lost = False
    for step, reply in zip(sent, got, strict=False):
        if reply.code == 421:
            lost = True  # service closing: whatever else it says, the session is over
        if failed is None and reply.code not in EXPECT[step]:
            failed = (step, reply)
    if failed is not None:
        step, reply = failed
        # a refused RSET leaves the session in a state nobody knows: no further message on it
        lost = lost or closed is not None or step == "rset"
        i = sent.index("data") if "data" in sent else -1
        dot = (not lost and step in ("rset", "mail", "rcpt") and 0 <= i < len(got)
               and got[i].code == 354)
        return Settled("failed", reply, STAGE[step], lost, reset=not lost, lone_dot=dot)
    if sent and len(got) >= len(sent) and sent[-1] in FINAL:
        return Settled("accepted", got[len(sent) - 1], "data")
    if closed is not None:  # closed before the message was through (or before it was sent)
        return Settled("failed", Reply(code=451, enhanced_code="4.4.2", internal=True,
                                       text=f"connection to {mx} lost: {closed}"),
                       "data", True)
    return Settled("go")


def settle_pair(first: Sequence[str], second: Sequence[str], got: Sequence[Reply], mx: str,
                closed: str | None = None) -> tuple[Settled, Settled]:
    """Two messages of one flight: ``first``'s steps end with ``dot``, and ``second``'s were
    written in the same write behind that dot (``rides``). ``got``: the replies of both in
    arrival order, ``first``'s before ``second``'s. ``second`` is ``go`` while ``first``'s
    final reply has not come; ``unsent`` when ``first``'s reply ended the session (421 or
    the connection lost: whatever else the server said after it does not count) or the
    connection closed before ``second`` had a reply of its own; else as ``settle`` says."""
    n = len(first)
    a = settle(first, got[:n], mx, closed)
    if a.state == "go":
        return a, Settled("go")
    if a.lost:
        return a, Settled("unsent", lost=True)
    rest = got[n:]
    if not rest and closed is not None:
        return a, Settled("unsent", lost=True)
    return a, settle(second, rest, mx, closed)
