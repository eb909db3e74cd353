"""What the HTTP kinds share: one POST with a timeout, and errors that say what the peer said
(never the URL's path or query, which may hold a token)."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import requests

from notifiers.registry import DeliveryError

USER_AGENT = "hivemind-notifier/1"
MAX_ANSWER = 500  # characters of a peer's error answer kept


def where(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"


def post(url: str, *, setting: str, timeout: float, data: bytes, headers: dict, auth=None) -> str:
    """POST `data`; the peer's answer (status and the start of the body) when it is 2xx,
    DeliveryError otherwise: unreachable -> naming `setting`, answered an error -> answered."""
    headers = {"User-Agent": USER_AGENT, "Content-Type": "application/json", **headers}
    try:
        response = requests.post(url, data=data, headers=headers, timeout=timeout, auth=auth, allow_redirects=False)
    except requests.Timeout:
        raise DeliveryError(f"{where(url)} did not answer within {timeout:g} s", setting=setting) from None
    except requests.RequestException as exc:
        reason = getattr(exc, "args", [exc])[0]
        reason = str(getattr(reason, "reason", reason))
        reason = re.sub(r"^HTTPS?Connection\(host=[^)]*\): ", "", reason)  # said already by where()
        raise DeliveryError(f"cannot reach {where(url)}: {reason}", setting=setting) from None
    answer = response.text[:MAX_ANSWER].strip()
    if not 200 <= response.status_code < 300:
        raise DeliveryError(
            f"{where(url)} answered {response.status_code} {response.reason}" + (f": {answer}" if answer else ""),
            answered=True,
        )
    return f"{response.status_code} {response.reason}" + (f": {answer}" if answer else "")
