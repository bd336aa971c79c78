"""Which destinations a sender may connect to (kmta.policy.destinations): allowed networks
minus the special-use ranges, which only ``delivery.allow_special`` opens."""
from __future__ import annotations

import ipaddress

import pytest

from kmta.config import DeliveryConfig
from kmta.policy.destinations import refusal
from senders.transport import SmtpTransport

INTERNET = [ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")]
LOOPBACK = [ipaddress.ip_network("127.0.0.0/8")]


@pytest.mark.parametrize(("ip", "why"), [
    ("127.0.0.1", "loopback"), ("127.255.255.254", "loopback"), ("::1", "loopback"),
    ("10.0.0.5", "RFC 1918"), ("172.16.0.1", "RFC 1918"), ("172.31.255.255", "RFC 1918"),
    ("192.168.1.1", "RFC 1918"), ("100.64.0.1", "carrier-grade NAT"),
    ("100.127.255.255", "carrier-grade NAT"), ("169.254.169.254", "metadata"),
    ("169.254.0.1", "link-local"), ("fe80::1", "link-local"), ("fe80::1%eth0", "link-local"),
    ("fc00::1", "unique local"), ("fd12:3456::1", "unique local"), ("0.0.0.0", "this network"),
    ("::", "unspecified"), ("224.0.0.251", "multicast"), ("239.1.1.1", "multicast"),
    ("ff02::1", "multicast"), ("255.255.255.255", "broadcast"), ("240.0.0.1", "reserved"),
    ("192.0.2.10", "documentation"), ("2001:db8::1", "documentation"),
    ("198.18.0.1", "benchmarking"), ("192.0.0.8", "IETF"), ("2001::1", "Teredo"),
    ("fec0::1", "site-local"), ("100::1", "discard"),
    # IPv4 inside IPv6 is judged as the IPv4 address
    ("::ffff:127.0.0.1", "carries IPv4 127.0.0.1"), ("::ffff:10.0.0.5", "carries IPv4 10.0.0.5"),
    ("::ffff:169.254.169.254", "metadata"), ("64:ff9b::10.0.0.1", "carries IPv4 10.0.0.1"),
    ("2002:a9fe:a9fe::1", "carries IPv4 169.254.169.254"), ("::127.0.0.1", "carries IPv4"),
])
def test_special_ranges_are_refused_inside_the_whole_internet(ip: str, why: str) -> None:
    reason = refusal(ip, INTERNET)
    assert reason is not None and why in reason and "allow_special" in reason


@pytest.mark.parametrize("ip", ["8.8.8.8", "142.250.1.27", "2607:f8b0:4004:c1b::1a",
                                "::ffff:8.8.8.8", "64:ff9b::8.8.8.8", "100.63.255.255",
                                "100.128.0.0", "172.32.0.1", "169.253.255.255"])
def test_public_addresses_pass(ip: str) -> None:
    assert refusal(ip, INTERNET) is None


def test_allow_special_opens_only_what_it_lists_and_only_inside_allowed() -> None:
    assert refusal("127.0.0.1", INTERNET, LOOPBACK) is None
    assert refusal("::ffff:127.0.0.1", INTERNET, LOOPBACK) is None
    assert refusal("127.0.0.1", LOOPBACK, LOOPBACK) is None
    assert "RFC 1918" in refusal("10.0.0.5", INTERNET, LOOPBACK)
    assert "loopback" in refusal("::1", INTERNET, LOOPBACK)  # IPv6 loopback not listed
    # allow_special never widens allowed_networks
    assert "outside delivery.allowed_networks" in refusal(
        "127.0.0.1", [ipaddress.ip_network("8.8.8.0/24")], LOOPBACK)
    assert "outside" in refusal("9.9.9.9", LOOPBACK, LOOPBACK)
    assert "not an IP address" in refusal("mx.example", INTERNET)


def test_the_transport_and_config_use_it() -> None:
    cfg = DeliveryConfig(allowed_networks=["0.0.0.0/0", "::/0"])
    t = SmtpTransport(25, "h", cfg.allowed_networks, allow_special=cfg.allow_special)
    assert not t.allowed("127.0.0.1") and not t.allowed("169.254.169.254")
    assert t.allowed("8.8.8.8")
    assert "loopback" in t.refusal("127.0.0.1")
    # the default config delivers nowhere: loopback is allowed but not opened
    default = DeliveryConfig()
    assert not SmtpTransport(25, "h", default.allowed_networks,
                             allow_special=default.allow_special).allowed("127.0.0.1")
    tests = DeliveryConfig(allowed_networks=["127.0.0.0/8"], allow_special=["127.0.0.0/8"])
    assert SmtpTransport(25, "h", tests.allowed_networks, allow_special=tests.allow_special).allowed(
        "127.0.1.1")
    with pytest.raises(ValueError):
        DeliveryConfig(allow_special=["not a network"])
