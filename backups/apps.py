from django.apps import AppConfig


class BackupsConfig(AppConfig):
    name = "backups"

    def ready(self) -> None:
        # The app journal (point in time); the steps of backup.run, backup.restore, backup.verify.
        from backups import journal, restore_steps, run_steps, verify  # noqa: F401
        from backups.metrics import BackupCollector
        from observability import registry as metrics_registry

        metrics_registry.register(BackupCollector())  # per tenant and location: last run, bytes, dedup, failures
