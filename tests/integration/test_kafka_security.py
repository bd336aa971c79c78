"""kmta against a secured broker: the repo's own Kafka started with a SASL_SSL listener
(private CA, SCRAM users made at format time, client certificates required), and the real
pipeline (worker, sender, simulated providers) configured for it. A wrong password, a missing
client certificate or an untrusted CA stop a process at start with a clear error."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomli_w

from kmta.config import Config, KafkaConfig
from kmta.pipeline.kafkaio import client_options, ensure_topics
from ops.kafka import manager
from ops.kafka.cli import default_cache_dir
from ops.kafka.layout import CONTROLLER_PORT_OFFSET, SASL_PORT_OFFSET
from tests.harness import ROOT, Pipeline, messages, run, wait_for

pytestmark = pytest.mark.integration


def _free_base_port() -> int:
    """A port free together with its controller and SASL_SSL companions."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + SASL_PORT_OFFSET > 65535:
            continue
        try:
            for p in (port + CONTROLLER_PORT_OFFSET, port + SASL_PORT_OFFSET):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port triple")


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[manager.ClusterInfo]:
    kafka_home = os.environ.get("KAFKA_HOME")
    libs = manager.ensure_jars(default_cache_dir(os.environ),
                               kafka_home=Path(kafka_home) if kafka_home else None)
    data = tmp_path_factory.mktemp("kafka-sasl")
    info = manager.start(data, 1, _free_base_port(), libs=libs, heap="512m", sasl_ssl=True,
                         client_auth="required")
    try:
        yield info
    finally:
        manager.stop(data)


def _settings(info: manager.ClusterInfo, **over: object) -> dict:
    assert info.security is not None and info.sasl_bootstrap_servers
    return {**info.security.client_settings(info.sasl_bootstrap_servers), **over}


def test_a_message_goes_through_the_pipeline_over_sasl_ssl(secure: manager.ClusterInfo,
                                                            tmp_path: Path) -> None:
    settings = _settings(secure)
    assert settings["security_protocol"] == "SASL_SSL" and settings["ssl_certfile"]
    written = (secure.data_dir / "security" / "kmta-kafka.toml").read_text()
    assert secure.security and secure.security.password in written  # the file to paste (0600)
    assert (secure.data_dir / "security" / "kmta-kafka.toml").stat().st_mode & 0o077 == 0

    # the pipeline is given only the SASL_SSL listener: a plaintext client could not use it
    p = Pipeline(str(secure.sasl_bootstrap_servers), tmp_path, extra={"kafka": settings})
    try:
        p.start(senders=1)
        ids = p.produce(messages(3, ["gmail.com", "yahoo.com"], prefix="sasl"))
        finals = p.wait_finals(ids, timeout=90)
        assert {f["status"] for f in finals.values()} == {"delivered"}
        wait_for(lambda: set(ids) <= {e.get("kmta_id") for e in p.sim_events()
                                      if e["event"] == "accepted"}, 10, "the providers' log")
        # the brain (faust, through broker_credentials) consumed the results and answered
        wait_for(lambda: {"gmail", "yahoo"} <= {s.get("isp") for s in p.read_topic("state")},
                 30, "the brain's state records")
        # `kmta status` (the dashboard's reader) and `kmta pause` (the control producer and
        # audit reader) over the same listener
        status = _kmta(tmp_path, p.config_path, "status", "--json")
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["totals"]["delivered"] == 3
        pause = _kmta(tmp_path, p.config_path, "pause", "gmail", "--wait", "30")
        assert pause.returncode == 0 and "applied" in pause.stdout + pause.stderr, pause
        for name in ("worker", "sender-1"):
            assert "Unable to bootstrap" not in p.log(name)
            assert secure.security.password not in p.log(name)
    finally:
        p.close()


def _kmta(tmp_path: Path, config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kmta.cli", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def _kmta_topics(tmp_path: Path, kafka: dict) -> subprocess.CompletedProcess:
    path = tmp_path / "bad.toml"
    path.write_text(tomli_w.dumps({"kafka": {**kafka, "topic_prefix": "bad."}}))
    return _kmta(tmp_path, path, "topics")


@pytest.mark.parametrize(("over", "reason"), [
    ({"sasl_password": "wrong-password"},
     "the broker refused the login (wrong user name or password?)"),
    ({"ssl_certfile": None, "ssl_keyfile": None}, "does it require a client certificate?"),
    ({"ssl_cafile": None}, "the broker's certificate is not trusted"),
])
def test_a_refused_connection_is_a_clear_error(secure: manager.ClusterInfo, tmp_path: Path,
                                               over: dict, reason: str) -> None:
    kafka = {k: v for k, v in _settings(secure, **over).items() if v is not None}
    proc = _kmta_topics(tmp_path, kafka)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "kmta: Kafka (SASL_SSL, SCRAM-SHA-512 user 'kmta')" in proc.stderr
    assert reason in proc.stderr
    assert "wrong-password" not in proc.stderr and secure.security.password not in proc.stderr


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "PLAIN"])
def test_every_supported_mechanism_logs_in(secure: manager.ClusterInfo, mechanism: str) -> None:
    cfg = Config(kafka=KafkaConfig(**_settings(secure, sasl_mechanism=mechanism,
                                               topic_prefix=f"mech{mechanism[-3:]}.")))
    run(ensure_topics(cfg, timeout=30))
    from aiokafka.admin import AIOKafkaAdminClient

    async def topics() -> list[str]:
        admin = AIOKafkaAdminClient(**client_options(cfg))
        await admin.start()
        try:
            return await admin.list_topics()
        finally:
            await admin.close()
    assert cfg.topic("outbox") in run(topics())
