"""webhook: the notification as a JSON body, POSTed and signed.

    X-Hivemind-Timestamp: <unix seconds when it was sent>
    X-Hivemind-Signature: sha256=<hex HMAC-SHA256, keyed with the notifier's secret, of
                          "<timestamp>.<body bytes>">

A receiver recomputes the HMAC over the timestamp, a dot and the raw body, compares in
constant time, and refuses timestamps older than a few minutes (a replayed request keeps
its old timestamp, and changing it breaks the signature).
"""

from __future__ import annotations

import hashlib
import hmac
import time

from notifiers import render
from notifiers.kinds.http import post
from notifiers.registry import NotifierKind, Setting, register

SIGNATURE_HEADER = "X-Hivemind-Signature"
TIMESTAMP_HEADER = "X-Hivemind-Timestamp"
MIN_SECRET = 16


def signature(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


@register
class Webhook(NotifierKind):
    name = "webhook"
    description = "POST the notification as JSON, signed with HMAC-SHA256"
    settings = (
        Setting("url", "the http:// or https:// URL to POST to", type="url", required=True),
        Setting(
            "secret",
            f"the HMAC-SHA256 key the body is signed with (at least {MIN_SECRET} characters)",
            required=True,
            secret=True,
        ),
    )

    @classmethod
    def check(cls, config, secrets):
        if len(secrets["secret"]) < MIN_SECRET:
            return {"secret": f"at least {MIN_SECRET} characters, got {len(secrets['secret'])}"}
        return {}

    @classmethod
    def send(cls, config, secrets, notification, *, timeout):
        body = render.body(notification)
        timestamp = str(int(time.time()))
        headers = {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: signature(secrets["secret"], timestamp, body)}
        return post(config["url"], setting="url", timeout=timeout, data=body, headers=headers)
