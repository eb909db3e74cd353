"""alertmanager: Prometheus Alertmanager's API v2, `POST <url>/api/v2/alerts`.

Each alert of the group becomes one Alertmanager alert: labels alertname (the rule's name),
severity, tenant and the alert's own labels; its annotations; startsAt; endsAt (a resolved
notification sets it to the alert's end, else now, which resolves it in Alertmanager);
generatorURL. Alertmanager then groups, silences and routes them as it is configured to.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from requests.auth import HTTPBasicAuth

from notifiers import render
from notifiers.kinds.http import post
from notifiers.registry import NotifierKind, Setting, register


def _text(mapping) -> dict[str, str]:
    return {str(key): str(value) for key, value in (mapping or {}).items() if value is not None}


def alerts(notification: dict) -> list[dict]:
    about = render.rule(notification)
    resolved = notification.get("status") == "resolved"
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    out = []
    for alert in notification.get("alerts") or []:
        labels = _text(alert.get("labels"))
        labels.update(_text({"alertname": about.get("name"), "severity": about.get("severity"),
                             "tenant": about.get("tenant")}))  # fmt: skip
        item = {"labels": labels, "annotations": _text(alert.get("annotations"))}
        if alert.get("starts_at"):
            item["startsAt"] = alert["starts_at"]
        if resolved:
            item["endsAt"] = alert.get("ends_at") or now
        elif alert.get("ends_at"):
            item["endsAt"] = alert["ends_at"]
        if notification.get("url"):
            item["generatorURL"] = notification["url"]
        out.append(item)
    return out


@register
class Alertmanager(NotifierKind):
    name = "alertmanager"
    description = "Prometheus Alertmanager (its API v2)"
    settings = (
        Setting("url", "Alertmanager's base URL, e.g. http://alertmanager:9093", type="url", required=True),
        Setting("username", "the user name of HTTP basic authentication"),
        Setting("password", "the password of HTTP basic authentication", secret=True),
        Setting("bearer_token", "a bearer token sent as Authorization: Bearer (instead of a password)", secret=True),
    )

    @classmethod
    def check(cls, config, secrets):
        if secrets.get("password") and secrets.get("bearer_token"):
            return {"bearer_token": "give a password or a bearer token, not both"}
        if secrets.get("password") and not config.get("username"):
            return {"username": "required with a password"}
        return {}

    @classmethod
    def send(cls, config, secrets, notification, *, timeout):
        url = config["url"].rstrip("/") + "/api/v2/alerts"
        headers, auth = {}, None
        if secrets.get("bearer_token"):
            headers["Authorization"] = f"Bearer {secrets['bearer_token']}"
        elif config.get("username"):
            auth = HTTPBasicAuth(config["username"], secrets.get("password", ""))
        data = json.dumps(alerts(notification)).encode()
        return post(url, setting="url", timeout=timeout, data=data, headers=headers, auth=auth)
