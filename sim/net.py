"""Loopback guard: the simulators listen on, and point senders at, 127.0.0.0/8 only."""

from __future__ import annotations

import ipaddress

from kmta.errors import ConfigError

__all__ = ["require_loopback", "split_hostport"]


def require_loopback(address: str, what: str = "address") -> str:
    """Return ``address`` if it is an IPv4 loopback address, else raise :class:`ConfigError`."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise ConfigError(f"{what} {address!r} is not an IP address") from None
    if ip.version != 4 or not ip.is_loopback:
        raise ConfigError(
            f"{what} {address} is not in 127.0.0.0/8: the simulators stay on loopback"
        )
    return address


def split_hostport(text: str, default_port: int) -> tuple[str, int]:
    """``"127.0.0.1:5353"`` → ``("127.0.0.1", 5353)``; a bare host takes ``default_port``."""
    host, sep, port = text.rpartition(":")
    if not sep:
        return text, default_port
    try:
        return host, int(port)
    except ValueError:
        raise ConfigError(f"bad HOST:PORT {text!r}") from None
