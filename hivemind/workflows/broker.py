"""Which step wake-ups the broker (Redis) still holds.

The reconciler asks before it sends a step's message again: a step whose message waits in
a queue, or is held unacknowledged by a worker (running, or waiting for a retry's
countdown), is not lost. A chain's later steps travel inside the current message, so
those count as held too.
"""

from __future__ import annotations

import base64
import json
import logging

import redis
from django.conf import settings

log = logging.getLogger(__name__)

RUN_STEP = "workflows.run_step"


def _step_ids(payload: dict) -> set[int]:
    headers = payload.get("headers") or {}
    if headers.get("task") != RUN_STEP:
        return set()
    body = payload.get("body", "")
    if (payload.get("properties") or {}).get("body_encoding") == "base64":
        body = base64.b64decode(body)
    args, _kwargs, embed = json.loads(body)
    ids = {int(args[0])} if args else set()
    for signature in (embed or {}).get("chain") or []:
        if signature.get("task") == RUN_STEP and signature.get("args"):
            ids.add(int(signature["args"][0]))
    return ids


def step_wakeups(url: str | None = None) -> tuple[set[int], set[int]]:
    """(step ids with a message waiting in a queue, step ids with a message delivered but not
    acknowledged). The second kind may belong to a worker that died: see `held_by_live_workers`."""
    client = redis.Redis.from_url(url or settings.CELERY_BROKER_URL)
    try:
        queued = [
            item for key in client.scan_iter(match="*", count=1000, _type="list") for item in client.lrange(key, 0, -1)
        ]
        unacked = client.hvals("unacked")
    finally:
        client.close()
    return _ids(queued), _ids(unacked)


def _ids(raw: list[bytes]) -> set[int]:
    ids: set[int] = set()
    for item in raw:
        try:
            payload = json.loads(item)
            if isinstance(payload, list):  # unacked entries are [message, exchange, routing key]
                payload = payload[0]
            ids |= _step_ids(payload)
        except (ValueError, TypeError, KeyError, IndexError):
            log.debug("skipping a broker entry that is not a task message")
    return ids


def held_by_live_workers(timeout: float = 1.0) -> set[int]:
    """Step ids whose message a live worker holds (running, reserved, or waiting for its
    retry countdown), asked of the workers themselves."""
    from hivemind.celery import app

    inspect = app.control.inspect(timeout=timeout)
    ids: set[int] = set()
    for answer in (inspect.active(), inspect.reserved(), inspect.scheduled()):
        for requests in (answer or {}).values():
            for request in requests:
                request = request.get("request", request)  # scheduled entries wrap the request
                if request.get("name") == RUN_STEP and request.get("args"):
                    ids.add(int(request["args"][0]))
    return ids
