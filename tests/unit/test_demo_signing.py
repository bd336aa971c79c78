"""The demo signs its mail with keys it makes, and its simulated DNS publishes them."""
from __future__ import annotations

import random
from pathlib import Path

import dkim

from kmta.config import Config
from kmta.pipeline.outgoing import Outgoing
from kmta.policy.compose import compose
from ops.demo import demo_config, demo_messages, demo_scenario
from schemas import OutboxMessage
from sim.scenario import Scenario


def test_demo_messages_verify_against_the_demo_dns(tmp_path: Path) -> None:
    config = Config.model_validate(demo_config(tmp_path, "127.0.0.1:1", 1, 2, 3, "pw"))
    keys = sorted(p.name for p in (tmp_path / "keys").iterdir())
    assert keys == ["sender.kmta.test.demo-ed.pem", "sender.kmta.test.demo-rsa.pem"]
    again = Config.model_validate(demo_config(tmp_path, "127.0.0.1:1", 1, 2, 3, "pw"))
    assert again.domains == config.domains  # the keys are made once, then reused
    zone = Scenario.from_toml(demo_scenario(config)).zone()

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
        rec = zone.records.get(name.decode().rstrip("."))
        return rec["txt"][0].encode() if rec and rec.get("txt") else None

    out = Outgoing(config)
    doc = demo_messages(1, random.Random(3))[0]
    msg = OutboxMessage.model_validate(doc)
    data = compose(msg, "m1", "sender.kmta.test", 1.8e9, out.headers(msg, "sender.kmta.test"))
    st = out.stamp(data, "m1", msg.from_, "sender.kmta.test", 1.8e9)
    assert st.selectors == ("demo-rsa._domainkey.sender.kmta.test",
                            "demo-ed._domainkey.sender.kmta.test")
    d = dkim.DKIM(st.data)
    assert d.verify(idx=0, dnsfunc=dnsfunc) and d.verify(idx=1, dnsfunc=dnsfunc)
    assert b"List-Unsubscribe-Post: List-Unsubscribe=One-Click" in st.data
    assert st.mail_from.startswith("b+") and st.mail_from.endswith("@bounce.sender.kmta.test")
