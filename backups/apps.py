from django.apps import AppConfig


class BackupsConfig(AppConfig):
    name = "backups"

    def ready(self) -> None:
        from backups import run_steps  # noqa: F401 - register the backup.run workflow and its steps
        from backups.metrics import BackupCollector
        from observability import registry as metrics_registry

        metrics_registry.register(BackupCollector())  # per tenant and location: last run, bytes, dedup, failures
