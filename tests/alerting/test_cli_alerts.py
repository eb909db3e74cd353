"""`hivemind alert` as a subprocess against the real web process: rules applied from a file and
refused with the field named, alerts listed after a pass, silences made and expired, history."""

from __future__ import annotations

import json

from alerting import services
from alerting.models import AlertRule, Silence
from tests.cli.conftest import cli, login_as, one_error_line  # noqa: F401 (the cli fixture)
from tests.nodes.conftest import make_app

RULES = """\
name: too-many
metric: hivemind_app_replicas_desired
matchers: [{label: app, op: "=~", value: "we.*"}]
comparison: ">="
threshold: 1
for: 0s
severity: critical
annotations: {summary: "{{ labels.app }} wants {{ value }}"}
---
name: failures
kind: event
event: workflow_failed
window: 10m
"""


def test_rules_alerts_silences_and_history(cli, web_server, world, tmp_path):  # noqa: F811
    login_as(cli, web_server, world, "operator")
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    applied = cli("alert", "rules", "apply", "-f", str(rules), "--tenant", "tenant-a")
    assert applied.code == 0, applied
    assert applied.out.splitlines() == ["rule/too-many created", "rule/failures created"]
    again = cli("alert", "rules", "apply", "-f", str(rules), "--tenant", "tenant-a")
    assert again.out.splitlines() == ["rule/too-many configured", "rule/failures configured"]
    assert AlertRule.objects.get(name="too-many").for_seconds == 0

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: nope\nmetric: hivemind_no_such_metric\n")
    refused = cli("alert", "rules", "apply", "-f", str(bad), "--tenant", "tenant-a")
    assert refused.code == 1, refused
    assert "metric" in refused.err and "hivemind_no_such_metric" in refused.err
    unnamed = tmp_path / "unnamed.yaml"
    unnamed.write_text("metric: hivemind_app_replicas_desired\n")
    assert cli("alert", "rules", "apply", "-f", str(unnamed), "--tenant", "tenant-a").code == 2

    listed = cli("alert", "rules", "ls", "--tenant", "tenant-a")
    assert listed.code == 0, listed
    assert 'hivemind_app_replicas_desired{app=~"we.*"} >= 1' in listed.out
    info = cli("alert", "rules", "info", "too-many", "--tenant", "tenant-a")
    assert "# Status new" in info.out and "metric: hivemind_app_replicas_desired" in info.out, info
    saved = tmp_path / "saved.yaml"
    saved.write_text(info.out.replace("threshold: 1.0", "threshold: 2.0"))
    reapplied = cli("alert", "rules", "apply", "-f", str(saved), "--tenant", "tenant-a")
    assert reapplied.out.splitlines() == ["rule/too-many configured"], reapplied
    assert AlertRule.objects.get(name="too-many").threshold == 2
    cli("alert", "rules", "apply", "-f", str(rules), "--tenant", "tenant-a")

    make_app(world.a, "web")
    services.rules_evaluate()
    alerts = cli("alert", "ls", "--tenant", "tenant-a")
    assert alerts.code == 0, alerts
    row = alerts.out.splitlines()[1].split()
    assert row[:3] == ["too-many", "firing", "critical"], alerts
    assert "web wants 1" in alerts.out

    made = cli("alert", "silence", "create", "alertname=too-many", "--duration", "2h", "--comment", "known",
               "--tenant", "tenant-a")  # fmt: skip
    assert made.code == 0, made
    silence = Silence.objects.get()
    assert silence.matchers == [{"label": "alertname", "op": "=", "value": "too-many"}]
    services.rules_evaluate()
    shown = cli("alert", "ls", "--tenant", "tenant-a", "-o", "json")
    assert json.loads(shown.out)[0]["silenced"] is True
    silences = cli("alert", "silence", "ls", "--tenant", "tenant-a")
    assert "alertname=too-many" in silences.out and "known" in silences.out, silences
    assert cli("alert", "silence", "expire", str(silence.pk), "--tenant", "tenant-a").code == 0
    assert cli("alert", "silence", "ls", "--tenant", "tenant-a").err.startswith("No active silences")
    badly = cli("alert", "silence", "create", "alertname", "--tenant", "tenant-a")
    assert badly.code == 2 and "MATCHER" in badly.err

    history = cli("alert", "history", "--tenant", "tenant-a", "--rule", "too-many")
    assert history.code == 0, history
    assert "silenced" in history.out, history
    events = json.loads(cli("alert", "history", "--tenant", "tenant-a", "--rule", "too-many", "-o", "json").out)
    assert [e["kind"] for e in reversed(events)] == ["pending", "firing", "notified", "silenced"]

    assert cli("alert", "rules", "rm", "too-many", "--yes", "--tenant", "tenant-a").code == 0
    assert not AlertRule.objects.filter(name="too-many").exists()
    missing = cli("alert", "rules", "info", "too-many", "--tenant", "tenant-a")
    assert missing.code == 6, missing
    assert "too-many" in one_error_line(missing)
