"""Token authentication for the API (its own module: DRF imports it while loading its views)."""

from __future__ import annotations

from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header

LAST_USED_RESOLUTION = 60  # seconds: a token's last-used time is written at most once a minute


def token_user(plain: str):
    """(user, token) for an API token's plain text, or AuthenticationFailed saying why not (also
    what the CSI endpoint checks the token in a request's secrets with, storage/csi/)."""
    from tenants.models import ApiToken

    token = ApiToken.objects.select_related("user").filter(digest=ApiToken.digest_of(plain)).first()
    if token is None:
        raise exceptions.AuthenticationFailed("invalid token")
    if token.revoked_at is not None:
        raise exceptions.AuthenticationFailed("token revoked")
    now = timezone.now()
    if token.expires_at is not None and token.expires_at <= now:
        raise exceptions.AuthenticationFailed("token expired")
    if not token.user.is_active:
        raise exceptions.AuthenticationFailed("the token's user is inactive")
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() > LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token.user, token


class BearerTokenAuthentication(BaseAuthentication):
    """`Authorization: Bearer <token>` (or `Token <token>`) with a token made by api_token_create."""

    keywords = (b"bearer", b"token")

    def authenticate(self, request):
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() not in self.keywords:
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed("the Authorization header must be 'Bearer <token>'")
        try:
            plain = parts[1].decode()
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("the token contains invalid characters") from None
        return token_user(plain)

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="hivemind"'
