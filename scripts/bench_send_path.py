#!/usr/bin/env python3
"""A sender's CPU per message on the body's way from the queue record to the socket: the
record decoded (``schemas.envelope_codec``), the command lines and canonical body built
(``senders.smtpclient.message``: ``wire_body``) and the body dot-stuffed for DATA
(``_dotted``), for records with and without the router's CRLF mark (``Envelope.crlf``;
without it is what every record was before the mark).

    PYTHONPATH=$PWD python scripts/bench_send_path.py [--size 102400] [--messages 200]
        [--dkim rsa-sha256]

The bench's newsletter (``scripts/bench.py``), composed and (``--dkim``) signed as the router
does it. Each figure is the best of 3 rounds of process CPU time (``time.process_time``) over
``--messages`` messages, per message.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from kmta.config import Config
from kmta.pipeline.dkim import generate_key
from kmta.pipeline.outgoing import Outgoing
from kmta.policy.compose import compose_bytes
from schemas import Envelope, OutboxMessage, envelope_codec
from scripts.bench import make_docs
from senders.smtpclient import _dotted, message

NOW = 1.8e9


def records(n: int, size: int, dkim: str | None, crlf: bool) -> list[bytes]:
    """``n`` queue records of the bench's newsletter as the router writes them."""
    with tempfile.TemporaryDirectory() as d:
        domains = []
        if dkim:
            key = Path(d) / "k.pem"
            key.write_bytes(generate_key(dkim))
            domains = [{"name": "sender.kmta.test",
                        "dkim": [{"selector": "s1", "key_file": str(key), "algorithm": dkim}]}]
        out = Outgoing(Config.model_validate({"domains": domains,
                                              "delivery": {"unsigned": "allow"}}))
        values = []
        for doc in make_docs(n, size, "p"):
            msg = OutboxMessage.model_validate(doc)
            data = compose_bytes(msg, doc["id"], "sender.kmta.test", NOW,
                                 out.headers(msg, "sender.kmta.test", doc["id"]))
            st = out.stamp(data, doc["id"], msg.from_, "sender.kmta.test", NOW)
            env = Envelope(id=doc["id"], sender=st.mail_from, rcpt=doc["to"], domain="x.test",
                           isp="x", data=st.data, accepted_at=NOW, routed_at=NOW, crlf=crlf)
            values.append(envelope_codec.encode(env))
        return values


def send_path(values: list[bytes]) -> float:
    """CPU seconds per message, best of 3."""
    best = float("inf")
    for _ in range(3):
        t = time.process_time()
        for v in values:
            env = envelope_codec.decode(v)
            m = message(env.sender, env.rcpt, [], env.data, env.crlf)
            _dotted(m.body)
        best = min(best, (time.process_time() - t) / len(values))
    return best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=102400)
    p.add_argument("--messages", type=int, default=200)
    p.add_argument("--dkim", choices=["rsa-sha256", "ed25519-sha256"])
    args = p.parse_args(argv)
    unmarked = records(args.messages, args.size, args.dkim, crlf=False)
    marked = records(args.messages, args.size, args.dkim, crlf=True)
    size = sum(map(len, marked)) / len(marked)
    a, b = send_path(unmarked), send_path(marked)
    print(f"{args.messages} records of {size:,.0f} bytes, dkim {args.dkim or 'none'}")
    print(f"unmarked (checked): {a * 1e6:7.1f} us a message")
    print(f"marked CRLF:        {b * 1e6:7.1f} us a message  ({b / a:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
