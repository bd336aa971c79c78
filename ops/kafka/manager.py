"""Assemble, start, stop and inspect a local Apache Kafka (KRaft) cluster without Docker.

The broker jars come from Maven Central via ``pom.xml`` next to this module (or from an installed
Kafka's ``libs/``). Layout of a data dir::

    cluster.json                 cluster id and node specs, written on first start
    node-N/server.properties     rewritten on every start (see layout.server_properties)
    node-N/data/                 log.dirs, formatted once
    node-N/logs/server.log       log4j2 output (log4j2.properties next to this module)
    node-N/stdout.log            JVM stdout/stderr: crashes before logging starts land here
    node-N/kafka.pid
    security/                    CA, client certificate, SASL user (``start(sasl_ssl=True)``)
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ops.kafka import process, security
from ops.kafka.layout import (
    NodeSpec,
    load_layout,
    new_cluster_id,
    node_dir,
    node_specs,
    save_layout,
    server_properties,
)
from ops.kafka.probe import alive_broker_ids, api_versions_ok

__all__ = [
    "ClusterInfo",
    "KafkaManagerError",
    "KafkaSetupError",
    "KafkaStartError",
    "NodeStatus",
    "ensure_jars",
    "start",
    "status",
    "stop",
]

HERE = Path(__file__).resolve().parent
POM = HERE / "pom.xml"
LOG4J2_CONFIG = HERE / "log4j2.properties"
_POLL = 0.2
_MARKER = ".pom-sha256"


class KafkaManagerError(Exception):
    """Base error of the Kafka manager."""


class KafkaSetupError(KafkaManagerError):
    """Prerequisites (Java, Maven or KAFKA_HOME, a compatible data dir) are missing."""


class KafkaStartError(KafkaManagerError):
    """A broker process died or did not become ready in time."""


@dataclass(frozen=True)
class ClusterInfo:
    """What ``start`` brought up (or found already running)."""

    data_dir: Path
    cluster_id: str
    nodes: tuple[NodeSpec, ...]
    already_running: bool = False
    security: security.Security | None = None

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(node.bootstrap for node in self.nodes)

    @property
    def sasl_bootstrap_servers(self) -> str | None:
        """The SASL_SSL listeners, when the cluster was started with ``sasl_ssl``."""
        if self.security is None:
            return None
        return ",".join(str(node.sasl_bootstrap) for node in self.nodes)


@dataclass(frozen=True)
class NodeStatus:
    """Liveness of one node as seen from its pid file and its client port."""

    node_id: int
    port: int
    pid: int | None
    alive: bool
    listening: bool

    @property
    def running(self) -> bool:
        return self.alive and self.listening


def ensure_jars(cache_dir: Path, *, kafka_home: Path | None = None, mvn: str | None = None) -> Path:
    """Return a directory of broker jars, assembling it with Maven once per pom revision.

    ``cache_dir/libs`` is reused while its marker holds the current pom's hash. Without Maven
    (``mvn`` or on PATH), ``kafka_home/libs`` of an installed Kafka is used instead.
    """
    pom_hash = hashlib.sha256(POM.read_bytes()).hexdigest()
    libs = Path(cache_dir) / "libs"
    marker = libs / _MARKER
    if marker.is_file() and marker.read_text().strip() == pom_hash:
        return libs
    mvn = mvn or shutil.which("mvn")
    if mvn is None:
        if kafka_home is not None and (Path(kafka_home) / "libs").is_dir():
            return Path(kafka_home) / "libs"
        raise KafkaSetupError(
            "cannot assemble Kafka: need Java 17+ and either Maven (`mvn` on PATH, with access "
            "to Maven Central) or KAFKA_HOME pointing at an installed Kafka 4.x with a libs/ dir"
        )
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="libs.tmp-", dir=cache_dir))
    cmd = [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
           f"-DoutputDirectory={staging}", "-DincludeScope=runtime"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        output = process.tail(proc.stdout + proc.stderr)
        raise KafkaSetupError(f"maven failed ({proc.returncode}):\n{output}")
    (staging / _MARKER).write_text(pom_hash + "\n")
    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)
    return libs


def start(
    data_dir: Path,
    brokers: int = 1,
    base_port: int = 9092,
    host: str = "127.0.0.1",
    heap: str = "512m",
    *,
    libs: Path,
    java: str = "java",
    timeout: float = 120.0,
    sasl_ssl: bool = False,
    client_auth: security.ClientAuth = "none",
) -> ClusterInfo:
    """Start every node of the cluster in ``data_dir`` that is not running; wait until all serve.

    Ready means each broker answers ApiVersions and lists all ``brokers`` nodes as unfenced in
    Metadata. Raises KafkaStartError (with log tails) if a node dies or the deadline passes.
    With ``sasl_ssl`` each node also serves a SASL_SSL listener (see ops.kafka.security;
    ``client_auth`` = whether it asks clients for a certificate).
    """
    if brokers < 1:
        raise KafkaSetupError("brokers must be >= 1")
    if shutil.which(java) is None:
        raise KafkaSetupError(f"`{java}` not found: Java 17+ is needed to run Kafka")
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    cluster_id = _cluster_id(data_dir, brokers, sasl_ssl)
    nodes = node_specs(brokers, base_port, host, sasl_ssl)
    sec = security.prepare(data_dir, client_auth=client_auth) if sasl_ssl else None
    alive_ids = {st.node_id for st in status(data_dir) if st.alive}
    down = [node for node in nodes if node.node_id not in alive_ids]
    if not down:
        _wait_ready(data_dir, nodes, time.monotonic() + timeout)
        return ClusterInfo(data_dir, cluster_id, nodes, already_running=True, security=sec)
    save_layout(data_dir, cluster_id, nodes)
    for node in nodes:
        ndir = node_dir(data_dir, node.node_id)
        (ndir / "logs").mkdir(parents=True, exist_ok=True)
        extra = sec.broker_properties(node) if sec else None
        props = ndir / "server.properties"
        props.touch(mode=0o600)  # it may hold the PLAIN user's password and a private key
        os.chmod(props, 0o600)
        props.write_text(server_properties(ndir / "data", node, nodes, extra))
    _format(data_dir, cluster_id, down, libs, java, sec.scram_args() if sec else [])
    for node in down:
        ndir = node_dir(data_dir, node.node_id)
        process.launch(ndir, _java_command(ndir, _tag(data_dir, node.node_id), libs, java, heap))
    _wait_ready(data_dir, nodes, time.monotonic() + timeout)
    info = ClusterInfo(data_dir, cluster_id, nodes, security=sec)
    if sec is not None:
        security.write_client_config(sec, str(info.sasl_bootstrap_servers))
    return info


def stop(data_dir: Path, timeout: float = 30.0) -> list[int]:
    """SIGTERM every running node, SIGKILL whatever outlives ``timeout``; return the stopped ids."""
    data_dir = Path(data_dir).resolve()
    running = [(st.node_id, st.pid) for st in status(data_dir) if st.pid is not None]

    def survivors() -> list[int]:
        return [pid for node_id, pid in running if process.alive(pid, _tag(data_dir, node_id))]

    for _, pid in running:
        process.send_signal(pid, signal.SIGTERM)
    if not _wait_until(lambda: not survivors(), timeout):
        for pid in survivors():
            process.send_signal(pid, signal.SIGKILL)
        _wait_until(lambda: not survivors(), 10.0)
    for pid_file in data_dir.glob(f"node-*/{process.PID_FILE}"):
        pid_file.unlink(missing_ok=True)
    return [node_id for node_id, _ in running]


def status(data_dir: Path) -> list[NodeStatus]:
    """Per-node pid liveness and client-port reachability; empty if no cluster was ever started."""
    data_dir = Path(data_dir).resolve()
    layout = load_layout(data_dir)
    if layout is None:
        return []
    result = []
    for spec in layout["nodes"]:
        node = NodeSpec(**spec)
        pid = process.read_pid(node_dir(data_dir, node.node_id))
        alive = pid is not None and process.alive(pid, _tag(data_dir, node.node_id))
        listening = process.listening(node.host, node.port)
        result.append(NodeStatus(node.node_id, node.port, pid if alive else None, alive, listening))
    return result


def _tag(data_dir: Path, node_id: int) -> str:
    """A JVM option that marks a node's process, so a recycled pid is never mistaken for it."""
    return f"-Dkmta.kafka.node={node_dir(data_dir, node_id)}"


def _wait_until(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(_POLL)
    return True


def _java_command(ndir: Path, tag: str, libs: Path, java: str, heap: str) -> list[str]:
    return [
        java,
        f"-Xmx{heap}",
        "-Xms64m",  # grow on demand: several nodes share a small machine
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-XX:InitiatingHeapOccupancyPercent=35",
        "-XX:+ExplicitGCInvokesConcurrent",
        "-XX:+ExitOnOutOfMemoryError",
        "-Djava.awt.headless=true",
        f"-Dkafka.logs.dir={ndir / 'logs'}",
        f"-Dlog4j2.configurationFile={LOG4J2_CONFIG}",
        tag,
        "-cp",
        f"{libs}/*",
        "kafka.Kafka",
        str(ndir / "server.properties"),
    ]


def _cluster_id(data_dir: Path, brokers: int, sasl_ssl: bool) -> str:
    layout = load_layout(data_dir)
    if layout is None:
        return new_cluster_id()
    if len(layout["nodes"]) != brokers:
        raise KafkaSetupError(
            f"{data_dir} holds a {len(layout['nodes'])}-broker cluster, not {brokers}: "
            "use another data dir or delete this one"
        )
    if sasl_ssl and layout["nodes"][0].get("sasl_port") is None:
        raise KafkaSetupError(
            f"{data_dir} was formatted without SASL users (they are created at format time): "
            "use another data dir for a SASL_SSL cluster or delete this one"
        )
    return str(layout["cluster_id"])


def _format(
    data_dir: Path,
    cluster_id: str,
    nodes: list[NodeSpec],
    libs: Path,
    java: str,
    extra_args: list[str],
) -> None:
    """Format the storage of nodes that were never formatted, all JVMs in parallel;
    ``extra_args`` e.g. create SCRAM users (``--add-scram``)."""
    procs = []
    for node in nodes:
        ndir = node_dir(data_dir, node.node_id)
        if (ndir / "data" / "meta.properties").exists():
            continue
        cmd = [java, "-cp", f"{libs}/*", "kafka.tools.StorageTool", "format", "--ignore-formatted",
               "-t", cluster_id, "-c", str(ndir / "server.properties"), *extra_args]  # fmt: skip
        pipe = subprocess.PIPE
        procs.append((node, subprocess.Popen(cmd, stdout=pipe, stderr=subprocess.STDOUT)))
    for node, proc in procs:
        out = proc.communicate()[0].decode(errors="replace")
        if proc.returncode != 0:
            raise KafkaStartError(f"formatting node {node.node_id} failed:\n{process.tail(out)}")


def _wait_ready(data_dir: Path, nodes: tuple[NodeSpec, ...], deadline: float) -> None:
    want = {node.node_id for node in nodes}
    pending = list(nodes)
    while pending:
        for node in list(pending):
            ndir = node_dir(data_dir, node.node_id)
            pid = process.read_pid(ndir)
            if pid is None or not process.alive(pid, _tag(data_dir, node.node_id)):
                raise KafkaStartError(
                    f"node {node.node_id} exited during startup:\n{process.log_tail(ndir)}"
                )
            try:
                if api_versions_ok(node.host, node.port) and want <= alive_broker_ids(
                    node.host, node.port
                ):
                    pending.remove(node)
            except OSError:
                pass  # listener not up yet
        if pending and time.monotonic() > deadline:
            ids = ", ".join(str(n.node_id) for n in pending)
            tail = process.log_tail(node_dir(data_dir, pending[0].node_id))
            raise KafkaStartError(f"node(s) {ids} not ready in time:\n{tail}")
        if pending:
            time.sleep(_POLL)
