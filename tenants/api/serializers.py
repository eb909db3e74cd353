from __future__ import annotations

from django.contrib.auth import get_user_model
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from hivemind.core import limits
from hivemind.core.api import StrictFieldsMixin, TenantOwnedSerializer
from hivemind.core.scoping import tenants_for
from hivemind.nodes.labels import KEY_RULE, LABEL_KEY
from tenants.models import ApiToken, AuditEvent, Membership, QuotaReservation, Role, ServiceAccount, Tenant
from tenants.quotas import RESOURCES, parse_amounts
from tenants.selectors import role_of


def validate_labels(value):
    if not isinstance(value, dict):
        raise serializers.ValidationError("expected an object of key: value labels")
    for key, item in value.items():
        if not LABEL_KEY.match(key):
            raise serializers.ValidationError(f"label key {key!r} must be {KEY_RULE}")
        if not isinstance(item, str) or len(item) > 200:
            raise serializers.ValidationError(f"label {key!r} needs a text value of at most 200 characters")
        bad = limits.control_character(item)
        if bad:
            raise serializers.ValidationError(f"label {key!r} holds the control character {bad}")
    return value


class TenantSerializer(StrictFieldsMixin, serializers.ModelSerializer):
    labels = serializers.JSONField(required=False, validators=[validate_labels])
    my_role = serializers.SerializerMethodField(help_text="The caller's role in this tenant, if any.")

    class Meta:
        model = Tenant
        fields = [
            "id",
            "name",
            "slug",
            "description",
            "isolation_level",
            "status",
            "labels",
            "my_role",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["status", "created_at", "updated_at"]

    @extend_schema_field(serializers.ChoiceField(choices=Role.choices, allow_null=True))
    def get_my_role(self, tenant: Tenant) -> str | None:
        return role_of(user=self.context["request"].user, tenant=tenant)

    def validate_slug(self, value):
        if self.instance is not None and value != self.instance.slug:
            raise serializers.ValidationError("a tenant's slug cannot change")
        return value


class TenantDeleteSerializer(StrictFieldsMixin, serializers.Serializer):
    confirm = serializers.CharField(help_text="The tenant's slug, typed again.")


class UsageEntrySerializer(serializers.Serializer):
    limit = serializers.IntegerField(allow_null=True)
    used = serializers.IntegerField()
    unit = serializers.CharField()
    percent = serializers.FloatField(allow_null=True)
    warning = serializers.BooleanField(help_text="True at or above 80 % of the limit.")


class UsageSerializer(serializers.Serializer):
    tenant = serializers.CharField()
    resources = serializers.DictField(child=UsageEntrySerializer())


class QuotaSerializer(StrictFieldsMixin, serializers.Serializer):
    """Limits to set; null removes a limit. CPU as 500m or 2, sizes as 512Mi or 10Gi."""

    def get_fields(self):
        # allow_blank: "" gets the quantity parser's own message, the same as in specs and reservations.
        fields = {name: serializers.CharField(required=False, allow_null=True, allow_blank=True) for name in RESOURCES}
        return fields

    def validate(self, attrs):
        limits, errors = {}, {}
        for name, value in attrs.items():
            if value is None:
                limits[name] = None
                continue
            try:
                limits[name] = RESOURCES[name].parse(value)
            except ValueError as exc:
                errors[name] = str(exc)
        if errors:
            raise serializers.ValidationError(errors)
        if not limits:
            raise serializers.ValidationError({"detail": "name at least one resource to limit"})
        return limits


class MembershipSerializer(TenantOwnedSerializer):
    user = serializers.SlugRelatedField(slug_field="username", queryset=get_user_model().objects.filter(is_active=True))
    role = serializers.ChoiceField(choices=Role.choices)

    class Meta:
        model = Membership
        fields = ["id", "tenant", "user", "role", "created_at"]
        read_only_fields = ["created_at"]
        validators = []  # uniqueness is checked by the service, with a message naming the user

    def validate_user(self, user):
        if self.instance is not None and user != self.instance.user:
            raise serializers.ValidationError("a membership cannot move to another user; add a new one")
        return user


class ServiceAccountSerializer(TenantOwnedSerializer):
    role = serializers.ChoiceField(choices=[Role.ADMIN, Role.OPERATOR, Role.VIEWER])
    username = serializers.CharField(source="user.username", read_only=True)

    class Meta:
        model = ServiceAccount
        fields = ["id", "tenant", "name", "description", "role", "username", "created_at"]
        read_only_fields = ["created_at"]
        validators = []


@extend_schema_field(OpenApiTypes.INT)
class ManagedServiceAccountField(serializers.PrimaryKeyRelatedField):
    """A service account of a tenant whose members the caller manages; any other id reads as absent,
    so the answer never confirms that another tenant's account exists."""

    default_error_messages = {"does_not_exist": "no service account {pk_value} (or you may not manage it)"}

    def run_validation(self, data=serializers.empty):
        if data == "":  # DRF reads "" as null for relations; here it would silently mean "yourself"
            raise serializers.ValidationError("expected a service account id or null, got an empty string")
        return super().run_validation(data)

    def get_queryset(self):
        request = self.context.get("request")
        managed = tenants_for(request.user if request else None, "tenants.manage_members")
        return ServiceAccount.objects.filter(tenant__in=managed).select_related("user")


class ApiTokenSerializer(StrictFieldsMixin, serializers.ModelSerializer):
    user = serializers.CharField(source="user.username", read_only=True)
    state = serializers.CharField(read_only=True)
    service_account = ManagedServiceAccountField(
        required=False,
        allow_null=True,
        write_only=True,
        help_text="Make the token for this service account instead of yourself (needs manage_members).",
    )
    expires_in_days = serializers.IntegerField(
        required=False, min_value=1, max_value=3650, write_only=True, help_text="Days until the token expires."
    )
    token = serializers.CharField(read_only=True, help_text="The token itself: shown in this answer only.")

    class Meta:
        model = ApiToken
        fields = [
            "id",
            "name",
            "prefix",
            "user",
            "state",
            "created_at",
            "expires_at",
            "last_used_at",
            "revoked_at",
            "service_account",
            "expires_in_days",
            "token",
        ]
        read_only_fields = ["prefix", "created_at", "last_used_at", "revoked_at"]

    def validate(self, attrs):
        if attrs.get("expires_at") and attrs.get("expires_in_days"):
            raise serializers.ValidationError({"expires_in_days": "give expires_at or expires_in_days, not both"})
        return attrs


class QuotaReservationSerializer(TenantOwnedSerializer):
    amounts = serializers.JSONField(
        help_text='Resource amounts, e.g. {"cpu": "500m", "memory": "1Gi", "containers": 2}.'
    )
    warnings = serializers.ListField(child=serializers.CharField(), read_only=True)

    class Meta:
        model = QuotaReservation
        fields = ["id", "tenant", "amounts", "reason", "state", "created_at", "released_at", "warnings"]
        read_only_fields = ["state", "created_at", "released_at"]

    def validate_amounts(self, value):
        try:
            return parse_amounts(value)
        except ValueError as exc:
            raise serializers.ValidationError(str(exc)) from None


class AuditEventSerializer(serializers.ModelSerializer):
    tenant = serializers.CharField(source="tenant_slug", read_only=True)
    actor = serializers.CharField(source="actor_name", read_only=True)

    class Meta:
        model = AuditEvent
        fields = ["id", "created_at", "tenant", "actor", "action", "object_type", "object_id", "object_repr", "changes"]
        read_only_fields = fields


class MeSerializer(serializers.Serializer):
    username = serializers.CharField()
    is_staff = serializers.BooleanField()
    memberships = serializers.ListField(child=serializers.DictField(child=serializers.CharField()))


# --- password logins and users ---------------------------------------------------------------


class AuthErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()
    code = serializers.CharField(help_text="Machine-readable, e.g. authentication_failed or throttled.")


class LoginSerializer(StrictFieldsMixin, serializers.Serializer):
    """A user name and password, and what the new token is called and how long it lives."""

    username = serializers.CharField(max_length=150, trim_whitespace=False)
    password = serializers.CharField(
        max_length=4096, trim_whitespace=False, write_only=True, style={"input_type": "password"}
    )
    name = serializers.CharField(
        max_length=100, default="cli", help_text="The token's name, e.g. cli@laptop (the CLI sends cli@<host name>)."
    )
    expires_in_days = serializers.IntegerField(
        min_value=1, max_value=365, default=30, help_text="Days until the token expires (1 to 365)."
    )


class LoginResultSerializer(serializers.Serializer):
    token = serializers.CharField(help_text="The API token: shown in this answer only. Send it as Bearer.")
    id = serializers.IntegerField(help_text="The token's id (DELETE /api/v1/tokens/{id}/ revokes it).")
    name = serializers.CharField()
    expires_at = serializers.DateTimeField()
    username = serializers.CharField()
    is_staff = serializers.BooleanField()


class UserMembershipSerializer(serializers.Serializer):
    tenant = serializers.CharField()
    role = serializers.ChoiceField(choices=Role.choices)


class UserSerializer(StrictFieldsMixin, serializers.ModelSerializer):
    """A person's account (PATCH changes e-mail, names and staff status)."""

    memberships = serializers.SerializerMethodField(help_text="The user's tenants and roles.")
    is_staff = serializers.BooleanField(
        required=False, help_text="Platform staff: sees and does everything, and may use the admin."
    )
    is_active = serializers.BooleanField(
        read_only=True, help_text="False once deactivated: logins, tokens and sessions are refused."
    )

    class Meta:
        model = get_user_model()
        fields = [
            "id",
            "username",
            "email",
            "first_name",
            "last_name",
            "is_staff",
            "is_active",
            "memberships",
            "date_joined",
            "last_login",
        ]
        read_only_fields = ["username", "is_active", "date_joined", "last_login"]

    @extend_schema_field(UserMembershipSerializer(many=True))
    def get_memberships(self, user) -> list[dict]:
        return [{"tenant": m.tenant.slug, "role": m.role} for m in user.memberships.all()]


class UserCreateSerializer(UserSerializer):
    """A new account; without `password` one is generated and returned once."""

    username = serializers.CharField(
        max_length=150, help_text="Letters, digits and @ . + - _ (Django's rule); unique regardless of case."
    )
    password = serializers.CharField(
        required=False,
        allow_blank=False,
        write_only=True,
        trim_whitespace=False,
        style={"input_type": "password"},
        help_text="Checked by the password validators. Leave it out to have one generated.",
    )
    generated_password = serializers.CharField(
        read_only=True, allow_null=True, help_text="The generated password, in this answer only (null if you gave one)."
    )

    class Meta(UserSerializer.Meta):
        fields = [*UserSerializer.Meta.fields, "password", "generated_password"]
        read_only_fields = ["is_active", "date_joined", "last_login"]


class UserPasswordSerializer(StrictFieldsMixin, serializers.Serializer):
    """A new password, or nothing to have one generated."""

    password = serializers.CharField(
        required=False,
        write_only=True,
        trim_whitespace=False,
        style={"input_type": "password"},
        help_text="The new password. Leave it out to have one generated.",
    )


class UserPasswordResultSerializer(serializers.Serializer):
    username = serializers.CharField()
    generated_password = serializers.CharField(
        allow_null=True, help_text="The generated password, in this answer only (null if you gave one)."
    )
