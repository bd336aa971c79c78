"""Which IP addresses a sender may connect to: the allowed networks minus special-use ranges.

An MX record is data anyone controls: a hostile or broken domain can point its MX at
127.0.0.1, 10.0.0.5 or 169.254.169.254 (a cloud metadata service) and make the MTA talk SMTP to
the operator's own network. So even inside a broad ``delivery.allowed_networks`` such as
``0.0.0.0/0`` the special-use ranges of the IANA registries (RFC 6890 and the RFCs cited below)
are refused, unless a network listed in ``delivery.allow_special`` opens them (tests and the
demo open loopback). IPv4 embedded in IPv6 (mapped ``::ffff:0:0/96``, NAT64, 6to4) is judged
as the IPv4 address it carries.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Sequence

__all__ = ["SPECIAL_NETWORKS", "refusal", "special_range"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

SPECIAL_NETWORKS: tuple[tuple[Network, str], ...] = tuple(
    (ipaddress.ip_network(net), what) for net, what in (
        ("0.0.0.0/8", "'this network' (RFC 791)"),
        ("10.0.0.0/8", "private (RFC 1918)"),
        ("100.64.0.0/10", "carrier-grade NAT (RFC 6598)"),
        ("127.0.0.0/8", "loopback (RFC 1122)"),
        ("169.254.0.0/16", "link-local, cloud metadata service (RFC 3927)"),
        ("172.16.0.0/12", "private (RFC 1918)"),
        ("192.0.0.0/24", "IETF protocol assignments (RFC 6890)"),
        ("192.0.2.0/24", "documentation (RFC 5737)"),
        ("192.88.99.0/24", "6to4 relay anycast (RFC 7526)"),
        ("192.168.0.0/16", "private (RFC 1918)"),
        ("198.18.0.0/15", "benchmarking (RFC 2544)"),
        ("198.51.100.0/24", "documentation (RFC 5737)"),
        ("203.0.113.0/24", "documentation (RFC 5737)"),
        ("224.0.0.0/4", "multicast (RFC 5771)"),
        ("240.0.0.0/4", "reserved, broadcast (RFC 1112, RFC 919)"),
        ("::/128", "unspecified (RFC 4291)"),
        ("::1/128", "loopback (RFC 4291)"),
        ("100::/64", "discard-only (RFC 6666)"),
        ("2001::/23", "IETF protocol assignments, Teredo (RFC 2928, RFC 4380)"),
        ("2001:db8::/32", "documentation (RFC 3849)"),
        ("3fff::/20", "documentation (RFC 9637)"),
        ("fc00::/7", "unique local (RFC 4193)"),
        ("fe80::/10", "link-local (RFC 4291)"),
        ("fec0::/10", "site-local, deprecated (RFC 3879)"),
        ("ff00::/8", "multicast (RFC 4291)"),
    ))
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


def _embedded_v4(addr: Address) -> ipaddress.IPv4Address | None:
    if not isinstance(addr, ipaddress.IPv6Address):
        return None
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    if addr.sixtofour is not None:
        return addr.sixtofour
    if any(addr in n for n in _NAT64):
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    if int(addr) >> 32 == 0 and int(addr) > 1:  # IPv4-compatible ::a.b.c.d (RFC 4291, obsolete)
        return ipaddress.IPv4Address(int(addr))
    return None


def special_range(addr: Address) -> str | None:
    """What special-use range ``addr`` is in (e.g. ``"private (RFC 1918)"``), or None."""
    for net, what in SPECIAL_NETWORKS:
        if addr.version == net.version and addr in net:
            return what
    return None


def refusal(ip: str, allowed: Sequence[Network], allow_special: Sequence[Network] = ()
            ) -> str | None:
    """Why a sender must not connect to ``ip`` (None: it may). It may when the address is
    inside ``allowed`` and either in no special-use range or inside ``allow_special``."""
    try:
        addr: Address = ipaddress.ip_address(ip)
    except ValueError:
        return f"{ip!r} is not an IP address"
    v4 = _embedded_v4(addr)
    if not (_inside(addr, allowed) or (v4 is not None and _inside(v4, allowed))):
        return f"{ip} is outside delivery.allowed_networks"
    for a in (addr, v4):
        if a is None:
            continue
        what = special_range(a)
        if what is not None and not _inside(a, allow_special):
            carried = f" (it carries IPv4 {a})" if a is not addr else ""
            return f"{ip}{carried} is {what}: refused unless delivery.allow_special lists it"
    return None


def _inside(addr: Address, nets: Sequence[Network]) -> bool:
    return any(addr.version == n.version and addr in n for n in nets)
