from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "hivemind.core"
    label = "core"
    verbose_name = "Hivemind core"

    def ready(self) -> None:
        from hivemind.core import tracing

        tracing.configure()
