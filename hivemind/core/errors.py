"""Domain errors that services raise and the API turns into clear answers."""

from __future__ import annotations

from rest_framework import status
from rest_framework.exceptions import APIException


class Conflict(APIException):
    """The request is valid but the current state forbids it (409)."""

    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"

    def __init__(self, detail: str, code: str | None = None):
        super().__init__(detail, code or self.default_code)


class QuotaExceeded(Conflict):
    default_code = "quota_exceeded"

    def __init__(self, *, tenant: str, resource: str, limit: int, used: int, requested: int, unit: str):
        self.resource, self.limit, self.used, self.requested = resource, limit, used, requested
        super().__init__(
            f"quota exceeded for {resource} in tenant {tenant}: limit {limit} {unit}, "
            f"in use {used}, requested {requested}"
        )


class TenantNotActive(Conflict):
    default_code = "tenant_not_active"
