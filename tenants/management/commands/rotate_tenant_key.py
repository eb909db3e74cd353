"""`manage.py rotate_tenant_key SLUG...`: a new key for each tenant, its data keys re-wrapped (tenants/keys.py)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from tenants.keys import KeyUnavailable, tenant_key_rotate
from tenants.models import Tenant


class Command(BaseCommand):
    help = (
        "Give each named tenant a new key-encryption key and re-wrap every data key it holds (its "
        "encrypted volumes') with it; the previous key is erased. The data is not re-encrypted and "
        "its volumes stay mounted. Example: ./manage.py rotate_tenant_key acme"
    )

    def add_arguments(self, parser):
        parser.add_argument("slugs", nargs="+", metavar="SLUG", help="the tenants' slugs")

    def handle(self, *args, slugs: list[str], **options):
        tenants = {t.slug: t for t in Tenant.objects.filter(slug__in=slugs)}
        unknown = [slug for slug in slugs if slug not in tenants]
        if unknown:
            raise CommandError(f"no tenant with the slug(s): {', '.join(unknown)}")
        for slug in slugs:
            try:
                key = tenant_key_rotate(tenant=tenants[slug], actor=None)
            except KeyUnavailable as exc:
                raise CommandError(f"tenant {slug}: {exc}; nothing was changed for it") from None
            self.stdout.write(f"tenant {slug}: key version {key.version}, every data key re-wrapped")
