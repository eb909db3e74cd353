from django.apps import AppConfig


class BackupsConfig(AppConfig):
    name = "backups"

    def ready(self) -> None:
        from backups import journal, run_steps  # noqa: F401 - the app journal (point in time); backup.run's steps
        from backups.metrics import BackupCollector
        from observability import registry as metrics_registry

        metrics_registry.register(BackupCollector())  # per tenant and location: last run, bytes, dedup, failures
