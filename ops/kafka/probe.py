"""A tiny synchronous Kafka wire-protocol probe used to tell when a broker is ready.

Only two requests are spoken, both in old non-flexible versions every Kafka 4.x broker accepts:
ApiVersions v0 (does the listener answer Kafka requests?) and Metadata v4 with an empty topic
list (which brokers are registered and unfenced?). Keeping this dependency-free lets the manager
stay synchronous and usable before any Python Kafka client is configured.
"""

from __future__ import annotations

import socket
import struct

__all__ = ["ProbeError", "alive_broker_ids", "api_versions_ok"]

_API_METADATA = 3
_API_VERSIONS = 18
_CLIENT_ID = b"kmta-probe"


class ProbeError(OSError):
    """The broker could not be reached or answered something unexpected."""


def _request(
    host: str, port: int, api_key: int, version: int, body: bytes, timeout: float
) -> bytes:
    header = struct.pack(">hhih", api_key, version, 1, len(_CLIENT_ID)) + _CLIENT_ID
    payload = header + body
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(struct.pack(">i", len(payload)) + payload)
            size = struct.unpack(">i", _recv_exact(sock, 4))[0]
            response = _recv_exact(sock, size)
    except (OSError, struct.error) as exc:
        raise ProbeError(f"{host}:{port}: {exc}") from exc
    if struct.unpack(">i", response[:4])[0] != 1:
        raise ProbeError(f"{host}:{port}: correlation id mismatch")
    return response[4:]


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < n:
        chunk = sock.recv(n - len(chunks))
        if not chunk:
            raise ProbeError("connection closed mid-response")
        chunks += chunk
    return bytes(chunks)


def api_versions_ok(host: str, port: int, timeout: float = 2.0) -> bool:
    """Return True if the listener at host:port answers ApiVersions without an error code."""
    try:
        body = _request(host, port, _API_VERSIONS, 0, b"", timeout)
    except ProbeError:
        return False
    error_code: int = struct.unpack(">h", body[:2])[0]
    return error_code == 0


def alive_broker_ids(host: str, port: int, timeout: float = 2.0) -> set[int]:
    """Return the node ids the broker at host:port lists in Metadata (unfenced brokers only).

    Raises ProbeError if the broker cannot be reached.
    """
    # Metadata v4 body: topics = empty array (no topic metadata), allow_auto_topic_creation = false.
    body = _request(host, port, _API_METADATA, 4, struct.pack(">ib", 0, 0), timeout)
    try:
        offset = 4  # throttle_time_ms
        (count,) = struct.unpack_from(">i", body, offset)
        offset += 4
        ids: set[int] = set()
        for _ in range(count):
            node_id, host_len = struct.unpack_from(">ih", body, offset)
            offset += 6 + host_len + 4  # node_id, host, port
            (rack_len,) = struct.unpack_from(">h", body, offset)
            offset += 2 + max(rack_len, 0)
            ids.add(node_id)
    except struct.error as exc:
        raise ProbeError(f"{host}:{port}: malformed Metadata response") from exc
    return ids
