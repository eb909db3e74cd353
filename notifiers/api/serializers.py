from __future__ import annotations

from rest_framework import serializers

from hivemind.core.api import TenantField, TenantOwnedSerializer
from notifiers import registry
from notifiers.models import Delivery, Notifier

SETTINGS_HELP = (
    "Settings of the kind (docs/observability.md, Notifiers): webhook {url}; email {host, port, security, from, "
    "to, username, ca_certificate}; slack {channel, username, icon_url}; alertmanager {url, username}. "
    "On update, merged onto the current ones (null unsets one)."
)
SECRETS_HELP = (
    "Secret settings, write-only (sealed with the tenant's keys, never returned): webhook {secret}; email "
    "{password}; slack {url}; alertmanager {password, bearer_token}. On update, merged (null unsets one)."
)


class NotifierSerializer(TenantOwnedSerializer):
    tenant = TenantField(required=False, help_text="Tenant slug (or send X-Hivemind-Tenant).")
    kind = serializers.ChoiceField(choices=Notifier.Kind.choices, help_text="webhook, email, slack or alertmanager.")
    config = serializers.JSONField(required=False, help_text=SETTINGS_HELP)
    secrets = serializers.JSONField(required=False, write_only=True, help_text=SECRETS_HELP)
    secrets_set = serializers.ListField(
        source="secret_names", child=serializers.CharField(), read_only=True, help_text="Which secrets are set."
    )
    deliveries = serializers.SerializerMethodField(help_text="Deliveries by state: {pending, delivered, failed, ...}")

    class Meta:
        model = Notifier
        fields = ["id", "tenant", "name", "kind", "config", "secrets", "secrets_set", "deliveries", "created_at",
                  "updated_at"]  # fmt: skip
        read_only_fields = ["created_at", "updated_at"]
        validators = []  # a taken name is a 409 from the service, not a 400

    def validate_kind(self, value):
        if self.instance is not None and value != self.instance.kind:
            raise serializers.ValidationError("a notifier's kind cannot change: make a new one")
        registry.get(value)
        return value

    def get_deliveries(self, notifier) -> dict[str, int]:
        from notifiers.selectors import delivery_counts

        return delivery_counts(notifier)


class DeliverySerializer(serializers.ModelSerializer):
    notifier = serializers.CharField(source="notifier.name", read_only=True)

    class Meta:
        model = Delivery
        fields = ["id", "notifier", "group_key", "status", "state", "attempts", "max_attempts", "last_error",
                  "answer", "history", "next_attempt_at", "delivered_at", "created_at", "updated_at",
                  "payload"]  # fmt: skip
        read_only_fields = fields


class TestResultSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    answer = serializers.CharField(help_text="What the peer answered.")
