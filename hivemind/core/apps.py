from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "hivemind.core"
    label = "core"
    verbose_name = "Hivemind core"

    def ready(self) -> None:
        import hivemind.celery  # noqa: F401 - makes the Celery app current in every Django process
        from hivemind.core import schema, tracing  # noqa: F401 - schema registers OpenAPI extensions

        tracing.configure()
