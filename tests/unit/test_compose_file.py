"""docker-compose.yml and the Dockerfile (no Docker engine here: checked as data).

Every kmta command in the compose file must parse with the real ``kmta`` argument parser, the
embedded config must load as a kmta Config and point at the compose broker, and the sender must
stay scalable (no fixed name, no host ports). Every healthcheck probes a path the metrics port
serves, on the port the config gives (and its command, run here against a real server, fails
when the process is not ready); Prometheus scrapes the services that serve metrics, and Grafana
gets the dashboard and the datasource it names.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from kmta.cli import build_parser
from kmta.config import Config
from kmta.pipeline.health import PATHS, Health, serving
from ops.kit import free_port

ROOT = Path(__file__).resolve().parents[2]
KMTA_SERVICES = {"topics": "topics", "worker": "worker", "sender": "sender",
                 "dashboard": "dashboard"}
LONG_RUNNING = ("worker", "sender", "dashboard")  # topics is one-shot
PROBE = re.compile(r"http://127\.0\.0\.1:(\d+)(/[a-z]+)")


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
    assert set(services) == {"kafka", *KMTA_SERVICES, "prometheus", "grafana"}
    # every service of the kmta image is one whose command is checked below
    assert {n for n, s in services.items() if s.get("image") == "kmta:local"
            or "build" in s} == set(KMTA_SERVICES)


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


def test_the_image_exposes_the_metrics_port(compose: dict[str, Any],
                                            services: dict[str, dict[str, Any]]) -> None:
    exposed = {int(p) for ln in (ROOT / "Dockerfile").read_text().splitlines()
               if ln.startswith("EXPOSE ") for p in ln.split()[1:]}
    assert {metrics_port(compose, services[n]) for n in LONG_RUNNING} <= exposed


def metrics_port(compose: dict[str, Any], service: dict[str, Any]) -> int:
    config = config_of(compose, service, parse(service["command"]).config)
    assert config.metrics.listen is not None
    host, _, port = config.metrics.listen.rpartition(":")
    assert host == "0.0.0.0"  # reachable by Prometheus in the compose network
    return int(port)


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_healthchecks_probe_the_metrics_port(compose: dict[str, Any],
                                             services: dict[str, dict[str, Any]],
                                             name: str) -> None:
    svc = services[name]
    test = svc["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]  # the image has no curl; it has python
    (probe,) = PROBE.findall(test[3])
    port, path = int(probe[0]), probe[1]
    assert port == metrics_port(compose, svc)
    assert path in PATHS and path != "/metrics"
    assert "ports" not in svc or all(str(port) not in p for p in svc["ports"])


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_healthcheck_commands_fail_until_ready(services: dict[str, dict[str, Any]],
                                               name: str) -> None:
    """The healthcheck's own command, pointed at a real metrics port here."""
    code = services[name]["healthcheck"]["test"][3]
    path = PROBE.search(code)[2]  # type: ignore[index]
    health = Health(name)
    with serving(f"127.0.0.1:{free_port()}", health) as server:
        assert server is not None
        mine = PROBE.sub(f"http://127.0.0.1:{server.port}\\2", code)

        def probe() -> int:
            return subprocess.run([sys.executable, "-c", mine], capture_output=True,
                                  timeout=30).returncode
        if path == "/readyz":
            assert probe() != 0  # starting: not ready
        health.report({})
        assert probe() == 0


def test_prometheus_scrapes_every_metrics_port(compose: dict[str, Any],
                                               services: dict[str, dict[str, Any]]) -> None:
    prom = services["prometheus"]
    assert prom["image"].startswith("prom/prometheus:")
    mounts = dict(v.split(":")[:2] for v in prom["volumes"] if v.startswith("./"))
    (src,) = [s for s, target in mounts.items() if target == "/etc/prometheus/prometheus.yml"]
    assert f"--config.file={mounts[src]}" in prom["command"]
    scrape = yaml.safe_load((ROOT / src).read_text())["scrape_configs"]
    targets = {(name, sd["port"]) for job in scrape for sd in job.get("dns_sd_configs", [])
               for name in sd["names"]}
    assert targets == {(n, metrics_port(compose, services[n])) for n in LONG_RUNNING}


def test_grafana_gets_the_dashboard_and_its_datasource(services: dict[str, dict[str, Any]]
                                                       ) -> None:
    graf = services["grafana"]
    assert graf["image"].startswith("grafana/grafana:")
    assert graf["depends_on"] == {"prometheus": {"condition": "service_healthy"}}
    mounts = {target: ROOT / src for src, target, *_ in
              (v.split(":") for v in graf["volumes"] if v.startswith("./"))}
    prov = mounts["/etc/grafana/provisioning"]
    (provider,) = yaml.safe_load((prov / "dashboards" / "kmta.yml").read_text())["providers"]
    folder = provider["options"]["path"]
    dashboards = mounts[folder]
    home = graf["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(folder + "/") and (dashboards / home[len(folder) + 1:]).is_file()
    (source,) = yaml.safe_load((prov / "datasources" / "prometheus.yml").read_text())[
        "datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == f"http://prometheus:{services['prometheus']['ports'][0].split(':')[-1]}"
    for path in dashboards.glob("*.json"):
        used = {p["datasource"]["uid"] for p in json.loads(path.read_text())["panels"]
                if "datasource" in p}
        assert used == {source["uid"]}, path
