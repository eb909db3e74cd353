"""What a notification says, in words: the subject and text the email, Slack and webhook kinds
share. `notification` is the dict the alerting engine hands to `services.notify` (its shape is
documented in docs/observability.md, "Notifiers")."""

from __future__ import annotations

import json


def rule(notification: dict) -> dict:
    return notification.get("rule") or {}


def title(notification: dict) -> str:
    """e.g. "[FIRING:2] crash-looping" or "[RESOLVED] disk almost full"."""
    status = str(notification.get("status", "firing")).upper()
    count = len(notification.get("alerts") or [])
    counted = f":{count}" if count > 1 else ""
    return f"[{status}{counted}] {rule(notification).get('name', 'alert')}"


def subject(notification: dict) -> str:
    about = rule(notification)
    return f"{title(notification)} (tenant {about.get('tenant', '-')}, severity {about.get('severity', '-')})"


def _pairs(mapping: dict) -> str:
    return ", ".join(f"{key}={value}" for key, value in sorted((mapping or {}).items())) or "-"


def alert_lines(alert: dict) -> list[str]:
    annotations = alert.get("annotations") or {}
    lines = []
    summary = annotations.get("summary") or annotations.get("description")
    if summary:
        lines.append(str(summary))
    lines.append(f"labels: {_pairs(alert.get('labels'))}")
    if alert.get("value") is not None:
        lines.append(f"value: {alert['value']}")
    until = f", until {alert['ends_at']}" if alert.get("ends_at") else ""
    lines.append(f"since: {alert.get('starts_at') or '-'}{until}")
    others = {k: v for k, v in annotations.items() if k not in ("summary",)}
    if others:
        lines.append(f"annotations: {_pairs(others)}")
    return lines


def text(notification: dict) -> str:
    """The plain-text body: the rule, every alert of the group, the link."""
    about = rule(notification)
    lines = [
        title(notification),
        f"tenant: {about.get('tenant', '-')}  severity: {about.get('severity', '-')}  "
        f"group: {notification.get('group_key', '-')}",
        "",
    ]
    for number, alert in enumerate(notification.get("alerts") or [], 1):
        lines.append(f"Alert {number}:")
        lines.extend(f"  {line}" for line in alert_lines(alert))
        lines.append("")
    if notification.get("url"):
        lines.append(f"More: {notification['url']}")
    return "\n".join(lines).rstrip() + "\n"


def body(notification: dict) -> bytes:
    """The JSON body as it is sent and signed (compact, keys sorted: the same bytes every try)."""
    return json.dumps(notification, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
