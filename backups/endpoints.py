"""Where a tenant's backup location may point: its S3, Azure or GCS endpoint is a URL the web
process and the workers connect to on the tenant's behalf, and a `check` shows the server's
answer. Left open, a tenant could aim it at the platform's own services or a cloud's metadata
address. So every address its host name resolves to is checked where the setting enters (the
location's create and update) and again before each use (a name may resolve elsewhere later):

- link-local (169.254.0.0/16, fe80::/10: cloud metadata services), multicast, unspecified
  and reserved addresses: always refused;
- HIVEMIND_BACKUP_ENDPOINTS=private (the default: a small cluster's own MinIO or Ceph on a
  private network or this host): anything else is allowed;
- HIVEMIND_BACKUP_ENDPOINTS=public: global addresses only;
- HIVEMIND_BACKUP_ENDPOINTS=10.1.0.0/16,fd00:1::/48: only addresses in those networks.

Platform locations (staff's) are not limited. A name that does not resolve yet is let through
at entry (a location may be made before its server) and refused at use if it then resolves to
an address refused here. Between this check and the connection a hostile DNS server could
still answer otherwise: an egress firewall on the nodes is the complete answer.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from django.conf import settings

# The setting in each kind's config that names a server.
ENDPOINT_FIELDS = {"s3": "endpoint_url", "azure": "account_url", "gcs": "endpoint"}


class EndpointRefused(ValueError):
    """The endpoint reaches an address tenants' locations may not; the message says which."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(message)


def _refusal(address: ipaddress.IPv4Address | ipaddress.IPv6Address, allowed: tuple[str, ...]) -> str | None:
    if address.is_link_local:
        return "a link-local address (where cloud metadata services answer)"
    if address.is_multicast or address.is_unspecified or address.is_reserved:
        return "a multicast, unspecified or reserved address"
    if allowed == ("private",):
        return None
    if allowed == ("public",):
        return None if address.is_global else "not a public address (HIVEMIND_BACKUP_ENDPOINTS=public)"
    if any(address in ipaddress.ip_network(network) for network in allowed):
        return None
    return f"outside the networks tenants' locations may reach (HIVEMIND_BACKUP_ENDPOINTS={','.join(allowed)})"


def check(kind: str, config: dict, *, resolving_required: bool = False) -> None:
    """Refuse (EndpointRefused naming the setting) an endpoint reaching an address refused above."""
    field = ENDPOINT_FIELDS.get(kind)
    url = config.get(field) if field else None
    if not url:
        return
    host = urlsplit(url).hostname or ""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)}
    except (socket.gaierror, UnicodeError):
        if resolving_required:
            raise EndpointRefused(field, f"{host} does not resolve") from None
        return
    allowed = settings.CONFIG.backup_endpoints
    for text in sorted(addresses):
        address = ipaddress.ip_address(text.split("%", 1)[0])
        reason = _refusal(address, allowed)
        if reason:
            raise EndpointRefused(field, f"{host} resolves to {address}, {reason}: a tenant's backup location may not "
                                         "reach it")  # fmt: skip
