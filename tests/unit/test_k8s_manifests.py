"""deploy/k8s (no cluster here: checked as data).

Every built-in object validates against the Kubernetes API's own JSON schemas (the
kubernetes-validate package ships them); the names hang together (selectors and labels, the
volumes a pod mounts, the ConfigMap and Secret they name, the Service's ports); every kmta
command line parses with the real ``kmta`` parser; the config the pods assemble loads; the
probes ask the metrics port for /healthz and /readyz; and the KEDA trigger names the consumer
group and topic the sender nodes really use.
"""
from __future__ import annotations

import shlex
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from kmta.cli import build_parser
from kmta.config import Config
from kmta.pipeline.rules import load_kb, partition_map
from senders.node import SenderNode

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUBERNETES = "1.30.0"  # the manifests use nothing newer
PROBE_PATHS = {"livenessProbe": "/healthz", "readinessProbe": "/readyz",
               "startupProbe": "/healthz"}


def load_docs() -> list[dict[str, Any]]:
    return [d for f in sorted(K8S.glob("*.yaml")) if f.name != "kustomization.yaml"
            for d in yaml.safe_load_all(f.read_text(encoding="utf-8")) if d]


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    return load_docs()


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (d,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return d


def deployments(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}


@pytest.fixture(scope="module")
def config(docs: list[dict[str, Any]]) -> Config:
    """What every pod reads: the init container joins the ConfigMap's file and the Secret's."""
    base = one(docs, "ConfigMap", "kmta-config")["data"]["kmta.toml"]
    secret = one(docs, "Secret", "kmta-secrets")["stringData"]["secrets.toml"]
    assert not tomllib.loads(base).keys() & tomllib.loads(secret).keys(), \
        "a table in both files: the joined TOML would define it twice"
    return Config.model_validate(tomllib.loads(base + "\n" + secret))


def test_kustomization_lists_every_file() -> None:
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {f.name for f in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kust["resources"]) == sorted(files)


# the KEDA custom resource has no schema there: test_keda_scales_senders_on_queue_lag checks it
@pytest.mark.parametrize("doc", [d for d in load_docs() if not d["apiVersion"].startswith("keda")],
                         ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_valid_against_the_kubernetes_schemas(doc: dict[str, Any]) -> None:
    # strict: an unknown or misspelt field fails (e.g. readinesProbe), not only a wrong type
    kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def test_the_three_process_kinds(docs: list[dict[str, Any]]) -> None:
    assert set(deployments(docs)) == {"kmta-worker", "kmta-sender", "kmta-dashboard"}


def test_selectors_labels_and_volumes(docs: list[dict[str, Any]]) -> None:
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for name, dep in deployments(docs).items():
        pod = dep["spec"]["template"]
        labels = pod["metadata"]["labels"]
        assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items(), name
        assert labels["app.kubernetes.io/component"] == name.removeprefix("kmta-")
        spec = pod["spec"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        for c in spec["containers"] + spec.get("initContainers", []):
            for m in c.get("volumeMounts", []):
                assert m["name"] in volumes, f"{name}/{c['name']} mounts {m['name']}"
        assert ("ConfigMap", volumes["config"]["configMap"]["name"]) in names
        assert ("Secret", volumes["secrets"]["secret"]["secretName"]) in names
    svc = one(docs, "Service", "kmta-dashboard")
    pod = deployments(docs)["kmta-dashboard"]["spec"]["template"]
    assert svc["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    ports = {p["name"] for c in pod["spec"]["containers"] for p in c["ports"]}
    assert {p["targetPort"] for p in svc["spec"]["ports"]} <= ports


def _argv(args: list[str], env: dict[str, str]) -> list[str]:
    """The container's arguments as Kubernetes expands them: ``$(VAR)`` from its env."""
    out = []
    for a in args:
        for var in env:
            a = a.replace(f"$({var})", f"pod-{var.lower()}")
        assert "$(" not in a, f"{a}: a variable the container does not define"
        out.append(a)
    return out


def test_command_lines_parse_and_read_the_assembled_config(docs: list[dict[str, Any]]) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["kmta"]' in dockerfile  # the manifests give arguments only
    for name, dep in deployments(docs).items():
        spec = dep["spec"]["template"]["spec"]
        (c,) = spec["containers"]
        assert "command" not in c
        env = {e["name"]: e for e in c.get("env", [])}
        try:
            args = build_parser().parse_args(_argv(c["args"], env))
        except SystemExit as e:
            raise AssertionError(f"{name}: kmta {' '.join(c['args'])} does not parse") from e
        assert args.command == name.removeprefix("kmta-")
        # the init container writes the file the process reads, into a volume both mount
        (init,) = spec["initContainers"]
        script = shlex.split(init["command"][-1])
        assert script[0] == "cat" and script[-2] == ">" and script[-1] == args.config
        mounts = {m["mountPath"]: m["name"] for m in init["volumeMounts"]}
        main = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        out_dir = str(Path(args.config).parent)
        assert main[mounts[out_dir]] == out_dir
        volumes = {v["name"]: v for v in spec["volumes"]}
        sources = {str(Path(p).parent): Path(p).name for p in script[1:-2]}
        assert set(sources) <= set(mounts), sources
        for path, file in sources.items():
            v = volumes[mounts[path]]
            key = "configMap" if "configMap" in v else "secret"
            ref = v[key].get("name") or v[key]["secretName"]
            obj = one(docs, "ConfigMap" if key == "configMap" else "Secret", ref)
            assert file in (obj.get("data") or obj.get("stringData")), f"{ref} has no {file}"
        if name in ("kmta-worker", "kmta-sender"):  # a unique node name per pod
            assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


def test_probes_ask_the_metrics_port(docs: list[dict[str, Any]], config: Config) -> None:
    assert config.metrics.listen is not None
    port = int(config.metrics.listen.rpartition(":")[2])
    for name, dep in deployments(docs).items():
        pod = dep["spec"]["template"]
        (c,) = pod["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports["metrics"] == port, name
        for probe, path in PROBE_PATHS.items():
            get = c[probe]["httpGet"]
            assert (get["path"], ports.get(get["port"], get["port"])) == (path, port), \
                f"{name} {probe}"
        ann = pod["metadata"]["annotations"]
        assert (ann["prometheus.io/port"], ann["prometheus.io/path"]) == (str(port), "/metrics")
    dash = deployments(docs)["kmta-dashboard"]["spec"]["template"]["spec"]["containers"][0]
    args = build_parser().parse_args(dash["args"])
    assert {p["name"]: p["containerPort"] for p in dash["ports"]}["http"] == args.port


def test_assembled_config(config: Config) -> None:
    assert config.log.format == "json"
    assert config.dashboard.password is not None and config.control.secret is not None
    assert config.kafka.topic_prefix == "kmta."


def test_keda_scales_senders_on_queue_lag(docs: list[dict[str, Any]], config: Config) -> None:
    so = one(docs, "ScaledObject", "kmta-sender")
    assert so["apiVersion"] == "keda.sh/v1alpha1"
    spec = so["spec"]
    target = spec["scaleTargetRef"]
    assert target.get("kind", "Deployment") == "Deployment"
    assert target["name"] in deployments(docs)
    assert deployments(docs)[target["name"]]["spec"]["template"]["spec"]["containers"][0][
        "args"][2] == "sender"
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= \
        config.kafka.queue_partitions
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    kb = load_kb(config)
    node = SenderNode(config, kb, partition_map(config, kb), node="probe")
    assert meta["consumerGroup"] == node.checkpoint.group == "kmta.senders"
    assert meta["topic"] == node.intake.topic == config.topic("queue") == "kmta.queue"
    assert meta["bootstrapServers"] == config.kafka.bootstrap_servers
    # KEDA reads every metadata value as a string
    assert all(isinstance(v, str) for v in meta.values()), meta
    assert int(meta["lagThreshold"]) > 0 and meta["excludePersistentLag"] == "true"
