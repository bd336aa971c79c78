"""Kafka security settings: validation of ``[kafka]``, the options every client gets, and a scan
of the source that fails when a Kafka client is built without them."""
from __future__ import annotations

import ast
import ssl
from pathlib import Path

import faust
import pytest

from kmta.config import Config, KafkaConfig, load_config
from kmta.errors import ConfigError
from kmta.pipeline.kafkaio import client_options
from streams.app import faust_credentials

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = {"AIOKafkaConsumer", "AIOKafkaProducer", "AIOKafkaAdminClient", "AIOKafkaClient"}
SASL = {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": "kmta", "sasl_password": "s3cret-pw"}


def _sources() -> list[Path]:
    skip = {".venv", ".git", "node_modules", ".kmta"}
    return [p for p in ROOT.rglob("*.py") if not skip & set(p.relative_to(ROOT).parts)]


def _name(func: ast.expr) -> str:
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def _spreads(call: ast.Call, helper: str) -> bool:
    """``**helper(...)`` among the call's keyword arguments."""
    return any(kw.arg is None and isinstance(kw.value, ast.Call) and _name(kw.value.func) == helper
               for kw in call.keywords)


def test_every_kafka_client_in_the_repo_gets_the_shared_options() -> None:
    bad, seen = [], 0
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            name = _name(node.func)
            if name in CLIENTS:
                seen += 1
                if not _spreads(node, "client_options"):
                    bad.append(f"{where}: {name}(...) without **client_options(config)")
            elif name == "App" and isinstance(node.func, ast.Attribute) and \
                    _name(node.func.value) == "faust":
                seen += 1
                creds = [k for k in node.keywords if k.arg == "broker_credentials"]
                if not (creds and isinstance(creds[0].value, ast.Call)
                        and _name(creds[0].value.func) == "faust_credentials"):
                    bad.append(f"{where}: faust.App(...) without "
                               "broker_credentials=faust_credentials(config)")
    assert seen >= 15, f"the scan found only {seen} client constructions: is it still looking?"
    assert not bad, "Kafka clients that would ignore [kafka] security settings:\n" + "\n".join(bad)


def test_scan_catches_a_client_without_the_options() -> None:
    tree = ast.parse("AIOKafkaConsumer('t', bootstrap_servers=b)\n"
                     "AIOKafkaConsumer('t', **client_options(c))\n")
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and _name(n.func) in CLIENTS]
    assert [_spreads(c, "client_options") for c in calls] == [False, True]


def test_plaintext_default_has_no_security() -> None:
    opts = client_options(Config(kafka=KafkaConfig(bootstrap_servers="h:1")))
    assert opts == {"bootstrap_servers": "h:1", "security_protocol": "PLAINTEXT"}
    assert faust_credentials(Config()) is None


@pytest.mark.parametrize("missing", ["sasl_mechanism", "sasl_username", "sasl_password"])
def test_sasl_needs_mechanism_and_credentials(missing: str) -> None:
    with pytest.raises(ValueError, match=missing):
        KafkaConfig(**{k: v for k, v in SASL.items() if k != missing})


def test_settings_the_protocol_would_ignore_are_refused() -> None:
    with pytest.raises(ValueError, match=r"sasl_username.*security_protocol is PLAINTEXT"):
        KafkaConfig(sasl_username="kmta")
    with pytest.raises(ValueError, match="ssl_cafile set but security_protocol is SASL_PLAINTEXT"):
        KafkaConfig(**SASL, ssl_cafile="/ca.pem")
    with pytest.raises(ValueError, match="ssl_keyfile needs ssl_certfile"):
        KafkaConfig(security_protocol="SSL", ssl_keyfile="/k.pem")
    with pytest.raises(ValueError):
        KafkaConfig(security_protocol="SASL_TLS")
    with pytest.raises(ValueError):
        KafkaConfig(**{**SASL, "sasl_mechanism": "GSSAPI"})


def test_password_stays_out_of_reprs_dumps_and_errors(tmp_path: Path) -> None:
    cfg = Config(kafka=KafkaConfig(**SASL))
    for text in (repr(cfg), str(cfg), cfg.model_dump_json(), repr(faust_credentials(cfg))):
        assert "s3cret-pw" not in text
    path = tmp_path / "kmta.toml"
    path.write_text('[kafka]\nsecurity_protocol = "SASL_SSL"\nsasl_password = "s3cret-pw"\n')
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert "s3cret-pw" not in str(e.value) and "sasl_mechanism" in str(e.value)


def test_sasl_options_for_aiokafka_and_faust() -> None:
    cfg = Config(kafka=KafkaConfig(**SASL))
    opts = client_options(cfg)
    assert {k: opts[k] for k in ("security_protocol", "sasl_mechanism", "sasl_plain_username",
                                 "sasl_plain_password")} == {
        "security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "kmta", "sasl_plain_password": "s3cret-pw"}
    assert "ssl_context" not in opts
    creds = faust_credentials(cfg)
    assert isinstance(creds, faust.SASLCredentials)
    assert (creds.protocol.value, creds.mechanism.value, creds.username, creds.password) == (
        "SASL_PLAINTEXT", "SCRAM-SHA-512", "kmta", "s3cret-pw")


def test_tls_context_is_built_once_and_shared(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text(_self_signed_pem())
    cfg = Config(kafka=KafkaConfig(**{**SASL, "security_protocol": "SASL_SSL"},
                                   ssl_cafile=str(ca), ssl_check_hostname=False))
    a, b = client_options(cfg), client_options(cfg.model_copy(deep=True))
    assert isinstance(a["ssl_context"], ssl.SSLContext) and a["ssl_context"] is b["ssl_context"]
    assert a["ssl_context"].check_hostname is False
    assert a["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    creds = faust_credentials(cfg)
    assert creds.protocol.value == "SASL_SSL" and creds.ssl_context is a["ssl_context"]
    tls_only = Config(kafka=KafkaConfig(security_protocol="SSL", ssl_cafile=str(ca)))
    assert isinstance(faust_credentials(tls_only), faust.SSLCredentials)
    assert client_options(tls_only)["ssl_context"].check_hostname is True


def test_missing_tls_file_is_a_clear_config_error(tmp_path: Path) -> None:
    cfg = Config(kafka=KafkaConfig(security_protocol="SSL", ssl_cafile=str(tmp_path / "no.pem")))
    with pytest.raises(ConfigError, match=r"kafka.ssl_cafile: .*no.pem not found"):
        client_options(cfg)


def _self_signed_pem() -> str:
    from ops.kafka.tls import make_ca

    return make_ca("kmta test CA").cert_pem.decode()
