"""Django core settings. Every value that can change comes from env.CONFIG."""

import dj_database_url

from hivemind.config import BASE_DIR, load_config

CONFIG = load_config()

SECRET_KEY = CONFIG.secret_key
DEBUG = CONFIG.debug
ALLOWED_HOSTS = list(CONFIG.allowed_hosts)
CSRF_TRUSTED_ORIGINS = list(CONFIG.csrf_trusted_origins)
VAR_DIR = CONFIG.var_dir
NODE_NAME = CONFIG.node_name
DOCKER_HOST = CONFIG.docker_host
# Notifier deliveries (notifiers/services.py): attempts, first retry delay (doubling), timeout.
NOTIFIER_ATTEMPTS = CONFIG.notifier_attempts
NOTIFIER_BACKOFF = CONFIG.notifier_backoff
NOTIFIER_TIMEOUT = CONFIG.notifier_timeout
BACKUP_DIR = CONFIG.backup_dir or str(CONFIG.var_dir / "backups")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "guardian",
    "django_celery_beat",
    "hivemind.core",
    "hivemind.nodes",
    "hivemind.workflows",
    "hivemind.applications",
    "hivemind.dashboard",
    "tenants",
    "storage",
    "networking",
    "observability",
    "notifiers",
    "alerting",
    "backups",
]

MIDDLEWARE = [
    "hivemind.core.logs.LogContextMiddleware",  # request_id (and tenant, once known) on every log line
    "hivemind.core.metrics.PrometheusMiddleware",
    "hivemind.core.input.RequestLimitsMiddleware",  # 413 and bad query parameters, before any view
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
]

ROOT_URLCONF = "hivemind.urls"
WSGI_APPLICATION = "hivemind.wsgi.application"
ASGI_APPLICATION = "hivemind.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


def _databases() -> dict:
    db = dj_database_url.parse(CONFIG.database_url, conn_max_age=60, conn_health_checks=True)
    if CONFIG.database_is_sqlite:
        # The web process and the workers write at once: WAL lets readers and one
        # writer proceed together, the busy timeout makes a second writer wait
        # instead of failing with "database is locked".
        db["CONN_MAX_AGE"] = 0
        db["OPTIONS"] = {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=20000;",
        }
    else:
        db.setdefault("OPTIONS", {})["connect_timeout"] = 5
        # Server-side parameters let psycopg prepare a statement after it ran 5 times on a
        # connection: PostgreSQL then skips parsing and planning the statements every
        # workflow step runs (about 40 % of the database's CPU in bench/workflows.py).
        db["OPTIONS"]["server_side_binding"] = True
        db["OPTIONS"]["prepare_threshold"] = 5
        db["TEST"] = {"NAME": "test_" + db["NAME"]}
    return {"default": db}


DATABASES = _databases()
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# WhiteNoise serves static files straight from the installed apps: nothing to collect.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard:overview"
LOGOUT_REDIRECT_URL = "login"

# Behind a TLS-terminating proxy these come on with HIVEMIND_DEBUG off.
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
