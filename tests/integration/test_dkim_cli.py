"""``kmta dkim keygen`` and ``kmta dkim check`` as a user runs them, against the test DNS."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import tomli_w

from sim.dns import DnsServerThread, Zone
from tests.harness import ROOT, free_port


def kmta(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kmta.cli", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def txt_of(output: str) -> str:
    """The TXT value from keygen's zone-file line (quoted strings joined)."""
    line = next(x for x in output.splitlines() if "IN TXT" in x)
    return "".join(re.findall(r'"([^"]*)"', line))


def test_keygen_then_check(tmp_path: Path) -> None:
    made = {}
    for sel, alg in [("r1", "rsa-sha256"), ("e1", "ed25519-sha256"), ("r2", "rsa-sha256"),
                     ("gone", "ed25519-sha256")]:
        r = kmta("dkim", "keygen", "shop.example", sel, "--algorithm", alg, "--out",
                 f"{sel}.pem", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert (tmp_path / f"{sel}.pem").stat().st_mode & 0o777 == 0o600
        assert f"{sel}._domainkey.shop.example. IN TXT" in r.stdout
        made[sel] = (alg, txt_of(r.stdout))
    again = kmta("dkim", "keygen", "shop.example", "r1", "--out", "r1.pem", cwd=tmp_path)
    assert again.returncode == 2 and "not overwriting" in again.stderr
    port = free_port()
    cfg = {"dns": {"nameservers": [f"127.0.0.1:{port}"], "timeout": 3},
           "domains": [{"name": "shop.example", "dkim": [
               {"selector": s, "key_file": f"{s}.pem", "algorithm": a}
               for s, (a, _) in made.items()]}]}
    cfg["domains"][0]["dkim"][3]["not_after"] = "2020-01-01T00:00:00Z"
    (tmp_path / "kmta.toml").write_text(tomli_w.dumps(cfg))
    zone = Zone(records={
        "r1._domainkey.shop.example": {"txt": [made["r1"][1]]},
        "e1._domainkey.shop.example": {"txt": [made["e1"][1]]},
        # r2's name publishes r1's key: a mismatch; gone's record is absent (retired)
        "r2._domainkey.shop.example": {"txt": [made["r1"][1]]},
    })
    with DnsServerThread(zone, port=port):
        r = kmta("--config", "kmta.toml", "dkim", "check", cwd=tmp_path)
    lines = {x.split()[0]: x for x in r.stdout.splitlines()}
    assert " ok " in lines["r1._domainkey.shop.example"]
    assert "2048 bits, signing now" in lines["r1._domainkey.shop.example"]
    assert " ok " in lines["e1._domainkey.shop.example"]
    assert " mismatch " in lines["r2._domainkey.shop.example"]
    assert " missing " in lines["gone._domainkey.shop.example"]
    assert "retired" in lines["gone._domainkey.shop.example"]
    assert r.returncode == 1  # r2 signs now and DNS does not match it


def test_worker_refuses_to_start_with_a_bad_key(tmp_path: Path) -> None:
    r = kmta("dkim", "keygen", "shop.example", "ok", "--out", "ok.pem", cwd=tmp_path)
    assert r.returncode == 0
    (tmp_path / "kmta.toml").write_text(tomli_w.dumps({
        "kafka": {"bootstrap_servers": "127.0.0.1:1"},  # never reached: the keys fail first
        "domains": [{"name": "shop.example", "dkim": [
            {"selector": "ok", "key_file": "ok.pem"},
            {"selector": "ed", "key_file": "ok.pem", "algorithm": "ed25519-sha256"},
            {"selector": "gone", "key_file": "missing.pem"}]}]}))
    r = kmta("--config", "kmta.toml", "worker", cwd=tmp_path)
    assert r.returncode == 2
    assert "selector ed" in r.stderr and "needs an Ed25519 key" in r.stderr
    assert "selector gone" in r.stderr and "cannot read the key file" in r.stderr
    assert "Traceback" not in r.stderr
