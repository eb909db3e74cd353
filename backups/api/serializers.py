from __future__ import annotations

from rest_framework import serializers

from backups.models import BackupLocation
from hivemind.core.api import TenantField, TenantOwnedSerializer

CONFIG_HELP = (
    "Where it is (docs/backups.md, Locations): local {path} (relative: under the tenant's backup directory); "
    "s3 {bucket, prefix, endpoint_url, region, addressing_style}; azure {account_url, container, prefix}; "
    "gcs {bucket, prefix, endpoint, project}. On update, merged onto the current ones (null unsets one)."
)
SECRETS_HELP = (
    "Credentials, write-only (sealed with the tenant's keys, never returned): s3 {access_key_id, "
    "secret_access_key}; azure {account_key} or {sas_token}; gcs {service_account_json}. On update, merged."
)


class BackupLocationSerializer(TenantOwnedSerializer):
    tenant = TenantField(required=False, help_text="Tenant slug (or send X-Hivemind-Tenant).")
    kind = serializers.ChoiceField(choices=BackupLocation.Kind.choices, help_text="local, s3, azure or gcs.")
    config = serializers.JSONField(required=False, help_text=CONFIG_HELP)
    secrets = serializers.JSONField(required=False, write_only=True, help_text=SECRETS_HELP)
    secrets_set = serializers.ListField(
        source="secret_names", child=serializers.CharField(), read_only=True, help_text="Which credentials are set."
    )

    class Meta:
        model = BackupLocation
        fields = ["id", "tenant", "name", "kind", "config", "secrets", "secrets_set", "check_state", "check_error",
                  "checked_at", "created_at", "updated_at"]  # fmt: skip
        read_only_fields = ["check_state", "check_error", "checked_at", "created_at", "updated_at"]
        validators = []  # a taken name is a 409 from the service, not a 400

    def validate_kind(self, value):
        if self.instance is not None and value != self.instance.kind:
            raise serializers.ValidationError("a backup location's kind cannot change: make a new one")
        return value


class CheckResultSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    detail = serializers.CharField(help_text="What was proven.")


class SyncResultSerializer(serializers.Serializer):
    found = serializers.IntegerField(help_text="How many backups were recorded.")
    backups = serializers.ListField(child=serializers.IntegerField(), help_text="Their ids.")
