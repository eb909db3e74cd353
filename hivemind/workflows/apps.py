from django.apps import AppConfig


class WorkflowsConfig(AppConfig):
    name = "hivemind.workflows"
    label = "workflows"

    def ready(self) -> None:
        from hivemind.workflows import noop  # noqa: F401 - registers the noop kind and its step
