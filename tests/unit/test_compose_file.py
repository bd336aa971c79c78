"""docker-compose.yml and the Dockerfile (no Docker engine here: checked as data).

Every kmta command in the compose file must parse with the real ``kmta`` argument parser, the
embedded config must load as a kmta Config and point at the compose broker, and the sender must
stay scalable (no fixed name, no host ports).
"""
from __future__ import annotations

import argparse
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from kmta.cli import build_parser
from kmta.config import Config

ROOT = Path(__file__).resolve().parents[2]
KMTA_SERVICES = {"topics": "topics", "worker": "worker", "sender": "sender",
                 "dashboard": "dashboard"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def parse(argv: list[str]) -> argparse.Namespace:
    try:
        return build_parser().parse_args(argv)
    except SystemExit as e:  # argparse reports a bad command line by exiting
        raise AssertionError(f"kmta {' '.join(argv)}: not a valid kmta command line") from e


def config_of(compose: dict[str, Any], service: dict[str, Any], path: str) -> Config:
    (mount,) = [c for c in service["configs"] if c["target"] == path]
    text = compose["configs"][mount["source"]]["content"]
    return Config.model_validate(tomllib.loads(text))


def test_services(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == {"kafka", *KMTA_SERVICES}


def test_kafka_is_a_single_kraft_node(services: dict[str, dict[str, Any]]) -> None:
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert "zookeeper" not in yaml.safe_dump(services).lower()
    listeners = dict(x.split("://") for x in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    assert listeners["INTERNAL"] == "kafka:9092"
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == 1
    assert "healthcheck" in kafka


@pytest.mark.parametrize(("name", "subcommand"), sorted(KMTA_SERVICES.items()))
def test_kmta_commands_are_real_subcommands(compose: dict[str, Any],
                                            services: dict[str, dict[str, Any]], name: str,
                                            subcommand: str) -> None:
    svc = services[name]
    assert svc["build"] == {"context": ".", "dockerfile": "Dockerfile"}
    assert svc.get("entrypoint") is None  # the image's: ["kmta"]
    args = parse(svc["command"])
    assert args.command == subcommand
    config = config_of(compose, svc, args.config)
    assert config.kafka.bootstrap_servers == "kafka:9092"


def test_start_order(services: dict[str, dict[str, Any]]) -> None:
    assert services["topics"]["depends_on"] == {"kafka": {"condition": "service_healthy"}}
    assert services["topics"]["restart"] == "no"
    for name in ("worker", "sender", "dashboard"):
        assert services[name]["depends_on"] == {
            "topics": {"condition": "service_completed_successfully"}}


def test_sender_scales(services: dict[str, dict[str, Any]]) -> None:
    sender = services["sender"]
    assert "container_name" not in sender and "ports" not in sender and "hostname" not in sender
    assert "--node" not in sender["command"]  # each replica names itself (host-pid)


def test_dashboard_is_published_and_needs_a_password(compose: dict[str, Any],
                                                     services: dict[str, dict[str, Any]]) -> None:
    dash = services["dashboard"]
    args = parse(dash["command"])
    assert args.host == "0.0.0.0"
    assert dash["ports"] == [f"127.0.0.1:{args.port}:{args.port}"]
    config = config_of(compose, dash, args.config)
    # demo mode generates a password; production without one refuses to start
    assert config.dashboard.mode == "demo" or config.dashboard.password is not None


def test_the_shipped_config_delivers_nowhere_by_default(compose: dict[str, Any],
                                                        services: dict[str, dict[str, Any]]
                                                        ) -> None:
    sender = services["sender"]
    config = config_of(compose, sender, parse(sender["command"]).config)
    assert config.delivery.allowed_networks == ["127.0.0.0/8"]


def test_dockerfile() -> None:
    lines = [ln.strip() for ln in (ROOT / "Dockerfile").read_text().splitlines()
             if ln.strip() and not ln.lstrip().startswith("#")]
    assert lines[0] == "FROM python:3.11-slim"
    assert any(ln.startswith("RUN pip install .") for ln in lines)
    assert 'ENTRYPOINT ["kmta"]' in lines
    assert any(ln.startswith("USER ") and ln != "USER root" for ln in lines)
    copied = {ln.split()[1] for ln in lines if ln.startswith("COPY ")}
    # every package pyproject installs is in the image
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"][
        "include"]}
    assert packages | {"pyproject.toml"} <= copied
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert all(f"!{p}/" in ignore for p in packages)
