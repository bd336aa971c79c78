"""One base exception for kmta; library errors are translated into these at the edges."""
from __future__ import annotations


class KmtaError(Exception):
    """Base of every error kmta raises on purpose."""


class ConfigError(KmtaError):
    """The configuration (TOML, rules file) is wrong; the message says where and why."""


class KafkaUnreachable(KmtaError):
    """No Kafka broker could be reached or logged into; the message says why (refused login,
    untrusted certificate, closed port...)."""


class InputError(KmtaError):
    """A message on the outbox cannot be accepted; the message is the reason."""
