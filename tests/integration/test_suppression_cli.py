"""``kmta suppression`` against a real broker: add (scoped), import CSV, list and counts, export
CSV, remove; every change audited with its operator; the router honours each scope."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from tests.harness import Pipeline
from tests.integration.test_control_cli import kmta


def test_add_import_list_export_remove(pipeline_factory, tmp_path: Path) -> None:
    p: Pipeline = pipeline_factory()
    r = kmta(p, "suppression", "add", "Ann@Example.org", "--actor", "ops",
             "--note", "asked by phone")
    assert r.returncode == 0, r.stderr
    r = kmta(p, "suppression", "add", "bob@example.org", "--scope", "campaign",
             "--value", "spring", "--actor", "ops")
    assert r.returncode == 0, r.stderr
    assert kmta(p, "suppression", "add", "x@example.org", "--value", "x").returncode == 2
    src = tmp_path / "in.csv"
    src.write_text("address,scope,value,reason,detail\n"
                   "carol@example.org,,,complaint,from the old system\n"
                   "dan@example.org,domain,shop.example,unsubscribe,\n")
    r = kmta(p, "suppression", "import", str(src), "--actor", "migration")
    assert r.returncode == 0 and "2 record(s)" in r.stderr, r.stderr
    bad = tmp_path / "bad.csv"
    bad.write_text("address,reason\nerin@example.org,nonsense\n")
    r = kmta(p, "suppression", "import", str(bad))
    assert r.returncode == 2 and "bad.csv:2" in r.stderr

    r = kmta(p, "suppression", "list", "--search", "example.org")
    assert r.returncode == 0 and "4 of 4 records" in r.stderr, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("ann@example.org") and "manual" in lines[0]
    assert any("campaign:spring" in ln for ln in lines)
    r = kmta(p, "suppression", "list", "--counts")
    counts = dict(ln.rsplit(None, 1) for ln in r.stdout.splitlines())
    assert counts["total"] == "4" and counts["complaint      global"] == "1"
    # the same as JSON: the records as on the topic, and the counts
    r = kmta(p, "suppression", "list", "--search", "example.org", "--limit", "3", "--json")
    doc = json.loads(r.stdout)
    assert (r.returncode, doc["total"], doc["shown"]) == (0, 4, 3)
    assert [x["address"] for x in doc["records"]] == [
        "ann@example.org", "bob@example.org", "carol@example.org"]
    assert doc["records"][1]["scope"] == "campaign" and doc["records"][1]["value"] == "spring"
    doc = json.loads(kmta(p, "suppression", "list", "--counts", "--json").stdout)
    assert doc["total"] == 4 and {"reason": "complaint", "scope": "global", "count": 1} in \
        doc["counts"]

    out = tmp_path / "out.csv"
    assert kmta(p, "suppression", "export", str(out)).returncode == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert {(x["address"], x["scope"], x["value"], x["reason"]) for x in rows} == {
        ("ann@example.org", "global", "", "manual"),
        ("bob@example.org", "campaign", "spring", "manual"),
        ("carol@example.org", "global", "", "complaint"),
        ("dan@example.org", "domain", "shop.example", "unsubscribe")}

    r = kmta(p, "suppression", "remove", "ann@example.org", "--actor", "ops2",
             "--note", "resubscribed")
    assert r.returncode == 0, r.stderr
    assert kmta(p, "suppression", "remove", "nobody@example.org").returncode == 1
    r = kmta(p, "suppression", "list")
    assert "3 of 3 records" in r.stderr and "ann@" not in r.stdout
    audit = [a["suppression"] for a in p.read_topic("audit") if a.get("suppression")]
    assert [(a["op"], a["key"], a["actor"]) for a in audit] == [
        ("add", "ann@example.org", "ops"), ("add", "campaign:spring|bob@example.org", "ops"),
        ("add", "carol@example.org", "migration"),
        ("add", "domain:shop.example|dan@example.org", "migration"),
        ("remove", "ann@example.org", "ops2")]
    assert audit[-1]["reason"] == "resubscribed" and audit[-1]["record"]["reason"] == "manual"
