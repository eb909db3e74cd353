from django.apps import AppConfig


class ApplicationsConfig(AppConfig):
    name = "hivemind.applications"
    label = "applications"
