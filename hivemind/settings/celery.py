"""Celery: queues, routing and the reliability settings every workflow step relies on.

Read by hivemind/celery.py through `config_from_object(..., namespace="CELERY")`.
"""

from kombu import Queue

from .base import CONFIG

CONTROL_QUEUE = "control"
NODE_QUEUE = f"node.{CONFIG.node_name}"

CELERY_BROKER_URL = CONFIG.redis_url
CELERY_RESULT_BACKEND = CONFIG.redis_url
CELERY_RESULT_EXPIRES = 3600
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_ENABLE_UTC = True

CELERY_TASK_DEFAULT_QUEUE = CONTROL_QUEUE
CELERY_TASK_QUEUES = [Queue(CONTROL_QUEUE)]
# Node queues (node.<name>) are declared by each agent with `-Q node.<name>`;
# a step names its queue explicitly when it is dispatched.
CELERY_TASK_CREATE_MISSING_QUEUES = True

# A step is acknowledged only after it ran, and given back if its worker dies.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = CONFIG.step_soft_time_limit
CELERY_TASK_TIME_LIMIT = CONFIG.step_time_limit
# Redis redelivers an unacknowledged message after the visibility timeout: keep it
# above the longest step so a slow step is never run twice at once.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CONFIG.step_time_limit + 600}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# No Celery task events (Celery's default): nothing here consumes them (workflow state is in
# the database, metrics in prometheus-client), and each was a Redis PUBLISH per task sent,
# received, started and succeeded: 7 % of a POST deploy's CPU in the web, more per step in workers.
CELERY_WORKER_SEND_TASK_EVENTS = False
CELERY_TASK_SEND_SENT_EVENT = False

CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# Beat copies these into django-celery-beat's tables when it starts.
CELERY_BEAT_SCHEDULE = {
    "workflows-reconcile": {
        "task": "workflows.reconcile",
        "schedule": float(CONFIG.reconcile_interval),
        # A pass that could not run in time is dropped: the next one does the same work.
        "options": {"queue": CONTROL_QUEUE, "expires": float(CONFIG.reconcile_interval)},
    },
    "apps-reconcile": {
        "task": "apps.reconcile",
        "schedule": float(CONFIG.reconcile_interval),
        "options": {"queue": CONTROL_QUEUE, "expires": float(CONFIG.reconcile_interval)},
    },
    "nodes-monitor": {
        "task": "nodes.monitor",
        "schedule": float(CONFIG.node_heartbeat),
        # Marks nodes that missed three heartbeats not-ready; a late pass is replaced by the next.
        "options": {"queue": CONTROL_QUEUE, "expires": float(CONFIG.node_heartbeat)},
    },
    "storage-replications-due": {
        "task": "storage.replications_due",
        # Starts the volume replications whose interval has passed; a late pass is replaced by the next.
        "schedule": float(CONFIG.reconcile_interval),
        "options": {"queue": CONTROL_QUEUE, "expires": float(CONFIG.reconcile_interval)},
    },
    "alerting-evaluate": {
        "task": "alerting.rules_evaluate",
        # Every enabled alert rule, once per HIVEMIND_ALERT_INTERVAL; a late pass is replaced by the next.
        "schedule": float(CONFIG.alert_interval),
        "options": {"queue": CONTROL_QUEUE, "expires": float(CONFIG.alert_interval)},
    },
    "alerting-history-prune": {
        "task": "alerting.history_prune",
        # Alert history, resolved alerts and ended silences older than 30 days; a missed pass is made up by the next.
        "schedule": 3600.0,
        "options": {"queue": CONTROL_QUEUE, "expires": 3600.0},
    },
    "backups-journal-prune": {
        "task": "backups.journal_prune",
        # The app journal's entries older than their tenant's oldest backup; a missed pass is made up by the next.
        "schedule": 3600.0,
        "options": {"queue": CONTROL_QUEUE, "expires": 3600.0},
    },
    "notifiers-deliveries-due": {
        "task": "notifiers.deliveries_due",
        # Queues again the notifier deliveries whose queued attempt was lost; a late pass is replaced by the next.
        "schedule": 60.0,
        "options": {"queue": CONTROL_QUEUE, "expires": 60.0},
    },
    "observability-usage-rollup": {
        "task": "observability.usage_rollup",
        # The usage of finished minutes rolled up per replica; a missed pass is made up by the next.
        "schedule": 60.0,
        "options": {"queue": CONTROL_QUEUE, "expires": 60.0},
    },
    "observability-prune-samples": {
        "task": "observability.usage_samples_prune",
        # Samples live at most HIVEMIND_SAMPLE_RETENTION plus five minutes; a missed pass is made up by the next.
        "schedule": 300.0,
        "options": {"queue": CONTROL_QUEUE, "expires": 300.0},
    },
}
