"""Rate limits of the password login, kept in Redis so every web process counts together.

Two limits, both DRF throttles (429 with Retry-After): one per client address, against one
machine trying many names, and one per typed user name, against many machines trying one
account. If Redis does not answer the login is refused (503) rather than left unlimited.
"""

from __future__ import annotations

import hashlib
import logging

from django.core.cache import caches
from redis.exceptions import RedisError
from rest_framework import status
from rest_framework.exceptions import APIException
from rest_framework.throttling import SimpleRateThrottle

log = logging.getLogger(__name__)


class LimiterUnavailable(APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "logins are paused: the rate limiter's store (Redis) does not answer; try again shortly"
    default_code = "limiter_unavailable"


class _LoginThrottle(SimpleRateThrottle):
    @property
    def cache(self):  # looked up per request: tests and settings may swap the cache
        return caches["throttle"]

    def allow_request(self, request, view) -> bool:
        try:
            return super().allow_request(request, view)
        except RedisError as exc:
            log.error("login throttle: Redis does not answer: %s", exc)
            raise LimiterUnavailable() from exc


class LoginAddressThrottle(_LoginThrottle):
    scope = "login_address"

    def get_cache_key(self, request, view) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class LoginUsernameThrottle(_LoginThrottle):
    scope = "login_username"

    def get_cache_key(self, request, view) -> str | None:
        data = request.data if hasattr(request.data, "get") else {}
        username = data.get("username")
        if not isinstance(username, str) or not username:
            return None  # the serializer refuses it; nothing to count against
        # Hashed: a typed name may hold anything, a cache key should not.
        ident = hashlib.sha256(username.strip().lower().encode(errors="replace")).hexdigest()
        return self.cache_format % {"scope": self.scope, "ident": ident}
