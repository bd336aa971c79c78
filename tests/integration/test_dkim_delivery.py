"""Mail that providers accept, end to end: real broker, worker and sender processes deliver to an
aiosmtpd server that verifies every DKIM signature with dkimpy against the TXT records served
by the test DNS (sim.dns), over STARTTLS with a self-signed certificate."""
from __future__ import annotations

from pathlib import Path

from kmta.pipeline.dkim import generate_key, load_keys, txt_record
from kmta.policy.verp import message_id_of
from sim.dns import DnsServerThread, Zone
from tests.harness import wait_for
from tests.receiving import make_cert, server_context, start_receiver

DOMAINS = {  # From domain -> its selectors (algorithm each)
    "rsa.example": [("r2026", "rsa-sha256")],
    "ed.example": [("e2026", "ed25519-sha256")],
    "dual.example": [("r2026", "rsa-sha256"), ("e2026", "ed25519-sha256")],
}


def _domains(tmp: Path) -> list[dict]:
    out = []
    for name, sels in DOMAINS.items():
        keys = []
        for sel, alg in sels:
            path = tmp / f"{name}.{sel}.pem"
            path.write_bytes(generate_key(alg))
            keys.append({"selector": sel, "key_file": path.name, "algorithm": alg})
        out.append({"name": name, "return_path": f"bounce.{name}", "dkim": keys})
    return out


def test_every_delivered_message_verifies(pipeline_factory, tmp_path: Path) -> None:
    keydir = tmp_path / "keys"
    keydir.mkdir()
    domains = _domains(keydir)
    for d in domains:  # the worker reads them relative to its config file
        for k in d["dkim"]:
            k["key_file"] = str(keydir / k["key_file"])
    p = pipeline_factory(extra={"domains": domains, "delivery": {
        "unsigned": "refuse", "verp_secret": "bounce-secret", "tls": "opportunistic"}})
    records: dict[str, dict] = {"rcpt.test": {"mx": [(10, "mx.rcpt.test")]},
                                "mx.rcpt.test": {"a": ["127.0.0.1"]}}
    for keys in load_keys(p.config.domains).values():
        for k in keys:
            records[f"{k.selector}._domainkey.{k.domain}"] = {"txt": [txt_record(k)]}
    cert, key = make_cert(tmp_path, ["mx.rcpt.test"])  # self-signed: opportunistic takes it
    with DnsServerThread(Zone(records=records), port=p.dns_port):
        ctrl, rec = start_receiver(p.smtp_port, p.dns_port, tls=server_context(cert, key))
        try:
            p.start_worker()
            p.start_sender()
            docs = []
            for name in DOMAINS:
                for size in (1000, 1_000_000):  # 1 KB, 1 MB
                    line = ("x" * 76 + "\n")
                    docs.append({"from": f"news@{name}", "to": f"u{size}@rcpt.test",
                                 "subject": f"{name} {size}", "text": line * (size // 77),
                                 "campaign": "c1", "unsubscribe_url":
                                 f"https://{name}/u?m=1", "unsubscribe_mailto": f"u@{name}"})
            docs.append({"from": "x@unconfigured.test", "to": "v@rcpt.test", "subject": "s",
                         "text": "t", "id": "no-domain"})
            ids = p.produce(docs)
            finals = p.wait_finals(ids, timeout=120)
            wait_for(lambda: len(rec.got) >= 6, 30, "six messages at the receiver")
        finally:
            ctrl.stop()
    assert finals["no-domain"]["status"] == "rejected"
    assert "no [[domains]] entry" in finals["no-domain"]["response"]
    assert sorted(f["status"] for i, f in finals.items() if i != "no-domain") == (
        ["delivered"] * 6)
    assert len(rec.got) == 6
    for got in rec.got:
        head = got.data.split(b"\r\n\r\n", 1)[0].decode()
        name = next(n for n in DOMAINS if f"From: news@{n}" in head)
        want = {(name, sel, alg) for sel, alg in DOMAINS[name]}
        assert {(d, s, a) for d, s, a, _ in got.signatures} == want, got.signatures
        assert all(ok for *_, ok in got.signatures), got.signatures
        assert got.tls
        assert "List-Unsubscribe-Post: List-Unsubscribe=One-Click" in head
        assert f"Feedback-ID: c1:{name}:default:{name}" in head
        # VERP: the envelope sender names the message without any table
        assert got.mail_from.endswith(f"@bounce.{name}")
        msg_id = message_id_of(got.mail_from, b"bounce-secret")
        assert msg_id in finals and f"X-Kmta-Id: {msg_id}" in head
    sizes = sorted(len(g.data) for g in rec.got)
    assert sizes[0] < 4000 and sizes[-1] > 1_000_000
    delivered = [f for f in finals.values() if f["status"] == "delivered"]
    for f in delivered:  # result events carry the TLS session
        assert f["tls"]["version"].startswith("TLS") and f["tls"]["cipher"]
        assert f["tls"]["verified"] is False
