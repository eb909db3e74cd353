from django.apps import AppConfig


class NotifiersConfig(AppConfig):
    name = "notifiers"
