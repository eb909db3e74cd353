from __future__ import annotations

from rest_framework import serializers

from backups.models import BackupLocation, Restore
from hivemind.core.api import StrictFieldsMixin, TenantField, TenantOwnedSerializer

CONFIG_HELP = (
    "Where it is (docs/backups.md, Locations): local {path} (relative: under the tenant's backup directory, a "
    "platform location's under <backup dir>/_platform); s3 {bucket, prefix, endpoint_url, region, addressing_style}; "
    "azure {account_url, container, prefix}; gcs {bucket, prefix, endpoint, project}. On update, merged onto the "
    "current ones (null unsets one)."
)
SECRETS_HELP = (
    "Credentials, write-only (sealed with the tenant's keys, a platform location's with a key of the master key's; "
    "never returned): s3 {access_key_id, secret_access_key}; azure {account_key} or {sas_token}; gcs "
    "{service_account_json}. On update, merged."
)
LOCATION_FIELDS = ["id", "name", "kind", "config", "secrets", "secrets_set", "check_state", "check_error",
                   "checked_at", "created_at", "updated_at"]  # fmt: skip


class LocationFields(serializers.Serializer):
    """What a tenant's and a platform's backup location show and take alike."""

    kind = serializers.ChoiceField(choices=BackupLocation.Kind.choices, help_text="local, s3, azure or gcs.")
    config = serializers.JSONField(required=False, help_text=CONFIG_HELP)
    secrets = serializers.JSONField(required=False, write_only=True, help_text=SECRETS_HELP)
    secrets_set = serializers.ListField(
        source="secret_names", child=serializers.CharField(), read_only=True, help_text="Which credentials are set."
    )

    def validate_kind(self, value):
        if self.instance is not None and value != self.instance.kind:
            raise serializers.ValidationError("a backup location's kind cannot change: make a new one")
        return value


class BackupLocationSerializer(LocationFields, TenantOwnedSerializer):
    tenant = TenantField(required=False, help_text="Tenant slug (or send X-Hivemind-Tenant).")

    class Meta:
        model = BackupLocation
        fields = [*LOCATION_FIELDS[:1], "tenant", *LOCATION_FIELDS[1:]]
        read_only_fields = ["check_state", "check_error", "checked_at", "created_at", "updated_at"]
        validators = []  # a taken name is a 409 from the service, not a 400


class PlatformBackupLocationSerializer(LocationFields, StrictFieldsMixin, serializers.ModelSerializer):
    """A platform location: every tenant may back up into it by name, each into a repository of
    its own (tenants/<slug>/ under its path or prefix, with the tenant's key)."""

    tenants = serializers.SerializerMethodField(help_text="The tenants with backups or policies in it.")

    class Meta(BackupLocationSerializer.Meta):
        fields = [*LOCATION_FIELDS, "tenants"]

    def get_tenants(self, location) -> list[str]:
        from backups.models import Backup, BackupPolicy

        slugs = {*Backup.objects.filter(location=location).values_list("tenant__slug", flat=True),
                 *BackupPolicy.objects.filter(location=location).values_list("tenant__slug", flat=True)}  # fmt: skip
        return sorted(slugs)


class SyncRequestSerializer(StrictFieldsMixin, serializers.Serializer):
    tenant = serializers.SlugField(max_length=50, help_text="The tenant whose repository in the location to read.")


class PlatformRestoreSerializer(StrictFieldsMixin, serializers.Serializer):
    tenants = serializers.ListField(
        child=serializers.CharField(max_length=50), required=False, allow_empty=False, max_length=1000,
        help_text="Only these tenants (slugs); default: every tenant here with a repository in the location.",
    )  # fmt: skip
    conflicts = serializers.ChoiceField(
        choices=Restore.Conflicts.choices, default=Restore.Conflicts.REPLACE,
        help_text="As a restore's (replace: the tenants' settings and quotas come back too).",
    )  # fmt: skip
    dry_run = serializers.BooleanField(default=False, help_text="Plan each tenant's restore; start none.")


class PlatformRestoreEntrySerializer(serializers.Serializer):
    tenant = serializers.CharField()
    backups_found = serializers.IntegerField(required=False, help_text="Runs recorded again from the location.")
    backup = serializers.IntegerField(required=False, help_text="The backup restored (the tenant's newest).")
    restore = serializers.IntegerField(required=False, help_text="The restore (GET /api/v1/restores/{id}/).")
    workflow = serializers.IntegerField(required=False, allow_null=True, help_text="Its workflow (none: dry run).")
    actions = serializers.IntegerField(required=False, help_text="How many actions its plan has.")
    skipped = serializers.CharField(required=False, help_text="Why it was not restored.")
    error = serializers.CharField(required=False, help_text="Why its restore could not be planned.")


class PlatformRestoreResultSerializer(serializers.Serializer):
    tenants = PlatformRestoreEntrySerializer(many=True)


class PlatformKeysSerializer(StrictFieldsMixin, serializers.Serializer):
    passphrase = serializers.CharField(max_length=1024, write_only=True, trim_whitespace=False,
                                       style={"input_type": "password"})  # fmt: skip
    document = serializers.JSONField(required=False, help_text="import-keys: the document export-keys wrote.")


class ImportedPlatformKeysSerializer(serializers.Serializer):
    tenants = serializers.ListField(child=serializers.DictField(), help_text="{tenant, created, repositories} each.")


class CheckResultSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    detail = serializers.CharField(help_text="What was proven.")


class SyncResultSerializer(serializers.Serializer):
    found = serializers.IntegerField(help_text="How many backups were recorded.")
    backups = serializers.ListField(child=serializers.IntegerField(), help_text="Their ids.")
