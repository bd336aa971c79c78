"""Scenario parsing and the DNS zone it produces (no servers)."""

from __future__ import annotations

import dns.rcode
import dns.rdatatype
import pytest

from kmta.errors import ConfigError
from sim.dns import Zone
from sim.scenario import Scenario, default_scenario, load_scenario, mx_hosts_for

MX, A, AAAA = dns.rdatatype.MX, dns.rdatatype.A, dns.rdatatype.AAAA


def test_default_scenario_providers_and_ips():
    sc = default_scenario()
    by_name = {p.name: p for p in sc.providers}
    assert {n: p.ip for n, p in by_name.items()} == {
        "gmail": "127.0.1.1",
        "yahoo": "127.0.1.2",
        "outlook": "127.0.1.3",
        "mailru": "127.0.1.4",
        "yandex": "127.0.1.5",
        "orange": "127.0.1.6",
        "smallhosts": "127.0.1.10",
        "greylister": "127.0.1.11",
    }
    assert by_name["gmail"].behaviour.capacity == 40
    assert by_name["yahoo"].behaviour.capacity == 25
    assert by_name["outlook"].behaviour.capacity == 30
    assert by_name["mailru"].behaviour.capacity == 10
    assert by_name["gmail"].mx_host == "gmail-smtp-in.l.google.com"


def test_default_zone_rolls_real_mx_names_up_to_loopback():
    zone = default_scenario().zone()
    assert zone.answer("gmail.com", MX) == (
        dns.rcode.NOERROR,
        ["5 gmail-smtp-in.l.google.com.", "10 alt1.gmail-smtp-in.l.google.com."],
    )
    assert zone.answer("gmail-smtp-in.l.google.com", A) == (dns.rcode.NOERROR, ["127.0.1.1"])
    assert zone.answer("yahoo.com", MX)[1][0] == "1 mta5.am0.yahoodns.net."
    assert zone.answer("hotmail.com", MX)[1] == ["2 hotmail-com.olc.protection.outlook.com."]
    assert zone.answer("outlook-com.olc.protection.outlook.com", A)[1] == ["127.0.1.3"]
    assert zone.answer("mxs.mail.ru", A)[1] == ["127.0.1.4"]
    assert zone.answer("mx.yandex.ru", A)[1] == ["127.0.1.5"]
    assert zone.answer("smtp-in.orange.fr", A)[1] == ["127.0.1.6"]
    assert zone.answer("shop-example.test", MX)[1] == ["10 mx.shop-example.test."]
    assert zone.answer("mx.shop-example.test", A)[1] == ["127.0.1.10"]
    # special domains
    assert zone.answer("nx.invalid", MX) == (dns.rcode.NXDOMAIN, [])
    assert zone.answer("nullmx.test", MX) == (dns.rcode.NOERROR, ["0 ."])
    assert zone.answer("servfail.test", A) == (dns.rcode.SERVFAIL, [])
    assert zone.answer("implicit-mx.test", MX) == (dns.rcode.NOERROR, [])
    assert zone.answer("implicit-mx.test", A) == (dns.rcode.NOERROR, ["127.0.1.10"])
    assert zone.answer("gmail.com", AAAA) == (dns.rcode.NOERROR, [])


def test_every_default_a_record_is_loopback():
    zone = default_scenario().zone()
    for rec in zone.records.values():
        assert all(ip.startswith("127.") for ip in rec["a"])


def test_mx_fallbacks_per_profile():
    assert mx_hosts_for("corp.example", "gmail") == [(10, "aspmx.l.google.com")]
    assert mx_hosts_for("corp.example", "outlook") == [
        (0, "corp-example.mail.protection.outlook.com")
    ]
    assert mx_hosts_for("tiny.test", "generic") == [(10, "mx.tiny.test")]


def test_non_loopback_addresses_are_refused():
    with pytest.raises(ConfigError):
        Scenario.from_dict({"provider": [{"name": "x", "ip": "10.0.0.1", "domains": ["a.test"]}]})
    with pytest.raises(ConfigError):
        Zone({"a.test": {"a": ["192.0.2.1"]}})


def test_scenario_toml_validation(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(
        '[dns]\nnull_mx = ["n.test"]\n[[provider]]\nname = "g"\nprofile = "gmail"\n'
        'ip = "127.0.2.1"\ndomains = ["gmail.com"]\nbehaviour = { capacity = 3 }\n'
    )
    sc = load_scenario(path)
    assert sc.providers[0].behaviour.profile == "gmail" and sc.providers[0].behaviour.capacity == 3
    with pytest.raises(ConfigError, match="unknown keys"):
        Scenario.from_dict({"provider": [{"name": "g", "ip": "127.0.0.9", "domian": []}]})
    with pytest.raises(ConfigError, match="hosted by both"):
        Scenario.from_dict(
            {
                "provider": [
                    {"name": "a", "ip": "127.0.0.9", "domains": ["x.test"]},
                    {"name": "b", "ip": "127.0.0.10", "domains": ["x.test"]},
                ]
            }
        )
    with pytest.raises(ConfigError, match="TOML"):
        Scenario.from_toml("[[provider]\n")
