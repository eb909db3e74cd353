"""slack: a Slack-compatible incoming webhook (Slack, Mattermost, Rocket.Chat). Its URL holds
the token, so the URL is the secret. The body is `text` (what every one of them shows) plus
`attachments` with a colour per status (both Slack and Mattermost render them)."""

from __future__ import annotations

import json

from notifiers import render
from notifiers.kinds.http import post
from notifiers.registry import NotifierKind, Setting, register

COLOURS = {"firing": "#d63232", "resolved": "#2eb67d"}


def message(config: dict, notification: dict) -> dict:
    about = render.rule(notification)
    attachments = []
    for alert in notification.get("alerts") or []:
        attachments.append(
            {
                "color": COLOURS.get(notification.get("status"), "#aaaaaa"),
                "fallback": render.title(notification),
                "title": (alert.get("annotations") or {}).get("summary") or about.get("name", "alert"),
                "text": "\n".join(render.alert_lines(alert)),
                "fields": [
                    {"title": "tenant", "value": str(about.get("tenant", "-")), "short": True},
                    {"title": "severity", "value": str(about.get("severity", "-")), "short": True},
                ],
            }
        )
    text = render.title(notification)
    if notification.get("url"):
        text += f" <{notification['url']}|details>"
    body = {"text": text, "attachments": attachments}
    for key in ("channel", "username", "icon_url"):
        if config.get(key):
            body[key] = config[key]
    return body


@register
class Slack(NotifierKind):
    name = "slack"
    description = "a Slack-compatible incoming webhook (Slack, Mattermost)"
    settings = (
        Setting("url", "the incoming webhook's URL (it holds its token)", type="url", required=True, secret=True),
        Setting("channel", "a channel to post in instead of the webhook's own (where the server allows it)"),
        Setting("username", "the name the messages are posted under"),
        Setting("icon_url", "the picture the messages are posted with", type="url"),
    )

    @classmethod
    def send(cls, config, secrets, notification, *, timeout):
        data = json.dumps(message(config, notification)).encode()
        return post(secrets["url"], setting="url", timeout=timeout, data=data, headers={})
