"""``[log] format = "json"`` on real processes (worker, sender, dashboard, ``kmta send``) with a
config full of secrets: every line each writes is one JSON object with its kind and node, the
router's lines name the message and its ISP, and no secret appears in any log."""
from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request

from tests.harness import ROOT, messages
from tests.integration.test_dashboard_truth import DashboardProcess

SECRETS = {
    "control": {"secret": "ctl-9f3b7c1e2d"},
    "dashboard": {"password": "dash-Pw-5e8a4471"},
    "unsubscribe": {"secret": "unsub-0c6d2b9a"},
    "delivery": {"verp_secret": "verp-7a1f3e55"},
}
REQUIRED = {"time", "level", "logger", "message", "kind", "node"}


def json_lines(text: str, name: str) -> list[dict]:
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except json.JSONDecodeError:
            raise AssertionError(f"{name} log line {n} is not JSON: {line[:200]!r}") from None
        assert isinstance(doc, dict) and doc.keys() >= REQUIRED, (name, n, doc)
        out.append(doc)
    return out


def test_json_logs_and_no_secret_in_them(pipeline_factory) -> None:
    p = pipeline_factory(extra={"log": {"format": "json"}, **SECRETS})
    p.start_sim()
    # -v: debug lines too (every routed message), where a leak would most likely be
    p._spawn("worker", ["--config", str(p.config_path), "-v", "worker", "--name", "worker"])
    p.start_sender("sender-1")
    dash = DashboardProcess(p, SECRETS["dashboard"]["password"])
    dash.start()
    assert dash.status()["totals"] is not None  # signed in with the password
    form = urllib.parse.urlencode({"username": "admin", "password": "wrong"}).encode()
    try:  # a failed sign-in: the panel says so (and may log it), never the real password
        urllib.request.urlopen(dash.url + "/login", data=form, timeout=10).close()
    except urllib.error.HTTPError:
        pass

    docs = messages(30, ["gmail.com", "yahoo.com", "shop-example.test"], prefix="log")
    src = p.tmp / "in.jsonl"
    src.write_text("".join(json.dumps(d) + "\n" for d in docs))
    r = subprocess.run([sys.executable, "-m", "kmta.cli", "--config", str(p.config_path),
                        "send", str(src), "--wait", "--timeout", "120", "--json"],
                       capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert (report["sent"], report["complete"], report["finals"]) == (30, True,
                                                                     {"delivered": 30})
    ids = set(report["ids"])
    dash.stop()
    p.close()  # every process stopped in order: their logs are complete

    logs = {name: p.log(name) for name in ("worker", "sender-1", "dashboard")}
    logs["send"] = r.stderr
    parsed = {name: json_lines(text, name) for name, text in logs.items()}
    for name, kind, node in (("worker", "worker", "worker"), ("sender-1", "sender", "sender-1"),
                             ("dashboard", "dashboard", None), ("send", "send", None)):
        assert {d["kind"] for d in parsed[name]} <= {kind}, name
        if node:
            assert {d["node"] for d in parsed[name]} == {node}, name
    assert any("assigned" in d["message"] for d in parsed["sender-1"])
    assert any(d["message"].startswith("dashboard on http") for d in parsed["dashboard"])
    assert any(d["message"].startswith("final: 30/30") for d in parsed["send"])
    # the router's line for each message names it and the ISP its final event names
    routed = {d["message_id"]: d["isp"] for d in parsed["worker"]
              if d.get("message_id") in ids and d.get("isp")}
    assert routed == {i: f["isp"] for i, f in p.finals().items() if i in ids}
    assert {"gmail", "yahoo"} <= set(routed.values())
    for name, text in logs.items():
        for section in SECRETS.values():
            for value in section.values():
                assert value not in text, f"{name} logged a secret"
