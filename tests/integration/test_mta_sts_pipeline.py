"""MTA-STS through the whole pipeline: the worker finds the recipient domain's enforce policy
(test DNS + a local HTTPS policy server), the sender delivers only over TLS verified for the MX
name, and a domain whose MX certificate does not verify is deferred with the certificate error,
while the ISP's own level stays opportunistic."""
from __future__ import annotations

from pathlib import Path

from sim.dns import DnsServerThread, Zone
from tests.harness import free_port, wait_for
from tests.integration.test_mta_sts import PolicyServer
from tests.receiving import make_ca, make_cert, server_context, start_receiver


def test_enforce_policy_verified_delivery_and_deferral(pipeline_factory, tmp_path: Path) -> None:
    ca_cert, ca_key, ca_path = make_ca(tmp_path)
    for sub in ("sts", "mx"):
        (tmp_path / sub).mkdir()
    https_port = free_port()
    p = pipeline_factory(extra={"delivery": {"tls_ca_file": str(ca_path),
                                             "mta_sts_port": https_port, "tls": "opportunistic"}})
    # one receiving server for both domains, its certificate valid for mx.good.test only
    mx_cert = make_cert(tmp_path / "mx", ["mx.good.test"], (ca_cert, ca_key))
    sts_cert = make_cert(tmp_path / "sts", ["mta-sts.good.test", "mta-sts.bad.test"],
                         (ca_cert, ca_key))
    zone = Zone(records={
        "good.test": {"mx": [(10, "mx.good.test")]},
        "mx.good.test": {"a": ["127.0.0.1"]},
        "bad.test": {"mx": [(10, "mx.bad.test")]},
        "mx.bad.test": {"a": ["127.0.0.1"]},
        "_mta-sts.good.test": {"txt": ["v=STSv1; id=g1"]},
        "_mta-sts.bad.test": {"txt": ["v=STSv1; id=b1"]},
        "mta-sts.good.test": {"a": ["127.0.0.1"]},
        "mta-sts.bad.test": {"a": ["127.0.0.1"]},
    })
    policy = PolicyServer(server_context(*sts_cert), https_port)
    policy.policy = "version: STSv1\nmode: enforce\nmx: *.good.test\nmx: *.bad.test\nmax_age: 600\n"
    with DnsServerThread(zone, port=p.dns_port):
        ctrl, rec = start_receiver(p.smtp_port, tls=server_context(*mx_cert))
        try:
            p.start_worker()
            p.start_sender()
            ids = p.produce([
                {"id": "good-1", "from": "a@kmta.test", "to": "u@good.test", "subject": "s",
                 "text": "t"},
                {"id": "bad-1", "from": "a@kmta.test", "to": "u@bad.test", "subject": "s",
                 "text": "t"},
            ])
            p.wait_finals(["good-1"], timeout=90)
            deferred = wait_for(lambda: [e for e in p.results()
                                         if e["id"] == "bad-1" and e["status"] == "deferred"],
                                60, "bad-1 deferred")
        finally:
            ctrl.stop()
            policy.close()
    good = p.finals()["good-1"]
    assert good["status"] == "delivered"
    assert good["tls"]["verified"] is True and good["tls"]["version"].startswith("TLS")
    assert [r.rcpt for r in rec.got] == ["u@good.test"]  # bad.test never got it
    d = deferred[0]
    assert d["code"] == 451 and d["enhanced_code"] == "4.7.5" and d["internal"]
    assert "certificate verify failed" in d["response"] and "mta-sts" in d["response"]
    assert set(policy.hosts) == {"mta-sts.good.test", "mta-sts.bad.test"}
    assert ids == ["good-1", "bad-1"]
