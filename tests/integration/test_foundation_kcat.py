"""A client that knows nothing of kmta: kcat produces plain JSON lines to the outbox, and reads
the results back as plain JSON that matches the published schema."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections import Counter

import jsonschema
import pytest

from schemas.generate import path_of
from tests.harness import wait_for

KCAT = shutil.which("kcat")
pytestmark = pytest.mark.skipif(KCAT is None and not os.environ.get("CI"),
                                reason="kcat not installed (apt-get install kcat); CI has it")


def kcat(*args: str, stdin: bytes | None = None, timeout: float = 60) -> bytes:
    assert KCAT is not None, "kcat is missing in CI: scripts/bootstrap.sh installs it"
    done = subprocess.run([KCAT, *args], input=stdin, capture_output=True, timeout=timeout,
                          check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout


def test_kcat_produced_json_is_delivered(pipeline_factory) -> None:
    p = pipeline_factory()
    p.start(senders=1)
    bootstrap = p.config.kafka.bootstrap_servers
    docs = [{"id": f"kcat-{i}", "from": "news@shop-example.test",
             "to": f"user{i}@{['gmail.com', 'yahoo.com', 'outlook.com'][i % 3]}",
             "subject": f"Grüße {i}", "text": f"hello {i}\n", "campaign": "kcat"}
            for i in range(30)]
    docs.append({"id": "kcat-html", "from": "news@shop-example.test", "to": "ann@mail.ru",
                 "subject": "html", "html": "<p>hi</p>", "meta": {"customer": 42}})
    docs.append({"id": "kcat-data", "from": "news@shop-example.test", "to": "bob@bk.ru",
                 "data": "From: news@shop-example.test\r\nTo: bob@bk.ru\r\nSubject: raw\r\n"
                         "\r\nraw body\r\n"})
    lines = b"".join(json.dumps(d, ensure_ascii=False).encode() + b"\n" for d in docs)
    kcat("-P", "-b", bootstrap, "-t", p.config.topic("outbox"), stdin=lines)

    ids = [d["id"] for d in docs]
    finals = p.wait_finals(ids, timeout=90)
    assert Counter(f["status"] for f in finals.values()) == {"delivered": len(docs)}
    assert finals["kcat-html"]["meta"] == {"customer": 42}
    assert finals["kcat-0"]["campaign"] == "kcat"
    wait_for(lambda: set(ids) <= {e.get("kmta_id") for e in p.sim_events()
                                  if e["event"] == "accepted"}, 15, "every id at the sims")

    # results as any consumer sees them: one JSON object per record, per the published schema
    out = kcat("-C", "-b", bootstrap, "-t", p.config.topic("results"), "-o", "beginning",
               "-e", "-q", "-f", "%s\n")
    events = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
    schema = jsonschema.Draft202012Validator(json.loads(path_of("results").read_text()))
    for ev in events:
        schema.validate(ev)
    mine = [e for e in events if e["id"] in finals]
    assert Counter(e["status"] for e in mine) == {"queued": len(docs), "delivered": len(docs)}
