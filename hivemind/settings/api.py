"""Django REST Framework and drf-spectacular."""

from .base import CONFIG

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "hivemind.core.authentication.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "EXCEPTION_HANDLER": "hivemind.core.api.exception_handler",
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    # Input guards (hivemind/core/input.py): pagination and JSON bodies refuse what is malformed.
    "DEFAULT_PAGINATION_CLASS": "hivemind.core.input.LimitOffsetPagination",
    "DEFAULT_PARSER_CLASSES": [
        "hivemind.core.input.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # Password logins (POST /api/v1/auth/login/), counted per client address and per user name
    # in Redis, so every web process and replica shares the counts (tenants/api/throttles.py).
    "DEFAULT_THROTTLE_RATES": {"login_address": "30/min", "login_username": "10/min"},
    # The client's address is the connection's: X-Forwarded-For is anyone's to write.
    "NUM_PROXIES": 0,
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
}

# "default" stays Django's per-process memory cache; "throttle" holds the login counts.
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "throttle": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": CONFIG.redis_url,
        "KEY_PREFIX": "hivemind.throttle",
        "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
    },
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Hivemind API",
    "DESCRIPTION": "Multi-tenant container platform: tenants, apps, volumes, networks, metrics and backups.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "HealthStatusEnum": ["up", "down"],
        "TenantStatusEnum": "tenants.models.Tenant.Status",
        "RoleEnum": "tenants.models.Role",
        "ServiceAccountRoleEnum": [("admin", "Admin"), ("operator", "Operator"), ("viewer", "Viewer")],
        "ReservationStateEnum": "tenants.models.QuotaReservation.State",
        "WorkflowStateEnum": "hivemind.workflows.models.WorkflowState",
        "StepStateEnum": "hivemind.workflows.models.StepState",
        "AppStatusEnum": "hivemind.applications.models.App.Status",
        "NetworkStatusEnum": "networking.models.Network.Status",
        "IPPoolPurposeEnum": "networking.models.IPPool.Purpose",
        "ContainerStateEnum": "hivemind.applications.models.Container.State",
        "ContainerHealthEnum": "hivemind.applications.models.Container.Health",
        "AlertRuleKindEnum": "alerting.models.AlertRule.Kind",
        "AlertRuleStatusEnum": "alerting.models.AlertRule.Status",
        "AlertEventKindEnum": "alerting.models.AlertEvent.Kind",
        "AlertStateEnum": "alerting.models.Alert.State",
        "BackupLocationKindEnum": "backups.models.BackupLocation.Kind",
        "BackupStatusEnum": "backups.models.Backup.Status",
        "RestoreStatusEnum": "backups.models.Restore.Status",
        "RestoreConflictsEnum": "backups.models.Restore.Conflicts",
    },
}
