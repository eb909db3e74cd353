from django.apps import AppConfig


class DashboardConfig(AppConfig):
    name = "hivemind.dashboard"
    label = "dashboard"
