"""Every installation starts with one tenant, `default`, with the default quota."""

from django.db import migrations

DEFAULT_LIMITS = {
    "cpu_millis": 8000, "memory_bytes": 16 * 2**30, "containers": 50, "apps": 20, "volumes": 20,
    "storage_bytes": 100 * 2**30, "networks": 5, "backups": 50,
}


def create_default_tenant(apps, schema_editor):
    Tenant = apps.get_model("tenants", "Tenant")
    tenant, created = Tenant.objects.get_or_create(
        slug="default", defaults={"name": "Default", "description": "Created at installation."}
    )
    if created:
        apps.get_model("tenants", "TenantQuota").objects.create(tenant=tenant, **DEFAULT_LIMITS)
        apps.get_model("tenants", "TenantUsage").objects.create(tenant=tenant, **{k: 0 for k in DEFAULT_LIMITS})


class Migration(migrations.Migration):
    dependencies = [("tenants", "0001_initial")]

    operations = [migrations.RunPython(create_default_tenant, migrations.RunPython.noop)]
