from django.apps import AppConfig


class TenantsConfig(AppConfig):
    name = "tenants"
    verbose_name = "Tenants"

    def ready(self) -> None:
        from celery.signals import worker_init
        from django.core import checks

        from tenants import signals  # noqa: F401 - connects the role/permission sync
        from tenants.checks import master_key, on_worker_init

        checks.register(master_key, "hivemind")
        worker_init.connect(on_worker_init, dispatch_uid="tenants.master_key_check")
