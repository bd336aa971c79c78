"""Dashboard callbacks with a recording fake controller (no Kafka, no browser)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import SecretStr

from dashboard.app import create_app
from dashboard.model import Board
from kmta.config import Config, ControlConfig, DashboardConfig
from kmta.errors import ConfigError
from kmta.pipeline.control import ControlError, verify
from schemas.control import ControlAction, ControlCommand
from schemas.events import DeliveryEvent
from schemas.state import IspState

NOW = 1_700_000_000.0


class Recorder:
    def __init__(self, fail: str | None = None) -> None:
        self.sent: list[ControlCommand] = []
        self.fail = fail

    def send(self, cmd: ControlCommand) -> None:
        if self.fail:
            raise ControlError(self.fail)
        self.sent.append(cmd)


class FakeKB:
    """Stands in for kmta.policy.kb.KnowledgeBase."""

    def __init__(self) -> None:
        self.validated: list[tuple[str, dict]] = []

    def validate_live(self, isp: str, rules: dict) -> None:
        self.validated.append((isp, rules))
        if rules.get("speed", {}).get("max", 1) > 1000:
            raise ConfigError(f"isp.{isp}.speed.max: above the provider's published limit")

    def effective(self, isp: str, live: dict | None) -> dict:
        return {
            "isp": isp,
            "speed": {"min": 1, "max": (live or {}).get("speed", {}).get("max", 600)},
        }


def board() -> Board:
    b = Board()
    for i in range(3):
        b.apply_event(
            DeliveryEvent(
                id=f"g{i}",
                to="x@gmail.com",
                isp="gmail",
                status="queued",
                final=False,
                timestamp=NOW - 100,
            )
        )
    b.apply_event(
        DeliveryEvent(
            id="g0",
            to="x@gmail.com",
            isp="gmail",
            status="delivered",
            final=True,
            code=250,
            response="ok",
            timestamp=NOW - 50,
        )
    )
    b.apply_state(
        IspState(
            isp="gmail",
            speed=12,
            speed_min=1,
            speed_max=600,
            locked_until=NOW + 60,
            lock_reason="block",
            updated_at=NOW - 10,
        )
    )
    return b


def make(
    config: Config | None = None, controller: Recorder | None = None, kb: Any = None, **kw: Any
) -> tuple[Any, Recorder]:
    rec = controller or Recorder()
    app = create_app(
        config or Config(),
        board(),
        rec,
        password="pw",
        clock=lambda: NOW,
        kb_loader=lambda: kb,
        **kw,
    )
    return app, rec


def text(div: Any) -> str:
    return div.children if hasattr(div, "children") else str(div)


def test_pause_sends_pause_for_selected_isp() -> None:
    app, rec = make()
    out = app.kmta.action("btn-pause", "gmail", "", None, "alice")
    assert len(rec.sent) == 1
    cmd = rec.sent[0]
    assert (cmd.action, cmd.isp, cmd.actor, cmd.source_ip, cmd.timestamp) == (
        ControlAction.PAUSE,
        "gmail",
        "alice",
        None,
        NOW,
    )
    assert out.className == "status-ok" and "sent pause for gmail" in text(out)


@pytest.mark.parametrize(
    "trigger,action",
    [
        ("btn-resume", ControlAction.RESUME),
        ("btn-unlock", ControlAction.UNLOCK),
    ],
)
def test_other_actions_with_source_ip(trigger: str, action: ControlAction) -> None:
    app, rec = make()
    app.kmta.action(trigger, "gmail", " 192.0.2.7 ", "after block notice", "admin")
    assert [(c.action, c.source_ip, c.reason) for c in rec.sent] == [
        (action, "192.0.2.7", "after block notice")
    ]


def test_clear_of_one_source_ip_is_refused_before_sending() -> None:
    # messages are bound to a source IP only when one sends them: a clear is per ISP
    app, rec = make()
    out = app.kmta.action("confirm-clear", "gmail", "192.0.2.7", None, "admin")
    assert rec.sent == []
    assert out.className != "status-ok" and "not a source IP" in text(out)


def test_no_isp_selected_sends_nothing() -> None:
    app, rec = make()
    out = app.kmta.action("btn-pause", None, None, None, "admin")
    assert rec.sent == [] and out.className == "status-error" and "select an ISP" in text(out)


def test_clear_asks_for_confirmation_first() -> None:
    app, rec = make()
    assert app.kmta.confirm_clear(None) == (False, "")
    shown, message = app.kmta.confirm_clear("gmail")
    assert shown and "gmail" in message and rec.sent == []


def test_controller_failure_is_shown() -> None:
    app, _rec = make(controller=Recorder(fail="broker down"))
    out = app.kmta.action("btn-unlock", "gmail", None, None, "admin")
    assert out.className == "status-error" and "broker down" in text(out)


def test_commands_are_signed_with_configured_secret() -> None:
    cfg = Config(control=ControlConfig(secret=SecretStr("k")))
    app, rec = make(config=cfg)
    app.kmta.action("btn-pause", "gmail", None, None, "admin")
    verify(rec.sent[0], "k")


@pytest.mark.parametrize(
    "rule,reason",
    [
        ("[speed\nmax = 3", "not valid TOML"),
        ('{"speed": {"max": }', "not valid JSON"),
        ("", "empty"),
        ("[speed]\nmax = 5000", "published limit"),
    ],
)
def test_bad_rule_shows_error_and_sends_nothing(rule: str, reason: str) -> None:
    kb = FakeKB()
    app, rec = make(kb=kb)
    status, _eff = app.kmta.rules("btn-rules-apply", "gmail", rule, "admin")
    assert rec.sent == []
    assert status.className == "status-error" and reason in text(status)
    assert "nothing sent" in text(status)


def test_bad_rule_without_kb_uses_schema() -> None:
    app, rec = make(kb=None)
    status, _ = app.kmta.rules("btn-rules-apply", "gmail", "[speed]\nmin = 10\nmax = 5", "admin")
    assert rec.sent == [] and "speed.min" in text(status)
    status, _ = app.kmta.rules("btn-rules-apply", "gmail", "[sped]\nmax = 5", "admin")
    assert rec.sent == [] and "sped" in text(status)


@pytest.mark.parametrize("rule", ["[speed]\nmax = 200\n", '{"speed": {"max": 200}}'])
def test_good_rule_is_validated_and_sent(rule: str) -> None:
    kb = FakeKB()
    app, rec = make(kb=kb)
    status, eff = app.kmta.rules("btn-rules-apply", "gmail", rule, "bob")
    assert status.className == "status-ok"
    assert kb.validated == [("gmail", {"speed": {"max": 200}})]
    assert [(c.action, c.rules, c.actor) for c in rec.sent] == [
        (ControlAction.SET_RULES, {"speed": {"max": 200}}, "bob")
    ]
    assert json.loads(eff)["speed"]["max"] == 200


def test_selecting_isp_shows_effective_rule() -> None:
    app, rec = make(kb=FakeKB())
    status, eff = app.kmta.rules("isp-select", "gmail", None, "admin")
    assert status == "" and json.loads(eff) == {"isp": "gmail", "speed": {"min": 1, "max": 600}}
    assert rec.sent == []


def test_tables_and_figures() -> None:
    app, _ = make()
    t = app.kmta.tables()
    g = next(r for r in t["isps"] if r["isp"] == "gmail")
    assert (g["queued"], g["delivered"], g["speed"], g["speed_bounds"]) == (2, 1, 12, "1 - 600")
    assert g["lock"] == "locked 60s: block" and g["id"] == "gmail"
    assert t["options"] == [{"label": "gmail", "value": "gmail"}]
    assert t["totals"]["accepted"] == 3
    figs = app.kmta.figures(300, None)
    assert len(figs) == 4 and figs[1].data[0].name == "gmail"


# ---------------------------------------------------------------------- login
def test_login_wrong_password_refused() -> None:
    app, _ = make()
    client = app.server.test_client()
    assert client.get("/").status_code == 302
    r = client.post("/login", data={"username": "admin", "password": "nope"})
    assert r.status_code == 401 and b"Wrong user name or password" in r.data
    r = client.post("/login", data={"username": "root", "password": "pw"})
    assert r.status_code == 401
    assert client.get("/").status_code == 302
    assert client.get("/_dash-layout").status_code == 401


def test_login_then_pages_and_logout() -> None:
    app, _ = make()
    client = app.server.test_client()
    assert client.get("/login").status_code == 200
    r = client.post("/login", data={"username": "admin", "password": "pw"})
    assert r.status_code == 302 and r.location.endswith("/")
    assert client.get("/").status_code == 200
    assert b"isp-table" in client.get("/_dash-layout").data
    client.get("/logout")
    assert client.get("/_dash-layout").status_code == 401


def test_dash_callback_records_logged_in_actor() -> None:
    """Through Dash's own HTTP endpoint: the trigger and the session user reach the command."""
    app, rec = make(user="ops")
    client = app.server.test_client()
    client.post("/login", data={"username": "ops", "password": "pw"})
    payload = {
        "output": "action-status.children",
        "outputs": {"id": "action-status", "property": "children"},
        "inputs": [
            {"id": "btn-pause", "property": "n_clicks", "value": 1},
            {"id": "btn-resume", "property": "n_clicks", "value": 0},
            {"id": "btn-unlock", "property": "n_clicks", "value": 0},
            {"id": "confirm-clear", "property": "submit_n_clicks", "value": None},
        ],
        "state": [
            {"id": "isp-select", "property": "value", "value": "gmail"},
            {"id": "source-ip", "property": "value", "value": None},
            {"id": "action-reason", "property": "value", "value": None},
        ],
        "changedPropIds": ["btn-pause.n_clicks"],
    }
    r = client.post("/_dash-update-component", json=payload)
    assert r.status_code == 200, r.data
    assert [(c.action, c.isp, c.actor) for c in rec.sent] == [(ControlAction.PAUSE, "gmail", "ops")]


def test_production_without_password_refuses_to_start() -> None:
    cfg = Config(dashboard=DashboardConfig(mode="production"))
    with pytest.raises(ConfigError, match="production mode refuses"):
        create_app(cfg, Board(), Recorder())
    with pytest.raises(ConfigError, match="demo mode"):
        create_app(Config(dashboard=DashboardConfig(mode="demo")), Board(), Recorder())


def test_configured_password_used() -> None:
    cfg = Config(dashboard=DashboardConfig(password=SecretStr("conf")))
    app = create_app(cfg, Board(), Recorder())
    client = app.server.test_client()
    assert client.post("/login", data={"username": "admin", "password": "conf"}).status_code == 302
    assert client.get("/").status_code == 200


def test_with_the_shipped_knowledge_base() -> None:
    kb_mod = pytest.importorskip("kmta.policy.kb")
    from kmta.config import Config
    from kmta.pipeline.rules import load_kb

    kb = load_kb(Config())
    assert isinstance(kb, kb_mod.KnowledgeBase)
    app, rec = make(kb=kb)
    status, _ = app.kmta.rules("btn-rules-apply", "gmail", "[speed]\nmin = 50\nmax = 10", "a")
    assert rec.sent == [] and "speed" in text(status)
    status, _ = app.kmta.rules("btn-rules-apply", "gmail", "[sped]\nmax = 3", "a")
    assert rec.sent == [] and "sped" in text(status)
    status, eff = app.kmta.rules("btn-rules-apply", "gmail", "[speed]\nmax = 77", "a")
    assert status.className == "status-ok" and rec.sent[0].rules == {"speed": {"max": 77}}
    shown = json.loads(eff)
    assert shown["isp"] == "gmail" and shown["speed"]["max"] == 77
    assert list(shown)[:2] == ["isp", "sending"]


def test_reply_explainer_shows_what_the_sender_does() -> None:
    from kmta.config import Config
    from kmta.pipeline.rules import load_kb

    app, _ = make(kb=load_kb(Config()))
    # a pasted reply, judged with the selected ISP's rules: a 550 rate limit defers, no suppression
    shown = app.kmta.explain("qq", "550 Ip frequency limited. http://service.mail.qq.com/help")
    assert "category: rate_limit" in shown and "verdict:  defer" in shown
    assert "suppress: no" in shown and "qq_frequency_limited" in shown
    # empty text: the ISP's latest reply (the board saw gmail's "250 ok")
    assert "category: delivered" in app.kmta.explain("gmail", "")
    assert "no reply from yahoo yet" in app.kmta.explain("yahoo", " ")
    assert app.kmta.explain(None, None) == ""
    # a sender-side rejection never suppresses the recipient
    shown = app.kmta.explain(
        None, "550 5.1.8 <b@x.example>: Sender address rejected: Domain not found")
    assert "category: bad_sender" in shown and "suppress: no" in shown
    shown = app.kmta.explain(
        "gmail", "550 5.1.1 The email account that you tried to reach does not exist")
    assert "bad_mailbox" in shown and "suppress: yes" in shown


def test_reply_explainer_is_in_the_layout() -> None:
    ids = set()

    def walk(node: Any) -> None:
        if getattr(node, "id", None):
            ids.add(node.id)
        children = getattr(node, "children", None)
        for child in children if isinstance(children, list) else [children]:
            if child is not None and not isinstance(child, str):
                walk(child)

    from dashboard.layout import build_layout

    walk(build_layout("admin"))
    assert {"reply-text", "btn-explain", "reply-explain"} <= ids


def test_domains_table_shows_configured_selectors_at_the_clock(tmp_path) -> None:
    cfg = Config.model_validate({"domains": [{"name": "shop.example", "dkim": [
        {"selector": "old", "key_file": "k1", "not_after": NOW - 1},
        {"selector": "new", "key_file": "k2", "algorithm": "ed25519-sha256",
         "not_before": NOW - 1}]}]})
    app, _ = make(cfg)
    rows = app.kmta.tables()["domains"]
    assert rows[0]["domain"] == "shop.example" and rows[0]["signing_now"] == "yes"
    assert rows[0]["selectors"] == "old (rsa, inactive), new (ed25519)"


# -- the suppression page (issue 11) ---------------------------------------------------------
class RawRecorder(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.raw: list[tuple[str, bytes | None, bytes | None]] = []

    def send_raw(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        self.raw.append((topic, key, value))


def test_suppression_search_counts_and_audited_removal() -> None:
    from dashboard.feed import apply_record
    from schemas.control import ControlRecord
    from schemas.suppression import Reason, Suppression

    b = Board()
    recs = [Suppression(address="a@gmail.com", reason=Reason.COMPLAINT, at=NOW - 10),
            Suppression(address="b@gmail.com", reason=Reason.ASYNC_BOUNCE, at=NOW - 5),
            Suppression(address="a@gmail.com", scope="campaign", value="c1",
                        reason=Reason.UNSUBSCRIBE, at=NOW)]
    for r in recs:
        assert apply_record(b, "suppression", r.to_json(), r.key().encode())
    # a record written before scopes existed still counts
    assert apply_record(b, "suppression", b'{"address": "old@x.example", "reason": "550", '
                        b'"category": "bad_mailbox", "at": 1}', b"old@x.example")
    ctl = RawRecorder()
    app = create_app(Config(dashboard=DashboardConfig(password=SecretStr("pw"))), b, ctl,
                     clock=lambda: NOW)
    h = app.kmta
    boxes, rows, pages, page, found = h.suppression_view("A@GMAIL")
    assert [r["id"] for r in rows] == ["campaign:c1|a@gmail.com", "a@gmail.com"]
    assert (pages, page, found) == (1, 0, "2 matches")
    assert rows[0]["scope"] == "campaign:c1"
    # a page past the last shows the last (one record a page: the oldest of the domain's 3)
    _, page_rows, pages, page, found = h.suppression_view("@gmail.com", 7, page_size=1)
    assert ([r["id"] for r in page_rows], pages, page, found) == (
        ["a@gmail.com"], 3, 2, "3 matches")
    counts = b.suppression_counts()
    assert (counts["complaint"], counts["async_bounce"], counts["unsubscribe"],
            counts["hard_bounce"], counts["manual"], counts["total"]) == (1, 1, 1, 1, 0, 4)
    assert len(boxes) == len(counts)
    assert "give a reason" in str(h.remove_suppression("a@gmail.com", " ", "ops"))
    assert "select a record" in str(h.remove_suppression(None, "x", "ops"))
    assert ctl.raw == []
    assert "removed" in str(h.remove_suppression("a@gmail.com", "asked by the user", "ops"))
    (t1, k1, v1), (t2, _, v2) = ctl.raw
    assert (t1, k1, v1) == ("kmta.suppression", b"a@gmail.com", None)  # the tombstone
    audit = ControlRecord.model_validate_json(v2)
    assert t2 == "kmta.audit" and audit.suppression.op == "remove"
    assert (audit.suppression.actor, audit.suppression.reason) == ("ops", "asked by the user")
    assert audit.suppression.record.reason is Reason.COMPLAINT
    # the tombstone and the audit record come back through the feed
    apply_record(b, "suppression", None, k1)
    apply_record(b, "audit", v2)
    assert [r["id"] for r in b.suppression_rows("a@gmail")] == ["campaign:c1|a@gmail.com"]
    assert b.audit_rows()[0]["action"] == "suppression remove"


def test_reputation_table_and_charts_share_rows_and_the_configured_limits() -> None:
    from kmta.config import ReputationConfig
    from schemas.events import FeedbackInfo, Status
    cfg = Config(reputation=ReputationConfig(complaint_limits={"default": 0.2}, min_delivered=1))
    app, _ = make(config=cfg)
    b = app.kmta.board
    b.apply_event(DeliveryEvent(id="m0", to="a@gmail.com", isp="gmail", status=Status.COMPLAINT,
                                final=False, timestamp=NOW - 5, campaign="c",
                                feedback=FeedbackInfo(tied_by="verp", hard=True)))
    rows, bars, history = app.kmta.reputation("7d", "isp")
    g = next(r for r in rows if r["key"] == "isp:gmail")
    assert g["limit"] == 0.2 and g["complaint_7d"] > 0.2 and "over 20.00%" in g["over"]
    assert list(bars.data[0].x) == ["gmail"]
    assert list(bars.data[0].y) == [100 * g["complaint_7d"]]
    assert list(bars.data[3].y) == [20.0]  # the configured limit, not the shipped 0.3 %
    assert history.data[0].name == "gmail" and history.data[0].y[-1] == 100 * g["complaint_7d"]
    rows2, bars2, _ = app.kmta.reputation("bogus", "bogus")  # a stale page's value: defaults
    assert rows2 == rows and "Per ISP, last 24 h" in bars2.layout.title.text
