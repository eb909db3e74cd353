from django.apps import AppConfig


class ApplicationsConfig(AppConfig):
    name = "hivemind.applications"
    label = "applications"

    def ready(self) -> None:
        from hivemind.applications import steps  # noqa: F401 - registers the app workflows and steps
